r"""Linear maps with an exact transpose and a certified operator-norm bound.

Protocol shared by every map here (:class:`LinearMap`):

- ``forward(x)`` and ``transpose(y)`` (the exact adjoint, padding and stride included);
- ``norm_bound()``: a *certified upper bound* of the operator norm (0-d float64 tensor,
  differentiable w.r.t. the weights), valid for every input size;
- ``norm_estimate()``: a cheap *lower* estimate (persistent power iteration), for
  monitoring or training heuristics only, never for certificates;
- ``in_channels``, ``out_channels``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .norms import (
    FP_MARGIN,
    circular_symbol_norm,
    round_down_f32,
    symbol_norm_bound,
    symbol_power_estimate,
)

__all__ = ["LinearMap", "ConvMap", "DenseMap", "Constrained"]


class LinearMap(nn.Module):
    r"""Base class: a linear map on ``(B, C_in, *)`` tensors with a certified norm bound.

    Subclasses implement ``_forward``, ``_transpose`` and ``_norm_bound``.  Public methods
    validate the channel dimension; :meth:`norm_bound` caches its value while no
    gradient is needed and the parameters are unchanged.
    """

    in_channels: int
    out_channels: int

    def __init__(self) -> None:
        super().__init__()
        self._bound_cache = None
        self.register_buffer("_power_vector", None, persistent=False)

    # -------------------------------------------------------------- validation
    def _check(self, name: str, x: torch.Tensor, channels: int) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.{name}: expected a torch.Tensor, got {type(x)}")
        if x.dim() < 2 or x.shape[1] != channels:
            raise ValueError(
                f"{type(self).__name__}.{name}: expected input (B, {channels}, ...), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check("forward", x, self.in_channels)
        return self._forward(x)

    def transpose(self, y: torch.Tensor, input_size=None) -> torch.Tensor:
        r"""Exact adjoint :math:`A^\top y`.

        ``input_size`` (spatial size of the forward input) is needed only to resolve the
        ambiguity of strided convolutions; by default the last forward size is used.
        """
        self._check("transpose", y, self.out_channels)
        return self._transpose(y, input_size)

    # -------------------------------------------------------------- norms
    def weight_device(self):
        """Device of the first parameter or buffer (``None`` if there is none)."""
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return None

    def _cache_key(self):
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    def norm_bound(self) -> torch.Tensor:
        r"""Certified upper bound of :math:`\|A\|` for every input size (0-d float64 tensor)."""
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        key = self._cache_key()
        if not needs_grad and self._bound_cache is not None and self._bound_cache[0] == key:
            return torch.tensor(self._bound_cache[1], dtype=torch.float64,
                                device=self.weight_device())
        value = self._norm_bound()
        if not needs_grad:
            # cache a python float (float64, exact): never a tensor that could belong to an
            # autograd graph or a torch.func transform
            self._bound_cache = (key, float(value.detach()))
            value = value.detach()
        return value

    def _norm_bound(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _probe(self, size) -> torch.Tensor:
        tensors = list(self.parameters()) + [b for b in self.buffers() if b.is_floating_point()]
        p = tensors[0] if tensors else None
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        device = p.device if p is not None else None
        return torch.randn(1, self.in_channels, *size, dtype=dtype, device=device)

    def norm_estimate(self, n_iter: int = 1, size=(32, 32)) -> torch.Tensor:
        r"""Cheap estimate of :math:`\|A\|` by persistent power iteration (a LOWER estimate).

        Runs ``n_iter`` iterations of :math:`u \leftarrow A^\top A u / \|A^\top A u\|` on a
        vector kept between calls (20 on the first call), then returns :math:`\|Au\|`
        (differentiable); ``n_iter=0`` evaluates with the current vector.  ``size`` is
        the spatial size of the probe.  Not a certificate: never use it for the step
        sizes of a certified model.
        """
        size = tuple(size)
        u = self._power_vector
        probe = self._probe(size)
        if u is None or u.shape != probe.shape or u.dtype != probe.dtype:
            u, n_iter = probe, max(n_iter, 20)
        with torch.no_grad():
            for _ in range(n_iter):
                v = self.transpose(self.forward(u / u.norm()), input_size=size or None)
                u = v / v.norm().clamp_min(1e-30)
            self._power_vector = u
        return self.forward(u / u.norm()).norm()


def _pair(name: str, v) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    try:
        a, b = (int(t) for t in v)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}") from err
    return a, b


def _transposed(y, w, stride, padding, output_padding, groups):
    r"""``conv_transpose2d``; for stride 1 and one group, as the ``conv2d`` of the flipped,
    transposed kernel with padding :math:`k - 1 - p` (the same map; PyTorch's CPU
    ``conv2d`` is the faster kernel, 1.2-2x on the ridge filters)."""
    if stride == (1, 1) and groups == 1 and output_padding == (0, 0):
        kh, kw = w.shape[-2:]
        ph, pw = padding
        if ph <= kh - 1 and pw <= kw - 1:
            return F.conv2d(y, w.flip(-2, -1).transpose(0, 1),
                            padding=(kh - 1 - ph, kw - 1 - pw))
    return F.conv_transpose2d(y, w, stride=stride, padding=padding,
                              output_padding=output_padding, groups=groups)


class ConvMap(LinearMap):
    r"""Multichannel 2-D convolution (no bias) with exact transpose and certified norm.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
        Odd sizes only ("same" padding :math:`p = (k-1)/2`).
    padding : {"zero", "circular"}, default "zero"
    stride : int or (int, int), default 1
    groups : int, default 1
    grid_size : int, optional
        Frequency grid for the certified bound (see :mod:`lipinverse.nn.norms`).

    Notes
    -----
    Forward: ``conv2d`` (cross-correlation) after zero or circular padding by
    :math:`p`, then subsampling by the stride.  Adjoint: ``conv_transpose2d`` with the
    output padding that restores the input size, followed (circular case) by folding
    the padded border back onto the image.  Norm: for all sizes and both paddings,

    .. math:: \|A\| \le \sup_{\omega}\|\hat K(\omega)\|_2,

    bounded rigorously by :func:`~lipinverse.nn.norms.symbol_norm_bound`; for circular
    padding and stride 1, :meth:`norm_bound` with ``input_size`` gives the exact norm.

    Shape
    -----
    Input ``(B, C_in, H, W)``, output ``(B, C_out, ceil(H/s), ceil(W/s))`` for odd kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=3,
        padding: str = "zero",
        stride=1,
        groups: int = 1,
        grid_size: int | None = None,
    ) -> None:
        super().__init__()
        name = "ConvMap"
        for label, v in (("in_channels", in_channels), ("out_channels", out_channels),
                         ("groups", groups)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected {label} a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: expected in_channels and out_channels divisible by groups={groups}, "
                f"got {in_channels} and {out_channels}"
            )
        kh, kw = _pair(name, kernel_size)
        if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"{name}: expected odd kernel sizes, got {(kh, kw)}")
        sh, sw = _pair(name, stride)
        if sh < 1 or sw < 1:
            raise ValueError(f"{name}: expected positive stride, got {(sh, sw)}")
        if padding not in ("zero", "circular"):
            raise ValueError(f"{name}: expected padding 'zero' or 'circular', got {padding!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = (kh, kw), (sh, sw), groups
        self.padding = padding
        self.grid_size = grid_size
        fan_in = in_channels // groups * kh * kw
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels // groups, kh, kw) / math.sqrt(fan_in)
        )
        self._last_size = None
        self.register_buffer("_symbol_vectors", None, persistent=False)

    @property
    def pad(self) -> tuple[int, int]:
        return (self.kernel_size[0] - 1) // 2, (self.kernel_size[1] - 1) // 2

    def output_size(self, size) -> tuple[int, int]:
        """Spatial output size for a spatial input ``size``."""
        return tuple((n - 1) // s + 1 for n, s in zip(size, self.stride, strict=True))

    # --------------------------------------------------------------- maths
    def _conv(self, x: torch.Tensor, pad: bool = True) -> torch.Tensor:
        w = self.weight.to(x.dtype)
        ph, pw = self.pad if pad else (0, 0)
        if pad and self.padding == "circular":
            if ph > x.shape[-2] or pw > x.shape[-1]:
                raise ValueError(
                    f"ConvMap.forward: circular padding {(ph, pw)} needs an image at least that "
                    f"large, got {tuple(x.shape[-2:])}"
                )
            x = F.pad(x, (pw, pw, ph, ph), mode="circular")
            ph = pw = 0
        return F.conv2d(x, w, stride=self.stride, padding=(ph, pw), groups=self.groups)

    def _conv_t(self, y: torch.Tensor, size, pad: bool = True) -> torch.Tensor:
        w = self.weight.to(y.dtype)
        ph, pw = self.pad if pad else (0, 0)
        kh, kw = self.kernel_size
        (sh, sw), (H, W) = self.stride, size
        oph = H + 2 * ph - kh - (y.shape[-2] - 1) * sh
        opw = W + 2 * pw - kw - (y.shape[-1] - 1) * sw
        if not (0 <= oph < sh and 0 <= opw < sw):
            raise ValueError(
                f"ConvMap.transpose: input_size {tuple(size)} is inconsistent with output "
                f"{tuple(y.shape[-2:])} (stride {self.stride})"
            )
        if self.padding == "zero" or not pad:
            return _transposed(y, w, self.stride, (ph, pw), (oph, opw), self.groups)
        z = _transposed(y, w, self.stride, (0, 0), (oph, opw), self.groups)
        # adjoint of circular padding: fold the border back (rows, then columns)
        out = z[..., ph:ph + H, :].clone()
        if ph:
            out[..., H - ph:, :] += z[..., :ph, :]
            out[..., :ph, :] += z[..., H + ph:, :]
        res = out[..., pw:pw + W].clone()
        if pw:
            res[..., W - pw:] += out[..., :pw]
            res[..., :pw] += out[..., W + pw:]
        return res

    def _resolve_size(self, y: torch.Tensor, input_size) -> tuple[int, int]:
        if input_size is not None:
            return tuple(int(n) for n in input_size)
        if self.stride == (1, 1):
            return tuple(y.shape[-2:])
        if self._last_size is not None and self.output_size(self._last_size) == tuple(y.shape[-2:]):
            return self._last_size
        return tuple(n * s for n, s in zip(y.shape[-2:], self.stride, strict=True))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ConvMap.forward: expected input (B, C, H, W), got {tuple(x.shape)}")
        self._last_size = tuple(x.shape[-2:])
        return self._conv(x)

    def _transpose(self, y: torch.Tensor, input_size=None) -> torch.Tensor:
        if y.dim() != 4:
            raise ValueError(
                f"ConvMap.transpose: expected input (B, C, H, W), got {tuple(y.shape)}"
            )
        return self._conv_t(y, self._resolve_size(y, input_size))

    def _norm_bound(self) -> torch.Tensor:
        return symbol_norm_bound([(self.weight, self.groups)], self.grid_size)

    def norm_estimate(self, n_iter: int = 1, size=None) -> torch.Tensor:
        r"""Cheap estimate of :meth:`norm_bound` (not a certificate).

        With ``size=None``: persistent per-frequency power iteration on the symbol
        (:func:`~lipinverse.nn.norms.symbol_power_estimate`), which approaches the
        certified bound from below; with a ``size``: power iteration on images.
        """
        if size is not None:
            return super().norm_estimate(n_iter, size)
        est, self._symbol_vectors = symbol_power_estimate(
            [(self.weight, self.groups)], self._symbol_vectors, n_iter, self.grid_size
        )
        return est

    def norm_bound(self, input_size=None) -> torch.Tensor:
        r"""Certified bound of :math:`\|A\|`; exact at ``input_size`` for circular stride-1 maps."""
        if input_size is not None and self.padding == "circular" and self.stride == (1, 1):
            return circular_symbol_norm([(self.weight, self.groups)], tuple(input_size))
        return super().norm_bound()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"padding={self.padding!r}, stride={self.stride}, groups={self.groups}"
        )


class DenseMap(LinearMap):
    r"""Dense linear map :math:`x \mapsto Wx` on ``(B, in_features)`` (no bias).

    Notes
    -----
    Adjoint :math:`W^\top`; norm :math:`\|W\|_2` computed by an SVD in float64 and
    multiplied by :math:`1 + 10^{-10}` to cover rounding.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        for label, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DenseMap: expected {label} a positive int, got {v!r}")
        self.in_channels, self.out_channels = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"DenseMap.forward: expected input (B, {self.in_channels}), got {tuple(x.shape)}"
            )
        return x @ self.weight.to(x.dtype).T

    def _transpose(self, y: torch.Tensor, input_size=None) -> torch.Tensor:
        if y.dim() != 2:
            raise ValueError(
                f"DenseMap.transpose: expected input (B, {self.out_channels}), got {tuple(y.shape)}"
            )
        return y @ self.weight.to(y.dtype)

    def _norm_bound(self) -> torch.Tensor:
        w = self.weight.to(torch.float64)
        if min(w.shape) == 1:
            s = torch.linalg.vector_norm(w)
        else:
            s = torch.linalg.svdvals(w)[0]
        return s * (1.0 + FP_MARGIN)

    def norm_estimate(self, n_iter: int = 1, size=None) -> torch.Tensor:
        return super().norm_estimate(n_iter=n_iter, size=())

    def extra_repr(self) -> str:
        return f"in_features={self.in_channels}, out_features={self.out_channels}"


class Constrained(LinearMap):
    r"""A linear map rescaled by its certified bound: :math:`x \mapsto A x / \beta(A)`.

    Parameters
    ----------
    linear : LinearMap
        Any map of this module.

    Notes
    -----
    :math:`\beta(A) \ge \|A\|` is ``linear.norm_bound()``; the scale :math:`1/\beta` is
    rounded down to the float32 grid before use, so :math:`\|A/\beta\| \le 1` holds for
    the map actually computed.  :meth:`norm_bound` returns 1.
    """

    def __init__(self, linear: LinearMap) -> None:
        super().__init__()
        if not isinstance(linear, LinearMap):
            raise TypeError(f"Constrained: expected a LinearMap, got {type(linear).__name__}")
        self.linear = linear
        self.in_channels, self.out_channels = linear.in_channels, linear.out_channels
        self.register_buffer("frozen_scale", None)

    def scale(self) -> torch.Tensor:
        r"""The factor :math:`1/\beta(A)` actually used (0-d float64, float32-representable)."""
        if self.frozen_scale is not None:
            return self.frozen_scale
        return round_down_f32(1.0 / self.linear.norm_bound())

    @torch.no_grad()
    def freeze_scale(self) -> Constrained:
        """Store the current scale as the buffer ``frozen_scale`` (used from now on)."""
        self.frozen_scale = None
        self.frozen_scale = self.scale().detach().clone()
        return self

    def unfreeze_scale(self) -> Constrained:
        """Recompute the scale from the weights again."""
        self.frozen_scale = None
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale().to(x.dtype)

    def _transpose(self, y: torch.Tensor, input_size=None) -> torch.Tensor:
        return self.linear.transpose(y, input_size=input_size) * self.scale().to(y.dtype)

    def _norm_bound(self) -> torch.Tensor:
        if self.frozen_scale is not None:
            # ||sA|| <= s beta(A) / (1 + FP_MARGIN) up to float64 rounding (<< FP_MARGIN),
            # so dividing by 1 + FP_MARGIN/2 keeps this an upper bound
            return self.frozen_scale * self.linear.norm_bound() / (1.0 + FP_MARGIN / 2)
        return torch.ones((), dtype=torch.float64, device=self.linear.weight_device())

    def norm_estimate(self, n_iter: int = 1, size=None) -> torch.Tensor:
        return self.linear.norm_estimate(n_iter, size) * self.scale()
