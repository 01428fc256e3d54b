r"""``lipinverse train``: glue between the command line and :mod:`lipinverse.training`."""

from __future__ import annotations

import torch

from ._cli_priors import require

__all__ = ["train"]


def train(args, device: torch.device) -> None:
    """Train ``args.model`` on patches of ``args.images``; checkpoints go to ``args.out``."""
    training = require("lipinverse.training", None, "lipinverse train")
    for name in ("Trainer", "TrainConfig", "PatchDataset"):
        require("lipinverse.training", name, "lipinverse train")
    raise NotImplementedError(f"lipinverse train: not wired to {training.__name__} yet")
