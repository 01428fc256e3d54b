r"""Building pieces of the ridge regularisers: normalised filters, per-σ scalings, the
activation that turns one denoising step into a :class:`~lipinverse.nn.GradientStepBlock`,
and the unrolled (t-step) denoiser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lipinverse.nn import LipschitzSpline, MultiConv
from lipinverse.nn.linear import Constrained
from lipinverse.nn.norms import round_down_f32, symbol_norm_bound

from ._sigma import as_sigma

__all__ = [
    "RidgeActivation",
    "composed_kernel",
    "NormalizedChain",
    "RidgeScalings",
    "SolveInfo",
    "curvature_interval",
]


def composed_kernel(convs) -> torch.Tensor:
    r"""Kernel of the composition of stride-1 convolutions, shape ``(C_out, C_in, kh, kw)``.

    Notes
    -----
    For cross-correlations, :math:`w_2 \star (w_1 \star x) = (w_2 * w_1) \star x` with
    :math:`*` the full convolution summed over the middle channels, so the composed
    symbol is the product of the symbols (up to a phase, which does not change norms).
    """
    k = convs[0].weight.transpose(0, 1)
    for c in convs[1:]:
        w = c.weight.to(k.dtype)
        ph, pw = w.shape[-2] - 1, w.shape[-1] - 1
        k = F.conv2d(F.pad(k, (pw, pw, ph, ph)), torch.flip(w, dims=(-2, -1)))
    return k.transpose(0, 1)


class NormalizedChain(Constrained):
    r"""A zero-padded :class:`~lipinverse.nn.MultiConv` divided by a certified bound of its norm.

    Same maths as :class:`~lipinverse.nn.linear.Constrained` (``norm_bound() = 1``), but
    the bound :math:`\beta \ge \|W\|` is :func:`~lipinverse.nn.norms.symbol_norm_bound`
    of the *composed* kernel (:func:`composed_kernel`) on a grid :math:`N \ge 8d`
    (:math:`d` its degree): one FFT per output channel instead of one per kernel of the
    chain, several times faster during training, and at most about 4 % above
    :math:`\sup_\omega\|\hat K(\omega)\|`.  Cached while no gradient is needed.
    """

    def __init__(self, linear: MultiConv) -> None:
        if not isinstance(linear, MultiConv) or linear.mode != "pad_once":
            raise TypeError("NormalizedChain: expected a zero-padded stride-1 MultiConv")
        super().__init__(linear)
        degree = sum(k - 1 for c in linear.convs for k in c.kernel_size)
        n = 16
        while n < 8 * degree:
            n *= 2
        self.grid = n
        self._scale_cache = None

    def scale(self) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        key = self._cache_key()
        if not needs_grad and self._scale_cache is not None and self._scale_cache[0] == key:
            return self._scale_cache[1]
        k = composed_kernel([c for c in self.linear.convs]).to(torch.float64)
        value = round_down_f32(1.0 / symbol_norm_bound([(k, 1)], self.grid))
        if not needs_grad:
            self._scale_cache = (key, value.detach())
        return value


class RidgeScalings(NamedTuple):
    """Per-sample strengths at a noise level: ``lam, mu, nu`` of shape ``(B, 1, 1, 1)``,
    ``kappa`` of shape ``(B, C_2, 1, 1)`` (per channel of the concave part, see
    :func:`concave_strength`; ``kappa``/``nu`` are ``None`` without a concave part) and the
    filter scale ``s``."""

    s: torch.Tensor
    lam: torch.Tensor
    mu: torch.Tensor
    kappa: torch.Tensor | None
    nu: torch.Tensor | None

    def select(self, idx: torch.Tensor) -> RidgeScalings:
        """The scalings of the samples ``idx``."""
        return RidgeScalings(self.s, self.lam[idx], self.mu[idx],
                             None if self.kappa is None else self.kappa[idx],
                             None if self.nu is None else self.nu[idx])


@dataclass(frozen=True)
class SolveInfo:
    """Outcome of the inner solver of :meth:`ConvexRidge.solve` (per sample)."""

    iterations: torch.Tensor
    converged: torch.Tensor
    error_bound: torch.Tensor


def concave_top(concave_part, dtype) -> torch.Tensor:
    r""":math:`f_c(r)`, the final value of :math:`\phi_c'` (constant beyond the range),
    per channel of the concave part."""
    h = concave_part.spline.projected_coefficients().to(dtype)
    return (h[:, -1] - h[:, 0]).clamp(min=0.0)


def concave_strength(convex_spline, concave_part, lam: torch.Tensor, kappa: torch.Tensor,
                     first: int) -> torch.Tensor:
    r"""Per-channel strength :math:`\kappa_c = \min(\kappa, \lambda P_c / f_c(r))` of the
    concave part, shape ``(B, C_2, 1, 1)``, which keeps every potential bounded below.

    Beyond the spline grids the concave part of channel :math:`c` lowers the derivative
    :math:`\lambda\psi_c'` of the convex part by the constant :math:`\kappa f_c(r)` (the
    final value of :math:`\phi_c'`).  Where :math:`\psi_c'` ends flat (last, resp. first,
    slope 0) at the plateau :math:`\psi_c' = c_K`, resp. :math:`c_0`, the potential stays
    bounded below iff :math:`\lambda c_K \ge \kappa_c f_c(r)`, resp.
    :math:`-\lambda c_0 \ge \kappa_c f_c(r)`; a rising end needs no cap.  With
    :math:`P_c = \max(0, \min(c_K, -c_0))` over the flat ends (:math:`+\infty` if none),
    :math:`\kappa_c` is the largest strength :math:`\le \kappa` that keeps both.  Channels
    ``first:`` of ``convex_spline`` are those of the concave part.  (The cap is taken
    :math:`10^{-6}` below the bound, a margin over rounding.)
    """
    c = convex_spline.projected_coefficients()[first:].to(kappa.dtype)
    slopes = convex_spline.slopes()[first:].to(kappa.dtype)
    inf = torch.full_like(c[:, 0], float("inf"))
    plateau = torch.minimum(torch.where(slopes[:, -1] > 0, inf, c[:, -1]),
                            torch.where(slopes[:, 0] > 0, inf, -c[:, 0])).clamp(min=0.0)
    top = concave_top(concave_part, kappa.dtype)
    capped = torch.isfinite(plateau) & (top > 0)
    ratio = torch.where(capped, plateau, torch.zeros_like(plateau)) / torch.where(
        capped, top, torch.ones_like(top))
    lam2 = lam.reshape(-1, 1).to(ratio.dtype)
    # 1 - 1e-6: a margin over rounding, so that bounded_below certifies the capped channels
    cap = torch.where(capped, (1 - 1e-6) * lam2 * ratio,
                      torch.full_like(lam2 * ratio, float("inf")))
    kap = kappa.reshape(-1, 1).to(ratio.dtype)
    return torch.minimum(kap, cap).to(kappa.dtype)[:, :, None, None]


@torch.no_grad()
def bounded_below(model, sigma=None) -> bool:
    r"""Whether the ridge sum ``model`` (:class:`~lipinverse.regularizers.ConvexRidge`) is
    certified bounded below at ``sigma`` (a sufficient test).

    :math:`R_\sigma` is a sum of one-dimensional potentials :math:`p_c` of the filter
    responses; it is bounded below when every :math:`p_c` is.  Each :math:`p_c` is
    continuous and, outside the spline grids, has an affine derivative: beyond the
    last knot :math:`p_c'(t) = \lambda\psi_c'(\mu t) - \kappa f_c(r)` (the last
    term on :math:`C_2` only, :math:`f_c(r)` the final value of :math:`\phi_c'`), and
    symmetrically on the left.  So :math:`p_c` is bounded below iff, on the right,
    the last slope of :math:`\psi_c'` is positive or the limit of :math:`p_c'` is
    :math:`\ge 0`, and on the left, the first slope is positive or the limit is
    :math:`\le 0`.  Computed in float64 at ``sigma`` (default ``model.sigma``).
    For a :class:`~lipinverse.regularizers.WeakConvexRidge` the cap of the concave part
    makes this the test of the convex part alone.
    """
    sc = model.scalings(sigma, 1, torch.float64)
    spline = model.convex_spline
    c = spline.projected_coefficients().to(torch.float64)
    slopes = spline.slopes().to(torch.float64)
    lam = sc.lam.reshape(())
    right, left = lam * c[:, -1], lam * c[:, 0]
    if model.concave_part is not None:
        drop = sc.kappa.reshape(-1) * concave_top(model.concave_part, torch.float64)
        k = model.num_convex_only
        right = torch.cat([right[:k], right[k:] - drop])
        left = torch.cat([left[:k], left[k:] + drop])
    ok = ((slopes[:, -1] > 0) | (right >= 0)) & ((slopes[:, 0] > 0) | (left <= 0))
    return bool(ok.all())


def curvature_interval(sc: RidgeScalings, b1, b2) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-sample :math:`(lo, hi)` containing 0 and every curvature of the potentials.

    ``b1`` bounds :math:`\psi''` (every channel), ``b2`` bounds :math:`\phi''` of the
    subtracted concave part (channels :math:`C_2`), whose curvatures are
    :math:`\lambda\mu\psi'' - \kappa\nu\phi''`.
    """
    w1 = (sc.lam * sc.mu).reshape(-1)
    lo = torch.clamp(w1 * b1[0], max=0.0)
    hi = torch.clamp(w1 * b1[1], min=0.0)
    if sc.kappa is not None:
        w2 = (sc.kappa * sc.nu).flatten(1).amax(1)
        lo = torch.minimum(lo, w1 * b1[0] - w2 * b2[1])
        hi = torch.maximum(hi, w1 * b1[1] - w2 * b2[0])
    return lo, hi


class RidgeActivation(nn.Module):
    r"""The activation :math:`z\mapsto\lambda\psi'(\mu z) - (0,\ \kappa\phi'(\nu z_2))` at one σ.

    Used to express a gradient step on :math:`\tfrac12\|x-y\|^2 + R_\sigma(x)` as a
    :class:`~lipinverse.nn.GradientStepBlock` (the splines are shared with the
    regulariser; the scalars are fixed when it is built).  ``slope_bounds`` is the
    interval of :func:`curvature_interval` for the spline constraints;
    ``derivative_bounds`` the same with the current slopes.
    """

    def __init__(self, convex_spline: LipschitzSpline, concave_part, sc: RidgeScalings):
        super().__init__()
        if sc.lam.numel() != 1:
            raise ValueError("RidgeActivation: expected scalings of a single noise level, "
                             f"got {sc.lam.numel()}")
        self.convex_spline = convex_spline
        self.concave_part = concave_part
        self.c1 = convex_spline.num_channels - (
            0 if concave_part is None else concave_part.num_channels)
        self.lam, self.mu = sc.lam.detach().reshape(()), sc.mu.detach().reshape(())
        self.kappa = None if sc.kappa is None else sc.kappa.detach()
        self.nu = None if sc.nu is None else sc.nu.detach().reshape(())
        self._sc = RidgeScalings(sc.s, self.lam.reshape(1), self.mu.reshape(1),
                                 self.kappa,
                                 None if self.nu is None else self.nu.reshape(1))

    def _bounds(self, which: str):
        b1 = getattr(self.convex_spline, which)
        b1 = b1() if callable(b1) else b1
        b2 = (0.0, 0.0)
        if self.concave_part is not None:
            b2 = getattr(self.concave_part, which)
            b2 = b2() if callable(b2) else b2
        lo, hi = curvature_interval(self._sc, b1, b2)
        return lo.reshape(()), hi.reshape(())

    @property
    def slope_bounds(self):
        return self._bounds("slope_bounds")

    @torch.no_grad()
    def derivative_bounds(self) -> tuple[float, float]:
        lo, hi = self._bounds("derivative_bounds")
        return float(lo), float(hi)

    def _kappa(self, z: torch.Tensor) -> torch.Tensor:
        """Per-channel strengths of the concave part, shaped to broadcast with ``z``."""
        return self.kappa.to(z.dtype).reshape([1, -1] + [1] * (z.dim() - 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.lam.to(z.dtype) * self.convex_spline(self.mu.to(z.dtype) * z)
        if self.concave_part is None:
            return out
        nu = self.nu.to(z.dtype)
        part = self._kappa(z) * self.concave_part(nu * z[:, self.c1:])
        return out - torch.cat([torch.zeros_like(z[:, :self.c1]), part], dim=1)

    def integrate(self, z: torch.Tensor) -> torch.Tensor:
        lam, mu = self.lam.to(z.dtype), self.mu.to(z.dtype)
        out = (lam / mu) * self.convex_spline.integrate(mu * z)
        if self.concave_part is None:
            return out
        kappa, nu = self._kappa(z), self.nu.to(z.dtype)
        part = (kappa / nu) * self.concave_part.integrate(nu * z[:, self.c1:])
        return out - torch.cat([torch.zeros_like(z[:, :self.c1]), part], dim=1)


class RidgeAtSigma:
    r"""A ridge regulariser frozen at one noise level: the functional :math:`R_\sigma`.

    Exposes the solver contract: ``__call__``/``value`` (per sample), ``grad``,
    ``grad_value``, ``curvature_along``, ``prox``, ``denoise``, ``grad_lipschitz``,
    ``convex``, ``weak_convexity``; shares the weights of ``regularizer``.
    """

    def __init__(self, regularizer, sigma: float) -> None:
        if not (callable(getattr(regularizer, "scalings", None))
                and callable(getattr(regularizer, "solve", None))):
            raise TypeError(f"RidgeAtSigma: expected a ConvexRidge or WeakConvexRidge, "
                            f"got {type(regularizer).__name__}")
        as_sigma("RidgeAtSigma", sigma, 1, torch.float64, None)
        self.regularizer, self.sigma = regularizer, float(sigma)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.regularizer.value(x, self.sigma)

    __call__ = value

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.regularizer.grad(x, self.sigma)

    def grad_value(self, x: torch.Tensor):
        """:meth:`ConvexRidge.grad_value` at this noise level."""
        return self.regularizer.grad_value(x, self.sigma)

    def curvature_along(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`ConvexRidge.curvature_along` at this noise level."""
        return self.regularizer.curvature_along(d, self.sigma)

    def curvature_symbol(self, x: torch.Tensor, grid=None) -> torch.Tensor:
        """:meth:`ConvexRidge.curvature_symbol` at this noise level."""
        return self.regularizer.curvature_symbol(x, self.sigma, grid)

    def prox(self, x: torch.Tensor, tau=1.0, *, tol: float = 1e-4,
             max_iter: int = 1000, x0: torch.Tensor | None = None,
             method: str = "lbfgs") -> torch.Tensor:
        """:meth:`ConvexRidge.prox` at this noise level (same keywords)."""
        return self.regularizer.prox(x, tau, self.sigma, tol=tol, max_iter=max_iter, x0=x0,
                                     method=method)

    def denoise(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """:meth:`ConvexRidge.denoise` at this noise level (same keywords)."""
        return self.regularizer.denoise(y, self.sigma, **kwargs)

    @property
    def grad_lipschitz(self) -> float:
        lo, hi = self.regularizer.curvature_bounds(self.sigma)
        return max(-lo, hi)

    @property
    def weak_convexity(self) -> float:
        return max(0.0, -self.regularizer.curvature_bounds(self.sigma)[0])

    @property
    def convex(self) -> bool:
        return self.weak_convexity == 0.0

    def __repr__(self) -> str:
        return f"RidgeAtSigma({type(self.regularizer).__name__}, sigma={self.sigma:.4g})"
