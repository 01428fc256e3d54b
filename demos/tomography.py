r"""Sparse-view CT: filtered back-projection against TV and a learned prior in convergent solvers.

The problem: a phantom :math:`x` (the Shepp-Logan head, 128x128 by default) is measured
by a parallel-beam Radon transform :math:`A` at only 60 angles over :math:`[0, \pi)` (a
third of what a full scan of this size needs), with Gaussian noise

.. math::

    y = A x + \varepsilon, \qquad
    \varepsilon \sim \mathcal N(0, \sigma^2 I), \quad \sigma = \eta \max|Ax|,

(:math:`\eta` = ``noise``, 1 % by default). Three reconstructions:

* filtered back-projection ``A.fbp(y)`` (ramp filter): streaks and noise;
* total variation, :math:`\min_x \tfrac12\|\bar A x - \bar y\|^2 + \lambda\,\mathrm{TV}(x)`
  by FISTA, with :math:`\bar A = A/\|A\|` (``Radon(..., normalize=True)``: the raw
  transform divided by its certified norm, so the step :math:`1/L = 1` is certified too)
  and :math:`\lambda` the MAP scaling :math:`10\,\bar\sigma^2`;
* the shipped convex ridge regulariser ``crr`` (when ``lipinverse.pretrained`` ships it),
  by safeguarded L-BFGS (``solvers.LBFGS``, as ``lipinverse ct``) at the same
  normalisation. It was trained on
  natural-image patches, and its CT strength (``pretrained.ct_prior``) was tuned on
  natural images: on the piecewise-constant Shepp-Logan phantom (TV's own model) TV wins
  (34.88 dB against 33.93 for ``crr`` and 27.37 for FBP, 128x128, 60 angles, 1 %), on
  BSD68 crops ``crr`` does (25.49 against 24.87 for TV and 20.21 for FBP):
  ``benchmarks/real_data.py``.

Both iterative solvers start from the FBP. The script prints PSNR / SSIM, iterations, time
and each solver's convergence guarantee, and writes ``tomography.png`` (truth, FBP, TV,
learned, convergence curves). About half a minute on a laptop CPU.

Usage::

    python demos/tomography.py                        # Shepp-Logan 128x128, 60 angles, 1 %
    python demos/tomography.py --phantom ellipses --angles 30 --noise 0.02 --out ct.png
    python demos/tomography.py --device cuda          # same code on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from lipinverse.allocator import reuse_buffers
from lipinverse.functionals import L2Fidelity
from lipinverse.io import save_figure
from lipinverse.metrics import image_metrics
from lipinverse.pretrained import load_if_available
from operators import Radon
from operators.phantoms import random_ellipses, shepp_logan

#: TV strength relative to the noise variance of the normalised problem (the MAP scaling).
#: Picked on Shepp-Logan 128x128, 60 angles, 1 % noise, 200 FISTA iterations: factors
#: 2 / 5 / 10 / 20 gave 30.7 / 32.9 / 34.5 / 34.0 dB (FBP: 26.2 dB).
TV_LAM_PER_SIGMA2 = 10.0



def _solvers():
    """``(PGD, LBFGS, TV)`` from lipinverse."""
    from lipinverse.regularizers import TV
    from lipinverse.solvers import LBFGS, PGD

    return PGD, LBFGS, TV


def main(size: int = 128, n_angles: int = 60, max_iter: int = 200,
         out: str | None = "tomography.png", noise: float = 0.01, phantom: str = "shepp-logan",
         seed: int = 0, tol: float = 1e-5, device: str = "cpu", progress: bool = True) -> dict:
    """Run the demo; returns the measured figures as a dict (for tests and scripts).

    Parameters
    ----------
    size : int
        Side of the phantom.
    n_angles : int
        Number of projection angles, equispaced over :math:`[0, \\pi)`.
    max_iter, tol : int, float
        Iteration cap and relative-change tolerance of both solvers.
    out : str or None
        Where to write the figure; ``None`` writes nothing.
    noise : float
        Noise standard deviation relative to the largest value of the clean sinogram.
    phantom : {"shepp-logan", "ellipses"}
        The Shepp-Logan head or a seeded random-ellipse phantom (``seed``).
    seed : int
        Seed of the noise (and of the ellipse phantom).
    device : str
        ``"cpu"`` or ``"cuda"``.
    progress : bool
        Show tqdm progress bars.
    """
    if noise < 0:
        raise ValueError(f"tomography demo: expected noise >= 0, got {noise}")
    if phantom not in ("shepp-logan", "ellipses"):
        raise ValueError(f"tomography demo: expected phantom 'shepp-logan' or 'ellipses', "
                         f"got {phantom!r}")
    PGD, LBFGS, TV = _solvers()
    dev = torch.device(device)
    truth = (shepp_logan(size) if phantom == "shepp-logan"
             else random_ellipses(size, seed=seed)).to(device=dev, dtype=torch.float32)

    # -- the problem: y = A x + noise (noise drawn on the CPU: identical on every device)
    A = Radon(size, n_angles, normalize=True).to(dev)  # ||A|| <= 1, certified
    clean = A(truth)
    sigma_bar = noise * float(clean.abs().max())
    g = torch.Generator().manual_seed(seed)
    y = clean + (sigma_bar * torch.randn(clean.shape, generator=g)).to(dev)
    norm = 1.0 / A.scale  # the certified norm of the raw transform, for the report
    f = L2Fidelity(A, y)

    # -- filtered back-projection
    t0 = time.perf_counter()
    x_fbp = A.fbp(y)
    rows = {"FBP": image_metrics(x_fbp, truth) + (0, time.perf_counter() - t0, "-")}
    results = {}

    # -- TV by FISTA, from the FBP
    t0 = time.perf_counter()
    lam = max(TV_LAM_PER_SIGMA2 * sigma_bar**2, 1e-8)
    res = PGD(f, TV(), lam=lam, accelerate=True).solve(
        x0=x_fbp, max_iter=max_iter, tol=tol, progress=progress, track_objective=False)
    rows["TV"] = image_metrics(res.x, truth) + (int(torch.as_tensor(res.iterations).max()),
                                           time.perf_counter() - t0, res.guarantee)
    results["TV"] = res

    # -- the shipped learned convex prior, in its convergent gradient scheme
    model, why = load_if_available("crr", dev)
    if model is None:
        print(f"NOTE: the shipped learned prior is not available in this installation "
              f"({why}); showing FBP and TV only.")
    else:
        from lipinverse.pretrained import ct_prior

        prior, lam = ct_prior(model, sigma_bar)
        t0 = time.perf_counter()
        with torch.no_grad():
            res = LBFGS(f, prior, lam=lam).solve(  # as `lipinverse ct` runs it
                x0=x_fbp, max_iter=max_iter, tol=tol, progress=progress,
                track_objective=False)
        rows["learned (crr)"] = image_metrics(res.x, truth) + (
            int(torch.as_tensor(res.iterations).max()), time.perf_counter() - t0, res.guarantee)
        results["learned (crr)"] = res

    # -- report
    print(f"\nSparse-view CT: {phantom} {size}x{size}, {n_angles} angles, noise {noise} "
          f"(certified ||A|| <= {norm:.4g})")
    print(f"{'':<15} {'PSNR (dB)':>9} {'SSIM':>7} {'iters':>6} {'time (s)':>9}")
    for name, (p, s, it, sec, _) in rows.items():
        print(f"{name:<15} {p:9.2f} {s:7.4f} {int(it):6d} {sec:9.2f}")
    for name, (*_, guarantee) in rows.items():
        if name != "FBP":
            print(f"guarantee [{name}]: {' '.join(str(guarantee).split())}")
    if out:
        panels = [("ground truth", truth), (f"FBP {rows['FBP'][0]:.2f} dB", x_fbp)]
        panels += [(f"{n} {rows[n][0]:.2f} dB", r.x) for n, r in results.items()]
        save_figure(out, panels, curves=results,
                    title=f"sparse-view CT, {n_angles} angles, noise {noise}")
        print(f"wrote {out}")
    return {name: {"psnr": p, "ssim": s, "iterations": int(it), "seconds": sec,
                   "guarantee": str(gu)} for name, (p, s, it, sec, gu) in rows.items()}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phantom", default="shepp-logan", choices=["shepp-logan", "ellipses"],
                   help="test object (default: shepp-logan)")
    p.add_argument("--size", type=int, default=128, help="side of the phantom (128)")
    p.add_argument("--angles", type=int, default=60, help="number of angles over [0, pi) (60)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="noise std relative to the sinogram's maximum (0.01)")
    p.add_argument("--max-iter", type=int, default=200, help="solver iteration cap (200)")
    p.add_argument("--tol", type=float, default=1e-5, help="relative-change tolerance (1e-5)")
    p.add_argument("--seed", type=int, default=0, help="noise / phantom seed (0)")
    p.add_argument("--out", default="tomography.png", help="figure file (tomography.png)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    return p.parse_args(argv)


if __name__ == "__main__":
    a = _parse(sys.argv[1:])
    reuse_buffers()  # freed tensor buffers reused: about 2x faster on the CPU
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("tomography.py: error: --device cuda requested but CUDA is not available")
    try:
        main(size=a.size, n_angles=a.angles, max_iter=a.max_iter, out=a.out, noise=a.noise,
             phantom=a.phantom, seed=a.seed, tol=a.tol, device=a.device)
    except (ValueError, ImportError) as err:
        sys.exit(f"tomography.py: error: {' '.join(str(err).split())}")
