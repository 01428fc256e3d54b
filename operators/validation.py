"""Argument checks shared by the operators and by the packages built on them.

Each check raises with a message that names the caller, what was expected and what came.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["FLOAT_DTYPES", "shape_str", "check_tensor", "check_float", "check_positive",
           "check_int"]

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


def check_float(name: str, value, what: str, *, positive: bool = False,
                allow_none: bool = False) -> float | None:
    """``value`` as a finite float >= 0 (> 0 with ``positive``); a one-element tensor is
    accepted, ``None`` too with ``allow_none`` (returned as is).

    Raises
    ------
    TypeError
        If ``value`` is not a real number (``bool`` is refused).
    ValueError
        If it is not finite or out of range, or a tensor with more than one element.
    """
    if value is None and allow_none:
        return None
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a scalar {what} {bound}, got a tensor of "
                             f"shape {shape_str(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float {what} {bound}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: expected a finite {what} {bound}, got {value}")
    return float(value)


def check_positive(name: str, value, what: str = "rho") -> float:
    """``check_float(name, value, what, positive=True)``: a finite float > 0."""
    return check_float(name, value, what, positive=True)


def check_int(name: str, value, what: str, minimum: int = 0,
              maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (``bool`` is refused).

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int {what}, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        rng = f">= {minimum}" if maximum is None else f">= {minimum} and <= {maximum}"
        raise ValueError(f"{name}: expected {what} {rng}, got {value}")
    return int(value)
