"""Argument checks shared by the operators and by the packages built on them.

Each check raises with a message that names the caller, what was expected and what came.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FLOAT_DTYPES", "shape_str", "check_tensor", "check_positive"]

FLOAT_DTYPES = (torch.float32, torch.float64)


def shape_str(shape) -> str:
    """``(2, 3)`` for a shape, ``()`` for a scalar."""
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tensor(name: str, x, *, ndim: int | None = 4) -> torch.Tensor:
    """Check that ``x`` is a real floating tensor (float32 / float64) of ``ndim`` dims.

    Raises
    ------
    TypeError
        If ``x`` is not a tensor or has a dtype other than float32 / float64.
    ValueError
        If ``x`` has the wrong number of dimensions or is empty.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-D tensor (B, C, H, W), got shape {shape_str(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {shape_str(x.shape)}")
    return x


def check_positive(name: str, value, what: str = "rho") -> float:
    """``value`` as a finite float > 0 (a one-element tensor is accepted).

    Raises
    ------
    TypeError
        If ``value`` is not a real number (``bool`` is refused).
    ValueError
        If it is not finite or not > 0, or a tensor with more than one element.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a scalar {what} > 0, got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a float {what} > 0, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite {what} > 0, got {value}")
    return float(value)
