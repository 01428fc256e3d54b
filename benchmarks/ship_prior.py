r"""Ship a finished training run as a prior of :mod:`lipinverse.pretrained`.

Reads ``RUN/final.*`` (written by ``lipinverse train`` when the run's last stage ends: the
weights with :math:`\lambda(\sigma)` tuned on the validation folder, and the certificates)
and ``RUN/run.json`` (the recipe, the data folders and every session), and writes
``lipinverse/pretrained/NAME.{safetensors,json}`` with the training record that
:func:`lipinverse.pretrained.config` shows: ``metadata.name``, ``metadata.params`` and
``metadata.training`` (data, validation folder, recipe, core-hours, sessions, the run
folder and the commands). The weights are not changed.

With ``--deblur-row ROW`` it also records the model's own deblurring operating points
(``metadata.deblur_factors``, read by :func:`lipinverse.pretrained.deblur_prior`): the
strengths that ``benchmarks/deblur_bsd68.py`` tuned on set12 for the row ``ROW`` of
``benchmarks/results/deblur_bsd68.json``, which must have been run on this run's ``final``
(``--methods wcrr=RUN/final``). With ``--ct-tuning FILE`` it records the CT weight
(``metadata.ct_lam``, read by :func:`lipinverse.pretrained.ct_prior`) that
``benchmarks/tune_ct.py`` found best on set12, checked to have been tuned on weights with
this run's SHA-256.

Usage (decide with ``benchmarks/compare_priors.py`` first)::

    python benchmarks/ship_prior.py lipinverse/pretrained/runs/crr --as crr
    python benchmarks/ship_prior.py lipinverse/pretrained/runs/wcrr4 --as wcrr \
        --deblur-row "wcrr [wcrr4/final]" --ct-tuning benchmarks/results/tune_ct_wcrr.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def training_record(run_dir: Path, final_meta: dict) -> dict:
    """The ``metadata.training`` of a shipped prior from a run folder."""
    run = json.loads((run_dir / "run.json").read_text())
    if not run.get("done"):
        raise ValueError(f"ship_prior: run {run_dir} has not finished (run.json: done is "
                         f"false); resume it until it writes final.*")
    try:
        rel = run_dir.resolve().relative_to(REPO)
    except ValueError:
        rel = run_dir
    recipe = run["recipe"]
    return {
        "data": Path(run["images"]).name,
        "val": Path(run["val"]).name if run.get("val") else None,
        "recipe": recipe,
        "run": str(rel),
        "core_hours": round(run["core_seconds"] / 3600, 2),
        "sessions": len(run["sessions"]),
        "devices": sorted({s.get("device", "cpu") for s in run["sessions"]}),
        "commands": [
            f"lipinverse train --recipe {recipe['name']} --images ../shared/data/"
            f"{Path(run['images']).name} --val ../shared/data/{Path(run['val']).name} "
            f"--out {rel} --minutes N",
            f"lipinverse train --resume {rel} --minutes N  (until final.* is written)",
            f"python benchmarks/ship_prior.py {rel} --as NAME"],
        "tuning": final_meta.get("tuning"),
    }


def deblur_points(row: str, run_dir: Path, results: Path) -> list[list[float]]:
    """``[[noise, factor], ...]`` of the deblurring table's row ``row``, checked to be this
    run's ``final`` weights."""
    if not results.is_file():
        raise SystemExit(f"ship_prior: {results} not found: run benchmarks/deblur_bsd68.py "
                         f"with --methods wcrr={run_dir}/final first")
    methods = json.loads(results.read_text())["methods"]
    if row not in methods:
        raise SystemExit(f"ship_prior: no row {row!r} in {results}; rows: {sorted(methods)}")
    weights = methods[row].get("weights")
    if weights is None or (REPO / weights).resolve() != (run_dir / "final").resolve():
        raise SystemExit(f"ship_prior: row {row!r} was tuned for weights {weights!r}, "
                         f"expected this run's {run_dir / 'final'}")
    points = []
    for noise, rec in sorted(methods[row]["param"].items(), key=lambda t: float(t[0])):
        if isinstance(rec["value"], list):
            raise SystemExit(f"ship_prior: row {row!r} tuned (factor, lambda) pairs "
                             f"(--lams); the library records a factor per noise level only")
        points.append([float(noise) / 255, float(rec["value"])])
    return points


def ct_weight(results: Path, info: dict) -> float:
    """The best weight of a ``tune_ct.py`` result, checked to be tuned on this run's
    weights (``info``: the run's ``final.json``)."""
    if not results.is_file():
        raise SystemExit(f"ship_prior: {results} not found: run benchmarks/tune_ct.py first")
    rec = json.loads(results.read_text())
    if rec.get("weights_sha256") != info["weights_sha256"]:
        raise SystemExit(f"ship_prior: {results} tuned weights {rec.get('weights_sha256')}, "
                         f"this run's are {info['weights_sha256']}")
    return float(rec["best"])


def main(argv=None) -> int:
    from lipinverse import pretrained
    from lipinverse.training import load_checkpoint, save_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder (holds run.json and final.*)")
    ap.add_argument("--as", dest="name", required=True, choices=sorted(pretrained.REGISTRY))
    ap.add_argument("--dest", type=Path, default=pretrained.HERE,
                    help="folder to write NAME.* into (default: the package's pretrained/)")
    ap.add_argument("--deblur-row", default=None,
                    help="record the deblurring strengths tuned for this row of "
                         "benchmarks/results/deblur_bsd68.json (metadata.deblur_factors)")
    ap.add_argument("--ct-tuning", type=Path, default=None,
                    help="record the CT weight that benchmarks/tune_ct.py found best "
                         "(benchmarks/results/tune_ct_NAME.json; metadata.ct_lam)")
    args = ap.parse_args(argv)
    final = args.run / "final.json"
    if not final.is_file():
        raise SystemExit(f"ship_prior: {final} not found: the run has not finished")
    info = json.loads(final.read_text())
    model = load_checkpoint(args.run / "final")
    expected = pretrained.REGISTRY[args.name][1]
    if type(model).__name__ != expected:
        raise SystemExit(f"ship_prior: {args.name} must be a {expected}, the run holds a "
                         f"{type(model).__name__}")
    meta = dict(info.get("metadata") or {})
    meta.update(name=args.name, params=sum(p.numel() for p in model.parameters()),
                training=training_record(args.run, meta))
    if args.deblur_row is not None:
        meta["deblur_factors"] = deblur_points(
            args.deblur_row, args.run, REPO / "benchmarks" / "results" / "deblur_bsd68.json")
    if args.ct_tuning is not None:
        meta["ct_lam"] = ct_weight(args.ct_tuning, info)
    out = save_checkpoint(model, args.dest / args.name, metadata=meta)
    check = load_checkpoint(args.dest / args.name)  # SHA-256, class and shapes checked
    print(f"wrote {out} ({meta['params']} parameters, {type(check).__name__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
