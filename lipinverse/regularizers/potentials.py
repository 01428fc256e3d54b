r"""A learnable even, weakly convex, bounded-below potential (the nonconvex ridge part)."""

from __future__ import annotations

import torch
from torch import nn

from lipinverse.nn import LipschitzSpline

__all__ = ["EvenPotential"]


def _relu_segment(pa: torch.Tensor, pb: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    r"""Exact :math:`\int_0^L \max(0, p(s))\,ds` for the linear :math:`p` from ``pa`` to ``pb``."""
    pos_a, pos_b = pa.clamp(min=0.0), pb.clamp(min=0.0)
    both = length * (pos_a + pos_b) / 2
    # one sign change: triangle of height max(pa, pb) over the part where p > 0
    denom = (pa.abs() + pb.abs()).clamp_min(1e-30)
    top = torch.maximum(pos_a, pos_b)
    tri = length * top * top / (2 * denom)
    mixed = (pa > 0) != (pb > 0)
    return torch.where(mixed, tri, both)


class EvenPotential(nn.Module):
    r"""Per-channel :math:`\phi(t) = \int_0^{|t|} f(\min(s, r))\,ds`, :math:`f = \max(0, h - h(0))`.

    Parameters
    ----------
    num_channels : int
    num_knots : int
        Knots of the spline :math:`h` on :math:`[0, r]`.
    knot_range : float
        :math:`r > 0`.
    init_slope : float in (0, 1], default 0.5
        Initial :math:`h(s) = \text{init\_slope}\cdot s`, i.e. :math:`\phi(t) =
        \text{init\_slope}\, t^2/2` on :math:`[-r, r]` (convex; training may bend it).
    slope_bounds : (float, float), default (-1, 1)
        Interval :math:`[lo, hi] \subset [-1, 1]` of the slopes of :math:`h`, with
        ``lo <= 0 < hi``.  ``(0, 1)`` gives a *convex* :math:`\phi` (then
        :math:`f = h - h(0)`, a nondecreasing spline, and :math:`\phi` is a
        Huber-like potential, quadratic near 0 and linear beyond :math:`r`).

    Notes
    -----
    :math:`h` is a :class:`~lipinverse.nn.LipschitzSpline` with slopes in :math:`[lo, hi]`.
    Then :math:`\phi'(t) = \operatorname{sign}(t)\,f(\min(|t|, r))` is odd,
    continuous, and :math:`\phi'' \in [\min(0, lo_h), \max(0, hi_h)] \subset
    [-1, 1]`, so :math:`\phi` is 1-weakly convex with a 1-Lipschitz derivative; and
    since :math:`t\,\phi'(t) \ge 0`, :math:`\phi` is even and nondecreasing in
    :math:`|t|`: :math:`\phi \ge \phi(0) = 0` (bounded below, which keeps variational
    problems with a non-injective forward operator well posed).  It can still be
    nonconvex (e.g. a bounded, "redescending" :math:`\phi'`).  :meth:`integrate` is
    exact: on each linear piece of :math:`h` the integral of the positive part has a
    closed form.

    :math:`h` must not start constant: then :math:`f \equiv 0` sits on the kink of the
    max, where no gradient reaches :math:`h`, and the potential never trains (hence
    ``init_slope > 0``).

    The module follows the activation protocol of :class:`LipschitzSpline`:
    ``forward`` (:math:`\phi'`), ``derivative`` (:math:`\phi''`), ``integrate``
    (:math:`\phi`), ``slope_bounds``, ``derivative_bounds()``, ``tv2()``.
    """

    def __init__(self, num_channels: int, num_knots: int = 21, knot_range: float = 1.0,
                 init_slope: float = 0.5, slope_bounds: tuple[float, float] = (-1.0, 1.0)
                 ) -> None:
        super().__init__()
        r = float(knot_range)
        if not r > 0:
            raise ValueError(f"EvenPotential: expected knot_range > 0, got {knot_range!r}")
        lo, hi = (float(v) for v in slope_bounds)
        if not -1.0 <= lo <= 0.0 < hi <= 1.0:
            raise ValueError("EvenPotential: expected slope_bounds (lo, hi) with "
                             f"-1 <= lo <= 0 < hi <= 1, got {tuple(slope_bounds)!r}")
        if not 0 < float(init_slope) <= hi:
            raise ValueError(f"EvenPotential: expected init_slope in (0, {hi:g}], "
                             f"got {init_slope!r}")
        self.range = r
        self.slope_bounds = (lo, hi)
        self.spline = LipschitzSpline(num_channels, num_knots, (0.0, r), (lo, hi),
                                      init="identity")
        with torch.no_grad():
            self.spline.coefficients.mul_(float(init_slope))
        self.num_channels = num_channels

    def _view(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v.to(t.dtype).view([1, -1] + [1] * (t.dim() - 2))

    def _d(self, s: torch.Tensor) -> torch.Tensor:
        h0 = self.spline.projected_coefficients()[:, 0]
        return self.spline(s) - self._view(s, h0)

    def _f(self, s: torch.Tensor) -> torch.Tensor:
        return self._d(s).clamp(min=0.0)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi'(t)`."""
        return torch.sign(t) * self._f(t.abs().clamp(max=self.range))

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi''(t)` (almost everywhere)."""
        s = t.abs()
        sc = s.clamp(max=self.range)
        active = (s < self.range) & (self._f(sc) > 0)
        return torch.where(active, self.spline.derivative(sc), torch.zeros_like(t))

    def integrate(self, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi(t)` (exact)."""
        sp = self.spline
        c = sp.projected_coefficients().to(t.dtype)
        d = c - c[:, :1]                                    # h(t_k) - h(0), shape (C, K)
        delta = torch.as_tensor(sp.spacing, dtype=t.dtype, device=t.device)
        pieces = _relu_segment(d[:, :-1], d[:, 1:], delta.expand_as(d[:, 1:]))
        prefix = torch.cat([torch.zeros_like(d[:, :1]), torch.cumsum(pieces, 1)], dim=1)
        s = t.abs()
        u = s.clamp(max=self.range)
        # per interval k of the spline's knots t_k: (h(t_k) - h(0), prefix integral, t_k)
        knots = sp.knots().to(t.dtype)[:-1].expand_as(d[:, :-1])
        table = torch.stack([d[:, :-1], prefix[:, :-1], knots], -1).reshape(-1, 3)
        dk, pk, tk = sp.lookup(table, u)
        partial = _relu_segment(dk, self._d(u), u - tk)
        tail = self._view(t, d[:, -1].clamp(min=0.0)) * (s - self.range).clamp(min=0.0)
        return pk + partial + tail

    @torch.no_grad()
    def derivative_bounds(self) -> tuple[float, float]:
        """Certified bounds of :math:`\\phi''`: ``(min(0, lo_h), max(0, hi_h))``."""
        lo, hi = self.spline.derivative_bounds()
        return min(0.0, lo), max(0.0, hi)

    def tv2(self) -> torch.Tensor:
        """Second-order total variation of :math:`h` (training penalty)."""
        return self.spline.tv2()

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, range={self.range}"
