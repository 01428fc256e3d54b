r"""Time-to-PSNR of the reconstructions with TV and the shipped ridge priors, this tree
against commit 5893d31 (issue 16), side by side in one run.

Problems (seeded, built once here and handed to both versions):

* ``denoise``: 256x256 centre crops of BSD68 images at sigma = 15 and 25 /255 (the
  scikit-image camera where ``../shared/data`` is absent); ridges: ``denoise(y, sigma,
  tol=t)``, TV: ``prox(y, sigma, tol=t)``;
* ``deblur``: the same crops, Levin kernel 1 (a Gaussian of 1.6 px without the data),
  circular boundary, noise 2.55/255; with ``deblur_prior``'s strength, from
  :math:`A^\top y`, to a relative change ``t``, the solver ``lipinverse deblur`` runs:
  this tree ``cli.priors.make_solver`` (``--solver auto``: ``LBFGS`` for the ridges,
  preconditioned by the Fourier metric); 5893d31 accelerated PGD
  (``scheme="grad"``); TV: FISTA in both;
* ``ct``: one crop as an attenuation map, 60-angle parallel-beam Radon scaled to unit
  norm, noise 0.01; the same solvers;
* ``crr-admm`` (the first deblurring problem): the ADMM path, ``ADMM(f, prior, lam)`` with
  the same operating point in both versions (``lipinverse deblur --solver admm``; its z-step
  is the ridge denoiser, whose solver changed), against the ``crr`` row's converged PSNR
  (the same minimiser: the prior is convex).

Each version runs in its own process (``--worker``, with the version's source first on
``sys.path``; 5893d31 is exported by ``git archive`` into a temporary folder) over a sweep
of tolerances ``t``, timing every solve (float32, the default of the shipped priors):
PSNR against seconds gives the curve. The converged PSNR is that of this tree's tightest
solve of the sweep (L-BFGS 3e-6, cheap for it; denoising 1e-4; TV 1e-4 / 1e-3), or
with ``--reference-solve`` of a float64 solve to 1e-5 (denoising 1e-6). The time to
solution of a version is the time of its fastest solve that lands within ``--gap``
(0.02 dB) of the converged PSNR; the table gives it for both versions and their ratio.
Every version loads the ``crr`` / ``wcrr`` weights shipped at 5893d31 (from the exported
tree: the goal is for those models), whatever this tree ships.

This tree runs with :func:`lipinverse.allocator.reuse_buffers` (as the ``lipinverse``
command does); ``--baseline-reuse`` adds 5893d31 with the same setting. Each solve is timed
best of ``--repeats`` (2).

Usage: ``OMP_NUM_THREADS=2 python benchmarks/time_to_psnr.py [--images N] [--quick]``;
writes ``benchmarks/results/time_to_psnr.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BASELINE = "5893d31"
PRIORS = ("tv", "crr", "wcrr")
TOLS = {"denoise": (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4),
        "deblur": (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5),
        "ct": (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)}
REFERENCE_TOL = {"denoise": 1e-6, "deblur": 1e-5, "ct": 1e-5}
LBFGS_TOLS = (1e-5, 3e-6)
# ADMM's relative-change test stops about 0.02 dB short of the minimiser at 1e-4 / 3e-5 on the
# deblurring problem (crr: 27.735 against 27.756 dB); at 1e-5 it lands within 0.005 dB
ADMM_TOLS = (1e-5,)


# ----------------------------------------------------------------- worker (either version)
def _solve(kind: str, prior: str, p: dict, tol: float, models: dict):
    """One solve with the public path of the imported version."""
    from lipinverse.functionals import L2Fidelity
    from lipinverse.pretrained import deblur_prior
    from lipinverse.regularizers import TV
    from lipinverse.solvers import PGD

    y, sigma = p["y"], p["sigma"]
    if kind == "denoise":
        if prior == "tv":
            return TV(tol=tol, max_iter=20000).prox(y, sigma)
        return models[prior].denoise(y, sigma, tol=tol, max_iter=5000)
    A = _operator(kind, p)
    f = L2Fidelity(A, y)
    if prior == "tv":
        solver = PGD(f, TV(tol=1e-3, max_iter=5000), lam=p["tv_lam"], accelerate=True)
    elif prior.endswith("-admm"):  # the ADMM path, the same construction in both versions
        from lipinverse.solvers import ADMM

        R, lam = deblur_prior(models[prior.removesuffix("-admm")], sigma)
        solver = ADMM(f, R, lam=lam)
    elif _lbfgs() is not None:  # this tree: the solver `lipinverse deblur` / `ct` build
        from lipinverse.cli.priors import make_solver

        solver = make_solver(A, y, prior, models[prior], sigma=sigma)
    else:
        R, lam = deblur_prior(models[prior], sigma)
        kw = dict(lam=lam, scheme="grad", accelerate=True)
        try:  # as `lipinverse deblur` does: the Fourier metric where it applies (this tree)
            solver = PGD(f, R, preconditioner="fourier", **kw)
        except (TypeError, ValueError):  # 5893d31 has no such option; CT, wcrr: none
            solver = PGD(f, R, **kw)
    return solver.solve(x0=A.adjoint(y), max_iter=5000, tol=tol, track_objective=False).x


def _lbfgs():
    """``lipinverse.solvers.LBFGS`` where the imported version has it (this tree), else None."""
    from lipinverse import solvers

    return getattr(solvers, "LBFGS", None)


def _operator(kind: str, p: dict):
    from operators import Blur, Radon

    if kind == "deblur":
        return Blur(p["kernel"], "circular")
    return Radon(p["size"], p["angles"]) * p["scale"]  # the same maths in both versions


def worker(code: str, spec_path: str, out_path: str, reference: bool, repeats: int = 1,
           allocator: str = "system", weights: str | None = None) -> None:
    if allocator == "reuse":  # this tree's lipinverse.allocator, loaded by path (any version)
        import importlib.util

        spec_ = importlib.util.spec_from_file_location(
            "_allocator", REPO / "lipinverse" / "allocator.py")
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
        print(f"worker: reuse_buffers() -> {module.reuse_buffers()}", flush=True)
    sys.path.insert(0, code)
    import warnings

    from lipinverse import pretrained
    from operators import ConvergenceError

    warnings.simplefilter("ignore")
    import lipinverse

    print(f"worker: lipinverse from {Path(lipinverse.__file__).parent}", flush=True)
    spec = torch.load(spec_path, weights_only=True)
    if weights is not None:  # the models shipped at 5893d31 in every version (the goal's)
        pretrained.HERE = Path(weights)
    models = {m: pretrained.load(m) for m in ("crr", "wcrr")}  # float32: the default
    if reference:  # the converged solutions in float64, where tol 1e-6 / 1e-7 is reachable
        models = {m: r.double() for m, r in models.items()}
        spec["problems"] = [{k: (v.double() if torch.is_tensor(v) else v) for k, v in p.items()}
                            for p in spec["problems"]]
    p0 = spec["problems"][0]
    with torch.no_grad():  # warm-up: first-call costs (allocator, FFT plans) off the clock
        _solve(p0["kind"], "crr", p0, 1e-2, models)
    out = []
    for p in spec["problems"]:
        for prior in p["priors"]:
            tols = [REFERENCE_TOL[p["kind"]]] if reference else TOLS[p["kind"]]
            if (not reference and prior in ("crr", "wcrr") and p["kind"] != "denoise"
                    and _lbfgs()):
                tols = tols + LBFGS_TOLS  # cheap for L-BFGS: a near-converged reference
            if not reference and prior.endswith("-admm"):
                tols = tols + ADMM_TOLS
            if prior == "tv":  # context only; its certified prox is slow at tight tolerances
                floor = 1e-5 if reference else (1e-3 if p["kind"] == "denoise" else 1e-4)
                tols = sorted({max(t, floor) for t in tols}, reverse=True)
            for tol in tols:
                best = float("inf")
                try:
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        with torch.no_grad():
                            x = _solve(p["kind"], prior, p, tol, models)
                        best = min(best, time.perf_counter() - t0)
                except ConvergenceError as err:  # a point of the curve not reached: skipped
                    print(f"{p['name']} {prior} tol {tol:.0e}: {err}", flush=True)
                    continue
                out.append({"problem": p["name"], "prior": prior, "tol": tol,
                            "seconds": best, "x": x.detach().clone()})
                print(f"{code[-12:]:>12} {p['name']:>22} {prior:>5} tol {tol:.0e} "
                      f"{out[-1]['seconds']:.2f} s", flush=True)
    torch.save(out, out_path)


# ----------------------------------------------------------------- parent
def problems(n_images: int, size: int = 256) -> list[dict]:
    sys.path.insert(0, str(REPO))
    from benchmarks.common import DATA, add_noise
    from lipinverse.io import builtin_image, center_crop, read_image, to_tensor
    from operators import Blur, Radon, kernels

    files = sorted((DATA / "bsd68").glob("*.png"))[::17][:n_images] \
        if (DATA / "bsd68").is_dir() else []
    imgs = ([(f.stem, to_tensor(center_crop(read_image(f), size)))
             for f in files] or
            [("camera", to_tensor(center_crop(builtin_image("camera"), size)))])
    if (DATA / "kernels" / "levin8.npz").is_file():
        import numpy as np

        kernel = torch.from_numpy(np.load(DATA / "kernels" / "levin8.npz")["arr_1"]).float()
    else:
        kernel = kernels.gaussian(1.6).float()
    out = []
    for i, (name, x) in enumerate(imgs):
        for s in (15, 25):
            out.append({"name": f"denoise {name} s{s}", "kind": "denoise", "x": x,
                        "y": add_noise(x, s / 255, i), "sigma": s / 255, "priors": PRIORS})
        A = Blur(kernel, "circular")
        out.append({"name": f"deblur {name}", "kind": "deblur", "x": x, "kernel": kernel,
                    "y": add_noise(A(x), 2.55 / 255, i), "sigma": 2.55 / 255,
                    "tv_lam": 0.06 * 2.55 / 255,
                    "priors": PRIORS + (("crr-admm",) if i == 0 else ())})
    name, x = imgs[0]
    R = Radon(size, 60, normalize=True)
    out.append({"name": f"ct {name} 60 angles", "kind": "ct", "x": x, "size": size,
                "angles": 60, "scale": R.scale, "y": add_noise(R(x), 0.01, 0),
                "sigma": 0.01, "tv_lam": 10 * 0.01 ** 2, "priors": PRIORS})
    return out


def run_worker(code: Path, spec: Path, reference: bool = False, repeats: int = 1,
               allocator: str = "system", weights: Path | None = None) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as fh:
        out = Path(fh.name)
    cmd = [sys.executable, __file__, "--worker", str(code), "--spec", str(spec),
           "--out", str(out), "--repeats", str(repeats), "--allocator", allocator] + (
        ["--reference"] if reference else []) + (
        ["--weights", str(weights)] if weights is not None else [])
    subprocess.run(cmd, check=True, cwd=tempfile.gettempdir())
    rows = torch.load(out, weights_only=True)
    out.unlink()
    return rows


def export_baseline(dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE, "lipinverse",
                              "operators"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _tightest(rows: list[dict]) -> list[dict]:
    """Per (problem, prior), the solve at the smallest tolerance of the sweep."""
    best = {}
    for r in rows:
        key = (r["problem"], r["prior"])
        if key not in best or r["tol"] < best[key]["tol"]:
            best[key] = r
    return list(best.values())


def summarise(probs, ref_rows, versions: dict, gap: float) -> list[dict]:
    from benchmarks.common import psnr

    truth = {p["name"]: p["x"] for p in probs}
    ref = {(r["problem"], r["prior"]): psnr(r["x"], truth[r["problem"]]) for r in ref_rows}
    for prob, prior in list(ref):   # ADMM converges to the convex prior's minimiser
        if prior.endswith("-admm"):
            ref[prob, prior] = ref.get((prob, prior.removesuffix("-admm")), ref[prob, prior])
    table = []
    for (prob, prior), p_ref in ref.items():
        row = {"problem": prob, "prior": prior, "psnr_converged": round(p_ref, 3)}
        for label, rows in versions.items():
            curve = sorted((r["seconds"], psnr(r["x"], truth[prob]), r["tol"]) for r in rows
                            if r["problem"] == prob and r["prior"] == prior)
            hit = [c for c in curve if abs(c[1] - p_ref) <= gap]
            row[label] = {"curve": [[round(s, 3), round(q, 3), t] for s, q, t in curve],
                          "seconds": round(hit[0][0], 3) if hit else None,
                          "tol": hit[0][2] if hit else None}
        first, last = list(versions)[0], list(versions)[-1]
        for v in list(versions)[1:]:  # every version against the first (5893d31)
            a, b = row[first]["seconds"], row[v]["seconds"]
            row[v]["speedup"] = round(a / b, 2) if a and b else None
            if not a and b and row[first]["curve"]:  # the old code never got there: at
                slowest = max(c[0] for c in row[first]["curve"])  # least its longest solve
                row[v]["speedup_at_least"] = round(slowest / b, 2)
        row["speedup"] = row[last]["speedup"]
        table.append(row)
    return table


def figure(table, versions, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = list(dict.fromkeys(r["problem"] for r in table))
    fig, axes = plt.subplots(1, len(probs), figsize=(3.2 * len(probs), 3), squeeze=False)
    colours = {"tv": "tab:gray", "crr": "tab:blue", "wcrr": "tab:red", "crr-admm": "tab:cyan"}
    for ax, prob in zip(axes[0], probs, strict=True):
        for r in (r for r in table if r["problem"] == prob):
            for v, style in zip(versions, ("--", ":", "-")[-len(versions):], strict=True):
                c = r[v]["curve"]
                ax.plot([s for s, _, _ in c], [q - r["psnr_converged"] for _, q, _ in c],
                        style, marker=".", color=colours[r["prior"]],
                        label=f"{r['prior']} {v}")
        ax.set_xscale("log")
        ax.set_ylim(-1.0, 0.1)
        ax.axhline(-0.02, color="k", lw=0.5)
        ax.set_title(prob, fontsize=8)
        ax.set_xlabel("seconds")
    axes[0][0].set_ylabel("PSNR - converged PSNR (dB)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(pl) -> str:
    vs = pl["versions"]
    lines = [f"# Time to PSNR: this tree against {vs[0]}", "",
             f"{pl['setup']} Time to solution: the fastest solve of a tolerance sweep that "
             f"lands within {pl['gap']} dB of the converged PSNR; {pl['threads']} threads, "
             "one process per version, run one after the other; each solve timed best of "
             f"{pl.get('repeats', 1)}. This tree runs with "
             "`lipinverse.allocator.reuse_buffers()` (as the `lipinverse` command does)"
             + (f"; `{vs[0]} + reuse` is the old code with the same allocator setting, "
                "which separates the allocator's share of the speed-up" if len(vs) > 2
                else "") + ". `python benchmarks/time_to_psnr.py`. Curves: "
             "`time_to_psnr.png`.", "",
             "| problem | prior | converged dB | "
             + " | ".join(f"{v} s | {v} tol" for v in vs) + " | "
             + " | ".join(f"speed-up ({v})" for v in vs[1:]) + " |",
             "|---|---|---:|" + "---:|---:|" * len(vs) + "---:|" * (len(vs) - 1)]
    for r in pl["rows"]:
        cells = [r["problem"], r["prior"], f"{r['psnr_converged']:.2f}"]
        for v in vs:
            cells += [f"{r[v]['seconds']:.2f}" if r[v]["seconds"] else "not reached",
                      f"{r[v]['tol']:g}" if r[v]["tol"] else "-"]
        for v in vs[1:]:
            sp = r[v].get("speedup", r["speedup"] if v == vs[-1] else None)
            low = r[v].get("speedup_at_least")
            cells.append(f"{sp:.2f}x" if sp else (f">= {low:.2f}x" if low else "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.02)
    ap.add_argument("--name", default="time_to_psnr", help="results file name")
    ap.add_argument("--size", type=int, default=256, help="crop size (smaller: smoke runs)")
    ap.add_argument("--quick", action="store_true", help="1 image instead of --images")
    ap.add_argument("--worker"), ap.add_argument("--spec"), ap.add_argument("--out")
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)  # worker
    ap.add_argument("--allocator", default="system", help=argparse.SUPPRESS)  # worker
    ap.add_argument("--weights", default=None, help=argparse.SUPPRESS)  # worker: model dir
    ap.add_argument("--repeats", type=int, default=2, help="time each solve best of N")
    ap.add_argument("--problems", nargs="+", default=None,
                    help="only the problems whose name contains one of these")
    ap.add_argument("--priors", nargs="+", default=None,
                    help="only these priors (tv crr wcrr crr-admm)")
    ap.add_argument("--baseline-reuse", action="store_true",
                    help="also run 5893d31 with lipinverse.allocator.reuse_buffers(), to "
                         "separate the allocator's share of the speed-up")
    ap.add_argument("--reference-solve", action="store_true",
                    help="converged PSNR from float64 solves at 1e-5 / 1e-6 (slow: wcrr "
                         "deblurring runs past 10 minutes) instead of this tree's tightest "
                         "float32 solve of the sweep")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.spec, args.out, args.reference, args.repeats,
                      args.allocator, args.weights)
    sys.path.insert(0, str(REPO))
    from benchmarks.common import write

    probs = problems(1 if args.quick else args.images, args.size)
    if args.problems:  # a subset, e.g. one row measured again on its own (--name another)
        probs = [p for p in probs if any(k in p["name"] for k in args.problems)]
    if args.priors:
        probs = [dict(p, priors=tuple(q for q in p["priors"] if q in args.priors))
                 for p in probs]
        probs = [p for p in probs if p["priors"]]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.pt"
        torch.save({"problems": [{k: v for k, v in p.items() if k != "x"} for p in probs]},
                   spec)
        base = export_baseline(Path(tmp))
        # this tree runs as the CLI does (reuse_buffers); 5893d31 had no such setting
        weights = base / "lipinverse" / "pretrained"  # the goal is for the models of 5893d31
        versions = {BASELINE: run_worker(base, spec, repeats=args.repeats, weights=weights)}
        if args.baseline_reuse:
            versions[f"{BASELINE} + reuse"] = run_worker(base, spec, repeats=args.repeats,
                                                         allocator="reuse", weights=weights)
        versions["this tree"] = run_worker(REPO, spec, repeats=args.repeats, allocator="reuse",
                                           weights=weights)
        ref_rows = (run_worker(REPO, spec, reference=True, weights=weights)
                    if args.reference_solve else
                    _tightest(versions["this tree"]))
    rows = summarise(probs, ref_rows, versions, args.gap)
    payload = {"task": "time_to_psnr", "versions": list(versions), "gap": args.gap,
               "repeats": args.repeats,
               "threads": torch.get_num_threads(), "rows": rows,
               "setup": f"{args.size}x{args.size} crops of BSD68 (every 17th image), seeded "
                        "noise; denoising at sigma 15 and 25/255, deblurring with Levin "
                        "kernel 1 at 2.55/255, "
                        "CT with 60 parallel-beam angles (unit-norm Radon) at 0.01; float32. "
                        "Deblurring and CT with the ridges: this tree runs L-BFGS "
                        "preconditioned by the Fourier metric (as `lipinverse deblur` / `ct` "
                        "do), 5893d31 accelerated PGD; denoising: this tree's L-BFGS with "
                        "the metric I + tau R's circulant model."}
    write(args.name, payload, markdown)
    figure(rows, list(versions), REPO / "benchmarks" / "results" / f"{args.name}.png")
    print(json.dumps([{k: r[k] for k in ("problem", "prior", "speedup")} for r in rows]))


if __name__ == "__main__":
    main()
