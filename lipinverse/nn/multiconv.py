r"""Compositions of convolutions (:class:`MultiConv`), with the composed kernel and a
certified norm bound of the composition (the :class:`~lipinverse.nn.linear.LinearMap`
protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import ConvMap, LinearMap
from .norms import (
    circular_symbol_norm,
    symbol_norm_bound,
    symbol_power_estimate,
)

__all__ = ["MultiConv"]


class MultiConv(LinearMap):
    r"""Composition :math:`A_L \circ \dots \circ A_1` of :class:`ConvMap` s.

    Parameters
    ----------
    convs : sequence of ConvMap
        Applied in order; channels must chain.
    pad_once : bool, default True
        For stride-1 zero-padded maps: zero-pad the input once by the total radius and
        apply the convolutions without padding.  The result is then a compression of the
        composed convolution, so its norm is bounded by the sup of the *product* of the
        symbols (much tighter than the product of the norms).  With ``pad_once=False``,
        or any stride, or mixed padding, each map pads itself and the bound is the
        product of the individual bounds (padding between layers breaks the symbol
        argument).  Circular stride-1 compositions are exact compositions of symbols.

    Notes
    -----
    Adjoint: the reversed composition of the adjoints (``pad_once``: full transposed
    convolutions, then cropping, the adjoint of zero-padding).
    """

    def __init__(self, convs, pad_once: bool = True) -> None:
        super().__init__()
        convs = list(convs)
        if not convs or not all(isinstance(c, ConvMap) for c in convs):
            raise TypeError(
                "MultiConv: expected a non-empty sequence of ConvMap, got "
                f"{[type(c).__name__ for c in convs]}"
            )
        for a, b in zip(convs[:-1], convs[1:], strict=True):
            if a.out_channels != b.in_channels:
                raise ValueError(
                    f"MultiConv: channels do not chain: {a.out_channels} -> {b.in_channels}"
                )
        self.convs = nn.ModuleList(convs)
        self.in_channels, self.out_channels = convs[0].in_channels, convs[-1].out_channels
        stride1 = all(c.stride == (1, 1) for c in convs)
        paddings = {c.padding for c in convs}
        self.mode = "sequential"
        if stride1 and paddings == {"circular"}:
            self.mode = "circular"
        elif stride1 and paddings == {"zero"} and pad_once:
            self.mode = "pad_once"
        self.register_buffer("_symbol_vectors", None, persistent=False)
        self._kernel_cache = None   # (weights key, dtype) -> composed kernel, at inference

    @property
    def total_pad(self) -> tuple[int, int]:
        return (sum(c.pad[0] for c in self.convs), sum(c.pad[1] for c in self.convs))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"MultiConv.forward: expected input (B, C, H, W), got {tuple(x.shape)}"
            )
        if self.mode == "pad_once":
            ph, pw = self.total_pad
            if self.in_channels == 1 and not (torch.is_grad_enabled() and x.requires_grad):
                # one (2ph+1)x(2pw+1) convolution: about 2x faster on the CPU than the chain
                # from one channel (fewer passes); kept off when autograd needs the input
                # gradient (the transposed single convolution to one channel is slow)
                return F.conv2d(x, self.composed_kernel(x.dtype), padding=(ph, pw))
            return self._chain(F.pad(x, (pw, pw, ph, ph)))
        for c in self.convs:
            x = c(x)
        return x

    def _chain(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = c._conv(x, pad=False)
        return x

    def composed_kernel(self, dtype=None) -> torch.Tensor:
        r"""The kernel :math:`K` of the composition (stride 1, zero padding once):
        ``forward(x) == conv2d(x, K, padding=total_pad)``, shape
        ``(C_out, C_in, 2 p_h + 1, 2 p_w + 1)``.

        Computed by applying the (unpadded) chain to one centred impulse per input channel:
        for cross-correlations the response at offset :math:`p` is :math:`K[-p]`.
        """
        if self.mode != "pad_once":
            raise ValueError(f"MultiConv.composed_kernel: defined for stride-1 zero padding "
                             f"applied once, got mode {self.mode!r}")
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return self._compose(dtype)
        # inference: kept until a weight changes (its data pointer or version)
        key = (self._cache_key(), dtype)
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            self._kernel_cache = (key, self._compose(dtype))
        return self._kernel_cache[1]

    def _compose(self, dtype=None) -> torch.Tensor:
        ph, pw = self.total_pad
        c = self.in_channels
        w0 = self.convs[0].weight
        delta = torch.zeros(c, c, 4 * ph + 1, 4 * pw + 1, dtype=dtype or w0.dtype,
                            device=w0.device)
        idx = torch.arange(c, device=w0.device)
        delta[idx, idx, 2 * ph, 2 * pw] = 1.0
        return self._chain(delta).flip(-2, -1).transpose(0, 1)

    def _transpose(self, y: torch.Tensor, input_size=None) -> torch.Tensor:
        if self.mode == "pad_once":
            ph, pw = self.total_pad
            if self.in_channels == 1 and not (torch.is_grad_enabled() and y.requires_grad):
                # to one channel: one depthwise (2ph+1)x(2pw+1) correlation with the flipped
                # composed kernels, then the sum over channels, the same map; on the CPU
                # 1.7x faster than the chain of transposed convolutions (32 -> 8 -> 1,
                # 256x256: 8.8 against 14.7 ms, 1 thread), whose reductions over many
                # input channels are slow (a 32 -> 1 convolution is slower still)
                k = self.composed_kernel(y.dtype).flip(-2, -1)
                return F.conv2d(y, k, padding=(ph, pw), groups=self.out_channels).sum(
                    1, keepdim=True)
            for c in reversed(self.convs):
                size = (y.shape[-2] + 2 * c.pad[0], y.shape[-1] + 2 * c.pad[1])
                y = c._conv_t(y, size, pad=False)
            return y[..., ph:y.shape[-2] - ph, pw:y.shape[-1] - pw]
        sizes = [None] * len(self.convs)
        if input_size is not None:
            size = tuple(input_size)
            for i, c in enumerate(self.convs):
                sizes[i] = size
                size = c.output_size(size)
        for c, size in zip(reversed(self.convs), reversed(sizes), strict=True):
            y = c.transpose(y, input_size=size)
        return y

    def _norm_bound(self) -> torch.Tensor:
        if self.mode in ("pad_once", "circular"):
            grid = max((c.grid_size or 0) for c in self.convs) or None
            return symbol_norm_bound([(c.weight, c.groups) for c in self.convs], grid)
        bound = None
        for c in self.convs:
            b = c.norm_bound()
            bound = b if bound is None else bound * b
        return bound

    def norm_estimate(self, n_iter: int = 1, size=None) -> torch.Tensor:
        r"""Cheap estimate of :meth:`norm_bound` (not a certificate); see ConvMap.norm_estimate."""
        if size is not None:
            return super().norm_estimate(n_iter, size)
        if self.mode in ("pad_once", "circular"):
            grid = max((c.grid_size or 0) for c in self.convs) or None
            est, self._symbol_vectors = symbol_power_estimate(
                [(c.weight, c.groups) for c in self.convs], self._symbol_vectors, n_iter, grid
            )
            return est
        est = None
        for c in self.convs:
            e = c.norm_estimate(n_iter)
            est = e if est is None else est * e
        return est

    def norm_bound(self, input_size=None) -> torch.Tensor:
        r"""Certified bound of :math:`\|A\|`; exact at ``input_size`` for circular compositions."""
        if input_size is not None and self.mode == "circular":
            return circular_symbol_norm([(c.weight, c.groups) for c in self.convs],
                                        tuple(input_size))
        return super().norm_bound()
