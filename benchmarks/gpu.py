r"""CUDA timings of the shipped ridge priors (run where a GPU is lent; CI never runs it).

Rows (float32, one 256x256 crop of the built-in ``camera`` image unless said):

- ``denoise``: :math:`\arg\min_x \tfrac12\|x-y\|^2 + R_\sigma(x)` at sigma = 15 and 25/255 by
  the library default (Anderson, certified relative accuracy 1e-3), ``crr`` and ``wcrr``;
- ``deblur``: accelerated PGD (gradient scheme) to tol 1e-4, Gaussian blur 2 px, noise 0.01,
  ``crr`` and ``wcrr`` at their deblurring operating points;
- ``deblur 2048``: the same with ``crr`` and TV on a 2048x2048 image (tiled camera): seconds
  and peak CUDA memory (``torch.cuda.max_memory_allocated``).

Each time is the best of ``--repeats`` after one warm-up, with ``torch.cuda.synchronize``.
Usage: ``python benchmarks/gpu.py [--repeats 3] [--out FILE.json]``: the figures go to
``--out`` (default ``benchmarks/results/gpu.json``), the table beside it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lipinverse import pretrained
from lipinverse.functionals import L2Fidelity
from lipinverse.io import builtin_image, center_crop, to_tensor
from lipinverse.metrics import psnr
from lipinverse.regularizers import TV
from lipinverse.solvers import PGD
from operators import Blur, kernels


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int):
    fn()
    sync()
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "gpu.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device (torch.cuda.is_available() is False)")
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    x = to_tensor(center_crop(builtin_image("camera"), 256)).to(dev)
    rows = []
    models = {name: pretrained.load(name, device=dev) for name in ("crr", "wcrr")}
    for name, model in models.items():
        for s in (15, 25):
            sigma = s / 255
            y = x + sigma * torch.randn(x.shape, generator=g).to(dev)
            sec, d = timed(lambda m=model, y=y, s=sigma: m.denoise(y, s), args.repeats)
            rows.append({"task": f"denoise 256 s{s}", "prior": name, "seconds": sec,
                         "psnr": float(psnr(d, x))})
    A = Blur(kernels.gaussian(2.0)).to(dev)
    y = A(x) + 0.01 * torch.randn(x.shape, generator=g).to(dev)
    for name, model in models.items():
        R, lam = pretrained.deblur_prior(model, noise=0.01)

        def solve(R=R, lam=lam):
            with torch.no_grad():
                return PGD(L2Fidelity(A, y), R, lam=lam, scheme="grad",
                           accelerate=True).solve(max_iter=300, tol=1e-4)

        sec, res = timed(solve, args.repeats)
        rows.append({"task": "deblur 256", "prior": name, "seconds": sec,
                     "iterations": int(res.iterations), "psnr": float(psnr(res.x, x))})
    big = to_tensor(center_crop(builtin_image("camera"), 512)).to(dev).repeat(1, 1, 4, 4)
    yb = A(big) + 0.01 * torch.randn(big.shape, generator=g).to(dev)
    for name in ("crr", "tv"):
        if name == "tv":
            R, lam, kw = TV(), 5 * 0.01 ** 2, {}
        else:
            R, lam = pretrained.deblur_prior(models["crr"], noise=0.01)
            kw = {"scheme": "grad"}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with torch.no_grad():
            res = PGD(L2Fidelity(A, yb), R, lam=lam, accelerate=True, **kw).solve(
                max_iter=100, tol=1e-4)
        torch.cuda.synchronize()
        rows.append({"task": "deblur 2048 (100 it max)", "prior": name,
                     "seconds": time.perf_counter() - t0, "iterations": int(res.iterations),
                     "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
                     "psnr": float(psnr(res.x, big))})
    payload = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "repeats": args.repeats, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    args.out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(payload: dict) -> str:
    """The results table of a ``gpu.json`` payload."""
    lines = ["## CUDA timings of the shipped priors\n",
             f"`python benchmarks/gpu.py --repeats {payload['repeats']}` on "
             f"{payload['device']}, torch {payload['torch']}, {payload.get('date', '')}: "
             "float32, best of the repeats after a warm-up (2048 rows: one run, at most 100 "
             "iterations). Denoising: Anderson to the certified 1e-3 (library default); "
             "deblurring: accelerated PGD to tol 1e-4, Gaussian blur 2 px, noise 0.01.\n",
             "| task | prior | seconds | iterations | PSNR (dB) | peak GiB |",
             "|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else ""
        lines.append(f"| {r['task']} | {r['prior']} | {r['seconds']:.3f} | "
                     f"{r.get('iterations', '')} | {r['psnr']:.2f} | {peak} |")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()
