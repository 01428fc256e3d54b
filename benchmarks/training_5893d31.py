r"""A frozen copy of the exact-minimiser (DEQ) training step as it stood at commit 5893d31.

``benchmarks/training.py`` times it side by side with the current step. It reads only the
parameters of a :class:`~lipinverse.regularizers.ConvexRidge` /
:class:`~lipinverse.regularizers.WeakConvexRidge` (through ``scalings``, the filter chain
and the spline coefficients) and re-does everything else as it was then: the per-element
spline lookups (``torch.gather``, one pass per column), the ridge gradient and
Hessian-vector product that recompute the filter responses at every call, FISTA with
restart and a per-iteration copy of the active samples, and conjugate gradients that
call the full Hessian-vector product at every iteration. Do not edit it to make it
faster: it is the reference the speed-up is measured against.
"""

from __future__ import annotations

import torch


def _lookup(spline, table: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    a, _ = spline.knot_range
    k = torch.floor((x - a) / spline.spacing).clamp_(0, spline.num_knots - 2).nan_to_num_(0.0)
    b, c = x.shape[:2]
    idx = k.long().reshape(b, c, -1)
    tab = table.to(x.dtype).reshape(c, spline.num_knots - 1, -1)
    return [torch.gather(tab[..., j].expand(b, c, -1), 2, idx).view(x.shape)
            for j in range(tab.shape[-1])]


def _table(spline) -> torch.Tensor:
    c = spline.projected_coefficients()
    s = spline.slopes()
    intercept = c[:, :-1] - s * spline.knots()[:-1]
    return torch.stack([intercept, s], dim=-1).reshape(-1, 2)


def _spline(spline, x):
    intercept, slope = _lookup(spline, _table(spline), x)
    return intercept + slope * x


def _spline_derivative(spline, x):
    return _lookup(spline, _table(spline)[:, 1:], x)[0]


def _even(pot, t):
    h0 = pot.spline.projected_coefficients()[:, 0]
    view = h0.to(t.dtype).view([1, -1] + [1] * (t.dim() - 2))
    u = t.abs().clamp(max=pot.range)
    return torch.sign(t) * (_spline(pot.spline, u) - view).clamp(min=0.0)


def _even_derivative(pot, t):
    h0 = pot.spline.projected_coefficients()[:, 0]
    view = h0.to(t.dtype).view([1, -1] + [1] * (t.dim() - 2))
    s = t.abs()
    sc = s.clamp(max=pot.range)
    active = (s < pot.range) & ((_spline(pot.spline, sc) - view).clamp(min=0.0) > 0)
    return torch.where(active, _spline_derivative(pot.spline, sc), torch.zeros_like(t))


def _concave(reg, z, v):
    return torch.cat([torch.zeros_like(z[:, :reg.num_convex_only]), v], dim=1)


def _filters(reg, x, sc):
    return reg.W.linear(x) * sc.s.to(x.dtype)


def grad(reg, x, sc):
    z = _filters(reg, x, sc)
    out = sc.lam * _spline(reg.convex_spline, sc.mu * z)
    if reg.concave_part is not None:
        z2 = z[:, reg.num_convex_only:]
        out = out - _concave(reg, z, sc.kappa * _even(reg.concave_part, sc.nu * z2))
    return reg.W.linear.transpose(out, input_size=tuple(x.shape[-2:])) * sc.s.to(x.dtype)


def hvp(reg, x, v, sc):
    z, u = _filters(reg, x, sc), _filters(reg, v, sc)
    d2 = sc.lam * sc.mu * _spline_derivative(reg.convex_spline, sc.mu * z)
    if reg.concave_part is not None:
        z2 = z[:, reg.num_convex_only:]
        d2 = d2 - _concave(reg, z, sc.kappa * sc.nu
                           * _even_derivative(reg.concave_part, sc.nu * z2))
    return reg.W.linear.transpose(d2 * u, input_size=tuple(x.shape[-2:])) * sc.s.to(x.dtype)


@torch.no_grad()
def solve(reg, y, sigma, tol, max_iter):
    """FISTA with gradient restart on 1/2|x - y|^2 + R_sigma(x), per-sample stopping."""
    from lipinverse.regularizers.ridge_parts import curvature_interval

    B = y.shape[0]
    sc = reg.scalings(sigma, B, y.dtype, y.device)
    sc64 = reg.scalings(sigma, B, torch.float64, y.device)
    b2 = (0.0, 0.0) if reg.concave_part is None else reg.concave_part.derivative_bounds()
    lo, hi = curvature_interval(sc64, reg.convex_spline.derivative_bounds(), b2)
    m, L = 1.0 + lo, 1.0 + hi
    view = (-1, 1, 1, 1)
    Linv = (1.0 / L).to(y.dtype).reshape(view)
    target = tol * y.flatten(1).norm(dim=1).clamp_min(1e-12).to(torch.float64) * m
    x, z = y.clone(), y.clone()
    t = torch.ones(B, dtype=torch.float64)
    its = torch.zeros(B, dtype=torch.long)
    active = torch.arange(B)
    for _ in range(int(max_iter)):
        za, xa, ya = z[active], x[active], y[active]
        g = za - ya + grad(reg, za, sc.select(active))
        gn = g.flatten(1).norm(dim=1).to(torch.float64)
        its[active] += 1
        x_new = za - Linv[active] * g
        done = gn <= target[active]
        restart = (g * (x_new - xa)).flatten(1).sum(1) > 0
        ta = t[active]
        t_new = torch.where(restart, torch.ones_like(ta),
                            0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * ta * ta)))
        beta = torch.where(restart, torch.zeros_like(ta), (ta - 1.0) / t_new)
        z_new = x_new + beta.to(y.dtype).reshape(view) * (x_new - xa)
        x[active] = x_new
        z[active] = torch.where(done.reshape(view), x_new, z_new)
        t[active] = t_new
        active = active[~done]
        if active.numel() == 0:
            break
    return x, its


def conjugate_gradient(apply_A, b, tol, max_iter):
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r.flatten(1).pow(2).sum(1)
    target = (tol ** 2) * rs
    shape = (-1,) + (1,) * (b.dim() - 1)
    it = 0
    for it in range(1, int(max_iter) + 1):
        if bool((rs <= target).all()):
            it -= 1
            break
        Ap = apply_A(p)
        pAp = (p * Ap).flatten(1).sum(1)
        alpha = torch.where(pAp > 0, rs / pAp.clamp_min(1e-300), torch.zeros_like(rs))
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * Ap
        rs_new = r.flatten(1).pow(2).sum(1)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-300), torch.zeros_like(rs))
        p = r + beta.reshape(shape) * p
        rs = rs_new
    return x, it


def deq_loss(reg, clean, noisy, sigma, *, tol=1e-3, max_iter=500, cg_tol=1e-3,
             cg_max_iter=200, tv2_weight=1e-5):
    """``(loss, metrics)`` of the DEQ denoising loss (MSE, implicit gradient), as then."""
    x_star, its = solve(reg, noisy, sigma, tol, max_iter)
    sc = reg.scalings(sigma, noisy.shape[0], noisy.dtype, noisy.device)
    leaf = x_star.detach().requires_grad_(True)
    with torch.enable_grad():
        per_sample = (leaf - clean).pow(2).flatten(1).mean(1)
        (g,) = torch.autograd.grad(per_sample.mean(), leaf)
    with torch.no_grad():
        sc0 = reg.scalings(sigma, noisy.shape[0], noisy.dtype, noisy.device)
        v, cg_its = conjugate_gradient(lambda u: u + hvp(reg, x_star, u, sc0), g,
                                       cg_tol, cg_max_iter)
    surrogate = -(v * grad(reg, x_star, sc)).sum()
    value = per_sample.detach().mean()
    loss = surrogate + (value - surrogate).detach()
    if tv2_weight:
        loss = loss + tv2_weight * reg.tv2()
    return loss, {"data_loss": float(value), "fixed_point_iterations": float(its.float().mean()),
                  "cg_iterations": float(cg_its)}
