"""Training learned priors on image patches: datasets, objectives, trainer, checkpoints."""

from .checkpoint import (
    load_checkpoint,
    load_optimizer_state,
    read_checkpoint_metadata,
    register_model,
    registered_models,
    save_checkpoint,
)
from .config import TrainConfig, project_constraints, seed_everything
from .objectives import (
    AdversarialLoss,
    DenoisingLoss,
    DEQDenoisingLoss,
    TStepDenoisingLoss,
)
from .patches import PatchDataset, load_images
from .trainer import Trainer

__all__ = [
    "PatchDataset",
    "load_images",
    "Trainer",
    "TrainConfig",
    "seed_everything",
    "project_constraints",
    "DenoisingLoss",
    "TStepDenoisingLoss",
    "DEQDenoisingLoss",
    "AdversarialLoss",
    "save_checkpoint",
    "load_checkpoint",
    "load_optimizer_state",
    "read_checkpoint_metadata",
    "register_model",
    "registered_models",
]
