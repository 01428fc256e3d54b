r"""Finite differences: the discrete image gradient (for total variation)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Operator

__all__ = ["FiniteDifference"]

BOUNDARIES = ("neumann", "circular")


class FiniteDifference(Operator):
    r"""Forward differences :math:`\nabla x = (D_v x, D_h x)` stacked on the channel axis.

    Parameters
    ----------
    boundary : {"neumann", "circular"}
        ``neumann``: the difference across the last row / column is 0;
        ``circular``: periodic.
    in_shape : tuple (C, H, W), optional
        Fix the image shape (gives the exact norm for that size).

    Shape
    -----
    ``(B, C, H, W) -> (B, 2C, H, W)``: channels ``[0, C)`` hold
    :math:`x_{i+1,j} - x_{i,j}`, channels ``[C, 2C)`` hold :math:`x_{i,j+1} - x_{i,j}`.

    Notes
    -----
    The adjoint is minus the divergence. Exact norm: with
    :math:`\lambda_n = 4\sin^2(\pi (n-1) / (2n))` (Neumann) or
    :math:`4\sin^2(\pi \lfloor n/2 \rfloor / n)` (circular), the largest eigenvalue of
    the 1-D difference Laplacian, :math:`\|\nabla\| = \sqrt{\lambda_H + \lambda_W}`; for an
    unknown size the bound :math:`\sqrt 8`.
    """

    nonnegative = False
    shift_invariant = True  # A^T A is the (negative) Laplacian

    def __init__(self, boundary: str = "neumann", in_shape: Sequence[int] | None = None):
        if boundary not in BOUNDARIES:
            raise ValueError(f"FiniteDifference: expected boundary in {BOUNDARIES}, "
                             f"got {boundary!r}")
        out_shape = None
        if in_shape is not None:
            in_shape = tuple(int(s) for s in in_shape)
            if len(in_shape) != 3 or min(in_shape) < 1:
                raise ValueError(f"FiniteDifference: expected in_shape (C, H, W) of positive "
                                 f"ints, got {in_shape}")
            out_shape = (2 * in_shape[0],) + in_shape[1:]
        super().__init__(in_shape, out_shape)
        self.boundary = boundary

    def output_shape(self, in_shape):
        return (2 * in_shape[0],) + tuple(in_shape[1:])

    def input_shape(self, out_shape):
        return (out_shape[0] // 2,) + tuple(out_shape[1:])

    def _check_sample_shape(self, name, shape, expected):
        if name == "adjoint" and shape[0] % 2:
            raise ValueError(f"FiniteDifference.adjoint: expected an even number of channels "
                             f"(vertical then horizontal differences), got {shape[0]}")

    def _forward(self, x):
        if self.boundary == "circular":
            dv = torch.roll(x, -1, dims=-2) - x
            dh = torch.roll(x, -1, dims=-1) - x
        else:
            dv = torch.zeros_like(x)
            dh = torch.zeros_like(x)
            dv[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
            dh[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
        return torch.cat([dv, dh], dim=1)

    def _adjoint(self, y):
        c = y.shape[1] // 2
        dv, dh = y[:, :c], y[:, c:]
        if self.boundary == "circular":
            return (torch.roll(dv, 1, dims=-2) - dv) + (torch.roll(dh, 1, dims=-1) - dh)
        out = torch.zeros_like(dv)
        out[..., 1:, :] += dv[..., :-1, :]
        out[..., :-1, :] -= dv[..., :-1, :]
        out[..., :, 1:] += dh[..., :, :-1]
        out[..., :, :-1] -= dh[..., :, :-1]
        return out

    def _norm(self, dtype, device):
        if self.in_shape is None:
            return math.sqrt(8.0)

        def lam(n):
            if n == 1:
                return 0.0
            if self.boundary == "circular":
                return 4 * math.sin(math.pi * (n // 2) / n) ** 2
            return 4 * math.sin(math.pi * (n - 1) / (2 * n)) ** 2

        _, h, w = self.in_shape
        return math.sqrt(lam(h) + lam(w))

    def extra_repr(self):
        return f"boundary={self.boundary!r}, in_shape={self.in_shape}"
