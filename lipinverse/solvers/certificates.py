r"""Reading the parts' certificates, and the convergence theorems they satisfy.

The solvers never pick a step from a magic constant: they read

* the fidelity: ``grad_lipschitz`` (:math:`L_f`), ``convex``;
* a prior functional: ``convex``, ``weak_convexity`` (:math:`\rho`: :math:`g + \tfrac\rho2
  \|\cdot\|^2` convex), ``grad_lipschitz`` (:math:`L_R`, ``None`` when unknown);
* a denoiser: ``lipschitz_bound()`` (:math:`L_D`) and ``averagedness`` (:math:`\alpha_D`),

and the functions here turn them into a :class:`~lipinverse.solvers.guarantee.Guarantee`:
the theorem whose conditions hold, or the condition that fails.

Prior dispatch (:func:`classify_prior`), unless a ``scheme`` is forced (always allowed,
and checked):

1. an object with ``lipschitz_bound`` that is callable as ``D(x, sigma=None)``: a
   **denoiser**, scheme ``"pnp"``;
2. else an object that declares ``exact_prox = True`` (a closed-form prox, e.g.
   Tikhonov): scheme ``"prox"``;
3. else an object with ``grad(x)`` (a smooth prior, e.g. the learned ridges): scheme
   ``"grad"``: gradient descent on the sum, one gradient per iteration, instead of an
   iterative prox at every iteration;
4. else an object with ``prox(x, tau)`` (e.g. TV): scheme ``"prox"``.
"""

from __future__ import annotations

import math

from operators.bounds import Bound

from .guarantee import fails, holds

__all__ = [
    "SCHEMES",
    "classify_prior",
    "denoiser_certificates",
    "prior_convexity",
    "composition_averagedness",
]

SCHEMES = ("prox", "grad", "pnp")

# references quoted in the guarantee strings
CW05 = "Combettes & Wajs 2005, Thm 3.4"
BT09 = "Beck & Teboulle 2009, Thm 4.4"
OC15 = "O'Donoghue & Candes 2015"
ABS13 = "Attouch, Bolte & Svaiter 2013"
NES18 = "Nesterov 2018, Lectures on Convex Optimization, Sec. 1.2.3"
LL15 = "Li & Lin 2015, monotone APG, Alg. 1 and Thm 1"
CY15 = "Combettes & Yamada 2015, Prop. 2.4"
BC17_KM = "Krasnoselskii-Mann; Bauschke & Combettes 2017, Prop. 5.16"
BC17_KM_NE = "Krasnoselskii 1955, Mann 1953; Bauschke & Combettes 2017, Thm 5.15"
BH = "Baillon-Haddad theorem"
EB92 = "Lions & Mercier 1979; Eckstein & Bertsekas 1992"
MINTY = "Minty; Bauschke & Combettes 2017, Cor. 23.9"


def is_denoiser(obj) -> bool:
    return callable(obj) and callable(getattr(obj, "lipschitz_bound", None))


def classify_prior(name: str, prior, scheme: str | None, *, smooth: bool = True) -> str:
    """The scheme for ``prior`` (see the module docstring); checks a forced ``scheme``.

    ``smooth=False`` (a solver without a gradient scheme, ADMM) skips rule 3."""
    if scheme is None:
        has_prox = callable(getattr(prior, "prox", None))
        if is_denoiser(prior):
            return "pnp"
        if has_prox and getattr(prior, "exact_prox", False) is True:
            return "prox"
        if smooth and callable(getattr(prior, "grad", None)):
            return "grad"
        if has_prox:
            return "prox"
        if callable(getattr(prior, "grad", None)):
            return "grad"
        raise TypeError(
            f"{name}: expected a prior with prox(x, tau), a smooth prior with "
            "grad(x), or a denoiser D(x, sigma=None) with lipschitz_bound(); got "
            f"{type(prior).__name__}"
        )
    if scheme not in SCHEMES:
        raise ValueError(f"{name}: expected scheme in {SCHEMES} or None, got {scheme!r}")
    need = {"pnp": "__call__", "prox": "prox", "grad": "grad"}[scheme]
    if not callable(getattr(prior, need, None)):
        raise TypeError(
            f"{name}: scheme={scheme!r} needs a prior with a callable {need}; "
            f"{type(prior).__name__} has none"
        )
    return scheme


def denoiser_certificates(name: str, D) -> tuple[float | None, float | None]:
    """``(lipschitz_bound, averagedness)`` of a denoiser, validated (``None`` = unknown)."""
    bound = getattr(D, "lipschitz_bound", None)
    lip = bound() if callable(bound) else None
    alpha = getattr(D, "averagedness", None)
    if callable(alpha):
        alpha = alpha()
    if lip is not None:
        lip = float(lip)
        if not (lip >= 0):
            raise ValueError(
                f"{name}: the denoiser's lipschitz_bound() must be >= 0 or None, got {lip}"
            )
    if alpha is not None:
        alpha = float(alpha)
        if not (0 < alpha <= 1):
            raise ValueError(
                f"{name}: the denoiser's averagedness must be in (0, 1] or None, got {alpha}"
            )
    return lip, alpha


def prior_convexity(g) -> tuple[bool, float | None]:
    """``(convex, rho)``: certified convexity and weak-convexity modulus (``None`` unknown)."""
    convex = getattr(g, "convex", False) is True
    if convex:
        return True, 0.0
    rho = getattr(g, "weak_convexity", None)
    if rho is None:
        return False, None
    rho = float(rho)
    return False, rho if (math.isfinite(rho) and rho >= 0) else None


def composition_averagedness(a1: float, a2: float) -> float:
    r"""Averagedness of :math:`T_1 T_2` with :math:`T_i` :math:`\alpha_i`-averaged.

    .. math:: \alpha = \frac{\alpha_1 + \alpha_2 - 2\alpha_1\alpha_2}{1 - \alpha_1\alpha_2}

    (Combettes & Yamada 2015, Prop. 2.4), for :math:`\alpha_i < 1`.
    """
    return (a1 + a2 - 2 * a1 * a2) / (1 - a1 * a2)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# ------------------------------------------------------------------ PGD
def pgd_prox_guarantee(*, lf, convex_f, convex_g, rho, lam, tau, accelerate, backtracking):
    """Proximal gradient / FISTA on f + lam g."""
    if not convex_f:
        return fails("the fidelity is not certified convex (fidelity.convex is not True)")
    if backtracking:
        cond = "tau from backtracking (sufficient decrease enforced at every step)"
    elif lf is None:
        return fails(
            "the fidelity's gradient has no certified Lipschitz constant "
            "(grad_lipschitz is None) and backtracking is off"
        )
    else:
        cond = None
    if convex_g:
        if accelerate:
            if cond is None and tau > 1 / lf:
                return fails(f"FISTA needs tau <= 1/L_f = {_fmt(1 / lf)}, got tau = {_fmt(tau)}")
            cond = cond or f"tau = {_fmt(tau)} <= 1/L_f = {_fmt(1 / lf)}"
            return holds(
                "FISTA",
                f"FISTA: f convex, L_f-smooth, g convex, {cond} => F(x_k) - min F = "
                f"O(1/k^2) ({BT09}); adaptive restart ({OC15}) resets the momentum and "
                "the bound holds from each restart",
                rate="O(1/k^2)",
                reference=BT09,
                tau=tau,
                L_f=lf,
                lam=lam,
                rho=rho,
            )
        if cond is None and tau >= 2 / lf:
            return fails(
                f"proximal gradient needs tau < 2/L_f = {_fmt(2 / lf)}, got tau = {_fmt(tau)}"
            )
        cond = cond or f"tau = {_fmt(tau)} < 2/L_f = {_fmt(2 / lf)}"
        return holds(
            "PGD",
            f"PGD (forward-backward): f convex, L_f-smooth, g convex, {cond} => F(x_k) "
            f"decreases and x_k converges to a minimiser of f + lam g when one exists "
            f"({CW05})",
            rate=None,
            reference=CW05,
            tau=tau,
            L_f=lf,
            lam=lam,
            rho=rho,
        )
    if rho is None:
        return fails(
            "the prior is neither certified convex nor weakly convex "
            "(convex is not True, weak_convexity unknown)"
        )
    if accelerate:
        return fails("FISTA with a nonconvex prior has no convergence theorem")
    if cond is None and tau >= 1 / lf:
        return fails(
            f"proximal gradient with a weakly convex prior needs tau < 1/L_f = "
            f"{_fmt(1 / lf)}, got tau = {_fmt(tau)}"
        )
    if tau is None:
        return fails(
            "a weakly convex prior needs tau*lam*rho < 1, and the step is only "
            "known after backtracking; pass step_size"
        )
    if tau * lam * rho >= 1:
        return fails(
            f"the prox of tau*lam*g is not single-valued: tau*lam*rho = "
            f"{_fmt(tau * lam * rho)} >= 1"
        )
    cond = cond or f"tau = {_fmt(tau)} < 1/L_f"
    return holds(
        "PGD (nonconvex)",
        f"PGD (nonconvex): g rho-weakly convex with tau*lam*rho < 1, {cond} => F(x_k) "
        f"decreases and every cluster point is critical; the iterates converge if F is "
        f"a KL function ({ABS13})",
        rate=None,
        reference=ABS13,
        tau=tau,
        L_f=lf,
        lam=lam,
        rho=rho,
    )


def pgd_metric_guarantee(*, lf, lr, lam, c, tau, accelerate, convex):
    """Gradient descent / FISTA / monotone APG on F = 1/2 ||Ax - y||^2 + lam R in the
    metric P = A^T A + c I (see ``PGD``'s Notes): the theorems with L_P in place of L."""
    lam_lr = lam * lr
    big_lp = max(lam_lr / c, (lf + lam_lr) / (lf + c))
    metric = (f"in the metric P = A^T A + c I, c = {_fmt(c)}: F(P^(-1/2) u) is L_P-smooth, "
              f"L_P = max(lam L_R / c, (L_f + lam L_R) / (L_f + c)) = {_fmt(big_lp)}")
    if not convex:
        method = "monotone accelerated gradient" if accelerate else "gradient descent"
        if tau >= 2 / big_lp:
            return fails(f"preconditioned {method} needs tau < 2/L_P = {_fmt(2 / big_lp)}, "
                         f"got tau = {_fmt(tau)}")
        if accelerate:
            return holds("Monotone accelerated gradient",
                         f"Monotone accelerated gradient (nonconvex R) {metric}, tau = "
                         f"{_fmt(tau)} < 2/L_P; the momentum step is kept only on sufficient "
                         f"decrease in the P-norm => F(x_k) decreases and min_(j<=k) "
                         f"|grad F(x_j)|_(P^-1)^2 = O(1/k) if F is bounded below ({LL15})",
                         rate="min_j |grad F(x_j)|^2 = O(1/k)", reference=LL15, tau=tau,
                         L_f=lf, L_R=lr, lam=lam, c=c)
        return holds("Gradient descent (nonconvex)",
                     f"Gradient descent (nonconvex R) {metric}, tau = {_fmt(tau)} < 2/L_P => "
                     f"F(x_k) decreases and grad F(x_k) -> 0 if F is bounded below ({NES18})",
                     reference=NES18, tau=tau, L_f=lf, L_R=lr, lam=lam, c=c)
    if accelerate:
        if tau > 1 / big_lp:
            return fails(f"preconditioned FISTA needs tau <= 1/L_P = {_fmt(1 / big_lp)}, "
                         f"got tau = {_fmt(tau)}")
        return holds("Accelerated gradient",
                     f"Accelerated gradient (FISTA with g = 0) {metric}, F convex, tau = "
                     f"{_fmt(tau)} <= 1/L_P => F(x_k) - min F = O(1/k^2) ({BT09}); adaptive "
                     f"restart ({OC15})", rate="O(1/k^2)", reference=BT09, tau=tau, L_f=lf,
                     L_R=lr, lam=lam, c=c)
    if tau >= 2 / big_lp:
        return fails(f"preconditioned gradient descent needs tau < 2/L_P = "
                     f"{_fmt(2 / big_lp)}, got tau = {_fmt(tau)}")
    return holds("Gradient descent",
                 f"Gradient descent {metric}, F convex, tau = {_fmt(tau)} < 2/L_P => F(x_k) "
                 f"decreases and x_k converges to a minimiser when one exists ({CW05})",
                 reference=CW05, tau=tau, L_f=lf, L_R=lr, lam=lam, c=c)


def pgd_grad_guarantee(*, lf, lr, convex_f, convex_g, rho, lam, tau, accelerate, backtracking):
    """Gradient descent / Nesterov on F = f + lam R with a smooth R."""
    if lf is None or lr is None:
        which = "the fidelity's" if lf is None else "the prior's"
        if backtracking:
            return fails(
                f"{which} gradient has no certified Lipschitz constant; Armijo "
                "backtracking keeps F(x_k) decreasing but no theorem certifies convergence"
            )
        return fails(f"{which} gradient has no certified Lipschitz constant")
    big_l = lf + lam * lr
    if backtracking:
        cond = f"tau from Armijo backtracking, L = L_f + lam L_R = {_fmt(big_l)}"
    else:
        cond = None
    if convex_f and convex_g:
        if accelerate:
            if cond is None and tau > 1 / big_l:
                return fails(
                    f"accelerated gradient needs tau <= 1/L = {_fmt(1 / big_l)} "
                    f"(L = L_f + lam L_R), got tau = {_fmt(tau)}"
                )
            cond = cond or f"tau = {_fmt(tau)} <= 1/L = {_fmt(1 / big_l)}"
            return holds(
                "Accelerated gradient",
                f"Accelerated gradient (FISTA with g = 0): F convex and L-smooth, {cond} "
                f"=> F(x_k) - min F = O(1/k^2) ({BT09}); adaptive restart ({OC15})",
                rate="O(1/k^2)",
                reference=BT09,
                tau=tau,
                L_f=lf,
                L_R=lr,
                lam=lam,
            )
        if cond is None and tau >= 2 / big_l:
            return fails(
                f"gradient descent needs tau < 2/L = {_fmt(2 / big_l)} "
                f"(L = L_f + lam L_R), got tau = {_fmt(tau)}"
            )
        cond = cond or f"tau = {_fmt(tau)} < 2/L = {_fmt(2 / big_l)}"
        return holds(
            "Gradient descent",
            f"Gradient descent: F = f + lam R convex and L-smooth, {cond} => F(x_k) "
            f"decreases and x_k converges to a minimiser when one exists ({CW05})",
            rate=None,
            reference=CW05,
            tau=tau,
            L_f=lf,
            L_R=lr,
            lam=lam,
        )
    if accelerate and backtracking:
        return fails(
            "accelerated gradient with backtracking on a nonconvex objective has no "
            "convergence theorem here (pass step_size, or accelerate=False)"
        )
    if cond is None and tau >= 2 / big_l:
        method = "monotone accelerated gradient" if accelerate else "gradient descent"
        return fails(f"{method} needs tau < 2/L = {_fmt(2 / big_l)}, got tau = {_fmt(tau)}")
    cond = cond or f"tau = {_fmt(tau)} < 2/L = {_fmt(2 / big_l)}"
    if accelerate:
        return holds(
            "Monotone accelerated gradient",
            f"Monotone accelerated gradient (nonconvex R): F L-smooth, {cond}; the "
            f"momentum step is kept only on sufficient decrease, else the better of it "
            f"and a gradient step => F(x_k) decreases and min_(j<=k) |grad F(x_j)|^2 = "
            f"O(1/k) if F is bounded below ({LL15})",
            rate="min_j |grad F(x_j)|^2 = O(1/k)",
            reference=LL15,
            tau=tau,
            L_f=lf,
            L_R=lr,
            lam=lam,
        )
    return holds(
        "Gradient descent (nonconvex)",
        f"Gradient descent (nonconvex R): F L-smooth, {cond} => F(x_k) decreases and "
        f"grad F(x_k) -> 0 if F is bounded below ({NES18})",
        rate=None,
        reference=NES18,
        tau=tau,
        L_f=lf,
        L_R=lr,
        lam=lam,
    )


def pnp_fbs_guarantee(*, lf, convex_f, lip_d, alpha_d, tau, theta, accelerate):
    """PnP forward-backward x <- (1 - theta) x + theta D(x - tau grad f(x))."""
    if accelerate:
        return fails("momentum (accelerate=True) with a denoiser has no convergence theorem")
    if not convex_f:
        return fails("the fidelity is not certified convex")
    if lip_d is None:
        return fails("the denoiser has no certified Lipschitz bound (lipschitz_bound() is None)")
    if lip_d > 1:
        return fails(f"the denoiser's Lipschitz bound {_fmt(lip_d)} > 1: it is not nonexpansive")
    if lf is None:
        return fails("the fidelity's gradient has no certified Lipschitz constant")
    if tau > 2 / lf:
        return fails(f"PnP-FBS needs tau <= 2/L_f = {_fmt(2 / lf)}, got tau = {_fmt(tau)}")
    if alpha_d is not None and alpha_d < 1 and tau < 2 / lf:
        alpha_g = tau * lf / 2
        alpha_t = composition_averagedness(alpha_d, alpha_g) if alpha_g > 0 else alpha_d
        if theta >= 1 / alpha_t:
            return fails(
                f"T = D(I - tau grad f) is {_fmt(alpha_t)}-averaged; the relaxation "
                f"must be < 1/alpha = {_fmt(1 / alpha_t)}, got {_fmt(theta)}"
            )
        return holds(
            "PnP-FBS",
            f"PnP-FBS: D is {_fmt(alpha_d)}-averaged and tau = {_fmt(tau)} < 2/L_f = "
            f"{_fmt(2 / lf)}, so I - tau grad f is {_fmt(alpha_g)}-averaged ({BH}) and "
            f"T = D(I - tau grad f) is {_fmt(alpha_t)}-averaged ({CY15}); relaxation "
            f"{_fmt(theta)} < 1/alpha => x_k converges to a fixed point of T when one "
            f"exists ({BC17_KM})",
            rate=None,
            reference=BC17_KM,
            tau=tau,
            L_f=lf,
            L_D=lip_d,
            alpha_D=alpha_d,
            relaxation=theta,
        )
    if not (0 < theta < 1):
        return fails(
            f"D is merely nonexpansive (averagedness {alpha_d}) so T = D(I - tau "
            f"grad f) is only nonexpansive; Krasnoselskii-Mann needs a relaxation in "
            f"(0, 1), got {_fmt(theta)}"
        )
    return holds(
        "PnP-FBS (Krasnoselskii-Mann)",
        f"PnP-FBS with Krasnoselskii-Mann relaxation: D is nonexpansive (L_D = "
        f"{_fmt(lip_d)}) and tau = {_fmt(tau)} <= 2/L_f = {_fmt(2 / lf)}, so T = D(I - tau "
        f"grad f) is nonexpansive; relaxation {_fmt(theta)} in (0, 1) => x_k converges to "
        f"a fixed point of T when one exists ({BC17_KM_NE})",
        rate=None,
        reference=BC17_KM_NE,
        tau=tau,
        L_f=lf,
        L_D=lip_d,
        alpha_D=alpha_d,
        relaxation=theta,
    )


# ----------------------------------------------------------------- ADMM
def admm_guarantee(*, scheme, convex_f, convex_g, lip_d, alpha_d):
    """ADMM / Douglas-Rachford (any rho > 0)."""
    if not convex_f:
        return fails("the fidelity is not certified convex")
    if scheme == "prox":
        if not convex_g:
            return fails("ADMM with a prior not certified convex has no convergence theorem here")
        return holds(
            "ADMM",
            "ADMM: f and g convex, closed and proper, rho > 0 => z_k converges to a "
            f"minimiser of f + lam g when one exists ({EB92}; Boyd et al. 2011, Sec. 3.2)",
            rate=None,
            reference=EB92,
            L_D=lip_d,
            alpha_D=alpha_d,
        )
    if lip_d is None or alpha_d is None:
        return fails(
            "PnP-ADMM needs a firmly nonexpansive denoiser; its averagedness "
            "or Lipschitz bound is not certified"
        )
    if lip_d > 1 or alpha_d > 0.5:
        return fails(
            f"PnP-ADMM needs a firmly nonexpansive denoiser (averagedness <= 1/2), "
            f"got averagedness {_fmt(alpha_d)}, Lipschitz bound {_fmt(lip_d)}"
        )
    return holds(
        "PnP-ADMM",
        f"PnP-ADMM: D is firmly nonexpansive (averagedness {_fmt(alpha_d)} <= 1/2), hence "
        f"the resolvent of a maximally monotone operator ({MINTY}); the x-step is the "
        f"resolvent of grad f / rho, so the iteration is Douglas-Rachford splitting => z_k "
        f"converges to a zero of the sum when one exists ({EB92})",
        rate=None,
        reference=EB92,
        L_D=lip_d,
        alpha_D=alpha_d,
    )


def read_grad_lipschitz(name: str, obj, what: str) -> float | None:
    """``obj.grad_lipschitz`` (attribute, property or method) as a float, ``None`` if unknown.

    A :class:`~operators.bounds.Bound` keeps its type (and so whether it is certified)."""
    val = getattr(obj, "grad_lipschitz", None)
    if callable(val):
        val = val()
    if val is None:
        return None
    kept = val if isinstance(val, Bound) else None
    val = float(val)
    if not (math.isfinite(val) and val >= 0):
        raise ValueError(
            f"{name}: {what}.grad_lipschitz must be a finite float >= 0 or None, got {val}"
        )
    return kept if kept is not None else val


def inexact_prox_note(prior) -> str:
    """A note for guarantees whose prox is computed iteratively (e.g. TV), else ``""``
    (for :meth:`~lipinverse.solvers.guarantee.Guarantee.with_note`)."""
    target = getattr(prior, "functional", prior)
    tol = getattr(target, "tol", None)
    if isinstance(tol, float) and callable(getattr(target, "prox", None)):
        return (
            f"the prox is computed iteratively to certified relative accuracy {tol:g} "
            "(the theorem assumes an exact prox: convergence holds when the errors are "
            "summable, Combettes & Wajs 2005, Thm 3.4)"
        )
    return ""
