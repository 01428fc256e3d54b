r"""Time to denoise one 256x256 image with the ridge priors (issue 16's row).

The camera crop at sigma = 25/255, seeded noise; for ``crr`` and ``wcrr`` (or the priors and
checkpoints given by ``--priors``): the default ``denoise`` (L-BFGS in the Fourier metric,
from :math:`P^{-1}y`, to a certified relative accuracy of 1e-3) against the former defaults
(Anderson to 1e-3, FISTA to 1e-4), the solver that the published WCRR-NN code denoises with,
once with our gradient and once with the gradient evaluated as that code evaluates it (both
re-implemented here from its description, on our model: :func:`published_agd`,
:func:`published_gradient`), and a reference minimiser (Anderson to 1e-6); best of
``--repeats`` runs, in one process. Reported: iterations, gradients (counted: an L-BFGS
iteration may take more than one), seconds, PSNR, its gap to the reference and the relative
distance to the reference.

The row "with unit first trials" is the default solver with the first trial of every line
search at 1 (``ridge_solve.LINE_MIN_FRACTION`` infinite), as it was before 2026-12-05.

Usage: ``OMP_NUM_THREADS=2 python benchmarks/denoise_speed.py``; writes
``benchmarks/results/denoise_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import psnr, write  # noqa: E402
from lipinverse import pretrained  # noqa: E402
from lipinverse.io import builtin_image, center_crop, to_tensor  # noqa: E402
from lipinverse.regularizers import ridge_solve  # noqa: E402

PUBLISHED = "WCRR-NN's published solver (FISTA with restart, change 1e-4)"
PUBLISHED_CODE = "WCRR-NN's published code path (that solver and its gradient evaluation)"
UNIT = "the default with unit first trials (as before 2026-12-05 15:00 UTC)"
SETTINGS = {"default (L-BFGS in the Fourier metric, tol 1e-3)": dict(method="lbfgs", tol=1e-3),
            UNIT: dict(method="lbfgs", tol=1e-3, unit_first_trials=True),
            "former default (Anderson, tol 1e-3)": dict(method="anderson", tol=1e-3),
            "first default (FISTA, tol 1e-4)": dict(method="fista", tol=1e-4),
            PUBLISHED: dict(reference_gradient=False),
            PUBLISHED_CODE: dict(reference_gradient=True)}


@torch.no_grad()
def published_agd(model, y: torch.Tensor, sigma: float, tol: float = 1e-4,
                  max_iter: int = 500, reference_gradient: bool = False
                  ) -> tuple[torch.Tensor, int]:
    r"""The denoising solver of the published WCRR-NN code, as its paper and code describe
    it, on one of our ridge models: accelerated gradient (FISTA momentum) on
    :math:`\tfrac12\|x - y\|^2 + R_\sigma(x)` from :math:`y`, step :math:`1/(1 + \mu)`
    with :math:`\mu` the upper curvature bound of :math:`R_\sigma`, the momentum restarted
    (:math:`t = 1`, :math:`z = x`) where :math:`\nabla F(z)^\top(x_{k+1} - x_k) > 0`
    (O'Donoghue and Candes 2015), stopped once :math:`\|x_{k+1} - x_k\| / \|x_{k+1}\|
    < 10^{-4}`. Its stopping test certifies nothing. With ``reference_gradient``, the
    gradient of :math:`R_\sigma` is :func:`published_gradient` (as the published code
    computes it), else ours (``model.grad_scaled``). Returns the image and the gradients."""
    sc = model.scalings(sigma, y.shape[0], y.dtype, y.device)
    grad = (published_gradient(model, sc) if reference_gradient
            else lambda z: model.grad_scaled(z, sc))
    step = 1.0 / (1.0 + model.curvature_bounds(sigma)[1])
    x, z, t = y.clone(), y.clone(), 1.0
    for k in range(1, max_iter + 1):
        g = (z - y) + grad(z)
        x_old, x = x, z - step * g
        t_old, t = t, 0.5 * (1 + (1 + 4 * t * t) ** 0.5)
        z = x + (t_old - 1) / t * (x - x_old)
        if float((g * (x - x_old)).sum()) > 0:   # gradient restart
            t, z = 1.0, x.clone()
        if k > 1 and float((x - x_old).norm() / x.norm()) < tol:
            return x, k
    return x, max_iter


def _lerp_spline(coef: torch.Tensor, lo: float, spacing: float, u: torch.Tensor):
    """A linear spline (knot values ``coef`` of shape ``(C, K)`` from ``lo``, extended
    linearly beyond its end intervals) at ``u`` ``(B, C, H, W)``, evaluated as the published
    code evaluates its splines: the clamped input floored to an ``int64`` knot index plus a
    per-channel offset, the two neighbouring knot values gathered from the flat table and
    interpolated by the fraction (measured from the unclamped input)."""
    K = coef.shape[1]
    step = torch.floor(((u.clamp(lo, lo + (K - 2) * spacing)) - lo) / spacing)
    frac = (u - lo) / spacing - step
    idx = (torch.arange(coef.shape[0]).view(1, -1, 1, 1) * K + step).long()
    flat = coef.reshape(-1)
    return flat[idx + 1] * frac + flat[idx] * (1 - frac)


@torch.no_grad()
def published_gradient(model, sc):
    r""":math:`z \mapsto \nabla R_\sigma(z)` of one of our ridge models computed the way the
    published WCRR-NN code computes its gradient (the same function, checked against
    ``model.grad_scaled`` in :func:`run`): the chain of the filters' convolutions (not
    composed into one), :func:`_lerp_spline` lookups for the convex spline and for the
    concave part (on the scaled responses, then scaled back), and the chain of transposed
    convolutions. Our spline tables, composed kernels and ``int32`` lookups are not used."""
    lin, s = model.W.linear, sc.s
    convs = list(lin.convs)
    ph, pw = lin.total_pad
    psi = model.convex_spline
    c_psi = psi.projected_coefficients()
    conc = model.concave_part
    first = model.num_convex_only
    ch = None if conc is None else conc.spline.projected_coefficients()

    def grad(x: torch.Tensor) -> torch.Tensor:
        z = F.pad(x * s, (pw, pw, ph, ph))
        for c in convs:
            z = c._conv(z, pad=False)
        a = sc.lam * _lerp_spline(c_psi, psi.knot_range[0], psi.spacing, sc.mu * z)
        if conc is not None:
            t = sc.nu * z[:, first:]
            d = _lerp_spline(ch, 0.0, conc.spline.spacing, t.abs().clamp(max=conc.range)
                             ) - ch[:, :1].view(1, -1, 1, 1)
            a[:, first:] -= sc.kappa * torch.sign(t) * d.clamp(min=0.0)
        sizes = [tuple(z.shape[-2:])]
        for c in reversed(convs):
            sizes.append((sizes[-1][0] + 2 * c.pad[0], sizes[-1][1] + 2 * c.pad[1]))
            a = c._conv_t(a, sizes[-1], pad=False)
        return a[..., ph:a.shape[-2] - ph, pw:a.shape[-1] - pw] * s

    return grad


def _load(spec: str):
    """``(label, model)``: a shipped prior by name, or ``LABEL=STEM`` / ``STEM`` a checkpoint
    (e.g. a run's ``final``)."""
    if spec in pretrained.available():
        return spec, pretrained.load(spec)
    from lipinverse.training import load_checkpoint
    label, _, stem = spec.rpartition("=")
    return label or stem, load_checkpoint(stem)


def run(repeats: int, priors=("crr", "wcrr")) -> dict:
    x = to_tensor(center_crop(builtin_image("camera"), 256))
    g = torch.Generator().manual_seed(0)
    sigma = 25 / 255
    y = x + sigma * torch.randn(x.shape, generator=g)
    rows = []
    for spec in priors:
        name, model = _load(spec)
        with torch.no_grad():
            ref, _ = model.solve(y, 1.0, sigma, tol=1e-6, max_iter=5000, method="anderson")
            sc = model.scalings(sigma, 1, y.dtype, y.device)
            err = float((published_gradient(model, sc)(y) - model.grad_scaled(y, sc)).norm()
                        / model.grad_scaled(y, sc).norm())
            if not err < 1e-4:  # the reference path must compute the same gradient
                raise RuntimeError(f"published_gradient differs from {name}'s: {err:.2e}")
            for label, kw in SETTINGS.items():
                best = float("inf")
                def solve(kw=kw, model=model):
                    if "reference_gradient" in kw:
                        return published_agd(model, y, sigma, **kw)
                    kw = dict(kw)
                    fraction = ridge_solve.LINE_MIN_FRACTION
                    if kw.pop("unit_first_trials", False):
                        ridge_solve.LINE_MIN_FRACTION = float("inf")  # first trial: 1
                    try:
                        out, info = model.solve(y, 1.0, sigma, max_iter=1000, **kw)
                    finally:
                        ridge_solve.LINE_MIN_FRACTION = fraction
                    return out, int(info.iterations.max())

                for _ in range(repeats):
                    t0 = time.perf_counter()
                    out, its = solve()
                    best = min(best, time.perf_counter() - t0)
                if "reference_gradient" in kw:
                    grads = its   # one gradient per iteration
                else:
                    calls = []  # one more, untimed solve that counts the gradients
                    real = model.grad_scaled
                    model.grad_scaled = (lambda z, sc, real=real, calls=calls:
                                         calls.append(1) or real(z, sc))
                    try:
                        solve()
                    finally:
                        del model.grad_scaled
                    grads = len(calls)
                rows.append({"prior": name, "setting": label, "iterations": its,
                             "gradients": grads, "seconds": round(best, 3),
                             "psnr": round(psnr(out, x), 3),
                             "gap_db": round(psnr(out, x) - psnr(ref, x), 4),
                             "distance": float((out - ref).norm() / ref.norm())})
                print(rows[-1], flush=True)
    return {"image": "camera 256x256, sigma 25/255", "threads": torch.get_num_threads(),
            "repeats": repeats, "rows": rows}


def markdown(res: dict) -> str:
    out = ["# Denoising time, one 256x256 image\n",
           f"{res['image']}; {res['threads']} threads, best of {res['repeats']}; "
           "`python benchmarks/denoise_speed.py`. Gap: PSNR minus that of the minimiser "
           "(Anderson to 1e-6); distance: relative distance to it. The two WCRR-NN rows are "
           "re-implemented from the published code's description and run on our model "
           "(`published_agd`, `published_gradient`; the published code itself is not in this "
           "environment): the first with our gradient, the second with the gradient evaluated "
           "as that code evaluates it (the same function, checked to 1e-4).\n",
           "| prior | setting | iterations | gradients | seconds | PSNR | gap dB | distance |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r['prior']} | {r['setting']} | {r.get('iterations', '-')} | "
            f"{r['gradients']} | {r['seconds']:.2f} | "
            f"{r['psnr']:.2f} | {r['gap_db']:+.4f} | {r.get('distance', float('nan')):.1e} |"
            for r in res["rows"]]
    default = next(iter(SETTINGS))
    for prior in dict.fromkeys(r["prior"] for r in res["rows"]):
        secs = {r["setting"]: r["seconds"] for r in res["rows"] if r["prior"] == prior}
        for label, what in ((PUBLISHED, "the published WCRR-NN solver on our gradient"),
                            (PUBLISHED_CODE, "the published WCRR-NN code path")):
            if label in secs and default in secs:
                out.append(f"\n`{prior}`: the default is {secs[label] / secs[default]:.2f}x "
                           f"faster than {what} (same model).")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--priors", nargs="+", default=["crr", "wcrr"],
                    help="shipped priors, or checkpoints as LABEL=STEM (default: crr wcrr)")
    args = ap.parse_args(argv)
    res = run(args.repeats, tuple(args.priors))
    write("denoise_speed", res, markdown)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
