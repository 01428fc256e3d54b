r"""Solver overhead: plug-and-play PGD and ADMM on 256x256 deblurring.

For each denoiser and thread count this measures, in one process:

* the time per iteration of :class:`lipinverse.solvers.PGD` (PnP-FBS) and
  :class:`lipinverse.solvers.ADMM` (PnP-ADMM), run with ``tol=0`` (no early stop) and
  ``track_objective=False``;
* the time of the iteration's parts called directly: PGD = ``fidelity.grad`` (one forward and
  one adjoint blur) + one denoiser call; ADMM = ``fidelity.prox`` (FFT gram-solve) + one
  denoiser call. The **overhead ratio** is iteration time / parts time (goal <= 1.1);
* the time per iteration of deepinv's own ``deepinv.optim.PGD`` and ``deepinv.optim.ADMM``
  with the same denoiser (wrapped as ``deepinv.optim.PnP``), deepinv's ``L2`` fidelity and
  its FFT blur ``deepinv.physics.BlurFFT`` on the same image, kernel and measurements, with
  the same step (``1/||A||^2``) and starting point (deepinv's ADMM is given a zero initial
  dual variable, as ours); the two reconstructions are compared to check that the same
  iteration ran.

Denoisers: ``filter`` (a cheap, firmly nonexpansive :math:`(I + G)/2` with :math:`G` a
circular 5x5 Gaussian convolution: the worst case for overhead), ``cnn`` (a fixed random
5-layer, 16-channel convolutional network, the cost profile of a learned denoiser).

Usage: ``python benchmarks/solvers.py [--quick]``; writes ``benchmarks/results/solvers.json``
and ``solvers.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lipinverse.functionals import L2Fidelity  # noqa: E402
from lipinverse.solvers import ADMM, PGD  # noqa: E402
from operators import Blur, kernels  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SIZE = 256
DTYPE = torch.float32


class FilterDenoiser(torch.nn.Module):
    r""":math:`D = (I + G)/2`, :math:`G` a circular convolution with a symmetric, nonnegative
    kernel summing to 1 (self-adjoint, :math:`\|G\| = 1`): firmly nonexpansive."""

    averagedness = 0.5

    def __init__(self):
        super().__init__()
        self.register_buffer("k", kernels.gaussian(1.0, 5).to(DTYPE)[None, None])

    def forward(self, x, sigma=None):
        g = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="circular"), self.k)
        return 0.5 * (x + g)

    def lipschitz_bound(self):
        return 1.0


class CNNDenoiser(torch.nn.Module):
    """A fixed random 5-layer CNN (no certificate: timing only)."""

    averagedness = None

    def __init__(self, width: int = 16, depth: int = 5):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        chans = [1] + [width] * (depth - 1) + [1]
        self.convs = torch.nn.ModuleList()
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1).to(DTYPE)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
                conv.bias.zero_()
            self.convs.append(conv)

    def forward(self, x, sigma=None):
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return x - h

    def lipschitz_bound(self):
        return None


def _interleaved_times(fns: dict, repeats: int) -> dict:
    """Time every function ``repeats`` times, in turn (so that the load of a shared machine
    falls on all of them alike); returns the lists of seconds."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _problem():
    from skimage import data

    img = torch.from_numpy(data.camera()[::2, ::2].astype("float32") / 255.0)
    x = img[None, None].to(DTYPE)
    kernel = kernels.gaussian(2.0)
    A = Blur(kernel, in_shape=(1, SIZE, SIZE))
    A = A.to(DTYPE)
    g = torch.Generator().manual_seed(0)
    y = A(x) + 0.01 * torch.randn(x.shape, generator=g, dtype=DTYPE)
    return x, y, A, kernel


def _deepinv_solvers(kernel, tau, n_iter, denoiser):
    import deepinv as dinv

    physics = dinv.physics.BlurFFT(img_size=(1, SIZE, SIZE),
                                   filter=kernel.to(DTYPE)[None, None])
    prior = dinv.optim.PnP(denoiser=denoiser)
    fid = dinv.optim.L2()
    pgd = dinv.optim.PGD(data_fidelity=fid, prior=prior, stepsize=tau, lambda_reg=1.0,
                         g_param=None, max_iter=n_iter, early_stop=False)
    admm = dinv.optim.ADMM(data_fidelity=fid, prior=prior, stepsize=tau, lambda_reg=1.0,
                           g_param=None, beta=1.0, max_iter=n_iter, early_stop=False)
    return physics, pgd, admm


def _measure(D, dname, threads, f, A, x, y, kernel, tau, n_iter, repeats) -> list[dict]:
    physics, dpgd, dadmm = _deepinv_solvers(kernel, tau, n_iter, D)
    # deepinv's blur must be ours (same convention) for the comparison to mean anything
    op_gap = float((physics.A(x) - A(x)).norm() / A(x).norm())
    pgd = PGD(f, D, relaxation=1.0)
    admm = ADMM(f, D, rho=1.0 / tau)
    v = f.Aty.clone()
    # deepinv's ADMM starts its dual variable at A^T y; ours (and Boyd et al.) at 0
    dinit = (f.Aty.clone(), torch.zeros_like(f.Aty))

    def ours(solver):
        return solver.solve(max_iter=n_iter, tol=0.0, track_objective=False).x

    with torch.no_grad():
        for warm in (lambda: ours(pgd), lambda: ours(admm), lambda: dpgd(y, physics),
                     lambda: dadmm(y, physics, init=dinit)):
            warm()
        times = _interleaved_times({
            "parts_pgd": lambda: [D(f.grad(v)) for _ in range(n_iter)],
            "pgd": lambda: ours(pgd),
            "deepinv_pgd": lambda: dpgd(y, physics),
            "parts_admm": lambda: [D(f.prox(v, tau)) for _ in range(n_iter)],
            "admm": lambda: ours(admm),
            "deepinv_admm": lambda: dadmm(y, physics, init=dinit),
        }, repeats)
        best = {k: min(t) for k, t in times.items()}
        med = {k: statistics.median(t) for k, t in times.items()}
        ours_p, ours_a = ours(pgd), ours(admm)
        theirs_p, theirs_a = dpgd(y, physics), dadmm(y, physics, init=dinit)
    rows = []
    for solver, key, mine, theirs in (("PnP-PGD", "pgd", ours_p, theirs_p),
                                      ("PnP-ADMM", "admm", ours_a, theirs_a)):
        t, parts, t_d = best[key], best[f"parts_{key}"], best[f"deepinv_{key}"]
        rows.append({
            "solver": solver, "denoiser": dname, "threads": threads,
            "ms_per_iter": 1e3 * t / n_iter, "parts_ms": 1e3 * parts / n_iter,
            "overhead_ratio": t / parts, "deepinv_ms_per_iter": 1e3 * t_d / n_iter,
            "speedup_vs_deepinv": t_d / t,
            "median_overhead_ratio": med[key] / med[f"parts_{key}"],
            "median_speedup_vs_deepinv": med[f"deepinv_{key}"] / med[key],
            "rel_diff_vs_deepinv": float((mine - theirs).norm() / theirs.norm()),
            "operator_rel_diff": op_gap,
        })
    return rows


def run(quick: bool) -> dict:
    # a 1 ms iteration needs many of them per run for a stable time; the CNN fewer
    n_iters = {"filter": 10 if quick else 60, "cnn": 5 if quick else 10}
    repeats = 3 if quick else 7
    x, y, A, kernel = _problem()
    f = L2Fidelity(A, y)
    tau = 1.0 / f.grad_lipschitz
    rows = []
    load_start = os.getloadavg()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for dname, D in (("filter", FilterDenoiser()), ("cnn", CNNDenoiser())):
            rows += _measure(D, dname, threads, f, A, x, y, kernel, tau, n_iters[dname],
                             repeats)
    import deepinv

    return {
        "config": {"image": [SIZE, SIZE], "image_source": "skimage.data.camera()[::2, ::2]",
                   "blur": "circular Gaussian, sigma 2.0 (13x13)", "noise": 0.01,
                   "dtype": str(DTYPE).replace("torch.", ""), "iterations": n_iters,
                   "repeats": repeats, "statistic": "min over interleaved repeats", "quick": quick,
                   "step": tau},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "deepinv": deepinv.__version__,
                    "load_average_at_start": list(load_start),
                    "load_average_at_end": list(os.getloadavg())},
        "timings": rows,
    }


def write(res: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "solvers.json").write_text(json.dumps(res, indent=2))
    m, c = res["machine"], res["config"]
    lines = [
        "# Solver overhead and deepinv comparison",
        "",
        f"PnP deblurring, {c['image'][0]}x{c['image'][1]} ({c['image_source']}), {c['blur']}, "
        f"{c['dtype']}, iterations per run {c['iterations']}, best of {c['repeats']} "
        "interleaved runs (medians in the JSON); "
        f"{m['cpu_count']} CPU cores shared with other jobs (load average "
        f"{m['load_average_at_start'][0]:.1f} at the start, {m['load_average_at_end'][0]:.1f} "
        "at the end: timings are noisy). torch "
        f"{m['torch']}, deepinv {m['deepinv']}. Written by `benchmarks/solvers.py`.",
        "",
        "Overhead = our time per iteration / time of its parts called directly (PGD: "
        "`fidelity.grad` + denoiser; ADMM: `fidelity.prox` + denoiser). deepinv: its own "
        "`optim.PGD` / `optim.ADMM` with the same denoiser (as `optim.PnP`), `optim.L2` and "
        "`physics.BlurFFT`. Rel. diff: ||ours - deepinv|| / ||deepinv|| after the same number "
        "of iterations (same step, same start).",
        "",
        "| solver | denoiser | threads | ms / iter | parts ms | overhead | deepinv ms / iter | "
        "deepinv / ours | rel. diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["timings"]:
        lines.append(
            f"| {r['solver']} | {r['denoiser']} | {r['threads']} | {r['ms_per_iter']:.2f} | "
            f"{r['parts_ms']:.2f} | {r['overhead_ratio']:.3f} | "
            f"{r['deepinv_ms_per_iter']:.2f} | {r['speedup_vs_deepinv']:.2f} | "
            f"{r['rel_diff_vs_deepinv']:.1e} |")
    worst = max(r["overhead_ratio"] for r in res["timings"])
    slowest = min(r["speedup_vs_deepinv"] for r in res["timings"])
    lines += ["", f"Largest overhead ratio: {worst:.3f} (goal <= 1.1). Smallest deepinv / ours "
              f"time ratio: {slowest:.2f} (>= 1 means ours is at least as fast).", ""]
    (RESULTS / "solvers.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and repeats")
    args = parser.parse_args(argv)
    write(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
