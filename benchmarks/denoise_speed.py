r"""Time to denoise one 256x256 image with the shipped ridge priors (issue 16's row).

The camera crop at sigma = 25/255, seeded noise; for ``crr`` and ``wcrr``: the default
``denoise`` (L-BFGS in the Fourier metric, from :math:`P^{-1}y`, to a certified relative
accuracy of 1e-3) against the former defaults
(Anderson to 1e-3, FISTA to 1e-4) and a reference minimiser (Anderson to 1e-6); best of
``--repeats`` runs, in one process. Reported: iterations, gradients (counted: an L-BFGS
iteration may take more than one), seconds, PSNR and its gap to the reference.

Usage: ``OMP_NUM_THREADS=2 python benchmarks/denoise_speed.py``; writes
``benchmarks/results/denoise_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import psnr, write  # noqa: E402
from lipinverse import pretrained  # noqa: E402
from lipinverse.io import builtin_image, center_crop, to_tensor  # noqa: E402

SETTINGS = {"default (L-BFGS in the Fourier metric, tol 1e-3)": dict(method="lbfgs", tol=1e-3),
            "former default (Anderson, tol 1e-3)": dict(method="anderson", tol=1e-3),
            "first default (FISTA, tol 1e-4)": dict(method="fista", tol=1e-4)}


def run(repeats: int) -> dict:
    x = to_tensor(center_crop(builtin_image("camera"), 256))
    g = torch.Generator().manual_seed(0)
    sigma = 25 / 255
    y = x + sigma * torch.randn(x.shape, generator=g)
    rows = []
    for name in ("crr", "wcrr"):
        model = pretrained.load(name)
        with torch.no_grad():
            ref, _ = model.solve(y, 1.0, sigma, tol=1e-6, max_iter=5000, method="anderson")
            for label, kw in SETTINGS.items():
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    out, info = model.solve(y, 1.0, sigma, max_iter=1000, **kw)
                    best = min(best, time.perf_counter() - t0)
                calls = []  # one more, untimed solve that counts the gradients
                real = model.grad_scaled
                model.grad_scaled = (lambda z, sc, real=real, calls=calls:
                                     calls.append(1) or real(z, sc))
                try:
                    model.solve(y, 1.0, sigma, max_iter=1000, **kw)
                finally:
                    del model.grad_scaled
                rows.append({"prior": name, "setting": label,
                             "iterations": int(info.iterations.max()),
                             "gradients": len(calls), "seconds": round(best, 3),
                             "psnr": round(psnr(out, x), 3),
                             "gap_db": round(psnr(out, x) - psnr(ref, x), 4)})
                print(rows[-1], flush=True)
    return {"image": "camera 256x256, sigma 25/255", "threads": torch.get_num_threads(),
            "repeats": repeats, "rows": rows}


def markdown(res: dict) -> str:
    out = ["# Denoising time, one 256x256 image (shipped priors)\n",
           f"{res['image']}; {res['threads']} threads, best of {res['repeats']}; "
           "`python benchmarks/denoise_speed.py`. Gap: PSNR minus that of the minimiser "
           "(Anderson to 1e-6).\n",
           "| prior | setting | iterations | gradients | seconds | PSNR | gap dB |",
           "|---|---|---:|---:|---:|---:|---:|"]
    out += [f"| {r['prior']} | {r['setting']} | {r.get('iterations', '-')} | "
            f"{r['gradients']} | {r['seconds']:.2f} | "
            f"{r['psnr']:.2f} | {r['gap_db']:+.4f} |" for r in res["rows"]]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    res = run(ap.parse_args(argv).repeats)
    write("denoise_speed", res, markdown)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
