r"""The calculus of a ridge sum :math:`R(x) = \sum_{c,p} \Psi_c((sWx)_{c,p})`: filter
responses, the potentials' first and second derivatives, value, gradient and Hessian-vector
products, and the compiled (fused) form of the potentials.

:class:`RidgeCalculus` is the base of :class:`~lipinverse.regularizers.ConvexRidge` (and so
of :class:`~lipinverse.regularizers.WeakConvexRidge`): it reads the attributes those set up
(``W``, ``convex_spline``, ``concave_part``, ``num_convex_only``) and the scalings
:class:`~lipinverse.regularizers.ridge_parts.RidgeScalings`; the configuration, the
certificates and the public API with its checks live in :mod:`~lipinverse.regularizers.ridge`.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn

from operators.linalg import fft_dtype

from .._resources import STRIP_ELEMENTS
from . import ridge_fused
from .ridge_parts import RidgeScalings, composed_kernel

__all__ = ["RidgeCalculus", "STRIP_ELEMENTS"]

# the ridges whose potentials run compiled (ConvexRidge.compile_potentials); kept outside
# the modules so that copying or saving a model never carries the flag
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class RidgeCalculus(nn.Module):
    """Value, gradient and Hessian of a ridge sum (see the module docstring); no input checks
    (the public methods of the subclasses check)."""

    def _filters(self, x: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        return self.W.linear(x) * sc.s.to(x.dtype)

    def _concave(self, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``v`` on all channels, with ``0`` on the convex-only ones prepended."""
        return torch.cat([torch.zeros_like(z[:, :self.num_convex_only]), v], dim=1)

    def _activation(self, z: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        r"""Elementwise :math:`\lambda\psi'(\mu z) - (0,\ \kappa\phi'(\nu z_2))` of the
        filter responses ``z`` (the derivative of the potentials)."""
        lam, mu = sc.lam.to(z.dtype), sc.mu.to(z.dtype)
        if not torch.is_grad_enabled():  # the same values in fewer passes (inference)
            out = self.convex_spline.scaled(z, mu, lam)
            if self.concave_part is not None:
                first = self.num_convex_only
                out[:, first:] -= self.concave_part.scaled(z[:, first:], sc.nu.to(z.dtype),
                                                           sc.kappa.to(z.dtype))
            return out
        out = lam * self.convex_spline(mu * z)
        if self.concave_part is not None:
            kappa, nu = sc.kappa.to(z.dtype), sc.nu.to(z.dtype)
            z2 = z[:, self.num_convex_only:]
            out = out - self._concave(z, kappa * self.concave_part(nu * z2))
        return out

    def _curvature(self, z: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        r"""Elementwise second derivative of the potentials at the responses ``z``,
        :math:`\lambda\mu\psi''(\mu z) - (0,\ \kappa\nu\phi''(\nu z_2))` (a.e.)."""
        lam, mu = sc.lam.to(z.dtype), sc.mu.to(z.dtype)
        d2 = lam * mu * self.convex_spline.derivative(mu * z)
        if self.concave_part is not None:
            kappa, nu = sc.kappa.to(z.dtype), sc.nu.to(z.dtype)
            z2 = z[:, self.num_convex_only:]
            d2 = d2 - self._concave(z, kappa * nu * self.concave_part.derivative(nu * z2))
        return d2

    @torch.no_grad()
    def _curvature_fast(self, z: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        """:meth:`_curvature` by the inference lookups (no autograd; at a knot the interval
        index may round to the other side): for the preconditioner's mean curvatures."""
        lam, mu = sc.lam.to(z.dtype), sc.mu.to(z.dtype)
        d2 = self.convex_spline.scaled_slope(z, mu, lam * mu)
        if self.concave_part is not None:
            first, nu = self.num_convex_only, sc.nu.to(z.dtype)
            d2[:, first:] -= self.concave_part.scaled_derivative(z[:, first:], nu,
                                                                sc.kappa.to(z.dtype) * nu)
        return d2

    def _fused_args(self, z: torch.Tensor, sc: RidgeScalings) -> tuple:
        """Arguments of :mod:`~lipinverse.regularizers.ridge_fused` (tables in ``z.dtype``)."""
        def tables(spline):
            tab = spline.segment_table().to(z.dtype).reshape(spline.num_channels,
                                                      spline.num_knots - 1, 2)
            return tab, (float(spline.knot_range[0]), float(spline.spacing),
                         spline.num_knots - 2)

        table, grid = tables(self.convex_spline)
        concave = None
        if self.concave_part is not None:
            h = self.concave_part.spline
            htab, hgrid = tables(h)
            h0 = h.projected_coefficients()[:, 0].to(z.dtype).view(1, -1, 1, 1)
            concave = (sc.kappa.to(z.dtype), sc.nu.to(z.dtype), htab, h0, hgrid,
                       float(self.concave_part.range), self.num_convex_only)
        return sc.lam.to(z.dtype), sc.mu.to(z.dtype), table, grid, concave

    def _fn(self, name: str):
        """``self._activation`` / ``self._curvature``, or their compiled pure forms
        (:mod:`~lipinverse.regularizers.ridge_fused`) after :meth:`compile_potentials`."""
        if self not in _COMPILED:
            return getattr(self, name)
        fused = ridge_fused.compiled(name.lstrip("_"))
        eager = getattr(self, name)

        def call(z: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
            try:
                return fused(z, *self._fused_args(z, sc))
            except Exception as err:  # no compiler, or torch.compile unsupported here
                _COMPILED.pop(self, None)
                warnings.warn(f"{type(self).__name__}.compile_potentials: torch.compile failed "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                              "running the potentials eagerly", RuntimeWarning, stacklevel=3)
                return eager(z, sc)

        return call

    def compile_potentials(self, enabled: bool = True) -> RidgeCalculus:
        r"""Run the elementwise potentials through :func:`torch.compile` (or back to eager).

        The spline lookups, the scalings and the concave part then run as one fused
        loop per call instead of about ten passes over the filter responses (the
        compiled code is shared by every ridge prior in the process). Under autograd the
        compiled backward's scatter-add into the spline tables is slower than eager's,
        but the fused forward more than makes up for it in training (t-step stage, batch
        128, 2 threads: 7.4 s / step compiled, 9.3 s eager). The first calls compile
        (tens of seconds, then cached on disk by torch); values equal the eager ones up
        to float rounding. Returns ``self``.
        """
        if enabled:
            _COMPILED[self] = True
        else:
            _COMPILED.pop(self, None)
        return self

    def _strips(self, x: torch.Tensor) -> list[tuple[int, int]] | None:
        """Row ranges to compute ``x``'s gradient or value in, or ``None`` for one pass:
        strips only without autograd and when a filter-response map of ``x`` would exceed
        ``STRIP_ELEMENTS`` (then the peak memory no longer grows with the image)."""
        B, _, H, W = x.shape
        per_row = B * self.W.linear.out_channels * W
        if per_row * H <= STRIP_ELEMENTS or (torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in self.parameters()))):
            return None
        rows = max(1, STRIP_ELEMENTS // per_row)
        return [(a, min(a + rows, H)) for a in range(0, H, rows)]

    def grad_scaled(self, x: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        r""":math:`\nabla R_\sigma(x)` with the noise-level scalings ``sc`` already computed
        (:meth:`scalings`): what :meth:`grad` does after computing them, for callers (the
        solvers, the training objectives) that reuse them across calls. No input check.

        Without autograd, a large image is done in strips of rows, each extended by the
        receptive field of :math:`W^\top W` (twice the filters' half-width ``p``): the
        gradient at a pixel depends on the pixels within ``2p`` rows only, and the zero
        padding of the filters applies at the image's edges as before, so the result is
        the one-pass result (up to the order of float sums) with a bounded peak memory."""
        strips = self._strips(x)
        if strips is None:
            return self._grad_pass(x, sc)
        reach, H = 2 * self.W.linear.total_pad[0], x.shape[-2]
        out = torch.empty_like(x)
        for a, b in strips:
            lo, hi = max(0, a - reach), min(H, b + reach)
            out[..., a:b, :] = self._grad_pass(x[..., lo:hi, :], sc)[..., a - lo:b - lo, :]
        return out

    def grad_value_scaled(self, x: torch.Tensor, sc: RidgeScalings):
        r"""``(grad_scaled(x, sc), v)``, ``v(rows=None)`` the per-sample :math:`R_\sigma(x)`
        (of the samples ``rows``) from the filter responses the gradient computed (kept
        until ``v`` is dropped), so that a line search that needs the value at a trial
        point it took the gradient of pays the potentials only, not the filters again.
        Where the gradient runs in strips (large images), ``v`` computes the value afresh:
        the responses are not kept."""
        def of(rows, value, arg):
            if rows is None:
                return value(arg, sc)
            return value(arg[rows], sc if sc.lam.shape[0] == 1 else sc.select(rows))

        if self._strips(x) is not None:
            return self.grad_scaled(x, sc), lambda rows=None: of(rows, self._value, x)
        z = self._filters(x, sc)
        g = self._transpose_activation(x, z, sc)
        return g, lambda rows=None: of(rows, self._value_of, z)

    def _transpose_activation(self, x: torch.Tensor, z: torch.Tensor, sc: RidgeScalings):
        out = self._fn("_activation")(z, sc)
        return self.W.linear.transpose(out, input_size=tuple(x.shape[-2:])) * sc.s.to(x.dtype)

    def _grad_pass(self, x: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        return self._transpose_activation(x, self._filters(x, sc), sc)

    def _responses(self, x: torch.Tensor, sc: RidgeScalings):
        """The filter responses of ``x``: whole, or strip by strip of rows where
        :meth:`_strips` asks (the responses of rows [a, b) need the rows within the reach
        of the filters)."""
        strips = self._strips(x)
        if strips is None:
            yield self._filters(x, sc)
            return
        reach, H = self.W.linear.total_pad[0], x.shape[-2]
        for a, b in strips:
            lo, hi = max(0, a - reach), min(H, b + reach)
            yield self._filters(x[..., lo:hi, :], sc)[..., a - lo:b - lo, :]

    def _value(self, x: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        return sum(self._value_of(z, sc) for z in self._responses(x, sc))

    def _value_of(self, z: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        """The sum of the potentials at the filter responses ``z`` (per sample)."""
        x = z
        lam, mu = sc.lam.to(x.dtype), sc.mu.to(x.dtype)
        fast = not torch.is_grad_enabled()   # the same sums in fewer passes (inference)
        if fast:
            val = self.convex_spline.scaled_integral(z, mu, lam).flatten(1).sum(1)
        else:
            val = (lam / mu * self.convex_spline.integrate(mu * z)).flatten(1).sum(1)
        if self.concave_part is not None:
            kappa, nu = sc.kappa.to(x.dtype), sc.nu.to(x.dtype)
            z2 = z[:, self.num_convex_only:]
            if fast:
                phi = self.concave_part.scaled_integral(z2, nu, kappa)
            else:
                phi = kappa / nu * self.concave_part.integrate(nu * z2)
            val = val - phi.flatten(1).sum(1)
        return val

    def hessian_at(self, x: torch.Tensor, sc: RidgeScalings, *, preconditioner: bool = False):
        r"""The map :math:`v \mapsto \nabla^2 R_\sigma(x)\,v = (sW)^\top D\,(sW)v` at a
        fixed ``x``, with the curvatures :math:`D` computed once (for conjugate
        gradients: one filter pass and one transposed pass per product). Called as
        ``apply(v)``, or ``apply(v, idx)`` for ``v`` holding only the samples ``idx``.

        With ``preconditioner=True`` also returns ``solve(r, idx)``, an SPD approximation
        of :math:`(I + \nabla^2 R_\sigma(x))^{-1}` for preconditioned CG: the curvatures
        of each channel replaced by their mean :math:`\bar d_c` over the image, so that
        :math:`I + \sum_c \bar d_c W_c^\top W_c` is diagonalised by the FFT (periodic on
        a grid padded by the filter support, then cropped: :math:`C P^{-1} C^\top`,
        symmetric positive definite whenever :math:`1 + \sum_c \bar d_c|\hat K_c|^2 > 0`;
        a channel mean is clamped at 0 from below, so it always is). It only changes the
        number of CG iterations, not what CG converges to.
        """
        s = sc.s.to(x.dtype)
        d2 = self._fn("_curvature")(self._filters(x, sc), sc) * (s * s)
        size = tuple(x.shape[-2:])
        lin = self.W.linear

        def apply(v: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
            d = d2 if idx is None or idx.numel() == d2.shape[0] else d2[idx]
            return lin.transpose(d * lin(v), input_size=size)

        if not preconditioner:
            return apply
        ph, pw = lin.total_pad   # the composed kernel is (2 ph + 1) x (2 pw + 1)
        grid = (size[0] + 2 * ph, size[1] + 2 * pw)
        with torch.no_grad():
            p_hat = 1.0 + self._symbol_of(d2.mean((-2, -1)), grid)

        def solve(r: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
            p = p_hat if idx is None or idx.numel() == p_hat.shape[0] else p_hat[idx]
            z = torch.fft.irfft2(torch.fft.rfft2(r, s=grid) / p.unsqueeze(1), s=grid)
            return z[..., :size[0], :size[1]]

        return apply, solve

    def _autocorrelations(self, dtype, device) -> torch.Tensor:
        r"""The autocorrelations :math:`K_c \star K_c` of the composed filters (input channel
        0, the grey priors' only one), shape ``(C, 2kh - 1, 2kw - 1)``, lag 0 at index 0
        (negative lags wrapped to the end); cached while the weights do not change."""
        key = (dtype, device, self.W._cache_key())
        hit = self.__dict__.get("_autocorrelation_cache")
        if hit is not None and hit[0] == key:
            return hit[1]
        with torch.no_grad():
            k = composed_kernel(list(self.W.linear.convs)).detach().to(device, dtype)[:, 0]
            size = (2 * k.shape[-2] - 1, 2 * k.shape[-1] - 1)   # no wrap-around: linear
            kh = torch.fft.rfft2(k, s=size)
            auto = torch.fft.irfft2(kh.real.square() + kh.imag.square(), s=size)
        self.__dict__["_autocorrelation_cache"] = (key, auto)
        return auto

    def _symbol_of(self, dbar: torch.Tensor, grid) -> torch.Tensor:
        r"""``sum_c dbar[b, c] |K_c|^2`` on the circular ``grid``, each mean clamped at 0 from
        below: the DFT of :math:`\sum_c \bar d_c\, K_c \star K_c` wrapped onto the grid
        (one FFT per sample, whatever the number of channels; exact for any grid size)."""
        dtype = fft_dtype(dbar.dtype)
        auto = self._autocorrelations(dtype, dbar.device)
        a = torch.einsum("bc,cuv->buv", dbar.to(dtype).clamp(min=0.0), auto)
        gh, gw = (int(v) for v in grid)
        uh, uw = auto.shape[-2:]
        lag_h = torch.arange(uh, device=dbar.device)
        lag_w = torch.arange(uw, device=dbar.device)
        rows = torch.where(lag_h <= uh // 2, lag_h, lag_h - uh) % gh
        cols = torch.where(lag_w <= uw // 2, lag_w, lag_w - uw) % gw
        img = torch.zeros(a.shape[0], gh * gw, dtype=dtype, device=dbar.device)
        img.index_add_(1, (rows[:, None] * gw + cols[None, :]).flatten(), a.flatten(1))
        return torch.fft.rfft2(img.view(-1, gh, gw)).real

    @torch.no_grad()
    def curvature_symbol_scaled(self, x: torch.Tensor, sc: RidgeScalings,
                                grid: tuple[int, int] | None = None) -> torch.Tensor:
        r"""The Fourier symbol of a circulant model of :math:`\nabla^2 R_\sigma(x)`.

        :math:`\nabla^2 R_\sigma(x) = (sW)^\top D\,(sW)` with :math:`D` the curvatures of
        the potentials at the responses; each channel's curvatures are replaced by their
        mean :math:`\bar d_c` over the image (clamped at 0), which leaves
        :math:`\sum_c \bar d_c s^2 |\hat K_c(\omega)|^2`, :math:`K_c` the composed filter of
        channel :math:`c`. On the circular ``grid`` (default: the image's ``(H, W)``),
        per sample, shape ``(B, gh, gw // 2 + 1)``. A model for preconditioners only
        (:class:`operators.linalg.FourierMetric`); large images are read in strips, so
        the memory stays that of a gradient.
        """
        grid = tuple(x.shape[-2:]) if grid is None else tuple(grid)
        s = sc.s.to(x.dtype)
        acc = fft_dtype(x.dtype)  # sums of many curvatures overflow float16
        total = sum(self._curvature_fast(z, sc).sum((-2, -1), dtype=acc)
                    for z in self._responses(x, sc))
        dbar = total * (s * s).reshape(-1, 1).to(acc) / (x.shape[-2] * x.shape[-1])
        return self._symbol_of(dbar, grid)

    def _channel_curvatures(self, sc: RidgeScalings) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Per sample and channel ``(B, C)`` float64 bounds :math:`lo_c \le p_c'' \le hi_c`
        of the potentials' curvatures, :math:`p_c'' = \lambda\mu\psi_c'' -
        \kappa_c\nu\phi_c''`, from the current spline slopes (the outer segments extend
        the end slopes): :math:`\psi_c''` lies between the smallest and the largest slope of
        spline :math:`c`, :math:`\phi_c''` between :math:`\min(0, \cdot)` and
        :math:`\max(0, \cdot)` of those of :math:`h_c`."""
        f64 = torch.float64

        def slope_range(spline):
            sl = spline.segment_table().to(f64)[:, 1].reshape(spline.num_channels, -1)
            return sl.amin(1), sl.amax(1)

        w1 = (sc.lam * sc.mu).to(f64).flatten(1)                  # (B, 1)
        shape = (w1.shape[0], self.W.linear.out_channels)
        lo, hi = (w1 * v[None].expand(*shape).clone() for v in slope_range(self.convex_spline))
        if self.concave_part is not None:
            a2, b2 = slope_range(self.concave_part.spline)
            w2 = (sc.kappa * sc.nu).to(f64).flatten(1)
            first = self.num_convex_only
            lo[:, first:] -= w2 * b2.clamp(min=0.0)
            hi[:, first:] -= w2 * a2.clamp(max=0.0)
        return lo, hi

    @torch.no_grad()
    def curvature_along_scaled(self, d: torch.Tensor, sc: RidgeScalings
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Certified per-sample ``(lo, hi)`` (float64) with :math:`lo \le d^\top
        \nabla^2 R_\sigma(x)\, d \le hi` at every :math:`x` (a.e.): the curvature of
        :math:`R_\sigma` along the direction ``d``.

        :math:`d^\top\nabla^2 R_\sigma(x) d = \sum_c \sum_p p_c''(\cdot)\,
        (sWd)_{c,p}^2`, so :math:`lo = \sum_c lo_c n_c`, :math:`hi = \sum_c hi_c n_c` with
        :math:`n_c = \|(sWd)_c\|^2` (one pass of the filters) and the per-channel curvature
        bounds of the potentials. Much tighter than :math:`\|d\|^2` times the global
        bounds: smooth directions have small filter responses, and most channels' bounds
        are far below the largest. Line searches certify Armijo steps from the slopes with
        it (:func:`operators.linalg.slope_rise_bound`)."""
        lo_c, hi_c = self._channel_curvatures(sc)
        n = sum(z.square().sum((-2, -1), dtype=torch.float64) for z in self._responses(d, sc))
        return (lo_c * n).sum(1), (hi_c * n).sum(1)

    def hvp_scaled(self, x: torch.Tensor, v: torch.Tensor, sc: RidgeScalings) -> torch.Tensor:
        r"""Hessian-vector product :math:`\nabla^2 R_\sigma(x)\,v` (a.e.)."""
        return self.hessian_at(x, sc)(v)
