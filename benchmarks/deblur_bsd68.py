r"""Non-blind deblurring on BSD68: 256x256 centre crops, the 8 Levin kernels, circular boundary.

``y = k * x + n`` with ``Blur(k, "circular")`` and Gaussian noise of standard deviation
2.55/255 or 7.65/255, seeded per (image, kernel, noise level). Methods:

* ``crr``, ``wcrr``: :math:`\min_x \tfrac12\|Ax-y\|^2 + \lambda R_{c\sigma}(x)` by the library's
  ``LBFGS`` in the Fourier metric, as ``lipinverse deblur`` (safeguarded: certified from ‖A‖
  and the certified Lipschitz constant of ∇R); :math:`R_{c\sigma}` is the prior at the
  conditioning level ``c`` times the noise σ (``deblur_prior``), λ = 1 unless ``--lams`` tunes
  it with ``c`` on a 2-D grid;
* ``lipdenoiser``: PnP with the certified nonexpansive denoiser in its convergent scheme;
* ``tv``: ``PGD`` (FISTA) with the TV prox (certified by a duality gap);
* ``wiener``, ``rl``: scikit-image Wiener-Hunt and Richardson-Lucy;
* ``dncnn``: PnP-HQS with the unconstrained DnCNN (no convergence guarantee).

Every strength (λ, denoiser σ, Wiener balance, RL iterations) is tuned per noise level on
set12 crops (never on BSD68). Writes ``benchmarks/results/deblur_bsd68.{json,md}``.

A method may also be given as ``NAME=STEM``, a ridge prior of class ``NAME`` loaded from the
checkpoint ``STEM`` (e.g. a training run's ``final``) instead of the shipped one; its row is
``NAME [STEM's last two parts]``.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/deblur_bsd68.py --quick 4
    OMP_NUM_THREADS=1 python benchmarks/deblur_bsd68.py --merge --methods \
        crr=lipinverse/pretrained/runs/crr/final ...
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from baselines import load_dncnn, pnp_hqs, richardson_lucy, wiener
from common import (
    DATA,
    Record,
    add_noise,
    fmt,
    load_images,
    psnr,
    require_data,
    rewrite,
    save,
    tune,
)

from operators import Blur

NOISES = (2.55, 7.65)
METHODS = ("crr", "wcrr", "lipdenoiser", "tv", "wiener", "rl", "dncnn")
GUARANTEE = {
    "crr": "L-BFGS (Fourier metric) on a certified convex smooth objective",
    "wcrr": "L-BFGS (Fourier metric) on a certified weakly convex smooth objective",
    "lipdenoiser": "PnP-FBS, Krasnoselskii-Mann relaxed, certified nonexpansive denoiser",
    "tv": "PGD with certified TV prox: converges to the minimiser",
    "wiener": "closed form",
    "rl": "none (fixed iteration count, early stopping is the regulariser)",
    "dncnn": "none (unconstrained denoiser in PnP-HQS)",
}


def load_kernels(root: Path) -> list[np.ndarray]:
    d = np.load(require_data(root / "kernels") / "levin8.npz")
    return [np.asarray(d[f"arr_{i}"], dtype=np.float64) for i in range(8)]


def make_problem(x, kernel, noise, seed):
    A = Blur(torch.from_numpy(kernel), "circular", in_shape=tuple(x.shape[1:]))
    return A, add_noise(A(x), noise / 255, seed)


# ----------------------------------------------------------------- solvers per method
class Methods:
    """Runs each method on one problem ``(A, y, kernel)`` with a strength parameter."""

    def __init__(self, max_iter: int, tol: float, paths: dict | None = None):
        self.max_iter, self.tol = max_iter, tol
        self.paths = paths or {}  # row name -> checkpoint stem
        self._models = {}

    def model(self, name):
        if name not in self._models:
            if name in self.paths:
                from lipinverse.training import load_checkpoint

                model = load_checkpoint(self.paths[name]).float().eval()
                for q in model.parameters():
                    q.requires_grad_(False)
                self._models[name] = model
            elif name == "dncnn":
                self._models[name] = load_dncnn()
            elif name == "tv":
                from lipinverse.regularizers import TV

                self._models[name] = TV(tol=1e-3, max_iter=5000)
            else:
                from lipinverse import pretrained

                self._models[name] = pretrained.load(name)
        return self._models[name]

    def run(self, name, A, y, kernel, param, noise):
        """``(x, iterations)``."""
        if name == "wiener":
            x = wiener(y[0, 0].double().numpy(), kernel, param)
            return torch.from_numpy(x)[None, None].to(y.dtype), None
        if name == "rl":
            x = richardson_lucy(y[0, 0].double().numpy(), kernel, int(param))
            return torch.from_numpy(x)[None, None].to(y.dtype), int(param)
        if name == "dncnn":
            net = self.model("dncnn")
            with torch.no_grad():
                return pnp_hqs(A, y, lambda v, s: net(v.float(), s).to(v.dtype), noise / 255,
                               param)
        return self._convergent(name, A, y, param, noise)

    def _convergent(self, name, A, y, param, noise):
        from lipinverse.functionals import L2Fidelity
        from lipinverse.pretrained import deblur_prior
        from lipinverse.solvers import LBFGS, PGD

        f = L2Fidelity(A, y)
        model = self.model(name)
        if name == "tv":
            solver = PGD(f, model, lam=param * noise / 255, accelerate=True)
        elif hasattr(model, "at_sigma"):
            # param: the conditioning factor, or (factor, weight) from a --lams 2-D grid
            factor, weight = param if isinstance(param, tuple) else (param, None)
            prior, lam = deblur_prior(model, noise / 255, factor)
            lam = lam if weight is None else weight
            # the solver `lipinverse deblur` runs: L-BFGS in the Fourier metric
            solver = LBFGS(f, prior, lam=lam)
        else:
            solver = PGD(f, model, sigma=param * noise / 255)
        with torch.no_grad():
            res = solver.solve(x0=A.adjoint(y), max_iter=self.max_iter, tol=self.tol,
                               track_objective=False)
        self.last_guarantee = str(getattr(res, "guarantee", ""))
        return res.x, int(torch.as_tensor(res.iterations).max())


GRIDS = {
    "wiener": [0.003, 0.01, 0.03, 0.1],
    "rl": [10, 20, 40, 80],
    "tv": [0.03, 0.06, 0.12, 0.25],
    "dncnn": [0.1, 0.3, 1.0],  # lambda of PnP-HQS
    # crr / wcrr: conditioning level of R as a multiple of the noise (see deblur_prior)
    "crr": [1.0, 1.5, 2.2, 3.2],
    "wcrr": [1.0, 1.5, 2.2, 3.2],
    "lipdenoiser": [1.0, 2.0, 4.0],  # denoiser sigma as a multiple of the noise
}


def parse_method(spec: str) -> tuple[str, str, str | None]:
    """``(row name, method, checkpoint stem or None)`` of ``NAME`` or ``NAME=STEM``."""
    base, _, path = spec.partition("=")
    if base not in METHODS:
        raise SystemExit(f"deblur_bsd68: unknown method {base!r}; expected one of {METHODS}")
    if path and base not in ("crr", "wcrr"):
        raise SystemExit(f"deblur_bsd68: NAME=STEM is for the ridge priors crr / wcrr, got "
                         f"{spec!r}")
    if not path:
        return base, base, None
    return f"{base} [{'/'.join(Path(path).parts[-2:])}]", base, path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--rewrite", action="store_true",
                   help="only rewrite the markdown table from the saved JSON results")
    p.add_argument("--merge", action="store_true",
                   help="add these methods to the saved results of the same setup")
    p.add_argument("--quick", type=int, nargs="?", const=4, default=None,
                   help="use N evenly spaced images of the 68 (every 68//N-th; 4 if no N)")
    p.add_argument("--kernels", nargs="+", type=int, default=list(range(8)))
    p.add_argument("--noises", nargs="+", type=float, default=list(NOISES))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--val", type=int, default=2, help="set12 crops used for tuning")
    p.add_argument("--val-kernels", nargs="+", type=int, default=[1, 4])
    p.add_argument("--grid", nargs="+", type=float, default=None,
                   help="override the tuning grid of the methods of this run")
    p.add_argument("--lams", nargs="+", type=float, default=None,
                   help="crr / wcrr: tune the weight lambda of R too, over these values "
                        "(a 2-D grid with the conditioning factor; default lambda = 1)")
    args = p.parse_args(argv)
    if args.rewrite:
        return rewrite("deblur_bsd68", markdown)
    root = require_data(Path(args.data))
    step = max(1, 68 // args.quick) if args.quick else 1
    images = load_images(root / "bsd68", limit=args.quick, step=step, crop=256,
                         dtype=torch.float32)
    val = load_images(root / "set12", limit=args.val, step=3, crop=256, dtype=torch.float32)
    kernels = load_kernels(root)
    rows = [parse_method(m) for m in args.methods]
    methods = Methods(args.max_iter, args.tol, {m: path for m, _, path in rows if path})
    rec, meta = Record(), {}
    for m, base, path in rows:
        meta[m] = {"guarantee": GUARANTEE[base], "param": {}}
        if path:
            meta[m]["weights"] = path
        grid = args.grid or GRIDS[base]
        if args.lams and base in ("crr", "wcrr"):
            grid = [(f, lam) for f in grid for lam in args.lams]
        for noise in args.noises:
            t0 = time.perf_counter()
            probs = []
            for i, (_, x) in enumerate(val):
                for k in args.val_kernels:
                    A, y = make_problem(x, kernels[k], noise, 99 + 10 * i + k)
                    probs.append((x, y, (A, kernels[k])))
            best, vpsnr = tune(lambda y, q, e, m=m, noise=noise:
                               methods.run(m, e[0], y, e[1], q, noise)[0],
                               grid, probs)
            meta[m]["param"][str(noise)] = {"value": best, "set12_psnr": round(vpsnr, 3),
                                            "tune_s": round(time.perf_counter() - t0, 1)}
            for i, (_, x) in enumerate(images):
                for k in args.kernels:
                    A, y = make_problem(x, kernels[k], noise, 100000 + 1000 * i + 10 * k
                                        + int(noise * 100))
                    t = time.perf_counter()
                    xh, it = methods.run(m, A, y, kernels[k], best, noise)
                    rec.add(m, str(noise), psnr(xh, x), time.perf_counter() - t, it)
            print(m, noise, best, rec.summary()[m][str(noise)], flush=True)
        if hasattr(methods, "last_guarantee") and base in ("crr", "wcrr", "lipdenoiser", "tv"):
            meta[m]["solver_guarantee"] = methods.last_guarantee
    payload = {"task": "deblur_bsd68", "noises_x255": args.noises, "kernels": args.kernels,
               "images": [n for n, _ in images], "n_images": len(images), "crop": 256,
               "boundary": "circular", "max_iter": args.max_iter, "tol": args.tol,
               "tuning": f"set12 crops {[n for n, _ in val]} x kernels {args.val_kernels}",
               "results": rec.summary(), "methods": meta}
    save("deblur_bsd68", payload, markdown,
         ("images", "kernels", "noises_x255", "max_iter", "tol") if args.merge else None)


def _guarantee(meta) -> str:
    """The solver's own guarantee (its first clause) where recorded, else the static text."""
    g = meta.get("solver_guarantee")
    if not g:
        return meta["guarantee"]
    if g.startswith("none"):
        return g.split(" => ")[0].replace("|", "/")
    return g.split(":")[0] + ": conditions certified (see JSON)"


def markdown(pl) -> str:
    nz = [str(n) for n in pl["noises_x255"]]
    subset = ("all 68 images" if pl["n_images"] == 68 else
              f"{pl['n_images']} of 68 images ({', '.join(pl['images'])})")
    res = pl["results"]
    tv = np.mean([res["tv"][n]["psnr"] for n in nz]) if "tv" in res else math.nan
    lines = ["# Deblurring BSD68 (256×256 centre crops, circular boundary)", "",
             f"PSNR (dB, clipped to [0, 1]) on {subset} × Levin kernels {pl['kernels']}; "
             f"noise σ = {', '.join(nz)} (/255), seeded. Iterative methods stop at relative "
             f"change < {pl['tol']} or {pl['max_iter']} iterations. Strengths tuned on "
             f"{pl['tuning']}. Time per image on a shared 2-core CPU.", "",
             "| method | " + " | ".join(f"σ={n}" for n in nz) + " | mean | vs TV | s / image | "
             "iterations | guarantee |",
             "|---|" + "---|" * len(nz) + "---|---|---|---|---|"]
    for m, d in res.items():
        mean = np.mean([d[n]["psnr"] for n in nz])
        t = np.mean([d[n]["time_s"] for n in nz])
        its = [d[n]["iterations"] for n in nz if d[n]["iterations"] is not None]
        lines.append(f"| {m} | " + " | ".join(fmt(d[n]["psnr"]) for n in nz)
                     + f" | {mean:.2f} | {mean - tv:+.2f} | {t:.2f} | "
                     f"{'/'.join(f'{i:.0f}' for i in its) or '–'} | "
                     f"{_guarantee(pl['methods'][m])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
