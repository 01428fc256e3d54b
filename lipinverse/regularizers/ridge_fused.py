r"""The ridge potentials as pure tensor functions, for :func:`torch.compile`.

:meth:`ConvexRidge.compile_potentials <lipinverse.regularizers.ConvexRidge.compile_potentials>`
routes the elementwise part of the gradient and of the Hessian through these functions,
compiled once per process (not per model: their arguments are tensors and plain numbers,
so every ridge prior of the same structure shares the compiled code). They compute the
same maths as the modules' eager methods:

.. math::

    a(z) = \lambda\psi'(\mu z) - (0,\ \kappa\phi'(\nu z_2)), \qquad
    a'(z) = \lambda\mu\psi''(\mu z) - (0,\ \kappa\nu\phi''(\nu z_2)),

with :math:`\psi'` the convex spline (per-interval table of intercepts and slopes) and
:math:`\phi'(t) = \operatorname{sign}(t)\max(0, h(\min(|t|, r)) - h(0))` the concave part
(:class:`~lipinverse.regularizers.potentials.EvenPotential`, spline :math:`h` on
:math:`[0, r]`).
"""

from __future__ import annotations

import torch

__all__ = ["activation", "curvature", "compiled"]


def _interval(x, a: float, spacing: float, kmax: int):
    k = torch.floor((x - a) / spacing).clamp(0, kmax)
    return torch.nan_to_num(k, 0.0).long()


def _column(table, k, col: int):
    """``table[c, k, col]`` per element (``table`` of shape ``(C, K-1, m)``)."""
    b, c = k.shape[:2]
    idx = k.reshape(b, c, -1)
    return torch.gather(table[..., col].expand(b, c, -1), 2, idx).view(k.shape)


def _spline(x, table, grid):
    k = _interval(x, *grid)
    return _column(table, k, 0) + _column(table, k, 1) * x


def _spline_slope(x, table, grid):
    return _column(table, _interval(x, *grid), 1)


def activation(z, lam, mu, table, grid, concave=None):
    r""":math:`a(z)`; ``concave = (kappa, nu, h_table, h0, h_grid, r, first)`` or None."""
    out = lam * _spline(mu * z, table, grid)
    if concave is None:
        return out
    kappa, nu, htab, h0, hgrid, r, first = concave
    t = nu * z[:, first:]
    f = (_spline(t.abs().clamp(max=r), htab, hgrid) - h0).clamp(min=0.0)
    return torch.cat([out[:, :first], out[:, first:] - kappa * torch.sign(t) * f], dim=1)


def curvature(z, lam, mu, table, grid, concave=None):
    r""":math:`a'(z)` (a.e.); arguments as :func:`activation`."""
    out = lam * mu * _spline_slope(mu * z, table, grid)
    if concave is None:
        return out
    kappa, nu, htab, h0, hgrid, r, first = concave
    s = (nu * z[:, first:]).abs()
    sc = s.clamp(max=r)
    on = (s < r) & (_spline(sc, htab, hgrid) - h0 > 0)
    d2 = torch.where(on, _spline_slope(sc, htab, hgrid), torch.zeros_like(s))
    return torch.cat([out[:, :first], out[:, first:] - kappa * nu * d2], dim=1)


_COMPILED: dict = {}


def compiled(name: str):
    """The :func:`torch.compile` d :func:`activation` or :func:`curvature` (made once)."""
    if name not in _COMPILED:
        fn = {"activation": activation, "curvature": curvature}[name]
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]
