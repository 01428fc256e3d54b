r"""Downsampling: subsampling, anti-aliased by composition with a blur."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Composition, Identity, Operator
from .blur import Blur
from .validation import check_int

__all__ = ["Subsample", "Downsample"]


class Subsample(Operator):
    r"""Keep every ``factor``-th pixel: :math:`(Sx)_{ij} = x_{fi, fj}`.

    Shape
    -----
    ``(B, C, H, W) -> (B, C, H / f, W / f)``; ``H`` and ``W`` must be multiples of ``f``.

    Notes
    -----
    Adjoint: zero-filling upsampling. :math:`SS^\top = I`, so :math:`\|S\| = 1` (exact).
    """

    nonnegative = True

    def __init__(self, factor: int, in_shape: Sequence[int] | None = None):
        factor = check_int("Subsample", factor, "factor", 1)
        out_shape = None
        if in_shape is not None:
            in_shape = tuple(int(s) for s in in_shape)
            if len(in_shape) != 3 or in_shape[-2] % factor or in_shape[-1] % factor:
                raise ValueError(f"Subsample: expected in_shape (C, H, W) with H and W divisible "
                                 f"by the factor {factor}, got {in_shape}")
            out_shape = (in_shape[0], in_shape[1] // factor, in_shape[2] // factor)
        super().__init__(in_shape, out_shape)
        self.factor = factor

    def _check_in(self, shape, name):
        f = self.factor
        if shape[-2] % f or shape[-1] % f:
            raise ValueError(f"Subsample.{name}: expected an image size divisible by the factor "
                             f"{f}, got {shape[-2]}x{shape[-1]}")

    def _check_sample_shape(self, name, shape, expected):
        if name in ("forward", "gram_solve"):
            self._check_in(shape, name)

    def output_shape(self, in_shape):
        f = self.factor
        return (in_shape[0], in_shape[1] // f, in_shape[2] // f)

    def input_shape(self, out_shape):
        f = self.factor
        return (out_shape[0], out_shape[1] * f, out_shape[2] * f)

    def _forward(self, x):
        f = self.factor
        return x[..., ::f, ::f]

    def _adjoint(self, y):
        f = self.factor
        b, c, h, w = y.shape
        out = y.new_zeros(b, c, h * f, w * f)
        out[..., ::f, ::f] = y
        return out

    def _norm(self, dtype, device):
        return 1.0

    def _gram_solve(self, b, shift):
        # S^T S is the 0/1 mask of kept pixels
        f = self.factor
        out = b / shift
        out[..., ::f, ::f] = b[..., ::f, ::f] / (1.0 + shift)
        return out


class Downsample(Composition):
    r"""Anti-aliased downsampling :math:`A = S_f \circ (k * \cdot)`.

    Parameters
    ----------
    factor : int
        Subsampling factor.
    kernel : 2-D tensor, optional
        Anti-aliasing kernel (e.g. ``kernels.gaussian(...)``); ``None`` subsamples directly.
    padding : str
        Boundary condition of the blur (see :class:`~operators.Blur`).
    in_shape : tuple (C, H, W), optional
        Fix the image shape.

    Notes
    -----
    Adjoint :math:`A^\top = (k * \cdot)^\top S_f^\top`; norm bound
    :math:`\|S_f\|\,\|k * \cdot\| = \|k * \cdot\|`.
    """

    def __init__(self, factor: int, kernel: torch.Tensor | None = None, padding: str = "circular",
                 in_shape: Sequence[int] | None = None):
        factor = check_int("Downsample", factor, "factor", 1)
        blur = Identity(in_shape) if kernel is None else Blur(kernel, padding, in_shape)
        super().__init__(Subsample(factor, in_shape), blur)
        self.factor = factor

    def _check_sample_shape(self, name, shape, expected):
        # a composition validates only its own shapes: check the image the blur and the
        # subsampling will see (the adjoint's input is upsampled first), so that an image
        # smaller than the kernel is refused here instead of failing inside the blur
        super()._check_sample_shape(name, shape, expected)
        if expected is None:
            f = self.factor
            image = tuple(shape) if name != "adjoint" else (
                tuple(shape[:-2]) + (shape[-2] * f, shape[-1] * f))
            self.inner._check_sample_shape(name, image, None)
            if name != "adjoint":
                self.outer._check_sample_shape(name, image, None)
