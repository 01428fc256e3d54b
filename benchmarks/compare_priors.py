r"""A candidate ridge prior (a run's checkpoint) against the shipped one, on the set12 crops.

Both are scored as the recipes' last step scores a model: the exact denoiser
:math:`\arg\min_x \tfrac12\|x-y\|^2 + c R_\sigma(x)` on the 12 centre crops (96x96) of
``set12`` with seeded noise (:func:`lipinverse.training.tuning.tune_strength`). The candidate
gets the recipe's tuning of :math:`\lambda(\sigma)` (grid 0.25-2); the shipped model, already
tuned, is scored as shipped (factor 1) and after the same tuning. Set12 is the validation set:
this decides whether a run's model may replace the shipped one; BSD68 is for the tables.

Usage: ``python benchmarks/compare_priors.py lipinverse/pretrained/runs/crr/stage2-deq/best
--shipped crr``; writes ``benchmarks/results/compare_<shipped>.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, require_data, write  # noqa: E402

GRID = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)


def score(model, images, sigmas, grid) -> dict:
    from lipinverse.training.tuning import tune_strength

    t0 = time.perf_counter()
    out = tune_strength(copy.deepcopy(model), images, sigmas=sigmas, grid=grid, crop=96)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def markdown(pl) -> str:
    sig = pl["sigmas"]
    lines = [f"# `{pl['candidate_path']}` against the shipped `{pl['shipped']}`", "",
             "Mean PSNR (dB) of the exact denoiser on the 12 centre crops (96x96) of set12, "
             "seeded noise; `tuned`: lambda(sigma) rescaled on the same crops (grid "
             f"{min(GRID)}-{max(GRID)}). `python benchmarks/compare_priors.py`.", "",
             "| model | " + " | ".join(f"sigma {s}" for s in sig) + " |",
             "|---|" + "---:|" * len(sig)]
    for label, key in (("shipped, as shipped", "shipped_as_is"),
                       ("shipped, tuned", "shipped_tuned"), ("candidate, tuned", "candidate")):
        lines.append(f"| {label} | " + " | ".join(
            f"{pl[key]['psnr_after'][str(s)]:.2f}" for s in sig) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidate", help="checkpoint stem (e.g. runs/crr/stage2-deq/best)")
    ap.add_argument("--shipped", required=True, choices=("crr", "wcrr"))
    ap.add_argument("--sigmas", type=int, nargs="+", default=[5, 15, 25])
    args = ap.parse_args(argv)
    from lipinverse import pretrained
    from lipinverse.training import load_checkpoint
    from lipinverse.training.patches import load_images

    images = load_images(require_data(DATA / "set12"))
    sigmas = tuple(args.sigmas)
    shipped = pretrained.load(args.shipped)
    cand = load_checkpoint(args.candidate).to(shipped.strength.values.dtype).eval()
    payload = {"task": f"compare_{args.shipped}", "candidate_path": args.candidate,
               "shipped": args.shipped, "sigmas": list(sigmas),
               "shipped_as_is": score(shipped, images, sigmas, (1.0,)),
               "shipped_tuned": score(shipped, images, sigmas, GRID),
               "candidate": score(cand, images, sigmas, GRID)}
    write(f"compare_{args.shipped}", payload, markdown)
    print(markdown(payload))


if __name__ == "__main__":
    main()
