r"""Train the unconstrained DnCNN baseline (``benchmarks/weights/dncnn.*``) with the library's
one training loop (:class:`lipinverse.training.Trainer`) on the train400 patches.

Usage (the command of the shipped baseline weights is in ``lipinverse/pretrained/MODEL_CARD.md``)::

    python benchmarks/train_dncnn.py --minutes 22 --epochs 80 --steps-per-epoch 50 --batch 32

Set12 is used for the validation PSNR only; BSD68 is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from baselines import WEIGHTS, DnCNN
from common import DATA, require_data


def main(argv=None) -> int:
    from safetensors.torch import save_file

    from lipinverse.training import DenoisingLoss, TrainConfig, Trainer, seed_everything

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=22.0)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    seed_everything(args.seed)
    model = DnCNN(args.depth, args.width)
    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                      batch_size=args.batch, lr=args.lr, lr_schedule="cosine", seed=args.seed,
                      train_images=str(require_data(DATA / "train400")), patch_size=40,
                      patch_stride=10, val_images=str(DATA / "set12"), val_sigma=15 / 255,
                      sigma_range=(0.0, 30 / 255), minutes=args.minutes, progress=False)
    t0 = time.perf_counter()
    trainer = Trainer(model, DenoisingLoss(conditioned=True), cfg)
    history = trainer.fit()
    model.eval()
    meta = model.config() | {"steps": trainer.step, "batch": args.batch, "patch": 40,
                             "sigma_max": 30, "wall_s": round(time.perf_counter() - t0, 1),
                             "set12_val_psnr_sigma15": history[-1].get("val_psnr"),
                             "params": sum(p.numel() for p in model.parameters())}
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(WEIGHTS / "dncnn.safetensors"))
    (WEIGHTS / "dncnn.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
