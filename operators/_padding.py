r"""Index-based padding with an exact adjoint (stateless helpers).

Padding ``P`` maps an image of size ``n`` to ``n + before + after`` pixels per axis by
copying pixels (``reflect``, ``replicate``, ``circular``) or inserting zeros (``zero``).
Written as a gather ``(Px)_i = x_{s(i)}`` its adjoint is the scatter-add
:math:`(P^\top y)_j = \sum_{i : s(i) = j} y_i`, which is what :func:`unpad` computes.
"""

from __future__ import annotations

import math

import torch

MODES = ("zero", "reflect", "replicate", "circular")


def source_index(n: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Source pixel of every padded position along one axis (``-1`` for a zero)."""
    i = torch.arange(-before, n + after)
    if mode == "zero":
        return torch.where((i >= 0) & (i < n), i, torch.full_like(i, -1))
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "circular":
        return i % n
    if mode == "reflect":  # mirror about the edge pixel, edge not repeated
        if n == 1:
            return torch.zeros_like(i)
        period = 2 * (n - 1)
        j = i % period
        return torch.where(j < n, j, period - j)
    raise ValueError(f"padding: expected one of {MODES}, got {mode!r}")


def multiplicity(n: int, before: int, after: int, mode: str) -> int:
    """Largest number of padded positions that copy the same source pixel."""
    s = source_index(n, before, after, mode)
    s = s[s >= 0]
    return int(torch.bincount(s, minlength=n).max()) if s.numel() else 0


def pad(x: torch.Tensor, pads: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Pad the last two axes by ``(top, bottom, left, right)``."""
    top, bottom, left, right = pads
    if mode == "zero":
        return torch.nn.functional.pad(x, (left, right, top, bottom))
    h, w = x.shape[-2:]
    ih = source_index(h, top, bottom, mode).to(x.device)
    iw = source_index(w, left, right, mode).to(x.device)
    return x.index_select(-2, ih).index_select(-1, iw)


def unpad(y: torch.Tensor, pads: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """The exact adjoint of :func:`pad`: fold the padded border back onto its sources."""
    top, bottom, left, right = pads
    hp, wp = y.shape[-2:]
    h, w = hp - top - bottom, wp - left - right
    if mode == "zero":
        return y[..., top:top + h, left:left + w]
    ih = source_index(h, top, bottom, mode).to(y.device)
    iw = source_index(w, left, right, mode).to(y.device)
    out = y.new_zeros(y.shape[:-1] + (w,)).index_add_(-1, iw, y)
    return out.new_zeros(y.shape[:-2] + (h, w)).index_add_(-2, ih, out)


def pad_norm(h: int | None, w: int | None, pads, mode: str) -> float:
    r"""Norm of the padding map: :math:`\|P\| = \sqrt{m_h m_w}` with ``m`` the multiplicities.

    For an unknown size, the worst case over all sizes larger than the padding.
    """
    top, bottom, left, right = pads
    if mode == "zero":
        return 1.0
    if h is None:
        # per axis a pixel is copied at most once per side, plus itself, when pad < n
        if mode == "reflect":
            return 3.0
        return math.sqrt((1 + max(top, bottom)) * (1 + max(left, right)))  # replicate
    return math.sqrt(multiplicity(h, top, bottom, mode) * multiplicity(w, left, right, mode))
