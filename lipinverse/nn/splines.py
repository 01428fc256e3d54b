r"""Learnable Lipschitz linear-spline activations.

A :class:`LipschitzSpline` is a per-channel continuous piecewise-linear function on a
uniform grid of knots, extended linearly outside the grid with the end slopes.  Its
slopes are projected into an interval ``slope_bounds = (lo, hi)`` on every forward pass,
so the constraint holds after *any* optimiser update of the raw parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LipschitzSpline", "inference_cache"]


def inference_cache(module: nn.Module, name: str, dtype, make):
    """``make()`` (a table computed from ``module``'s weights), kept on the module under
    ``name`` and ``dtype`` while no weight changes (data pointer and version of every
    parameter and buffer, and of a ``frozen_table``): the inference passes then skip the
    dozen small ops that rebuild their tables at every call. Computed afresh whenever
    autograd may need it (a parameter requires grad and grad mode is on)."""
    if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
        return make()
    frozen = getattr(module, "frozen_table", None)
    key = (dtype,) + tuple((t.data_ptr(), t._version, t.device)
                           for t in list(module.parameters()) + list(module.buffers()))
    if frozen is not None:
        key += ((frozen.data_ptr(), frozen._version),)
    cache = module.__dict__.setdefault("_inference_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        with torch.no_grad():
            hit = cache[name] = (key, make())
    return hit[1]

_INITS = ("identity", "relu", "zero", "soft_threshold")


def _check_bounds(name: str, slope_bounds) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in slope_bounds)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name}: expected slope_bounds as a pair of floats (lo, hi), got {slope_bounds!r}"
        ) from err
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name}: expected finite slope_bounds with lo <= hi, got {(lo, hi)}")
    return lo, hi


class LipschitzSpline(nn.Module):
    r"""Per-channel learnable linear spline with slopes projected into an interval.

    Parameters
    ----------
    num_channels : int
        Number of channels ``C``; the spline acts on dimension 1 of a ``(B, C, ...)`` tensor.
    num_knots : int, default 21
        Number of knots ``K >= 2`` of the uniform grid.
    knot_range : float or (float, float), default (-1.0, 1.0)
        Grid interval ``(a, b)``; a float ``r`` means ``(-r, r)``.
    slope_bounds : (float, float), default (0.0, 1.0)
        Interval ``[lo, hi]`` into which the slopes are projected. ``(0, 1)`` gives a
        monotone 1-Lipschitz activation (gradient-flow blocks), ``(-1, 1)`` a general
        1-Lipschitz one, ``(-rho, 1)`` the derivative of a weakly convex potential.
    init : {"identity", "relu", "zero", "soft_threshold"}, default "identity"
        Initial function, sampled at the knots (then projected).
    threshold : float, optional
        Threshold of the ``"soft_threshold"`` initialisation; default a tenth of the
        grid half-width.

    Notes
    -----
    With knots :math:`t_k = a + k\Delta`, :math:`k = 0,\dots,K-1`, and raw values
    :math:`\tilde c_k`, the projected values are

    .. math::

        s_k = \operatorname{clip}\bigl((\tilde c_{k+1} - \tilde c_k)/\Delta,\ lo,\ hi\bigr),
        \qquad c_k = c_0 + \Delta \sum_{j<k} s_j,

    with :math:`c_0` chosen so that :math:`\operatorname{mean}(c) = \operatorname{mean}(\tilde c)`.
    On the (extended) interval :math:`k` the spline is :math:`\sigma(x) = c_k + s_k (x - t_k)`,
    so :math:`\sigma'(x) \in [lo, hi]` everywhere and :math:`\mathrm{Lip}(\sigma) =
    \max(|lo|, |hi|)`.  The forward pass is a single gather of the pair
    :math:`(c_k - s_k t_k,\ s_k)` per element.

    Shape
    -----
    Input ``(B, C, *)``, output the same shape.
    """

    def __init__(
        self,
        num_channels: int,
        num_knots: int = 21,
        knot_range: float | tuple[float, float] = (-1.0, 1.0),
        slope_bounds: tuple[float, float] = (0.0, 1.0),
        init: str = "identity",
        threshold: float | None = None,
    ) -> None:
        super().__init__()
        name = "LipschitzSpline"
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"{name}: expected num_channels a positive int, got {num_channels!r}")
        if not isinstance(num_knots, int) or num_knots < 2:
            raise ValueError(f"{name}: expected num_knots an int >= 2, got {num_knots!r}")
        if isinstance(knot_range, (int, float)):
            a, b = -float(knot_range), float(knot_range)
        else:
            try:
                a, b = (float(v) for v in knot_range)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"{name}: expected knot_range a float or a pair (a, b), got {knot_range!r}"
                ) from err
        if not (math.isfinite(a) and math.isfinite(b)) or not a < b:
            raise ValueError(f"{name}: expected knot_range with a < b, got {(a, b)}")
        if init not in _INITS:
            raise ValueError(f"{name}: expected init in {_INITS}, got {init!r}")
        self.num_channels = num_channels
        self.num_knots = num_knots
        self.knot_range = (a, b)
        self._slope_bounds = _check_bounds(name, slope_bounds)
        self.spacing = (b - a) / (num_knots - 1)
        knots = torch.linspace(a, b, num_knots, dtype=torch.float64)
        if init == "identity":
            values = knots.clone()
        elif init == "relu":
            values = knots.clamp(min=0.0)
        elif init == "zero":
            values = torch.zeros_like(knots)
        else:
            thr = 0.1 * (b - a) / 2 if threshold is None else float(threshold)
            if thr < 0:
                raise ValueError(f"{name}: expected threshold >= 0, got {thr}")
            values = torch.sign(knots) * (knots.abs() - thr).clamp(min=0.0)
        values = values.to(torch.get_default_dtype())
        self.coefficients = nn.Parameter(values.repeat(num_channels, 1))
        self.register_buffer("frozen_table", None)

    # ------------------------------------------------------------------ properties
    @property
    def slope_bounds(self) -> tuple[float, float]:
        """The interval ``(lo, hi)`` the slopes are projected into."""
        return self._slope_bounds

    @property
    def lipschitz(self) -> float:
        r"""Certified Lipschitz constant :math:`\max(|lo|, |hi|)`."""
        lo, hi = self._slope_bounds
        return max(abs(lo), abs(hi))

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` has cached the projected coefficients."""
        return self.frozen_table is not None

    def knots(self) -> torch.Tensor:
        """Knot positions ``t_k`` (1-D tensor, dtype/device of the coefficients)."""
        c = self.coefficients
        a, _ = self.knot_range
        return a + self.spacing * torch.arange(self.num_knots, dtype=c.dtype, device=c.device)

    # ------------------------------------------------------------------ projection
    def slopes(self) -> torch.Tensor:
        r"""Projected slopes :math:`s_k \in [lo, hi]`, shape ``(C, K-1)``.

        The value is the clamp of the raw slopes. The gradient is 1 for a raw slope in
        :math:`[lo, hi]` *including* the bounds (up to float rounding, a relative 1e-5) and 0
        outside. ``torch.clamp`` passes no gradient at a bound, so a slope projected onto a
        bound by :meth:`project_` would otherwise never leave it (projected gradient
        descent needs the gradient at the boundary).
        """
        lo, hi = self._slope_bounds
        raw = torch.diff(self.coefficients, dim=1) / self.spacing
        clamped = raw.clamp(lo, hi)
        if not raw.requires_grad:
            return clamped
        slack = 1e-5 * max(1.0, abs(lo), abs(hi))
        inside = (raw >= lo - slack) & (raw <= hi + slack)
        return torch.where(inside, raw + (clamped - raw).detach(), clamped.detach())

    def projected_coefficients(self) -> torch.Tensor:
        r"""Projected knot values :math:`c_k`, shape ``(C, K)`` (see Notes of the class)."""
        raw = self.coefficients
        s = self.slopes()
        base = torch.cat([torch.zeros_like(raw[:, :1]), torch.cumsum(s * self.spacing, dim=1)], 1)
        return base + (raw.mean(dim=1, keepdim=True) - base.mean(dim=1, keepdim=True))

    @torch.no_grad()
    def project_(self) -> LipschitzSpline:
        """Overwrite the raw coefficients with their projection (in place); returns ``self``."""
        self.coefficients.copy_(self.projected_coefficients())
        return self

    def segment_table(self) -> torch.Tensor:
        """Per-interval (intercept, slope) pairs, shape ``(C * (K-1), 2)``."""
        if self.frozen_table is not None:
            return self.frozen_table
        c = self.projected_coefficients()
        s = self.slopes()
        intercept = c[:, :-1] - s * self.knots()[:-1]
        return torch.stack([intercept, s], dim=-1).reshape(-1, 2)

    def lookup(self, table: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """The row of ``table`` (``(C * (K-1), m)``, one row per channel and interval) at the
        (extended) interval of each element of ``x``: ``m`` tensors shaped like ``x``.

        One :func:`torch.gather` per column along the interval axis: several times faster
        on the CPU than indexing the flat table with a per-element row index.
        """
        a, _ = self.knot_range
        # NaN would become INT64_MIN under .long(): map it to interval 0 (the output is NaN
        # there anyway, as x is), so that NaN propagates instead of an opaque IndexError
        k = torch.floor((x - a) / self.spacing).clamp_(0, self.num_knots - 2).nan_to_num_(0.0)
        b, c = x.shape[:2]
        idx = k.long().reshape(b, c, -1)
        tab = table.to(x.dtype).reshape(c, self.num_knots - 1, -1)
        return [torch.gather(tab[..., j].expand(b, c, -1), 2, idx).view(x.shape)
                for j in range(tab.shape[-1])]

    def _check_input(self, name: str, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LipschitzSpline.{name}: expected a torch.Tensor, got {type(x)}")
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"LipschitzSpline.{name}: expected input (B, {self.num_channels}, ...), "
                f"got {tuple(x.shape)}"
            )

    # ------------------------------------------------------------------ evaluation
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""Evaluate :math:`\sigma` elementwise along channel dimension 1."""
        self._check_input("forward", x)
        intercept, slope = self.lookup(self.segment_table(), x)
        return intercept + slope * x

    @staticmethod
    def as_scaling(v, x: torch.Tensor, name: str) -> torch.Tensor:
        """A scaling of :meth:`scaled` as a ``(n, 1 or C, 1, 1)`` tensor of ``x``'s dtype and
        device (a number or a 0-d tensor: the same for every sample)."""
        v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
        if v.dim() == 0:
            v = v.reshape(1, 1, 1, 1)
        if v.dim() != 4 or v.shape[2:] != (1, 1) or v.shape[0] not in (1, x.shape[0]) or \
                v.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"{name}: expected a scaling of shape (1 or {x.shape[0]}, 1 or "
                             f"{x.shape[1]}, 1, 1), got {tuple(v.shape)}")
        return v

    def table_rows(self, u: torch.Tensor, n: int) -> torch.Tensor:
        """Flat rows into a table of shape ``(n, C, K-1)`` (``n`` = 1: one for all samples,
        else one per sample) of the intervals ``u`` (float, ``(B, C, N)``, already clamped
        to ``[0, K - 2]``, no NaN): ``int32``, shape ``(B C N,)``, for :meth:`pick`.

        The integer truncation is the floor (``u >= 0``). ``int32`` rows and
        :func:`torch.index_select` on the flat table: about 1.5x faster on the CPU than
        ``int64`` indices and :func:`torch.gather` along the interval axis, same values.
        """
        k1 = self.num_knots - 1
        rows = u.to(torch.int32)
        rows += torch.arange(0, n * u.shape[1] * k1, k1, dtype=torch.int32,
                             device=u.device).view(n, u.shape[1], 1)
        return rows.reshape(-1)   # logical order (the input may be channels-last)

    @staticmethod
    def pick(table: torch.Tensor, rows: torch.Tensor, shape) -> torch.Tensor:
        """``table`` ``(n, C, K-1)`` at the flat ``rows`` of :meth:`table_rows`, as ``shape``."""
        return torch.index_select(table.reshape(-1), 0, rows).view(shape)

    def _scaled_rows(self, x: torch.Tensor, a: torch.Tensor, n: int) -> torch.Tensor:
        """:meth:`table_rows` of the (extended) interval of each element of ``a x``: one fused
        multiply-add for ``(a x - lo) / spacing``, clamped to ``[0, K - 2]``; NaN ->
        interval 0 (the output is NaN there anyway, see :meth:`lookup`)."""
        lo = self.knot_range[0]
        u = torch.addcmul(torch.tensor(-lo / self.spacing, dtype=x.dtype, device=x.device),
                          x, a / self.spacing)
        u.clamp_(0, self.num_knots - 2).nan_to_num_(0.0)
        return self.table_rows(u.reshape(x.shape[0], x.shape[1], -1), n)

    @torch.no_grad()
    def scaled(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r""":math:`b\,\sigma(a\,x)` elementwise, without autograd (the inference path).

        ``a``, ``b``: positive scalings of shape ``(B, 1, 1, 1)`` or ``(B, C, 1, 1)`` (per
        sample, or per sample and channel) for ``x`` of shape ``(B, C, H, W)``. The same
        values as ``b * self(a * x)`` up to float rounding, in fewer passes over ``x``: the
        scalings go into the interval index (one fused multiply-add) and into a per-sample
        table :math:`(b\,(c_k - s_k t_k),\ a\,b\,s_k)`, the floor is the integer
        truncation of the clamped (non-negative) index, and the result is one fused
        multiply-add of the two gathered columns (7 passes instead of 12).
        """
        self._check_input("scaled", x)
        B, C = x.shape[:2]
        tab = inference_cache(self, "segments", x.dtype, lambda: self.segment_table().to(
            x.dtype).reshape(C, self.num_knots - 1, 2))
        a = self.as_scaling(a, x, "LipschitzSpline.scaled")
        b = self.as_scaling(b, x, "LipschitzSpline.scaled")
        n = max(a.shape[0], b.shape[0])
        rows = self._scaled_rows(x, a, n)
        bb = b.reshape(b.shape[0], -1, 1)
        ab = (a * b).reshape(n, -1, 1)
        icpt = (bb * tab[..., 0]).expand(n, C, -1)
        slope = (ab * tab[..., 1]).expand(n, C, -1)
        out = self.pick(icpt, rows, x.shape)
        return out.addcmul_(self.pick(slope, rows, x.shape), x)

    def _quadratic_table(self, dtype) -> torch.Tensor:
        r"""Per interval :math:`k`, :math:`(a_k, b_k, q_k)` with :math:`\Psi(x) = a_k + b_k x
        + q_k x^2` on the (extended) interval (see :meth:`integrate`), shape ``(C, K-1, 3)``."""
        c = self.projected_coefficients().to(dtype)
        s = self.slopes().to(dtype)
        t = self.knots().to(dtype)[:-1]
        trapezoids = self.spacing * (c[:, 1:] + c[:, :-1]) / 2
        cum = torch.cat([torch.zeros_like(c[:, :1]), torch.cumsum(trapezoids, 1)], dim=1)
        q = 0.5 * s
        b = c[:, :-1] - s * t
        a = cum[:, :-1] - t * c[:, :-1] + q * t * t
        zero = torch.zeros(1, self.num_channels, 1, dtype=dtype, device=c.device)
        a0, b0, q0 = self.lookup(torch.stack([a, b, q], -1).reshape(-1, 3), zero)
        a = a - (a0 + zero * (b0 + q0 * zero)).reshape(-1, 1)   # Psi(0) = 0
        return torch.stack([a, b, q], -1)

    @torch.no_grad()
    def scaled_integral(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                        ) -> torch.Tensor:
        r""":math:`\tfrac{b}{a}\,\Psi(a\,x)` elementwise, without autograd: the potential of
        the scaled activation :meth:`scaled` (:math:`\tfrac{d}{dx}` of it is
        :math:`b\,\sigma(a x)`). Scalings as in :meth:`scaled`; the quadratic of each
        interval is scaled per sample, :math:`(b a_k / a,\ b\,b_k,\ a b\,q_k)`, and
        evaluated by two fused multiply-adds."""
        self._check_input("scaled_integral", x)
        B, C = x.shape[:2]
        tab = inference_cache(self, "quadratic", x.dtype, lambda: self._quadratic_table(x.dtype))
        a = self.as_scaling(a, x, "LipschitzSpline.scaled_integral")
        b = self.as_scaling(b, x, "LipschitzSpline.scaled_integral")
        n = max(a.shape[0], b.shape[0])
        rows = self._scaled_rows(x, a, n)
        ba = (b / a).reshape(n, -1, 1)
        bb = b.reshape(b.shape[0], -1, 1)
        ab = (a * b).reshape(n, -1, 1)

        def col(w, j):
            return self.pick((w * tab[..., j]).expand(n, C, -1), rows, x.shape)

        out = col(bb, 1).addcmul_(col(ab, 2), x)     # Horner, one pass per degree
        return col(ba, 0).addcmul_(out, x)

    @torch.no_grad()
    def scaled_slope(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r""":math:`b\,\sigma'(a\,x)` elementwise, without autograd: the slope column of
        :meth:`scaled`'s lookup (right derivative at knots, up to the rounding of the
        interval index there). Scalings as in :meth:`scaled`."""
        self._check_input("scaled_slope", x)
        C = x.shape[1]
        tab = inference_cache(self, "segments", x.dtype, lambda: self.segment_table().to(
            x.dtype).reshape(C, self.num_knots - 1, 2))
        a = self.as_scaling(a, x, "LipschitzSpline.scaled_slope")
        b = self.as_scaling(b, x, "LipschitzSpline.scaled_slope")
        n = max(a.shape[0], b.shape[0])
        slope = (b.reshape(b.shape[0], -1, 1) * tab[..., 1]).expand(n, C, -1)
        return self.pick(slope, self._scaled_rows(x, a, n), x.shape)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        r"""Elementwise derivative :math:`\sigma'(x)` (right derivative at knots)."""
        self._check_input("derivative", x)
        return self.lookup(self.segment_table()[:, 1:], x)[0]

    def integrate(self, x: torch.Tensor) -> torch.Tensor:
        r"""Exact antiderivative :math:`\Psi(x) = \int_0^x \sigma(t)\,dt`, elementwise.

        Notes
        -----
        With :math:`P_k = \int_{t_0}^{t_k}\sigma` (trapezoid rule, exact for a linear
        spline), on the extended interval :math:`k` of :math:`x`

        .. math::

            \int_{t_0}^{x}\sigma = P_k + (x - t_k)\,\frac{c_k + \sigma(x)}{2},

        which is also exact for :math:`x` outside the grid, and
        :math:`\Psi(x) = \int_{t_0}^{x}\sigma - \int_{t_0}^{0}\sigma`.
        """
        self._check_input("integrate", x)
        # on interval k the primitive is a quadratic a_k + b_k x + q_k x^2 (expanded from the
        # Notes' form): one lookup of three columns per element instead of four
        tab = self._quadratic_table(x.dtype)
        ak, bk, qk = self.lookup(tab.reshape(-1, 3), x)
        return ak + x * (bk + qk * x)

    # ------------------------------------------------------------------ penalties / bounds
    def tv2(self) -> torch.Tensor:
        r"""Second-order total variation :math:`\sum_{i,k} |c_{k+1} - 2c_k + c_{k-1}|`.

        Computed on the projected knot values and summed over channels (0-d tensor).
        """
        return torch.diff(self.projected_coefficients(), n=2, dim=1).abs().sum()

    @torch.no_grad()
    def derivative_bounds(self) -> tuple[float, float]:
        r"""Smallest and largest slope of the current projected spline (over all channels).

        Always inside :attr:`slope_bounds`; a tighter, still certified, pair of bounds
        on :math:`\sigma'`.
        """
        table = self.segment_table()
        s = table[:, 1]
        return float(s.min()), float(s.max())

    # ------------------------------------------------------------------ inference cache
    @torch.no_grad()
    def freeze(self) -> LipschitzSpline:
        """Cache the projected (intercept, slope) table for fast inference; returns ``self``."""
        self.frozen_table = None
        self.frozen_table = self.segment_table().detach().clone()
        return self

    def unfreeze(self) -> LipschitzSpline:
        """Drop the cache of :meth:`freeze` (the spline is trainable again); returns ``self``."""
        self.frozen_table = None
        return self

    def extra_repr(self) -> str:
        return (
            f"num_channels={self.num_channels}, num_knots={self.num_knots}, "
            f"knot_range={self.knot_range}, slope_bounds={self._slope_bounds}"
        )
