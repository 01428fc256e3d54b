"""Tiny training run used by test_distributed.py (single process, or under torchrun)."""

import sys

import torch
import torch.distributed as dist

from lipinverse.regularizers import ConvexRidge
from lipinverse.training import (
    PatchDataset,
    TrainConfig,
    Trainer,
    TStepDenoisingLoss,
    save_checkpoint,
    seed_everything,
)


def run(out=None) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    imgs = torch.nn.functional.interpolate(torch.rand(4, 1, 4, 4, generator=g),
                                           scale_factor=8, mode="nearest")
    data = PatchDataset(imgs, patch_size=16, stride=8)
    seed_everything(0)
    model = ConvexRidge(channels=(1, 3, 6), kernel_size=3, num_knots=11).double()
    with torch.no_grad():
        # splines off the identity: at exactly zero second differences the TV2 subgradient
        # is a sign of rounding noise, which Adam would blow up (on 1 or 2 processes alike)
        model.convex_spline.coefficients.add_(
            0.05 * torch.rand(model.convex_spline.coefficients.shape, dtype=torch.float64))
    cfg = TrainConfig(epochs=1, batch_size=8, lr=2e-2, steps_per_epoch=3, progress=False,
                      sigma_range=(10 / 255, 30 / 255), seed=5)
    trainer = Trainer(model, TStepDenoisingLoss(t=3, tv2_weight=1e-4), cfg, data)
    trainer.fit()
    if out is not None and trainer.rank == 0:
        save_checkpoint(trainer.model, out, metadata={"world": trainer.world})
    return trainer.model


if __name__ == "__main__":
    run(sys.argv[1])
    if dist.is_initialized():
        dist.destroy_process_group()
