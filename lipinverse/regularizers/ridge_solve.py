r"""Inner solvers of the ridge denoising problem :math:`\min_x F(x) = \tfrac12\|x-y\|^2 +
\tau R_\sigma(x)`, batched, one stopping decision per sample.

Both take the gradient :math:`\nabla F` (of the active samples) and certified constants
:math:`0 < m \le \nabla^2 F \preceq L` per sample, and stop a sample at the first point
:math:`z` with :math:`\|\nabla F(z)\| \le m\,\mathrm{tol}\,\|y\|`: by strong convexity,
:math:`\|z - x^*\| \le \|\nabla F(z)\|/m`, so the stopping test is a *certificate* of
the distance to the minimiser whatever the iterates were. They return the gradient step
:math:`z - \nabla F(z)/L` from that point, which is no farther from :math:`x^*`
(a step :math:`1/L` is a contraction towards :math:`x^*` on such an :math:`F`).

- :func:`fista`: FISTA with the gradient restart of O'Donoghue & Candès (2015);
  :math:`O(\sqrt{L/m}\log(1/\mathrm{tol}))` gradients, a theorem.
- :func:`anderson`: type-II Anderson acceleration (Walker & Ni, 2011) of the gradient
  map :math:`T(z) = z - \nabla F(z)/L`, memory ``memory``, with a safeguard: a sample
  whose gradient norm exceeds ``restart`` times its best one restarts from the
  gradient step at its best point with an empty memory. No rate is claimed for it; on
  trained ridge priors it needs about half of FISTA's gradients (measured in
  ``benchmarks/training.py``), and its output carries the same certificate.
- :func:`lbfgs`: L-BFGS with Armijo steps certified from gradients alone; about half of
  Anderson's gradients to the same PSNR on the shipped ridges; the same certificate.
"""

from __future__ import annotations

import numbers

import torch

from operators.linalg import FourierMetric

from ._sigma import as_sigma
from .colour import fold, unfold
from .ridge_parts import SolveInfo, curvature_interval

__all__ = ["fista", "anderson", "lbfgs", "METHODS"]

#: The inner methods of :func:`solve_ridge`.
METHODS = ("fista", "anderson", "lbfgs")

_VIEW = (-1, 1, 1, 1)

#: :func:`lbfgs` tries first :math:`\text{LINE\_MIN\_FRACTION}\,\min(1, t^*_{k-1})`, with
#: :math:`t^*_{k-1}` the secant estimate of the last line search's minimum (see there).
LINE_MIN_FRACTION = 0.8


def _setup(y, m, L, tol):
    B = y.shape[0]
    target = tol * y.flatten(1).norm(dim=1).clamp_min(1e-12).to(torch.float64) * m
    its = torch.zeros(B, dtype=torch.long, device=y.device)
    err = torch.full((B,), float("inf"), dtype=torch.float64, device=y.device)
    return target, its, err


def fista(grad, y, m, L, *, tol, max_iter, x0=None):
    r"""FISTA with gradient restart; ``grad(z, idx)`` is :math:`\nabla F` of samples ``idx``.

    Returns ``(x, iterations, converged, error_bound)`` (per sample).
    """
    B = y.shape[0]
    target, its, err = _setup(y, m, L, tol)
    Linv = (1.0 / L).to(y.dtype).reshape(_VIEW)
    x = (y if x0 is None else x0).clone()
    z = x.clone()
    t = torch.ones(B, dtype=torch.float64, device=y.device)
    active = torch.arange(B, device=y.device)
    for _ in range(int(max_iter)):
        za, xa = z[active], x[active]
        g = grad(za, active)
        gn = g.flatten(1).norm(dim=1).to(torch.float64)
        err[active] = gn / m[active]
        its[active] += 1
        x_new = za - Linv[active] * g
        done = gn <= target[active]
        restart = (g * (x_new - xa)).flatten(1).sum(1) > 0
        ta = t[active]
        t_new = torch.where(restart, torch.ones_like(ta),
                            0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * ta * ta)))
        beta = torch.where(restart, torch.zeros_like(ta), (ta - 1.0) / t_new)
        z_new = x_new + beta.to(y.dtype).reshape(_VIEW) * (x_new - xa)
        x[active] = x_new
        z[active] = torch.where(done.reshape(_VIEW), x_new, z_new)
        t[active] = t_new
        active = active[~done]
        if active.numel() == 0:
            break
    converged = torch.ones(B, dtype=torch.bool, device=y.device)
    converged[active] = False
    return x, its, converged, err


def anderson(grad, y, m, L, *, tol, max_iter, x0=None, memory: int = 8,
             restart: float = 10.0):
    r"""Safeguarded type-II Anderson acceleration of :math:`z \mapsto z - \nabla F(z)/L`.

    With :math:`f_i = T(z_i)` and residuals :math:`r_i = f_i - z_i` of the last
    :math:`n \le` ``memory`` iterates, the next iterate is :math:`\sum_i \alpha_i f_i`,
    :math:`\alpha = \arg\min \{\|\sum_i \alpha_i r_i\| : \sum_i\alpha_i = 1\}`
    (normal equations in float64, Tikhonov-regularised by :math:`10^{-10}` of their
    trace). Same arguments and returns as :func:`fista`.
    """
    if int(memory) < 1:
        raise ValueError(f"anderson: expected memory >= 1, got {memory}")
    B, shape = y.shape[0], y.shape[1:]
    n_pix = y[0].numel()
    dev, dt = y.device, y.dtype
    target, its, err = _setup(y, m, L, tol)
    Linv = (1.0 / L).to(dt).reshape(_VIEW)
    M = int(memory)
    F_hist = torch.zeros(B, M, n_pix, dtype=dt, device=dev)
    R_hist = torch.zeros(B, M, n_pix, dtype=dt, device=dev)
    count = torch.zeros(B, dtype=torch.long, device=dev)   # valid entries per sample
    best = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    x = (y if x0 is None else x0).clone()
    best_f = x.flatten(1).clone()   # a restart before any finite point goes back to x0
    z = x.clone()
    eye = torch.eye(M, dtype=torch.float64, device=dev)
    active = torch.arange(B, device=dev)
    for k in range(int(max_iter)):
        za = z[active]
        g = grad(za, active)
        gn = g.flatten(1).norm(dim=1).to(torch.float64)
        err[active] = gn / m[active]
        its[active] += 1
        f = (za - Linv[active] * g).flatten(1)
        done = gn <= target[active]
        x[active] = f.view((-1,) + tuple(shape))
        # safeguard: far worse than the best point so far -> restart from it
        bad = ~torch.isfinite(gn) | (gn > restart * best[active])
        better = gn < best[active]
        idx_better = active[better]
        best[idx_better] = gn[better]
        best_f[idx_better] = f[better]
        slot = k % M
        F_hist[active, slot] = f
        R_hist[active, slot] = f - za.flatten(1)
        cnt = torch.clamp(count[active] + 1, max=M)
        cnt = torch.where(bad, torch.zeros_like(cnt), cnt)
        count[active] = cnt
        age = (slot - torch.arange(M, device=dev)) % M          # age of each slot
        valid = age.unsqueeze(0) < cnt.unsqueeze(1)             # (b, M)
        Ra = R_hist[active].to(torch.float64)
        G = Ra @ Ra.transpose(1, 2)
        vm = valid.to(torch.float64)
        G = G * vm.unsqueeze(1) * vm.unsqueeze(2)
        trace = (G.diagonal(dim1=1, dim2=2).sum(1) / cnt.clamp(min=1)).reshape(-1, 1, 1)
        G = G + eye * (1e-10 * trace + 1e-30) + torch.diag_embed(1.0 - vm)
        alpha = torch.linalg.solve(G, vm.unsqueeze(-1)).squeeze(-1)
        alpha = alpha / alpha.sum(1, keepdim=True)
        z_new = torch.einsum("bm,bmn->bn", alpha.to(dt), F_hist[active])
        z_new = torch.where(bad.unsqueeze(1), best_f[active], z_new)
        z_new = torch.where(done.unsqueeze(1), f, z_new)
        z[active] = z_new.view((-1,) + tuple(shape))
        active = active[~done]
        if active.numel() == 0:
            break
    converged = torch.ones(B, dtype=torch.bool, device=dev)
    converged[active] = False
    return x, its, converged, err


def lbfgs(grad, y, m, L, *, tol, max_iter, x0=None, memory: int = 10, metric=None):
    r"""L-BFGS with Armijo steps certified from the slopes alone (no value of :math:`F`).

    :math:`F` is :math:`m`-strongly convex with :math:`\nabla F` :math:`L`-Lipschitz, so
    :func:`operators.linalg.slope_rise_bound` (with :math:`\rho = -m`) certifies
    :math:`F(z + td) \le F(z) + 10^{-4} t\, \nabla F(z)^\top d` from the slope at the
    trial point. (Values where the slopes fail, as :class:`~lipinverse.solvers.LBFGS` takes
    them, and the curvature along the direction, ``curvature_along_scaled``, did not pay
    here: measured, a value costs about the gradients it saves, and the denoiser's
    directions are rough, their filter responses as large as the global bound assumes.) The
    first trial step is :math:`0.8\,\min(1, t^*_{k-1})` (:data:`LINE_MIN_FRACTION`; 0.8 at
    the first iteration), with :math:`t^*_{k-1} = t\,a/(a - b)` the secant estimate of the
    previous line minimum from the slopes :math:`a` at its start and :math:`b` at the step
    :math:`t` it took (1 where :math:`b \le a`). Why: a trial certified from slopes alone
    must land before the line minimum, and the quasi-Newton directions of the shipped
    ``wcrr`` are 2-5x too long for ten iterations in a row and a little too long later,
    so unit first trials failed in one iteration out of four. Measured on four set12
    256x256 crops at sigma 15 and 25/255 (tol 1e-3): 392 gradients against 454 with unit
    first trials for ``wcrr`` (camera 256², sigma 25: 58 against 70), 101 against 115 for
    ``crr``; letting the first trial reach 1 again (:math:`t^*` up to 1.25) gave 463. So
    no unit step is tried after the first iteration: near the minimiser the rate is that
    of steps 0.8 of the quasi-Newton step, linear rather than superlinear, which the
    tolerances of denoising (1e-3 to 1e-4) do not reach. After a gradient step (the
    search's fallback) or a safeguard restart :math:`t^* = 1`. The certificate is
    unchanged (any first trial keeps every step certified; the clamp of :math:`t^*` at
    1e-3 keeps first trials bounded below, as Armijo's convergence theorem needs).
    A failed trial is shortened by
    the secant factor of the two slopes (clamped to [0.1, 0.9]; 1/2 when the slope is still
    negative), at most 10 times, after which the step is the gradient step
    :math:`z - \nabla F(z)/L` (certified by the descent lemma). A direction that is not a
    descent direction (:math:`-g^\top d < 10^{-6}\|g\|\|d\|`) is replaced by
    :math:`-g/L` with the memory cleared. Per-sample memory
    (:class:`operators.linalg.LBFGSMemory`). Same arguments, stopping test and
    returns as :func:`fista`: the certificate does not depend on the iterates. On the
    shipped ridges it needs about half of Anderson's gradients to the same PSNR
    (``benchmarks/time_to_psnr.py``).

    ``metric(z)``, optional: a :class:`operators.linalg.FourierMetric` for the batch ``z``
    (built at the start and once more at iteration
    :data:`operators.linalg.METRIC_REFRESH`): the recursion then starts from
    :math:`H^0 = \gamma P^{-1}` (preconditioned L-BFGS; the safeguards and the
    certificate are unchanged).
    """
    from operators.linalg import (
        METRIC_REFRESH,
        LBFGSMemory,
        armijo_search,
        safeguard_direction,
        slope_rise_bound,
    )

    if int(memory) < 1:
        raise ValueError(f"lbfgs: expected memory >= 1, got {memory}")
    B, dev, dt = y.shape[0], y.device, y.dtype
    target, its, err = _setup(y, m, L, tol)
    Lt = L.to(dt)
    x = (y if x0 is None else x0).clone()
    mem = LBFGSMemory(B, y[0].numel(), int(memory), 1.0 / Lt if metric is None else 1.0, dt,
                      dev, metric=None if metric is None else metric(x))
    out = x.clone()
    active = torch.arange(B, device=dev)
    g = grad(x, active)
    t_min = torch.ones(B, dtype=torch.float64, device=dev)  # last line minimum (<= 1)
    for k in range(int(max_iter)):
        gn = g.flatten(1).norm(dim=1).to(torch.float64)
        err[active] = gn / m[active]
        done = gn <= target[active]
        La = Lt[active].reshape(_VIEW)
        out[active] = x[active] - g / La   # the certified point: a gradient step
        keep = ~done
        active, g = active[keep], g[keep]
        if active.numel() == 0:
            break
        its[active] += 1
        if k == METRIC_REFRESH and metric is not None:
            mem.set_metric(metric(x))
        xa, La = x[active], Lt[active]
        gf = g.flatten(1)
        d = mem.direction(gf, active)
        d, gd, bad = safeguard_direction(gf, d, 1.0 / La, delta=1e-6)
        if bool(bad.any()):
            mem.clear(active[bad])
        d = d.view_as(xa)
        ma = m[active].to(dt)  # strong convexity: phi'' >= m |d|^2, a "weak convexity" of -m
        x_new, g_new, _, _, t_acc, b = armijo_search(
            xa, g, d, gd, lambda z, rows=active: grad(z, rows),
            lambda t, a, b, n, big_l=La, mu=ma: slope_rise_bound(t, a, b, n, big_l, -mu),
            1.0 / La,
            todo=torch.ones_like(bad), t0=(LINE_MIN_FRACTION * t_min[active]).clamp(max=1.0),
            return_steps=True)
        # the secant line minimum t a / (a - b), at most 1; 1 where the slope did not rise,
        # after a gradient step (NaN t: not along d) and after a safeguard restart
        rise = b > gd
        t_star = torch.where(rise, t_acc * gd / torch.where(rise, gd - b, -1.0), 1.0)
        t_star = torch.where(bad | torch.isnan(t_star), 1.0, t_star)
        # clamped at 1e-3: first trials stay bounded below (Armijo's convergence theorem)
        t_min[active] = t_star.to(torch.float64).clamp(1e-3, 1.0)
        mem.push((x_new - xa).flatten(1), (g_new - g).flatten(1), active)
        x[active], g = x_new, g_new
    converged = torch.ones(B, dtype=torch.bool, device=dev)
    converged[active] = False
    return out, its, converged, err


def solve_ridge(model, y: torch.Tensor, tau=1.0, sigma=None, *, tol: float = 1e-4,
                max_iter: int = 1000, x0: torch.Tensor | None = None, method: str = "fista"):
    r"""The body of :meth:`~lipinverse.regularizers.ConvexRidge.solve` (see there): checks,
    colour folding, the strong-convexity and smoothness constants from the certified
    curvature interval, then :func:`fista` or :func:`anderson` on
    :math:`F(x) = \tfrac12\|x-y\|^2 + \tau R_\sigma(x)`."""
    name = f"{type(model).__name__}.solve"
    model._check_x("solve", y)
    if (isinstance(tol, bool) or not isinstance(tol, numbers.Real)
            or isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral)):
        raise TypeError(f"{name}: expected a float tol and an int max_iter, got "
                        f"{type(tol).__name__}, {type(max_iter).__name__}")
    if not tol > 0 or max_iter < 1:
        raise ValueError(f"{name}: expected tol > 0 and max_iter >= 1, got {tol}, {max_iter}")
    if method not in METHODS:
        raise ValueError(f"{name}: expected method 'fista', 'anderson' or 'lbfgs', got "
                         f"{method!r}")
    k = model._colour(y)
    if k > 1:  # separable in the transformed channels (colour module Notes)
        B = y.shape[0]
        if x0 is not None and x0.shape != y.shape:
            raise ValueError(f"{name}: expected x0 of shape {tuple(y.shape)}, got "
                             f"{tuple(x0.shape)}")
        u, info = solve_ridge(model, fold(y),
                              model._per_channel(f"{name} (tau)", tau, B, k, y.device),
                              model._per_channel(name, sigma, B, k, y.device), tol=tol,
                              max_iter=max_iter, x0=None if x0 is None else fold(x0),
                              method=method)
        return unfold(u, k), SolveInfo(
            info.iterations.reshape(B, k).amax(1), info.converged.reshape(B, k).all(1),
            info.error_bound.reshape(B, k).square().sum(1).sqrt())
    B = y.shape[0]
    with torch.no_grad():
        tau_t = as_sigma(f"{name} (tau)", tau, B, torch.float64, y.device)
        if bool((tau_t <= 0).any()):
            raise ValueError(f"{name}: expected tau > 0, got {tau_t.tolist()}")
        sc = model.scalings(sigma, B, y.dtype, y.device)
        sc64 = model.scalings(sigma, B, torch.float64, y.device)
        b2 = ((0.0, 0.0) if model.concave_part is None
              else model.concave_part.derivative_bounds())
        lo, hi = curvature_interval(sc64, model.convex_spline.derivative_bounds(), b2)
        m = 1.0 + tau_t * lo
        L = 1.0 + tau_t * hi
        if bool((m <= 0).any()):
            raise ValueError(f"{name}: 1/2||x-y||^2 + tau R is not strongly convex "
                             f"(tau * rho = {(-tau_t * lo).max().item():.3g} >= 1)")
        tau_x = tau_t.to(y.dtype).reshape(-1, 1, 1, 1)

        def grad(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return z - y[idx] + tau_x[idx] * model.grad_scaled(z, sc.select(idx))

        kw = {}
        if method == "lbfgs" and y.dim() == 4:  # the Fourier metric P = I + tau R's model
            def metric(z: torch.Tensor) -> FourierMetric:
                sym = model.curvature_symbol_scaled(z, sc) * tau_x.reshape(-1, 1, 1)
                return FourierMetric(sym.add_(1.0), z.shape[-2:])

            kw["metric"] = metric
            if x0 is None:  # the minimiser of the circulant quadratic model at y
                x0 = metric(y).solve(y.flatten(1), torch.arange(B, device=y.device)
                                     ).view_as(y)
        run = {"fista": fista, "anderson": anderson, "lbfgs": lbfgs}[method]
        x, its, converged, err = run(grad, y, m, L, tol=tol, max_iter=max_iter, x0=x0, **kw)
    return x, SolveInfo(its, converged, err)
