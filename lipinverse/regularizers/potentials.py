r"""A learnable even, weakly convex, bounded-below potential (the nonconvex ridge part)."""

from __future__ import annotations

import torch
from torch import nn

from lipinverse.nn import LipschitzSpline
from lipinverse.nn.splines import inference_cache

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

    def _scalings(self, name: str, t: torch.Tensor, a, b) -> tuple[torch.Tensor, torch.Tensor]:
        """Checks of :meth:`scaled` / :meth:`scaled_integral`: ``t`` of ``(B, C, ...)`` and
        the two scalings as tensors (:meth:`LipschitzSpline.as_scaling`)."""
        if t.dim() < 2 or t.shape[1] != self.num_channels:
            raise ValueError(f"EvenPotential.{name}: expected input (B, {self.num_channels}, "
                             f"...), got {tuple(t.shape)}")
        return (self.spline.as_scaling(a, t, f"EvenPotential.{name}"),
                self.spline.as_scaling(b, t, f"EvenPotential.{name}"))

    @torch.no_grad()
    def scaled(self, t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r""":math:`b\,\phi'(a\,t)` elementwise, without autograd (``a > 0`` of shape
        ``(B, 1, 1, 1)``, ``b`` of shape ``(B, 1, 1, 1)`` or ``(B, C, 1, 1)``): the same
        values as ``b * self(a * t)`` up to rounding, in fewer passes (the lookup of
        :math:`h - h(0)` on :math:`\min(a|t|, r)` from one table, then the positive part
        and the sign)."""
        a, b = self._scalings("scaled", t, a, b)
        _, _, d, _ = self._h_lookup(t, a)
        d.clamp_(min=0.0).mul_(torch.sign(t).reshape(d.shape)).mul_(b.reshape(b.shape[0], -1, 1))
        return d.view(t.shape)

    def _h_lookup(self, t: torch.Tensor, a: torch.Tensor):
        r"""``(s, u, d, h')`` at :math:`s = a|t|` (``(B, C, N)``), :math:`u = \min(s, r)`:
        :math:`d = h(u) - h(0)` and :math:`h'(u)`, from one lookup of the cached table."""
        sp = self.spline
        B, C = t.shape[:2]
        tab, h0 = inference_cache(self, "segments", t.dtype, lambda: (
            sp.segment_table().to(t.dtype).reshape(C, sp.num_knots - 1, 2),
            sp.projected_coefficients()[:, :1].to(t.dtype)))
        s = t.abs().reshape(B, C, -1).mul_(a.reshape(a.shape[0], -1, 1))
        u = s.clamp(max=self.range)
        rows = sp.table_rows((u / sp.spacing).clamp_(0, sp.num_knots - 2).nan_to_num_(0.0), 1)
        slope = sp.pick(tab[..., 1][None], rows, s.shape)
        return s, u, sp.pick((tab[..., 0] - h0)[None], rows, s.shape).addcmul_(slope, u), slope

    @torch.no_grad()
    def scaled_derivative(self, t: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                          ) -> torch.Tensor:
        r""":math:`b\,\phi''(a\,t)` elementwise, without autograd (scalings as in
        :meth:`scaled`): :math:`h'` where :math:`a|t| < r` and :math:`h(a|t|) > h(0)`, else
        0, from :meth:`scaled`'s table."""
        a, b = self._scalings("scaled_derivative", t, a, b)
        s, _, d, slope = self._h_lookup(t, a)
        out = torch.where((s < self.range) & (d > 0), slope, torch.zeros_like(slope))
        return out.mul_(b.reshape(b.shape[0], -1, 1)).view(t.shape)

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

    def _piece_table(self, dtype) -> torch.Tensor:
        r"""Per interval :math:`k` of the knots of :math:`h`, :math:`(A, B, Q, G, Z)` with
        :math:`\int_0^u f = A + B u + Q u^2 + G \max(0, u - Z)^2` for :math:`u` in the
        interval, shape ``(C, K-1, 5)``.

        With :math:`d = h - h(0)` linear on the interval, from :math:`d_k` to
        :math:`d_{k+1}` (slope :math:`m`), and :math:`P_k = \int_0^{t_k} f`:
        where :math:`d \ge 0` on the whole interval, :math:`P_k + d_k (u - t_k) +
        \tfrac m2 (u - t_k)^2`; where :math:`d \le 0`, :math:`P_k`; where :math:`d` rises
        through 0 at :math:`Z`, :math:`P_k + \tfrac m2 \max(0, u - Z)^2`; where it falls
        through 0 at :math:`Z`, the quadratic of the first case minus
        :math:`\tfrac m2 \max(0, u - Z)^2` (which stops it at its value at :math:`Z`).
        """
        sp = self.spline
        c = sp.projected_coefficients().to(dtype)
        d = c - c[:, :1]
        delta = torch.as_tensor(sp.spacing, dtype=dtype, device=c.device)
        pieces = _relu_segment(d[:, :-1], d[:, 1:], delta.expand_as(d[:, 1:]))
        prefix = torch.cat([torch.zeros_like(d[:, :1]), torch.cumsum(pieces, 1)], dim=1)[:, :-1]
        dk, dn = d[:, :-1], d[:, 1:]
        t = sp.knots().to(dtype)[:-1].expand_as(dk)
        m = (dn - dk) / sp.spacing
        pos = (dk >= 0) & (dn >= 0)
        up, down = (dk < 0) & (dn > 0), (dk > 0) & (dn < 0)
        quad = pos | down
        zero = torch.zeros_like(dk)
        alpha = torch.where(quad, dk, zero)
        beta = torch.where(quad, m / 2, zero)
        gamma = torch.where(up, m / 2, torch.where(down, -m / 2, zero))
        cross = torch.where(up | down, t - dk / torch.where(up | down, m, 1.0), t)
        return torch.stack([prefix - alpha * t + beta * t * t, alpha - 2 * beta * t, beta,
                            gamma, cross], -1)

    @torch.no_grad()
    def scaled_integral(self, t: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                        ) -> torch.Tensor:
        r""":math:`\tfrac{b}{a}\,\phi(a\,t)` elementwise, without autograd (``a > 0`` of shape
        ``(B, 1, 1, 1)``, ``b`` of shape ``(B, 1, 1, 1)`` or ``(B, C, 1, 1)``): the same
        values as ``b / a * self.integrate(a * t)`` up to rounding, from one table of five
        columns per interval (:meth:`_piece_table`) instead of two lookups and the
        piecewise formula per element."""
        a, b = self._scalings("scaled_integral", t, a, b)
        sp = self.spline
        B, C = t.shape[:2]
        n = max(a.shape[0], b.shape[0])
        w = (b / a).reshape(n, -1, 1, 1)
        piece, rise = inference_cache(self, "pieces", t.dtype, lambda: (
            self._piece_table(t.dtype),
            (lambda c: (c[:, -1] - c[:, 0]).clamp(min=0.0))(
                sp.projected_coefficients().to(t.dtype))))
        tab = w * piece            # (n, C, K-1, 5); the crossing points Z are not scaled
        tab[..., 4] = piece[..., 4]
        top = w[..., 0] * rise.reshape(1, -1, 1)
        s = t.abs().reshape(B, C, -1).mul_(a.reshape(a.shape[0], -1, 1))  # |a t|
        u = s.clamp(max=self.range)
        rows = sp.table_rows((u / sp.spacing).clamp_(0, sp.num_knots - 2).nan_to_num_(0.0), n)

        def col(j):
            return sp.pick(tab[..., j].expand(n, C, -1), rows, u.shape)

        out = col(0).addcmul_(col(1).addcmul_(col(2), u), u)   # Horner
        g = torch.sub(u, col(4)).clamp_(min=0.0)
        out.addcmul_(g.square_(), col(3))
        out.addcmul_(s.sub_(self.range).clamp_(min=0.0), top.expand(B, C, 1))
        return out.view(t.shape)

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
