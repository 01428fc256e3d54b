r"""Tune the CT weight of a shipped ridge prior on set12 crops (the tuning set).

The sparse-view CT problem of ``real_data.py`` (128x128 centre crops, 60 angles, parallel
beam, ``Radon(normalize=True)``, 1 % of max|Ax| noise, accelerated PGD from the FBP, 300
iterations) on set12 images, for each weight :math:`\lambda` of the grid at the prior's
conditioning level :func:`lipinverse.pretrained.ct_prior`. The best mean PSNR names the
weight to record (``metadata.ct_lam`` of the shipped ``.json``, written by
``ship_prior.py --ct-tuning``, which checks that the weights tuned here are the run's).
BSD68 is not read.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/tune_ct.py --prior wcrr --images 01 02 \
        --grid 0.35 0.5 0.7 1

Writes ``benchmarks/results/tune_ct_<prior>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import DATA, fmt, psnr, require_data, save  # noqa: I001
from real_data import ct_problem, solve

from operators import Radon


def run(prior: str, names, grid, max_iter: int) -> dict:
    from lipinverse.io import center_crop, read_image, to_tensor

    folder = require_data(DATA / "set12")
    A = Radon(128, 60, normalize=True)
    rows = {f"{lam:g}": [] for lam in grid}
    for i, name in enumerate(names):
        x = to_tensor(center_crop(read_image(folder / f"{name}.png"), 128), dtype=torch.float64)
        y, sigma, x_fbp = ct_problem(A, x, 300 + i)
        for lam in grid:
            xh, its, sec = solve(A, y, prior, sigma, x0=x_fbp, ct=True, max_iter=max_iter,
                                 lam=lam)
            rows[f"{lam:g}"].append(psnr(xh, x))
            print(f"{name} lam {lam:g}: {rows[f'{lam:g}'][-1]:.2f} dB, {its} its, {sec:.1f} s",
                  flush=True)
    from lipinverse import pretrained

    mean = {k: statistics.mean(v) for k, v in rows.items()}
    return {"prior": prior, "weights_sha256": pretrained.config(prior)["weights_sha256"],
            "images": list(names), "max_iter": max_iter,
            "per_image": rows, "mean": mean, "best": max(mean, key=mean.get)}


def markdown(p) -> str:
    lines = [f"# CT weight of `{p['prior']}` on set12 crops", "",
             f"{p['date']}, {p['machine']}. 128x128 centre crops of "
             f"{', '.join(p['images'])}, 60 angles, 1 % noise, accelerated PGD from the FBP, "
             f"{p['max_iter']} iterations. `python benchmarks/tune_ct.py --prior "
             f"{p['prior']}`.", "",
             "| lam | " + " | ".join(p["images"]) + " | mean |",
             "|---|" + "---:|" * (len(p["images"]) + 1)]
    for k, v in p["per_image"].items():
        best = " **best**" if k == p["best"] else ""
        lines.append(f"| {k}{best} | " + " | ".join(fmt(a) for a in v)
                     + f" | {fmt(p['mean'][k])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default="wcrr")
    ap.add_argument("--images", nargs="+", default=["01", "02"])
    ap.add_argument("--grid", nargs="+", type=float, default=[0.35, 0.5, 0.7, 1.0])
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    save(f"tune_ct_{args.prior}", run(args.prior, args.images, args.grid, args.max_iter),
         markdown)


if __name__ == "__main__":
    main()
