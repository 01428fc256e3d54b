r"""Grey ridge priors on colour images: an orthonormal colour transform, then the prior on
each transformed channel.

For an image with :math:`k` channels (``(B, k, H, W)``) and a prior :math:`R` trained on
grey images, the colour prior is

.. math:: R_{col}(x) = \sum_{j=1}^{k} R\bigl((Qx)_j\bigr),

with :math:`Q` an orthonormal :math:`k \times k` matrix acting on the channels of each
pixel: for :math:`k = 3` the opponent transform (luminance
:math:`(r+g+b)/\sqrt3`, red-green :math:`(r-g)/\sqrt2`, yellow-blue
:math:`(r+g-2b)/\sqrt6`), which decorrelates natural colour images; the identity otherwise.

**Certificates are unchanged.** :math:`\nabla^2 R_{col}(x) = Q^\top \mathrm{diag}_j
\nabla^2 R((Qx)_j)\,Q` is orthogonally similar to a block-diagonal matrix of grey Hessians,
so every bound :math:`mI \preceq \nabla^2 R \preceq MI` (convexity, weak convexity,
Lipschitz gradient) holds for :math:`R_{col}` with the same constants. The denoising
problem :math:`\tfrac12\|x-y\|^2 + \tau R_{col}(x)` separates into :math:`k` grey problems
in :math:`u = Qx` (:math:`\|x - x^*\| = \|u - u^*\|`), and white Gaussian noise of level
:math:`\sigma` stays white with the same level after :math:`Q`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["colour_transform", "fold", "unfold", "repeat_per_channel"]


def colour_transform(k: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The orthonormal ``(k, k)`` matrix :math:`Q` (opponent for 3 channels, else identity)."""
    if k == 3:
        q = torch.tensor([[1 / math.sqrt(3)] * 3,
                          [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                          [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]],
                         dtype=torch.float64)
        return q.to(dtype=dtype, device=device)
    return torch.eye(k, dtype=dtype, device=device)


def fold(x: torch.Tensor) -> torch.Tensor:
    r"""``(B, k, H, W)`` -> ``(B k, 1, H, W)``: the channels of :math:`Qx` as grey images
    (sample :math:`b`, channel :math:`j` at index :math:`bk + j`)."""
    b, k, h, w = x.shape
    q = colour_transform(k, x.dtype, x.device)
    return torch.einsum("ij,bjhw->bihw", q, x).reshape(b * k, 1, h, w)


def unfold(u: torch.Tensor, k: int) -> torch.Tensor:
    r"""Inverse of :func:`fold`: ``(B k, 1, H, W)`` -> ``(B, k, H, W)``, :math:`x = Q^\top u`."""
    bk, _, h, w = u.shape
    q = colour_transform(k, u.dtype, u.device)
    return torch.einsum("ji,bjhw->bihw", q, u.reshape(bk // k, k, h, w))


def repeat_per_channel(values: torch.Tensor, k: int) -> torch.Tensor:
    """A per-sample ``(B,)`` tensor repeated for the ``k`` folded channels of each sample."""
    return values.repeat_interleave(k)
