r"""The iterative linear algebra of the library, written once.

- :func:`conjugate_gradient`: batched CG for SPD systems (one system per sample), optionally
  preconditioned, with per-sample stopping;
- :func:`collatz_wielandt`: a certified upper bound of :math:`\|M\|` for an entrywise
  nonnegative operator;
- :func:`power_iteration`: an estimate (a lower bound) of :math:`\|A\|`;
- :func:`operator_norm`: the norm an :class:`~operators.Operator` reports, as a typed
  :class:`~operators.bounds.Bound`;
- :class:`LBFGSMemory`, :func:`slope_rise_bound` and :func:`armijo_search`: the
  quasi-Newton memory, the gradient-only Armijo certificate and the safeguarded line search
  shared by :class:`lipinverse.solvers.LBFGS` and the ridge priors' inner solver;
- :func:`normal_symbol` and :class:`FourierMetric`: the Fourier symbol of :math:`A^\top A`
  and the circulant preconditioner that L-BFGS starts its recursion from.

The functions take duck-typed operators (``_forward`` / ``_adjoint`` on validated input,
``in_shape``), so this module imports nothing else of the package.
"""

from __future__ import annotations

import math
import warnings

import torch

from .bounds import Bound
from .fourier import METRIC_REFRESH, FourierMetric, fft_dtype, normal_symbol

__all__ = ["ConvergenceError", "NORM_SAFETY", "batch_dot", "conjugate_gradient",
           "collatz_wielandt", "power_iteration", "operator_norm", "shifted_normal_cg",
           "LBFGSMemory", "slope_rise_bound", "safeguard_direction", "armijo_search",
           "fft_dtype", "normal_symbol", "FourierMetric", "METRIC_REFRESH"]

#: Relative safety margin applied to a power-iteration estimate when no closed form and no
#: nonnegative majorant is available (see :func:`operator_norm`). The result is still an
#: estimate: its ``Bound.certified`` is False.
NORM_SAFETY = 1e-2


class ConvergenceError(RuntimeError):
    """An inner iterative method did not reach its tolerance within its iteration cap."""


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products :math:`\\langle a_i, b_i\\rangle`, shape ``(B,)``."""
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(apply, b: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 500,
                       x0: torch.Tensor | None = None, batched: bool = False,
                       precondition=None, name: str | None = None
                       ) -> tuple[torch.Tensor, int]:
    r"""Batched conjugate gradients for SPD systems :math:`A v = b`, one system per sample.

    A sample stops once :math:`\|r\| \le \mathrm{tol}\,\|b\|` (true residual). With
    ``batched=True``, ``apply(p, idx)`` is called on the samples ``idx`` that have not
    stopped only (the systems are independent, so each sample's computation is the same,
    with less work once some have converged); otherwise ``apply(p)`` on the whole batch.
    ``precondition(r, idx)``, an SPD approximation of :math:`A^{-1}`, gives preconditioned
    CG: fewer iterations, the same stopping test.

    Returns
    -------
    x, iterations :
        The solution and the number of iterations of the slowest sample.

    Raises
    ------
    ConvergenceError
        With a ``name``, if some sample has not met ``tol`` after ``max_iter`` iterations
        (without a name, the last iterate is returned and the caller checks).
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b.clone() if x0 is None else b - (apply(x, torch.arange(b.shape[0], device=b.device))
                                          if batched else apply(x))
    every = torch.arange(b.shape[0], device=b.device)
    z = r if precondition is None else precondition(r, every)
    p = z.clone()
    rs = r.flatten(1).pow(2).sum(1)
    rz = (r * z).flatten(1).sum(1)
    target = (tol ** 2) * b.flatten(1).pow(2).sum(1)
    shape = (-1,) + (1,) * (b.dim() - 1)
    active = every
    it = 0
    for it in range(1, int(max_iter) + 1):
        if batched:
            active = active[rs[active] > target[active]]
            if active.numel() == 0:
                it -= 1
                break
        elif bool((rs <= target).all()):
            it -= 1
            break
        pa, rza = p[active], rz[active]
        Ap = apply(pa, active) if batched else apply(pa)
        pAp = (pa * Ap).flatten(1).sum(1)
        alpha = torch.where(pAp > 0, rza / pAp.clamp_min(1e-300), torch.zeros_like(rza))
        x[active] = x[active] + alpha.reshape(shape) * pa
        ra = r[active] - alpha.reshape(shape) * Ap
        za = ra if precondition is None else precondition(ra, active)
        rz_new = (ra * za).flatten(1).sum(1)
        beta = torch.where(rza > 0, rz_new / rza.clamp_min(1e-300), torch.zeros_like(rza))
        r[active] = ra
        p[active] = za + beta.reshape(shape) * pa
        rz[active] = rz_new
        rs[active] = ra.flatten(1).pow(2).sum(1)
    if name is not None and not bool((rs <= target).all()):
        worst = (rs / target.clamp_min(torch.finfo(b.dtype).tiny)).max().sqrt().item() * tol
        raise ConvergenceError(
            f"{name}: conjugate gradients did not reach relative residual {tol:g} in "
            f"{max_iter} iterations (worst sample at {worst:.3g}); raise max_iter or tol")
    return x, it


def shifted_normal_cg(A, b: torch.Tensor, shift: float, *, tol: float, max_iter: int,
                      x0: torch.Tensor | None = None, name: str) -> torch.Tensor:
    r"""Solve :math:`(A^\top A + s I)\,x = b` by conjugate gradients (raises
    :class:`ConvergenceError` past ``max_iter``).

    For :math:`s > 1` it solves :math:`(A^\top A/s + I)\,u = b` for :math:`u = s x`
    instead: the residual is the same vector (so the same test), and no vector grows to
    :math:`s\|b\|`, which overflowed for :math:`s` near the float maximum.
    """
    def normal(v):
        return A._adjoint(A._forward(v))

    if shift <= 1.0:
        return conjugate_gradient(lambda v: normal(v) + shift * v, b, tol=tol, max_iter=max_iter,
                                  x0=x0, name=name)[0]
    u0 = None if x0 is None else x0 * shift
    if u0 is not None and not bool(torch.isfinite(u0).all()):
        u0 = None
    u, _ = conjugate_gradient(lambda v: normal(v) / shift + v, b, tol=tol, max_iter=max_iter,
                              x0=u0, name=name)
    return u / shift


def collatz_wielandt(M, dtype=torch.float64, device="cpu", rtol: float = 1e-6,
                     max_iter: int = 500) -> Bound:
    r"""Certified upper bound of :math:`\|M\|` for an entrywise nonnegative operator.

    For nonnegative :math:`G = M^\top M` and positive :math:`v`,
    :math:`\rho(G) \le \max_i (Gv)_i / v_i` (Collatz-Wielandt). Power iteration from the
    all-ones vector keeps ``v`` positive, and the bound decreases towards :math:`\rho(G)`;
    it stops when it is within ``rtol`` of the Rayleigh-quotient lower bound. Zero entries
    of ``Gv`` (pixels that no measurement sees) get a tiny positive floor, which keeps the
    bound valid.
    """
    shape = M.in_shape
    if shape is None:
        raise ValueError(
            f"{type(M).__name__}.norm: a shape-polymorphic operator needs a closed-form norm"
        )
    v = torch.ones((1,) + tuple(shape), dtype=dtype, device=device)
    best_upper = math.inf
    for _ in range(max_iter):
        g = M._adjoint(M._forward(v))
        upper = (g / v).max().item()
        lower = (batch_dot(v, g) / batch_dot(v, v)).item()
        best_upper = min(best_upper, upper)
        if best_upper - lower <= rtol * best_upper:
            break
        gmax = g.max()
        if gmax <= 0:
            return Bound(0.0, certified=True, how="Collatz-Wielandt")
        v = (g / gmax).clamp_min(1e-30)
    # a few ulps of float64 rounding on top
    return Bound(math.sqrt(best_upper) * (1.0 + 1e-12), certified=True, how="Collatz-Wielandt")


def power_iteration(A, *, dtype: torch.dtype = torch.float64, device="cpu", shape=None,
                    tol: float = 1e-6, max_iter: int = 1000,
                    generator: torch.Generator | None = None) -> float:
    r"""Power-iteration estimate of :math:`\sigma_{\max}(A)` (not its square).

    Iterates :math:`v \leftarrow A^\top A v / \|A^\top A v\|` from a random start until the
    estimate changes by less than ``tol`` (relative). The result is a *lower* bound of the
    true norm (a Rayleigh quotient), not a certificate.
    """
    in_shape = A.in_shape if shape is None else tuple(shape)
    if in_shape is None:
        raise ValueError(f"power_iteration: {type(A).__name__} is shape-polymorphic; pass "
                         "shape=(C, H, W)")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v = torch.randn((1,) + tuple(in_shape), generator=g, dtype=dtype).to(device)
    v = v / v.norm()
    est = 0.0
    for _ in range(max_iter):
        w = A._adjoint(A._forward(v))
        new = math.sqrt(max(float((v * w).sum()), 0.0))
        nw = float(w.norm())
        if nw == 0.0:
            return 0.0
        v = w / nw
        if abs(new - est) <= tol * max(new, 1e-300):
            return new
        est = new
    return est


def operator_norm(A, dtype, device, rtol: float, max_iter: int) -> Bound:
    r"""The norm that :meth:`operators.Operator.norm` reports, in order of preference.

    1. a closed form (``A._norm``), exact or an analytic upper bound: certified;
    2. with a nonnegative entrywise majorant :math:`M \ge |A|` (``A._majorant()``), the
       Collatz-Wielandt bound of :math:`\|M\| \ge \|A\|`: certified;
    3. otherwise power iteration to relative change ``rtol``, times ``1 + NORM_SAFETY``:
       an *estimate* (``certified=False``), with a warning.
    """
    val = A._norm(dtype, device)
    if val is not None:
        return val if isinstance(val, Bound) else Bound(val, certified=True, how="closed form")
    maj = A._majorant()
    if maj is not None:
        return collatz_wielandt(maj, dtype, device, rtol, max_iter)
    warnings.warn(
        f"{type(A).__name__}.norm: no closed form or nonnegative majorant; returning a "
        f"power-iteration estimate times (1 + {NORM_SAFETY}), which is not certified",
        stacklevel=3,
    )
    est = power_iteration(A, dtype=dtype, device=device, tol=rtol, max_iter=max_iter)
    return Bound(est * (1.0 + NORM_SAFETY), certified=False,
                 how=f"power-iteration estimate x (1 + {NORM_SAFETY})")


class LBFGSMemory:
    r"""Per-sample ring buffers of L-BFGS curvature pairs, and the two-loop recursion.

    Holds, for each of ``batch`` samples, the last ``memory`` pairs :math:`(s_j, y_j)` with
    :math:`s_j^\top y_j > \epsilon\|s_j\|\|y_j\|` (a pair failing that, e.g. on a
    nonconvex objective, is not stored for that sample: every sample keeps its own pairs,
    so results do not depend on the batch), and the initial scaling :math:`\gamma =
    s^\top y / y^\top H y` of its newest pair (``gamma0`` before any).

    The recursion starts from :math:`H^0 = \gamma H`, :math:`H = I`, or :math:`H = P^{-1}`
    for a ``metric`` :math:`P` (:class:`FourierMetric`): preconditioned L-BFGS, i.e.
    L-BFGS in the variables :math:`P^{1/2}x`.

    Tensors are flat per sample, ``(b, n)``; ``idx`` (``(b,)`` long) names the samples of
    the rows.
    """

    def __init__(self, batch: int, n: int, memory: int, gamma0, dtype, device,
                 metric: FourierMetric | None = None) -> None:
        self.S = torch.zeros(batch, memory, n, dtype=dtype, device=device)
        self.Y = torch.zeros_like(self.S)
        self.rho = torch.zeros(batch, memory, dtype=dtype, device=device)
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.head = torch.zeros(batch, dtype=torch.long, device=device)  # next slot
        self.gamma0 = torch.as_tensor(gamma0, dtype=dtype, device=device).expand(batch)
        self.gamma = self.gamma0.clone()
        self.m = memory
        self.metric = metric

    def set_metric(self, metric: FourierMetric) -> None:
        r"""Start the recursion from another metric (the pairs do not depend on it); each
        sample's :math:`\gamma` is recomputed from its newest pair in the new metric."""
        self.metric = metric
        i = (self.count > 0).nonzero().flatten()
        if i.numel() == 0:
            return
        slot = (self.head[i] - 1) % self.m
        y = self.Y[i, slot]
        yhy = batch_dot(y, metric.solve(y, i))
        ok = yhy > 0
        self.gamma[i[ok]] = (1.0 / self.rho[i, slot])[ok] / yhy[ok]   # s^T y / y^T P^-1 y

    def _h(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return v if self.metric is None else self.metric.solve(v, idx)

    def direction(self, g: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        r""":math:`-H g` from the two-loop recursion (newest pair first), rows ``idx``.

        When the rows are all the samples and they hold the same number of pairs in the same
        slots (always for one sample), the pairs are read as views and only the live ones
        are visited; otherwise each slot is gathered per sample."""
        count, head = self.count[idx], self.head[idx]
        if idx.numel() == self.count.shape[0] and bool((count == count[0]).all()) \
                and bool((head == head[0]).all()):
            n = int(count[0])

            def pair(j):  # the j-th newest pair, as views: no copy
                k = (int(head[0]) - 1 - j) % self.m
                return self.S[:, k], self.Y[:, k], self.rho[:, k]
        else:
            n = self.m

            def pair(j):  # one slot per sample, gathered when needed (dead ones weigh 0)
                k = (head - 1 - j) % self.m
                return self.S[idx, k], self.Y[idx, k], self.rho[idx, k] * (j < count).to(g.dtype)
        q = g.clone()
        coeffs = []
        for j in range(n):  # newest to oldest
            s, y, rho = pair(j)
            a = rho * batch_dot(s, q)
            q.addcmul_(y, a[:, None], value=-1.0)
            coeffs.append(a)
        r = self.gamma[idx][:, None] * self._h(q, idx)
        for j in reversed(range(n)):
            s, y, rho = pair(j)
            a = coeffs[j]
            b = rho * batch_dot(y, r)
            r.addcmul_(s, (a - b)[:, None])
        return r.neg_()

    def push(self, s: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        """Store the pairs of rows ``idx`` whose curvature is positive."""
        sy = batch_dot(s, y)
        yy = batch_dot(y, y)
        ok = sy > torch.finfo(s.dtype).eps * torch.sqrt(batch_dot(s, s) * yy)
        if not bool(ok.any()):
            return
        yhy = yy if self.metric is None else batch_dot(y, self._h(y, idx))
        ok &= yhy > 0
        i = idx[ok]
        slot = self.head[i]
        self.S[i, slot] = s[ok]
        self.Y[i, slot] = y[ok]
        self.rho[i, slot] = 1.0 / sy[ok]
        self.gamma[i] = sy[ok] / yhy[ok]
        self.head[i] = (slot + 1) % self.m
        self.count[i] = torch.clamp(self.count[i] + 1, max=self.m)

    def clear(self, idx: torch.Tensor) -> None:
        """Forget the pairs of samples ``idx`` (a safeguard restart)."""
        self.count[idx] = 0
        self.gamma[idx] = self.gamma0[idx]


def slope_rise_bound(t, a, b, n, big_l, rho):
    r"""Certified upper bound on :math:`\varphi(t) - \varphi(0)` from two slopes only.

    For :math:`\varphi(s) = F(x + s d)` with :math:`a = \varphi'(0)`, :math:`b = \varphi'(t)`
    and :math:`-\rho n \le \varphi'' \le L n` (:math:`n = \|d\|^2`; :math:`L` a Lipschitz
    constant of :math:`\nabla F`, :math:`\rho \ge -L` a weak-convexity modulus: 0 when
    convex, :math:`-\mu` when :math:`F` is :math:`\mu`-strongly convex, which tightens it):
    :math:`\varphi'(s) \le \min(a + L n s,\ b + \rho n (t - s))` on :math:`[0, t]`, and the
    bound is the integral of that envelope. All arguments are per sample (``(b,)``) or
    scalars. It lets an Armijo test :math:`\varphi(t) \le \varphi(0) + \alpha t a` be
    certified from gradients alone."""
    up, down = big_l * n, rho * n
    span = (up + down).clamp_min(torch.finfo(n.dtype).tiny)   # 0 only if phi'' = L n
    cross = ((b - a + down * t) / span).clamp(min=0).minimum(t)
    rest = t - cross
    return a * cross + 0.5 * up * cross * cross + b * rest + 0.5 * down * rest * rest


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample ``v`` ``(B,)`` shaped to broadcast against ``like`` (masks stay bool)."""
    v = v.reshape((-1,) + (1,) * (like.dim() - 1))
    return v if v.dtype == torch.bool else v.to(like.dtype)


def safeguard_direction(g, d, inv_l, *, delta: float, c1: float = 0.0,
                        c2: float = math.inf):
    r"""Replace the directions that fail the safeguards by the gradient step :math:`-g/L`.

    A row keeps ``d`` when :math:`-g^\top d \ge \delta\|g\|\|d\|` (angle) and
    :math:`c_1\|g\|/L \le \|d\| \le c_2\|g\|/L` (length). Returns the directions,
    their slopes :math:`g^\top d` (``(B,)``) and the mask of replaced rows (whose
    quasi-Newton memory the caller clears). ``inv_l`` :math:`= 1/L`: a scalar or per row."""
    gd, gn, dn = batch_dot(g, d), batch_dot(g, g).sqrt(), batch_dot(d, d).sqrt()
    bad = ~((-gd >= delta * gn * dn) & (dn >= c1 * inv_l * gn) & (dn <= c2 * inv_l * gn))
    if bool(bad.any()):
        step = _col(inv_l, g) if torch.is_tensor(inv_l) else inv_l
        d = torch.where(_col(bad, g), -step * g, d)
        gd = torch.where(bad, -inv_l * gn * gn, gd)
    return d, gd, bad


def armijo_search(x, g, d, gd, grad, rise_bound, inv_l, *, todo, value=None, f0=None,
                  alpha: float = 1e-4, reductions: int = 10, shrink=(0.1, 0.9), along=None,
                  t0=None, return_steps: bool = False):
    r"""Safeguarded Armijo steps along ``d``, per sample, certified from slopes.

    For each row of ``todo`` it finds :math:`t` with
    :math:`F(x + t d) \le F(x) + \alpha t\, \nabla F(x)^\top d` (``gd`` is
    :math:`\nabla F(x)^\top d < 0`). A trial :math:`t` (first ``t0``, default 1) is
    accepted when
    ``rise_bound(t, gd, slope, ||d||^2)`` (e.g. :func:`slope_rise_bound`) certifies it
    from the slope at the trial point, or, when ``value`` is given and the slope
    :math:`b` at :math:`t` is below :math:`|a|`, :math:`a = \nabla F(x)^\top d`, when the
    values show it (on a quadratic the test holds iff :math:`b \le -(1 - 2\alpha) a`: a
    slope past :math:`|a|` fails it, and its value is not computed). A failed trial is
    shortened by the secant factor of the two slopes where the slope has turned positive,
    by 1/2 otherwise, clamped
    to ``shrink``; after ``reductions`` failures the step is the gradient step
    :math:`x - g/L` (``inv_l`` :math:`= 1/L`, a scalar or per sample), for which the
    descent lemma gives Armijo with :math:`\alpha \le 1/2`.

    Parameters
    ----------
    x, g, d : Tensor
        Iterates, their gradients and the directions, batch first.
    gd : Tensor
        ``(B,)`` slopes :math:`g^\top d`, negative on the rows of ``todo``.
    grad : callable
        :math:`z \mapsto \nabla F(z)` on a batch like ``x``; or :math:`z \mapsto
        (\nabla F(z), v)` with ``v(rows)`` :math:`= F(z)` at the samples ``rows`` computed
        from what the gradient kept (then ``value`` is called at ``x`` only, where ``f0``
        is unknown).
    rise_bound : callable
        ``(t, a, b, n) -> (B,)``: a certified bound on :math:`\varphi(t) - \varphi(0)`.
    inv_l : float or Tensor
        :math:`1/L` with :math:`L` a certified Lipschitz constant of :math:`\nabla F`.
    todo : Tensor
        ``(B,)`` bool, the rows to move; the others keep ``x`` and ``g``.
    value, f0 : callable, Tensor, optional
        ``value(z, rows)``: :math:`F` at the samples ``rows`` (int64 indices into the batch)
        of ``z``, shape ``(len(rows),)``; and :math:`F(x)` (``(B,)``, NaN where unknown,
        filled where needed). Values are computed for the rows that need them only.
    along : callable, optional
        ``d -> (lo, hi)`` (``(B,)`` each) or None: certified bounds of :math:`d^\top\nabla^2
        F d` over the line (the curvature along ``d``). Called once, where ``rise_bound``
        does not certify a trial; then the tighter of ``rise_bound`` and
        :func:`slope_rise_bound` with these bounds is used.
    t0 : Tensor, optional
        ``(B,)`` first trial steps in :math:`(0, 1]` (default 1): a caller whose directions
        are too long by a persistent factor starts where the last search ended. Any
        :math:`t_0 > 0` keeps every accepted step certified.

    return_steps : bool, default False
        Also return ``(t, b)``: per row the accepted step :math:`t` along ``d`` and the
        slope :math:`b = \nabla F(x + t d)^\top d` there (NaN for rows not in ``todo`` and
        for rows that took the gradient step, which is not along ``d``).

    Returns
    -------
    x_new, g_new, f_new, f0 : Tensor
        The new iterates and gradients; :math:`F(x_{new})` where it was computed (NaN
        elsewhere); ``f0`` as filled in. With ``return_steps``, then ``t`` and ``b``.
    """
    dd = batch_dot(d, d)
    t = torch.ones_like(gd) if t0 is None else t0.to(gd.dtype).clone()
    todo = todo.clone()
    nan = torch.full_like(gd, float("nan"))
    curv = None  # (2, B) bounds of the curvature along d, computed once where needed
    x_new, f_new, g_new = x, nan, g
    t_ok, b_ok = nan, nan
    lo, hi = shrink
    for _ in range(int(reductions) + 1):
        cand = torch.addcmul(x, _col(t, x), d)
        gc = grad(cand)
        gc, value_here = gc if isinstance(gc, tuple) else (gc, None)
        slope = batch_dot(gc, d)
        target = alpha * t * gd
        bound = rise_bound(t, gd, slope, dd)
        if along is not None and bool((todo & (bound > target)).any()):
            lohi, along = along(d), None   # once per search: d does not change
            curv = None if lohi is None else torch.stack(lohi).to(gd.dtype)
        if curv is not None:
            bound = torch.minimum(bound, slope_rise_bound(
                t, gd, slope, torch.ones_like(gd), curv[1], -curv[0]))
        ok = todo & (bound <= target)
        fc = nan
        short = todo & ~ok & (slope < -gd)  # not far past the line minimum: compare values
        if value is not None and bool(short.any()):
            rows = short.nonzero().flatten()
            miss = rows[torch.isnan(f0[rows])]
            if miss.numel():
                f0 = f0.clone()
                f0[miss] = value(x, miss).to(f0.dtype)
            fc = nan.clone()
            fc[rows] = (value(cand, rows) if value_here is None else value_here(rows)
                        ).to(fc.dtype)
            ok = ok | (short & (fc <= f0 + target))
        del value_here  # drop what the gradient kept for it
        if bool(ok.any()):
            m = _col(ok, x)
            x_new = torch.where(m, cand, x_new)
            g_new = torch.where(m, gc, g_new)
            f_new = torch.where(ok, fc, f_new)
            t_ok, b_ok = torch.where(ok, t, t_ok), torch.where(ok, slope, b_ok)
            todo = todo & ~ok
        if not bool(todo.any()):
            return (x_new, g_new, f_new, f0) + ((t_ok, b_ok) if return_steps else ())
        past = slope > 0
        secant = gd / (gd - torch.where(past, slope, torch.ones_like(slope)))
        factor = torch.where(past, secant, torch.full_like(t, 0.5)).clamp(lo, hi)
        t = torch.where(todo, t * factor, t)
    cand = x - (_col(inv_l, x) if torch.is_tensor(inv_l) else inv_l) * g  # descent lemma
    m = _col(todo, x)
    gc = grad(cand)
    gc = gc[0] if isinstance(gc, tuple) else gc
    return (torch.where(m, cand, x_new), torch.where(m, gc, g_new),
            torch.where(todo, nan, f_new), f0) + ((t_ok, b_ok) if return_steps else ())
