r"""Peak memory and time of a 2048x2048 deblur for each prior (issue 16's memory row).

The camera image (512x512 centre crop tiled 4x4), Gaussian blur of 2 px (circular), noise
0.01, float32; the solver ``lipinverse deblur`` builds (``cli.priors.make_solver``: FISTA
for TV with its certified prox, L-BFGS with 10 pairs for ``crr`` / ``wcrr``),
``--iterations`` iterations (10: the peak is reached in the first ones), with
:func:`lipinverse.allocator.reuse_buffers` as the command does. Each prior runs in a fresh
process; its peak resident memory (``ru_maxrss`` of the child) includes the Python and
torch runtime (about 0.4 GiB).

Usage: ``OMP_NUM_THREADS=2 python benchmarks/memory.py [--iterations 10]``; writes
``benchmarks/results/memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRIORS = ("tv", "crr", "wcrr")


def child(prior: str, iterations: int) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from lipinverse import pretrained
    from lipinverse.allocator import reuse_buffers
    from lipinverse.cli.priors import make_solver
    from lipinverse.io import builtin_image, center_crop, to_tensor
    from lipinverse.regularizers import TV
    from operators import Blur, kernels

    reuse_buffers()
    x = to_tensor(center_crop(builtin_image("camera"), 512)).repeat(1, 1, 4, 4)
    A = Blur(kernels.gaussian(2.0))
    y = A(x) + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    model = TV() if prior == "tv" else pretrained.load(prior)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = make_solver(A, y, prior, model, sigma=0.01).solve(
            max_iter=iterations, tol=0.0, track_objective=False)
    seconds = time.perf_counter() - t0
    mse = float(((res.x - x) ** 2).mean())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB -> GiB
    print(json.dumps({"prior": prior, "seconds": round(seconds, 2), "peak_gib": round(peak, 3),
                      "iterations": int(res.iterations.max()),
                      "psnr": round(-10 * torch.log10(torch.tensor(mse)).item(), 2),
                      "guarantee": res.guarantee.theorem}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.iterations)
    sys.path.insert(0, str(REPO))
    from benchmarks.common import write

    rows = []
    for prior in PRIORS:
        out = subprocess.run([sys.executable, __file__, "--child", prior, "--iterations",
                              str(args.iterations)], check=True, capture_output=True,
                             text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(row, flush=True)
    tv = next(r for r in rows if r["prior"] == "tv")["peak_gib"]
    for r in rows:
        r["vs_tv"] = round(r["peak_gib"] / tv, 2)
    write("memory", {"task": "memory", "iterations": args.iterations, "rows": rows}, markdown)


def markdown(p) -> str:
    lines = ["# Peak memory of a 2048x2048 deblur", "",
             f"{p['machine']}, {p['date']}. `python benchmarks/memory.py`: camera tiled to "
             f"2048x2048, Gaussian blur 2 px, noise 0.01, float32, {p['iterations']} "
             "iterations of the solver `lipinverse deblur` builds, with `reuse_buffers()`; "
             "each prior in a fresh process (its peak resident memory, Python and torch "
             "included).", "",
             "| prior | peak RSS (GiB) | / TV | seconds | iterations | PSNR (dB) | theorem |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in p["rows"]:
        lines.append(f"| {r['prior']} | {r['peak_gib']:.2f} | {r['vs_tv']:.2f} | "
                     f"{r['seconds']:.1f} | "
                     f"{r['iterations']} | {r['psnr']:.2f} | {r['guarantee']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
