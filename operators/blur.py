r"""Convolution (blur) operators with exact adjoints."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import _padding
from .base import Operator
from .bounds import Bound
from .linalg import collatz_wielandt

__all__ = ["Blur", "as_kernel"]

PADDINGS = ("circular", "zero", "reflect", "replicate", "valid")


def as_kernel(kernel, name: str = "Blur") -> torch.Tensor:
    """Validate a user kernel (2-D array or tensor, real, finite, non-empty) as float64."""
    if isinstance(kernel, np.ndarray):
        kernel = torch.from_numpy(np.ascontiguousarray(kernel))
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"{name}: expected the kernel as a 2-D torch.Tensor or numpy array, "
                        f"got {type(kernel).__name__}")
    if kernel.is_complex() or not (kernel.is_floating_point() or kernel.dtype in (
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"{name}: expected a real kernel, got dtype {kernel.dtype}")
    if kernel.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D kernel (kh, kw), got shape {tuple(kernel.shape)}")
    if kernel.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty kernel, got shape {tuple(kernel.shape)}")
    if kernel.requires_grad:
        raise ValueError(f"{name}: the kernel requires grad, but the operator's kernel is "
                         "fixed data (its gradient would be silently lost); pass "
                         "kernel.detach()")
    kernel = kernel.to(torch.float64)
    if not bool(torch.isfinite(kernel).all()):
        raise ValueError(f"{name}: expected a finite kernel, got NaN or Inf entries")
    return kernel


class Blur(Operator):
    r"""Convolution of every channel with a 2-D kernel: :math:`A x = k * x`.

    Parameters
    ----------
    kernel : (kh, kw) tensor or array
        The point-spread function, centred at index ``(kh // 2, kw // 2)``.
    padding : {"circular", "zero", "reflect", "replicate", "valid"}
        Boundary condition. ``circular`` is computed by FFT; ``zero``, ``reflect`` and
        ``replicate`` pad the image (by zeros, mirror images without repeating the edge, or
        edge copies) and keep the output the size of the input. ``valid`` is the model of
        a real blurred photo, whose boundary is unknown: :math:`y = \mathrm{crop}(k * x)`
        keeps only the pixels that the whole kernel sees, so the unknown ``x`` lives on a
        domain larger than ``y`` by the kernel size less one; reconstruct ``x`` there and
        crop with :meth:`crop` (no boundary assumption, no stripes).
    in_shape : tuple (C, H, W), optional
        Fix the image shape. Without it the operator accepts any image at least as large
        as the kernel, and :meth:`norm` is a bound valid for every size.

    Shape
    -----
    ``(B, C, H, W) -> (B, C, H, W)``; ``valid``: ``(B, C, H, W) -> (B, C, H - kh + 1,
    W - kw + 1)``.

    Notes
    -----
    *Valid.* Computed by FFT on the (extended) input grid, where the circular and the
    linear convolution agree on the kept pixels; the adjoint embeds ``y`` in zeros and
    multiplies by :math:`\overline{\hat k}` (exact). Norm: the restriction has norm 1, so
    :math:`\|A\| \le \max_\omega |\hat k(\omega)|` on the input grid (``in_shape``) or
    :math:`\|k\|_1` for every size (certified bounds).

    *Adjoint.* Circular: multiplication by :math:`\overline{\hat k}` in Fourier. Padded:
    correlation with ``k`` (a transposed convolution) followed by the adjoint of the padding,
    which folds the border back onto the pixels it copied.

    *Norm.* Circular on a known size: :math:`\max_\omega |\hat k(\omega)|` over the FFT grid
    (exact). Padded on a known size: Collatz-Wielandt bound of the blur by :math:`|k|`
    (entrywise majorant; tight for nonnegative kernels). Unknown size:
    :math:`\|k\|_1 \|P\|` (Young's inequality; :math:`\|P\| = 1` for zero and circular
    padding), exact for a nonnegative kernel with circular padding.

    *Gram solve.* Circular: :math:`x = \mathcal F^{-1}[\hat b / (|\hat k|^2 + \rho)]`;
    otherwise conjugate gradients.

    Examples
    --------
    >>> import torch
    >>> from operators import Blur, kernels
    >>> A = Blur(kernels.gaussian(1.0))
    >>> x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    >>> A(x).shape
    torch.Size([2, 1, 32, 32])
    >>> round(A.norm(), 12)
    1.0
    """


    def __init__(self, kernel, padding: str = "circular",
                 in_shape: Sequence[int] | None = None):
        kernel = as_kernel(kernel)
        if padding not in PADDINGS:
            raise ValueError(f"Blur: expected padding in {PADDINGS}, got {padding!r}")
        if in_shape is not None:
            in_shape = tuple(int(s) for s in in_shape)
            if len(in_shape) != 3 or min(in_shape) < 1:
                raise ValueError(f"Blur: expected in_shape (C, H, W) of positive ints, "
                                 f"got {in_shape}")
        kh, kw = kernel.shape
        out_shape = in_shape
        if padding == "valid" and in_shape is not None:
            out_shape = (in_shape[0], in_shape[1] - kh + 1, in_shape[2] - kw + 1)
        super().__init__(in_shape, out_shape)
        self.register_buffer("kernel", kernel)
        self.padding = padding
        ch, cw = kh // 2, kw // 2
        # padding (top, bottom, left, right) so that the output has the input's size
        self.pads = (kh - 1 - ch, ch, kw - 1 - cw, cw)
        self.nonnegative = bool((kernel >= 0).all())
        # A^T A: a convolution for circular padding, up to the edges for zero / reflect /
        # replicate; "valid" leaves the border of the larger domain barely seen (measured:
        # its symbol slows L-BFGS down, 162 -> 223 iterations on a 128^2 crop)
        self.shift_invariant = padding != "valid"
        self.fused_gram = padding == "circular"
        object.__setattr__(self, "_fft_cache", {})
        object.__setattr__(self, "_spectrum_cache", {})
        if in_shape is not None:
            self._check_sample_shape("__init__", in_shape, None)

    # ---------------------------------------------------------------- checks
    def _check_sample_shape(self, name, shape, expected):
        kh, kw = self.kernel.shape
        if self.padding == "valid" and name == "adjoint":
            return  # any observation size: the image is larger by the kernel
        if shape[-2] < kh or shape[-1] < kw:
            raise ValueError(
                f"Blur.{name}: the kernel ({kh}x{kw}) is larger than the image "
                f"({shape[-2]}x{shape[-1]}); expected an image at least as large as the kernel"
            )

    def output_shape(self, in_shape):
        if self.padding != "valid":
            return super().output_shape(in_shape)
        kh, kw = self.kernel.shape
        return (in_shape[0], in_shape[1] - kh + 1, in_shape[2] - kw + 1)

    def input_shape(self, out_shape):
        if self.padding != "valid":
            return super().input_shape(out_shape)
        kh, kw = self.kernel.shape
        return (out_shape[0], out_shape[1] + kh - 1, out_shape[2] + kw - 1)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The part of an image on the (``valid``) input grid that lies under the observation:
        ``x[..., top:top + H, left:left + W]`` with ``(H, W)`` the output size (for the other
        paddings, ``x`` itself)."""
        if self.padding != "valid":
            return x
        top, bottom, left, right = self.pads
        return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]

    def extend(self, y: torch.Tensor) -> torch.Tensor:
        """An observation padded by edge copies to the (``valid``) input grid: a start for
        the solvers that does not darken the border as :math:`A^\top y` does (for the
        other paddings, ``y`` itself)."""
        if self.padding != "valid":
            return y
        top, bottom, left, right = self.pads
        return _padding.pad(y, (top, bottom, left, right), "replicate")

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._fft_cache.clear()
        self._spectrum_cache.clear()
        return out

    # ------------------------------------------------------------------ maths
    def _kernel_fft(self, h: int, w: int, dtype, device) -> torch.Tensor:
        key = (h, w, dtype, str(device))
        if key not in self._fft_cache:
            kh, kw = self.kernel.shape
            big = torch.zeros(h, w, dtype=dtype, device=device)
            big[:kh, :kw] = self.kernel.to(dtype=dtype, device=device)
            big = torch.roll(big, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            self._fft_cache[key] = torch.fft.rfft2(big)
        return self._fft_cache[key]

    def _conv(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.padding == "valid":
            top, bottom, left, right = self.pads
            if adjoint:  # y on the small grid: embed in zeros, then correlate
                x = F.pad(x, (left, right, top, bottom))
                h, w = h + top + bottom, w + left + right
            kf = self._kernel_fft(h, w, x.dtype, x.device)
            z = torch.fft.irfft2(torch.fft.rfft2(x) * (kf.conj() if adjoint else kf), s=(h, w))
            return z if adjoint else z[..., top:h - bottom, left:w - right]
        if self.padding == "circular":
            kf = self._kernel_fft(h, w, x.dtype, x.device)
            if adjoint:
                kf = kf.conj()
            return torch.fft.irfft2(torch.fft.rfft2(x) * kf, s=(h, w))
        k = self.kernel.to(dtype=x.dtype)
        flat = x.reshape(b * c, 1, h, w)
        if not adjoint:
            xp = _padding.pad(flat, self.pads, self.padding)
            y = F.conv2d(xp, k.flip(0, 1)[None, None])
        else:
            yp = F.conv_transpose2d(flat, k.flip(0, 1)[None, None])
            y = _padding.unpad(yp, self.pads, self.padding)
        return y.reshape(b, c, h, w)

    def _forward(self, x):
        return self._conv(x, adjoint=False)

    def _adjoint(self, y):
        return self._conv(y, adjoint=True)

    def _spectrum(self, h: int, w: int, dtype, device, shift: float, invert: bool):
        r""":math:`|\hat k|^2 + s` (or its inverse) on the ``h x w`` grid, cached (a solver
        calls it with the same shift every iteration)."""
        key = (h, w, dtype, str(device), shift, invert)
        out = self._spectrum_cache.get(key)
        if out is None:
            kf = self._kernel_fft(h, w, dtype, device)
            out = kf.real**2 + kf.imag**2 + shift
            if invert:
                out = 1.0 / out
            if len(self._spectrum_cache) >= 8:
                self._spectrum_cache.clear()
            self._spectrum_cache[key] = out
        return out

    def _gram(self, x, shift=0.0):
        if self.padding != "circular":
            return super()._gram(x, shift)
        h, w = x.shape[-2:]
        mult = self._spectrum(h, w, x.dtype, x.device, shift, invert=False)
        return torch.fft.irfft2(torch.fft.rfft2(x) * mult, s=(h, w))

    def _norm(self, dtype, device):
        if self.padding == "valid":  # a restriction (norm 1) of a circular convolution
            if self.in_shape is not None:
                _, h, w = self.in_shape
                return float(self._kernel_fft(h, w, torch.float64, "cpu").abs().max())
            return float(self.kernel.abs().sum())
        if self.in_shape is not None and self.padding == "circular":
            _, h, w = self.in_shape
            return float(self._kernel_fft(h, w, torch.float64, "cpu").abs().max())
        if self.in_shape is not None:
            return self._padded_norm_bound(dtype, device)
        l1 = float(self.kernel.abs().sum())
        if self.padding == "circular":
            return l1
        return l1 * _padding.pad_norm(None, None, self.pads, self.padding)

    def _padded_norm_bound(self, dtype, device) -> float:
        r"""min of two certified bounds for a padded blur on a known size.

        (1) ``A = R C P`` with ``P`` the padding, ``C`` the circular convolution on the
        padded grid (no wrap-around reaches the kept pixels) and ``R`` a restriction, so
        :math:`\|A\| \le \max|\hat k_{\text{padded grid}}|\,\|P\|`;
        (2) the Collatz-Wielandt bound of the nonnegative majorant ``|k| * .``.
        """
        _, h, w = self.in_shape
        top, bottom, left, right = self.pads
        hp, wp = h + top + bottom, w + left + right
        fft = float(self._kernel_fft(hp, wp, torch.float64, "cpu").abs().max())
        fft *= _padding.pad_norm(h, w, self.pads, self.padding)
        cw = collatz_wielandt(self._majorant(), torch.float64, "cpu", 1e-6, 300)
        return min(Bound(fft, certified=True, how="padded-grid symbol"), cw)

    def _majorant(self):
        if self.nonnegative:
            return self
        return Blur(self.kernel.abs(), self.padding, self.in_shape)

    def _gram_solve(self, b, shift):
        if self.padding != "circular":
            return None
        h, w = b.shape[-2:]
        inv = self._spectrum(h, w, b.dtype, b.device, shift, invert=True)
        return torch.fft.irfft2(torch.fft.rfft2(b) * inv, s=(h, w))

    def extra_repr(self):
        return (f"kernel={tuple(self.kernel.shape)}, padding={self.padding!r}, "
                f"in_shape={self.in_shape}")
