r"""What limits the learned ridge priors: learning curves over whole lineages, the gradient
accuracy of the training step, and how much a WCRR's concave part bends (issue 20's "done
when").

Three measurements, each one part (``--parts``):

* ``curves``: the validation PSNR (set12 centre crops 96x96, σ = 15/255, as every recipe
  validates) of each *lineage* of runs (a run started from another run's ``final`` continues
  its lineage) against cumulative CPU core-hours and patch-updates. Core-hours are
  interpolated within each run from its sessions (steps, wall time and threads in
  ``run.json``). The slope over the last ``--tail`` steps of a lineage says whether more of
  the same optimisation still pays (optimisation-limited) or not.
* ``grad``: the training step's gradient (the exact-minimiser / DEQ loss, implicit backward)
  at the recipe's tolerances (forward and CG 1e-3) against the same gradient at 1e-6, on one
  seeded batch of train400 patches: cosine and relative error. A cosine near 1 means the
  tolerances do not limit the optimisation.
* ``concave``: for weakly convex models, on the clean set12 crops at σ = 15/255, the
  concave part's total curvature against the convex part's, the fraction of its channels'
  responses inside its knot range (beyond it the concave spline is linear) and ν/μ.

(Whether the data limit them, seen against unseen images beside TV, was measured for
``crr`` on 2026-12-05: see the model card.)

Usage: ``python benchmarks/limits.py [--parts curves grad concave]``; writes
``benchmarks/results/limits.{json,md}`` and ``limits.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, REPO, RESULTS, require_data, write  # noqa: E402
from benchmarks.plot_run import core_seconds, rows  # noqa: E402

RUNS = REPO / "lipinverse" / "pretrained" / "runs"
#: Each shipped prior's lineage: the runs in order, each started from the previous one's
#: ``final`` (``init`` in its recipe).
LINEAGES = {"wcrr": ("crr", "wcrr3", "wcrr4"), "crr": ("crr", "crr2"),
            "wcrr from scratch (not shipped)": ("wcrr2",)}
PUBLISHED_SCHEDULE = 6000 * 128  # patch-updates of the published CRR-NN / WCRR-NN training


def run_curve(run_dir: Path) -> tuple[list[dict], dict]:
    """The validation points of one run and its totals.

    Returns
    -------
    points : list of dict
        ``{step, patches, core_h, val_psnr}`` per validation: ``patches`` counts each
        stage's steps times its batch size; ``core_h`` (CPU core-hours) is interpolated
        over the sessions with steps (each one's :func:`core_seconds` spread evenly over
        its steps; a CUDA session adds none).
    totals : dict
        ``{core_h, patches}`` of the whole run (every session, those without steps too).
    """
    run = json.loads((run_dir / "run.json").read_text())
    sess = run["sessions"]
    stepping = [s for s in sess if s.get("steps", 0) > 0]
    steps = np.cumsum([0] + [s["steps"] for s in stepping])
    core = np.cumsum([0.0] + [core_seconds(s) for s in stepping])
    stages = [(s["epochs"] * s["steps_per_epoch"], s["batch_size"])
              for s in run["recipe"]["stage"]]

    def patches(g: float) -> int:
        out, off = 0, 0
        for n, b in stages:
            out += int(min(max(g - off, 0), n)) * b
            off += n
        return out

    pts = [{"step": int(r["global_step"]), "patches": patches(r["global_step"]),
            "core_h": float(np.interp(r["global_step"], steps, core)) / 3600,
            "val_psnr": round(r["val_psnr"], 4)} for r in rows(run_dir) if "val_psnr" in r]
    if not pts:
        raise ValueError(f"limits: run {run_dir} has no validation record yet")
    return pts, {"core_h": sum(core_seconds(s) for s in sess) / 3600,
                 "patches": patches(sum(s.get("steps", 0) for s in sess))}


def lineage(names, tail: int) -> dict:
    """The runs ``names`` (each started from the previous one's ``final``) as one curve,
    offset by the totals of the runs before; ``tail``: the gain over the last ``tail``
    steps of the last run (its first point if it is shorter)."""
    pts, off_h, off_p = [], 0.0, 0
    for name in names:
        cur, tot = run_curve(RUNS / name)
        pts += [{"run": name, "step": p["step"], "core_h": round(off_h + p["core_h"], 3),
                 "patches": off_p + p["patches"], "val_psnr": p["val_psnr"]} for p in cur]
        off_h, off_p = off_h + tot["core_h"], off_p + tot["patches"]
    last = [p for p in pts if p["run"] == names[-1]]
    end = last[-1]
    start = next(p for p in last if p["step"] >= end["step"] - tail)
    dh = end["core_h"] - start["core_h"]
    return {"runs": list(names), "points": pts, "core_h": round(off_h, 3),
            "patches": off_p, "val_psnr": end["val_psnr"],
            "tail": {"steps": end["step"] - start["step"], "dB": round(end["val_psnr"]
                     - start["val_psnr"], 4), "core_h": round(dh, 3),
                     "dB_per_core_h": round((end["val_psnr"] - start["val_psnr"]) / dh, 4)
                     if dh > 0 else None}}


def same_patches_gap(a: dict, b: dict, after: int) -> dict:
    """Validation differences of two lineages at equal patch-updates (beyond ``after``)."""
    pb = {p["patches"]: p["val_psnr"] for p in b["points"]}
    d = [abs(p["val_psnr"] - pb[p["patches"]]) for p in a["points"]
         if p["patches"] in pb and p["patches"] > after]
    return {"points": len(d), "after_patches": after, "max_abs_dB": round(max(d), 4),
            "mean_abs_dB": round(float(np.mean(d)), 4)}


def plot(curves: dict) -> None:
    """``results/limits.png``: validation against core-hours, and zoomed against patches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = set()
    owners = {r: [n for n, c in curves.items() if r in c["runs"]]
              for c in curves.values() for r in c["runs"]}
    for c in curves.values():
        for run in c["runs"]:
            ps = [p for p in c["points"] if p["run"] == run]
            if run in drawn:  # a run shared by two lineages (their common start)
                continue
            drawn.add(run)
            for ax, key, scale in ((axes[0], "core_h", 1), (axes[1], "patches", 1e6)):
                ax.plot([p[key] / scale for p in ps], [p["val_psnr"] for p in ps], "o-",
                        ms=2, label=f"{run} ({' and '.join(owners[run])} lineage"
                        f"{'s' if len(owners[run]) > 1 else ''})")
    top = max(p["val_psnr"] for c in curves.values() for p in c["points"])
    axes[0].set(xlabel="CPU core-hours (cumulative over the lineage)",
                title="validation: set12 crops 96x96, sigma 15/255 (lambda untuned)")
    axes[1].set(xlabel="patch-updates, millions (cumulative over the lineage)",
                ylim=(29.8, top + 0.1), xlim=(0.2, None), title="zoomed, against patches")
    axes[1].axvline(PUBLISHED_SCHEDULE / 1e6, color="grey", ls="--", lw=1)
    for ax in axes:
        ax.set(ylabel="PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "limits.png", dpi=110)


def _load(spec: str):
    """A shipped prior by name, or a checkpoint stem relative to the repository."""
    from lipinverse import pretrained
    from lipinverse.training import load_checkpoint

    if spec in pretrained.available():
        return pretrained.load(spec)
    return load_checkpoint(REPO / spec)


def gradient_accuracy(spec: str, root: Path, batch: int) -> dict:
    """Cosine and relative error of the DEQ training gradient at tolerance 1e-3 (forward
    solve and CG) against 1e-6, on one seeded batch of train400 patches (float64)."""
    from lipinverse.training import PatchDataset
    from lipinverse.training.objectives import DEQDenoisingLoss

    model = _load(spec).double().requires_grad_(True)  # shipped models load frozen
    data = PatchDataset(root / "train400", 40, 10, augment=False, seed=0)
    g = torch.Generator().manual_seed(1234)
    clean = data.batch(torch.randperm(len(data), generator=g)[:batch]).double()
    sigma = 30 / 255 * torch.rand(batch, generator=g, dtype=torch.float64)
    noisy = clean + sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=g,
                                                          dtype=torch.float64)
    grads, info = {}, {}
    for tol in (1e-3, 1e-6):
        obj = DEQDenoisingLoss(tol=tol, cg_tol=tol, max_iter=5000, cg_max_iter=2000,
                               solver="lbfgs")
        model.zero_grad()
        t0 = time.perf_counter()
        loss, metrics = obj.loss(model, clean, noisy, sigma)
        loss.backward()
        grads[tol] = torch.cat([p.grad.flatten() for p in model.parameters()
                                if p.grad is not None])
        info[str(tol)] = {"seconds": round(time.perf_counter() - t0, 2),
                          "loss": float(loss.detach()),
                          **{k: round(v, 2) for k, v in metrics.items() if "iterations" in k}}
    a, b = grads[1e-3], grads[1e-6]
    return {"model": spec, "batch": batch, "dtype": "float64", "per_tol": info,
            "cosine": round(float(a @ b / (a.norm() * b.norm())), 6),
            "relative_error": round(float((a - b).norm() / b.norm()), 6)}


def concave_activity(spec: str, root: Path, sigma: float = 15.0) -> dict:
    """How much the concave part of a WCRR bends: on the 12 set12 centre crops (96x96,
    clean), the sum of its curvature :math:`|\\kappa\\nu\\phi''(\\nu z_2)|` over that of the
    convex part :math:`\\lambda\\mu\\psi''(\\mu z)`, and the fraction of concave-channel
    responses within the concave spline's knot range (:math:`|\\nu z_2| <` range)."""
    from lipinverse.training import load_images
    from lipinverse.training.tuning import centre_crop

    model = _load(spec).double()
    x = torch.stack([centre_crop(im, 96) for im in load_images(root / "set12")]).double()
    with torch.no_grad():
        sc = model.scalings(sigma / 255, x.shape[0], torch.float64)
        z = model._filters(x, sc)
        lam, mu, kappa, nu = sc.lam, sc.mu, sc.kappa, sc.nu
        convex = (lam * mu * model.convex_spline.derivative(mu * z)).abs().sum()
        z2 = z[:, model.num_convex_only:]
        concave = (kappa * nu * model.concave_part.derivative(nu * z2)).abs().sum()
        inside = ((nu * z2).abs() < float(model.concave_part.range)).double().mean()
    return {"model": spec, "sigma": sigma, "concave_over_convex": round(float(concave / convex), 5),
            "inside_range": round(float(inside), 4),
            "nu_over_mu": round(float((nu / mu).mean()), 5)}


def markdown(pl) -> str:
    """The tables of ``limits.md`` from the payload."""
    lines = ["# What limits the learned ridge priors (issue 20)", "",
             f"{pl['date']}, {pl['machine']}. `python benchmarks/limits.py`.", ""]
    if "curves" in pl:
        lines += ["## Learning curves over each lineage (`limits.png`)", "",
                  "Validation: set12 centre crops 96x96, σ = 15/255, λ untuned (the recipes' "
                  "validation). Published schedule: 6,000 steps × 128 patches = 0.77 M "
                  "patch-updates. A run started from a tuned `final` starts above its parent's "
                  "last point: that step is the λ(σ) tuning, not training. CUDA sessions add "
                  "no CPU core-hours (`wcrr2` took its first 2,284 steps on a GPU).", "",
                  "| lineage | runs | core-hours | patch-updates (M) | × published | last "
                  "validation (dB) | last steps: dB / core-hours (dB per core-hour) |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for name, c in pl["curves"].items():
            t = c["tail"]
            lines.append(f"| {name} | {' → '.join(c['runs'])} | {c['core_h']:.2f} | "
                         f"{c['patches'] / 1e6:.2f} | {c['patches'] / PUBLISHED_SCHEDULE:.2f}"
                         f" | {c['val_psnr']:.3f} | {t['steps']}: {t['dB']:+.3f} / "
                         f"{t['core_h']:.2f} ({t['dB_per_core_h']}) |")
        lines.append("")
    if "scratch_vs_crr" in pl:
        g = pl["scratch_vs_crr"]
        lines += [f"The WCRR from scratch against the convex `crr`, at equal patch-updates after "
                  f"the t-step stage ({g['points']} validations): |difference| at most "
                  f"{g['max_abs_dB']:.3f} dB, {g['mean_abs_dB']:.3f} dB on average.", ""]
    if "grad" in pl:
        lines += ["## Gradient accuracy of the training step", "",
                  "DEQ loss, implicit backward, one seeded batch of train400 40x40 patches, "
                  "σ ~ U[0, 30]/255, float64: the recipes' tolerance 1e-3 (forward and CG) "
                  "against 1e-6.", "",
                  "| model | batch | cosine | relative error | s at 1e-3 | s at 1e-6 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in pl["grad"]:
            lines.append(f"| {r['model']} | {r['batch']} | {r['cosine']:.6f} | "
                         f"{r['relative_error']:.2e} | {r['per_tol']['0.001']['seconds']} | "
                         f"{r['per_tol']['1e-06']['seconds']} |")
        lines.append("")
    if "concave" in pl:
        lines += ["## Does the concave part bend?", "",
                  "On the 12 set12 centre crops (96x96, clean), σ = 15/255: the concave "
                  "part's total curvature over the convex part's, the fraction of the concave "
                  "channels' responses inside its knot range, and ν/μ.", "",
                  "| model | concave / convex curvature | responses inside the range | ν / μ |",
                  "|---|---:|---:|---:|"]
        for r in pl["concave"]:
            lines.append(f"| {r['model']} | {r['concave_over_convex']:.4f} | "
                         f"{r['inside_range']:.3f} | {r['nu_over_mu']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["curves", "grad", "concave"],
                   choices=["curves", "grad", "concave"])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--models", nargs="+", default=["crr", "wcrr"],
                   help="shipped names or checkpoint stems (relative to the repository)")
    p.add_argument("--wcrr", nargs="+", default=[
        "wcrr", "lipinverse/pretrained/runs/wcrr3/final",
        "lipinverse/pretrained/runs/wcrr2/stage2-deq/last"],
        help="weakly convex models of the concave part's check")
    p.add_argument("--tail", type=int, default=500, help="steps of the last stretch")
    p.add_argument("--batch", type=int, default=32, help="patches of the gradient check")
    args = p.parse_args(argv)
    path = RESULTS / "limits.json"
    pl = json.loads(path.read_text()) if path.exists() else {}
    for part in args.parts:  # each part written as soon as it is measured
        if part == "curves":
            pl["curves"] = {k: lineage(v, args.tail) for k, v in LINEAGES.items()}
            pl["scratch_vs_crr"] = same_patches_gap(  # after the t-step stage (600 x 128)
                pl["curves"]["wcrr from scratch (not shipped)"], pl["curves"]["crr"], 600 * 128)
            plot(pl["curves"])
        elif part == "grad":
            root = require_data(Path(args.data))
            pl["grad"] = [gradient_accuracy(m, root, args.batch) for m in args.models]
        else:
            root = require_data(Path(args.data))
            pl["concave"] = [concave_activity(m, root) for m in args.wcrr]
        write("limits", {k: v for k, v in pl.items() if k not in ("date", "machine")},
              markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
