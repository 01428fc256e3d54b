r"""Pointwise masking (inpainting)."""

from __future__ import annotations

import numpy as np
import torch

from .base import Operator

__all__ = ["Mask"]


class Mask(Operator):
    r"""Pointwise multiplication :math:`(Ax)_p = m_p x_p` (inpainting when :math:`m \in \{0,1\}`).

    Parameters
    ----------
    mask : (H, W) or (C, H, W) tensor or array
        Real, finite weights. A 2-D mask acts on one channel.

    Shape
    -----
    ``(B, C, H, W) -> (B, C, H, W)``.

    Notes
    -----
    Self-adjoint; :math:`\|A\| = \max_p |m_p|` (exact); the Gram solve is pointwise,
    :math:`x = b / (m^2 + \rho)`. ``Mask(m1) @ Mask(m2)`` is ``Mask(m1 * m2)``.
    """

    def __init__(self, mask):
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(np.ascontiguousarray(mask))
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"Mask: expected a torch.Tensor or numpy array, got "
                            f"{type(mask).__name__}")
        if mask.is_complex():
            raise TypeError(f"Mask: expected a real mask, got dtype {mask.dtype}")
        if mask.dim() == 2:
            mask = mask[None]
        if mask.dim() != 3 or mask.numel() == 0:
            raise ValueError(f"Mask: expected a non-empty (H, W) or (C, H, W) mask, got shape "
                             f"{tuple(mask.shape)}")
        if mask.requires_grad:
            raise ValueError("Mask: the mask requires grad, but the operator's mask is fixed "
                             "data (its gradient would be silently lost); pass mask.detach()")
        mask = mask.to(torch.float64)
        if not bool(torch.isfinite(mask).all()):
            raise ValueError("Mask: expected finite mask values, got NaN or Inf")
        super().__init__(tuple(mask.shape), tuple(mask.shape))
        self.register_buffer("mask", mask)
        self.nonnegative = bool((mask >= 0).all())

    def _forward(self, x):
        return x * self.mask.to(x.dtype)

    _adjoint = _forward

    def _norm(self, dtype, device):
        return float(self.mask.abs().max())

    def _gram_solve(self, b, shift):
        return b / (self.mask.to(b.dtype) ** 2 + shift)

    def _compose_with(self, other):
        if isinstance(other, Mask):
            return Mask(self.mask * other.mask.to(self.mask.device))
        return None
