r"""The frozen configuration of a training run, and the reproducibility helpers that go with
it: the global seed, the per-step data seed, and the projection onto the constraints."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TrainConfig", "seed_everything", "project_constraints", "step_seed"]


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (CPU and CUDA); call it before building a model."""
    torch.manual_seed(int(seed))


@torch.no_grad()
def project_constraints(model: nn.Module) -> None:
    r"""Projected gradient step: put every spline's raw coefficients back on its constraint set.

    The forward pass projects the slopes anyway (:meth:`LipschitzSpline.slopes
    <lipinverse.nn.LipschitzSpline.slopes>` clamps them), but a raw slope left outside
    ``[lo, hi]`` gets no gradient through the clamp and stays stuck there; projecting after
    every optimiser step keeps every slope trainable. Called by :class:`Trainer` after
    each step.
    """
    from lipinverse.nn import LipschitzSpline

    for mod in model.modules():
        if isinstance(mod, LipschitzSpline) and not mod.frozen:
            mod.project_()


@dataclass(frozen=True)
class TrainConfig:
    r"""Every setting of a training run (frozen: one object, recorded in each checkpoint).

    Parameters
    ----------
    epochs : int
    batch_size : int
        *Global* batch size (split across processes in distributed training; it must
        be divisible by the number of processes).
    lr : float
        Adam learning rate.
    lr_schedule : {"constant", "cosine"}
    weight_decay : float
    grad_clip : float, optional
        Clip the global gradient norm.
    steps_per_epoch : int, optional
        Cap on the number of steps per epoch (default: one pass over the patches).
    patch_size, patch_stride, augment :
        Patches cut from ``train_images`` (when the Trainer is given no dataset).
    train_images, val_images : str, optional
        Folders of images (grayscale, [0, 1]).
    val_limit : int, optional
        Use only the first ``val_limit`` validation images.
    sigma_range : (float, float)
        Training noise levels are drawn uniformly in this range, per sample.
    val_sigma : float
        Noise level of the validation images (noise drawn from ``seed``).
    seed : int
        Seeds the data order, augmentation, noise and validation noise.
    checkpoint_dir : str, optional
        Writes ``last`` (every ``checkpoint_every`` epochs) and ``best`` (highest
        validation PSNR) checkpoints there.
    progress : bool
        Show a tqdm progress bar (rank 0 only).
    device : str, optional
        Default: the model's device (``cuda:LOCAL_RANK`` under torchrun with CUDA).
    lr_factors : dict or tuple of (str, float) pairs
        Learning-rate multipliers by parameter-name prefix (first match wins, default
        1), e.g. ``{"convex_spline.": 2.0}``: one Adam parameter group per multiplier.
    minutes : float, optional
        Wall-time budget of one :meth:`Trainer.fit` call: it stops at the first step
        boundary past it and saves ``last`` (resume continues from there).
    save_every_minutes : float
        Also save ``last`` (the full state) this often within an epoch.
    val_crop : int, optional
        Centre-crop the validation images to this size (faster validation).
    compile : bool
        Fuse the model's elementwise potentials with :func:`torch.compile` (models with
        ``compile_potentials``, e.g. the ridge priors); same objective, faster steps.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    steps_per_epoch: int | None = None
    patch_size: int = 40
    patch_stride: int | None = None
    augment: bool = True
    train_images: str | None = None
    val_images: str | None = None
    val_limit: int | None = None
    sigma_range: tuple[float, float] = (0.0, 30.0 / 255)
    val_sigma: float = 25.0 / 255
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    progress: bool = True
    device: str | None = None
    lr_factors: tuple = ()
    minutes: float | None = None
    save_every_minutes: float = 5.0
    val_crop: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        name = "TrainConfig"

        def positive_int(field, v, allow_none=False):
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected {field} a positive int, got {v!r}")

        def finite(field, v, *, lower=0.0, strict=False, allow_none=False):
            if v is None and allow_none:
                return
            ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
                  and (v > lower if strict else v >= lower))
            if not ok:
                op = ">" if strict else ">="
                raise ValueError(f"{name}: expected {field} a finite number {op} {lower}, "
                                 f"got {v!r}")

        for field in ("epochs", "batch_size", "checkpoint_every", "patch_size"):
            positive_int(field, getattr(self, field))
        for field in ("steps_per_epoch", "patch_stride", "val_limit", "val_crop"):
            positive_int(field, getattr(self, field), allow_none=True)
        finite("minutes", self.minutes, strict=True, allow_none=True)
        finite("save_every_minutes", self.save_every_minutes, strict=True)
        factors = self.lr_factors.items() if isinstance(self.lr_factors, dict) \
            else self.lr_factors
        try:
            factors = tuple((str(k), float(v)) for k, v in factors)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: expected lr_factors a dict or (prefix, factor) pairs, "
                             f"got {self.lr_factors!r}") from err
        for k, v in factors:
            finite(f"lr_factors[{k!r}]", v, strict=True)
        object.__setattr__(self, "lr_factors", factors)
        finite("lr", self.lr, strict=True)
        finite("weight_decay", self.weight_decay)
        finite("grad_clip", self.grad_clip, strict=True, allow_none=True)
        finite("val_sigma", self.val_sigma)
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"{name}: expected lr_schedule 'constant' or 'cosine', "
                             f"got {self.lr_schedule!r}")
        try:
            lo, hi = (float(v) for v in self.sigma_range)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: expected sigma_range a pair of floats, "
                             f"got {self.sigma_range!r}") from err
        if not (0 <= lo <= hi and math.isfinite(hi)):
            raise ValueError(f"{name}: expected finite 0 <= sigma_range[0] <= sigma_range[1], "
                             f"got {self.sigma_range}")
        object.__setattr__(self, "sigma_range", (lo, hi))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) \
                or not 0 <= self.seed < 2**32:
            raise ValueError(f"{name}: expected seed an int in [0, 2**32), got {self.seed!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def step_seed(seed: int, step: int) -> int:
    """Seed of the data (augmentation, noise levels, noise) of one global step."""
    return (int(seed) * 1_000_003 + 7_919 * int(step) + 17) % (2 ** 63)
