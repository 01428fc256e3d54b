"""A tiny training run for the fault tests, run as a script in a subprocess.

``python _train_worker.py OUT MODE [KILL_AT]``:

* ``MODE = full``: train from scratch to the end;
* ``MODE = resume``: resume from ``OUT/ckpt/last`` (if it exists), train to the end;
* ``KILL_AT = step:N``: SIGKILL this process in the middle of global step ``N`` (inside the
  loss, mid-epoch: no cleanup, no ``finally``);
  ``KILL_AT = save:N:K``: SIGKILL it during the ``N``-th checkpoint save, after ``K`` of its
  three atomic file replacements (``K = 0``: while the first temporary file is written;
  ``K = 3``: as the next save starts).

At the end the final weights go to ``OUT/final.safetensors``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

EPOCHS, STEPS, BATCH = 3, 4, 4


def build():
    from lipinverse.regularizers import ConvexRidge
    from lipinverse.training import PatchDataset, TrainConfig, TStepDenoisingLoss, seed_everything

    g = torch.Generator().manual_seed(0)
    imgs = torch.nn.functional.interpolate(torch.rand(3, 1, 4, 4, generator=g),
                                           scale_factor=4, mode="nearest")
    data = PatchDataset(imgs, patch_size=8, stride=4)  # 27 patches
    seed_everything(0)
    model = ConvexRidge(channels=(1, 2, 4), kernel_size=3, num_knots=9)
    return model, TStepDenoisingLoss(t=2), data, TrainConfig


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


class KillingLoss:
    """The objective, killing the process in the middle of global step ``at``."""

    def __init__(self, inner, at):
        self.inner, self.at, self.calls = inner, at, 0

    def loss(self, model, clean, noisy, sigma):
        self.calls += 1
        if self.calls == self.at:
            kill_self()
        return self.inner.loss(model, clean, noisy, sigma)

    def predict(self, *args):
        return self.inner.predict(*args)


def main(out: str, mode: str, kill_at: str | None = None) -> None:
    """Run (see the module docstring); in-process calls must not pass ``kill_at``."""
    out = Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same summation order in a subprocess and in-process
    try:
        _run(out, mode, kill_at)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, mode: str, kill_at: str | None) -> None:
    from lipinverse.training import Trainer, checkpoint

    model, objective, data, TrainConfig = build()
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH, steps_per_epoch=STEPS, lr=2e-2,
                      sigma_range=(0.05, 0.1), seed=7, progress=False,
                      checkpoint_dir=str(out / "ckpt"), checkpoint_every=1)
    if kill_at and kill_at.startswith("step:"):
        objective = KillingLoss(objective, int(kill_at.split(":")[1]))
    if kill_at and kill_at.startswith("save:"):
        _, nth, k = kill_at.split(":")
        nth, k = int(nth), int(k)
        state = {"saves": 0, "replaces": 0}
        real_save, real_replace, real_fsync = (checkpoint.save_checkpoint, os.replace,
                                               os.fsync)

        def save(*a, **kw):
            if k == 3 and state["saves"] == nth:
                kill_self()  # save nth finished: killed as the next one starts
            state["saves"] += 1
            return real_save(*a, **kw)

        def replace(src, dst):
            main = ".prev" not in Path(dst).name  # count the checkpoint's own three files
            if main and state["saves"] == nth and state["replaces"] == k:
                kill_self()
            real_replace(src, dst)
            if main and state["saves"] == nth:
                state["replaces"] += 1

        def fsync(fd):
            if state["saves"] == nth and k == 0:
                kill_self()  # the first temporary file is written but not yet renamed
            real_fsync(fd)

        checkpoint.os.replace = replace
        checkpoint.os.fsync = fsync
        import lipinverse.training.trainer as trainer_mod

        trainer_mod.save_checkpoint = save
    trainer = Trainer(model, objective, cfg, data)
    last = out / "ckpt" / "last.json"
    if mode == "resume" and last.exists():
        trainer.resume(out / "ckpt" / "last")
    trainer.fit()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()},
              str(out / "final.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
