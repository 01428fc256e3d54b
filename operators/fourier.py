r"""The Fourier side of L-BFGS's preconditioner: the symbol of :math:`A^\top A` read off its
impulse response, and the circulant metric the two-loop recursion starts from (re-exported
by :mod:`operators.linalg`)."""

from __future__ import annotations

import torch

__all__ = ["fft_dtype", "normal_symbol", "FourierMetric", "METRIC_REFRESH"]


def fft_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype an FFT runs in: float32 for the half-precision floats (no CPU FFT)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def normal_symbol(op, shape, dtype=torch.float32, device=None) -> torch.Tensor:
    r"""The Fourier symbol of :math:`A^\top A` on an ``(H, W)`` grid, read off its impulse
    response.

    :math:`\hat n(\omega) = \max(0, \operatorname{Re}\,\mathcal F[A^\top A\,\delta_c]
    (\omega))` with :math:`\delta_c` a unit impulse at the centre of channel 0 of an
    image of per-sample shape ``shape`` ``(C, H, W)``, moved to the origin before the
    transform. Exact (:math:`|\hat a|^2`) for a circular convolution; for an operator whose
    :math:`A^\top A` is only close to a convolution (``op.shift_invariant``: a blur with
    other boundaries, the Radon transform) it is the symbol of the convolution seen from
    the centre. One :math:`A` and one :math:`A^\top`; channel 0 only (an operator that mixes
    channels is seen through it). Returns shape ``(H, W // 2 + 1)``
    (the half spectrum of :func:`torch.fft.rfft2`), in :func:`fft_dtype` ``(dtype)``.
    """
    c, h, w = (int(v) for v in shape)
    delta = torch.zeros(1, c, h, w, dtype=dtype, device=device)
    delta[0, 0, h // 2, w // 2] = 1.0
    with torch.no_grad():
        r = op._adjoint(op._forward(delta))[0, 0]
        r = torch.fft.ifftshift(r, dim=(-2, -1)).to(fft_dtype(r.dtype))
        return torch.fft.rfft2(r).real.clamp_(min=0.0)


#: The iteration at which L-BFGS rebuilds its :class:`FourierMetric` once, at the current
#: iterate (the start, e.g. a blurred :math:`A^\top y`, misstates the prior's curvature).
METRIC_REFRESH = 5


class FourierMetric:
    r"""A circulant symmetric positive definite :math:`P`, per sample, and :math:`P^{-1}`.

    ``symbol`` is :math:`\hat p(\omega) > 0` on the half spectrum of an ``(H, W)`` grid,
    shape ``(B, H, W // 2 + 1)`` (one per sample) or ``(H, W // 2 + 1)``:
    :math:`P^{-1} v = \mathcal F^{-1}[\hat v / \hat p]` per image channel. Used by
    :class:`LBFGSMemory` as the initial inverse Hessian :math:`H^0 = \gamma P^{-1}`; e.g.
    :math:`\hat p = \hat n + \lambda \sum_c \bar d_c |\hat K_c|^2` for
    :math:`\tfrac12\|Ax-y\|^2 + \lambda R(x)` with a ridge prior (:func:`normal_symbol`
    and the prior's ``curvature_symbol``). It only changes the quasi-Newton directions,
    which the safeguards still check.
    """

    def __init__(self, symbol: torch.Tensor, shape) -> None:
        if not bool((symbol > 0).all()):
            raise ValueError("FourierMetric: expected a symbol > 0 everywhere (an SPD metric)")
        self.h, self.w = int(shape[-2]), int(shape[-1])
        if tuple(symbol.shape[-2:]) != (self.h, self.w // 2 + 1):
            raise ValueError(f"FourierMetric: expected a symbol of shape (..., {self.h}, "
                             f"{self.w // 2 + 1}) for images of {self.h}x{self.w}, got "
                             f"{tuple(symbol.shape)}")
        self.symbol = symbol if symbol.dim() == 3 else symbol[None]

    def solve(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        r""":math:`P^{-1} v` for rows ``v`` ``(b, n)`` (flat images) of the samples ``idx``."""
        b = v.shape[0]
        p = self.symbol if self.symbol.shape[0] == 1 else self.symbol[idx]
        img = v.reshape(b, -1, self.h, self.w).to(fft_dtype(v.dtype))
        out = torch.fft.irfft2(torch.fft.rfft2(img) / p[:, None], s=(self.h, self.w))
        return out.reshape(b, -1).to(v.dtype)
