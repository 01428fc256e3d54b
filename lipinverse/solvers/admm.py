r"""ADMM (Douglas-Rachford splitting) and plug-and-play ADMM."""

from __future__ import annotations

import torch

from operators.validation import check_float

from . import certificates as cert
from .base import IterativeSolver

__all__ = ["ADMM"]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


#: Certified relative accuracy of a warm-started iterative z-step prox at iteration k:
#: ``INNER_TOL / (k + 1) ** INNER_DECAY`` (times ||v_k||), summable, so that the inexact
#: Douglas-Rachford theorem applies (Eckstein & Bertsekas 1992, Thm 8). Loose early, where
#: the iterates move most, tight later, where the warm start makes each prox cheap.
#: Measured with the shipped crr (2 BSD68 crops 128x128, Gaussian 2 px, noise 0.01,
#: rho = lambda L_R / 30, Anderson inner solves): INNER_TOL = 0.1 took 116-135 inner
#: gradients in all and ended within 0.006-0.011 dB of the minimiser; 0.01 took 148-210.
INNER_TOL = 1e-1
INNER_DECAY = 1.5


class ADMM(IterativeSolver):
    r"""Scaled ADMM for :math:`\min_x f(x) + \lambda g(z)` subject to :math:`x = z`.

    Parameters
    ----------
    fidelity : L2Fidelity or any functional with ``prox(x, tau)``
        :math:`f`; for :math:`f = \tfrac12\|Ax-y\|^2` the x-step is
        :math:`(A^\top A + \rho I)^{-1}(A^\top y + \rho(z - u))` through ``A.gram_solve``
        (FFT for circular blurs).
    prior
        A functional with ``prox(x, tau)`` (scheme ``"prox"``) or a denoiser
        ``D(x, sigma=None)`` with ``lipschitz_bound()`` / ``averagedness`` (scheme ``"pnp"``,
        the z-step is :math:`D(x + u)`). Smooth priors without a prox use :class:`PGD`.
    lam : float >= 0
        Regularisation weight (prox scheme); must be ``None`` with a denoiser.
    rho : float > 0, optional
        Penalty parameter; convergence holds for every :math:`\rho > 0`, the speed does
        not. Default, by :func:`default_rho`: with a denoiser :math:`\rho = L_f =
        \|A\|^2` (the fidelity's certified ``grad_lipschitz``), so that :math:`1/\rho`
        equals :class:`PGD`'s default step and both schemes have the same fixed points;
        with a prox, :math:`\rho` on the scale of :math:`\lambda` (see there).
    adapt_rho : bool, default False
        Residual balancing (Boyd et al. 2011, Sec. 3.4.1; He, Yang & Wang 2000): during the
        first ``ADAPT_ITERATIONS`` iterations :math:`\rho` is doubled when the primal
        residual :math:`\|x_{k+1} - z_{k+1}\|` exceeds 10 times the dual one
        :math:`\rho\|z_{k+1} - z_k\|`, halved in the opposite case (the scaled dual
        variable rescaled), then frozen: the convergence theorem applies from there on.
        Default off: on the deblurring problems measured (see :func:`default_rho`) it
        moved :math:`\rho` away from the best fixed value.
    sigma : float, optional
        Passed to the denoiser (pnp only).
    scheme : {"prox", "pnp"}, optional
        Force a scheme.
    strict : bool
        Raise ``ValueError`` at construction when no guarantee holds.
    inner_tol : float > 0, default ``INNER_TOL``
        For a prox solved iteratively with a warm start (the learned ridges): the certified
        relative accuracy of the z-step at iteration k is ``inner_tol / (k+1)**1.5``, a
        summable sequence (see the guarantee).

    Notes
    -----
    The iteration (:math:`u` is the scaled dual variable; it runs as Douglas-Rachford on
    :math:`w = x + u`, with :math:`z - u = 2z - w`, which needs no stored :math:`u`):

    .. math::

        x_{k+1} &= \operatorname{prox}_{f/\rho}(z_k - u_k) \\
        z_{k+1} &= \operatorname{prox}_{\lambda g/\rho}(x_{k+1} + u_k)
                  \quad\text{or}\quad D(x_{k+1} + u_k) \\
        u_{k+1} &= u_k + x_{k+1} - z_{k+1}

    For convex :math:`f, g` it converges for every :math:`\rho > 0` (Eckstein & Bertsekas
    1992; Boyd et al. 2011). With a firmly nonexpansive denoiser (averagedness
    :math:`\le 1/2`), :math:`D` is the resolvent of a maximally monotone operator (Minty)
    and PnP-ADMM is Douglas-Rachford splitting, which converges when a solution exists
    (Lions & Mercier 1979). The solution returned is :math:`z` (the output of the prior
    step). The residual is :math:`\|x_{k+1} - z_k\| / \|z_k\|`: the step
    :math:`\|w_k - w_{k-1}\|` of the Douglas-Rachford sequence :math:`w_k = x_{k+1} + u_k`
    (:math:`z_{k+1} = D(w_k)`), which is nonincreasing when the z-step is firmly
    nonexpansive, and then bounds both the dual residual :math:`\|z_{k+1} - z_k\|` and
    the primal residual :math:`\|x_{k+1} - z_{k+1}\| = \|u_{k+1} - u_k\|` (both
    :math:`D` and :math:`I - D` are nonexpansive).
    """

    def __init__(self, fidelity, prior, lam: float | None = None, *, rho: float | None = None,
                 adapt_rho: bool = False, sigma: float | None = None,
                 scheme: str | None = None, strict: bool = False,
                 inner_tol: float = INNER_TOL):
        super().__init__(fidelity, strict=strict)
        name = type(self).__name__
        if not callable(getattr(fidelity, "prox", None)):
            raise TypeError(f"{name}: expected a fidelity with prox(x, tau) (e.g. L2Fidelity), "
                            f"got {type(fidelity).__name__}")
        self._set_prior(prior, lam, sigma, scheme, refuse={
            "grad": f"the prior {type(prior).__name__} has no prox and is not a denoiser; use "
                    "PGD for a smooth prior"})
        rho = check_float(name, rho, "rho", positive=True, allow_none=True)
        self.rho = default_rho(name, fidelity, prior, self.lam, self.scheme) if rho is None \
            else rho
        self.rho0 = self.rho
        self.adapt_rho = bool(adapt_rho)
        self._warm = _accepts_x0(prior) if self.scheme == "prox" else False
        self.inner_tol = check_float(name, inner_tol, "inner_tol", positive=True)
        convex_f = getattr(fidelity, "convex", False) is True
        if self.scheme == "pnp":
            lip_d, alpha_d = cert.denoiser_certificates(name, prior)
            convex_g = False
        else:
            lip_d = alpha_d = None
            convex_g, _ = cert.prior_convexity(prior)
        self.guarantee = cert.admm_guarantee(scheme=self.scheme, convex_f=convex_f,
                                             convex_g=convex_g, lip_d=lip_d, alpha_d=alpha_d)
        if self.guarantee.holds:
            self.guarantee = self.guarantee.with_note(
                f"the z-step prox is solved from the last z to certified accuracy "
                f"eps_k = {self.inner_tol:g} (k+1)^-{INNER_DECAY:g} ||v_k|| (summable: the "
                f"theorem holds with these errors, Eckstein & Bertsekas 1992, Thm 8)"
                if self._warm else cert.inexact_prox_note(prior))
            if self.adapt_rho:
                self.guarantee = self.guarantee.with_note(
                    f"rho adapted by residual balancing during the first {ADAPT_ITERATIONS} "
                    "iterations, then fixed (the theorem applies from there on)")
        self._finish_guarantee()

    def _z_step(self, v, z_prev=None, k: int = 0):
        if self.scheme == "prox":
            if self._warm:  # an iterative prox, from the last z, to a summable accuracy
                tol = self.inner_tol / (k + 1) ** INNER_DECAY
                return self.prior.prox(v, self.lam / self.rho, x0=z_prev, tol=tol)
            return self.prior.prox(v, self.lam / self.rho)
        return self.prior(v) if self.sigma is None else self.prior(v, sigma=self.sigma)

    def _init_state(self, x0):
        # state["x"] holds z (the prior step's output, the returned solution) and
        # state["w"] the Douglas-Rachford variable w = x + u (u = 0 at the start: w = z)
        self.rho = self.rho0  # each solve adapts from the start value
        return {"x": x0, "w": x0}

    def _step(self, state, k, active):
        z, w = state["x"], state["w"]
        # z - u = 2z - w: the x-step's input, without storing u = w - z
        x = self.fidelity.prox(torch.lerp(w, z, 2.0), 1.0 / self.rho)
        e = x - z  # = w_new - w, the Douglas-Rachford step (the residual)
        w_new = w + e  # = x + u
        z_new = self._z_step(w_new, z, k)
        if self.adapt_rho and k < ADAPT_ITERATIONS:
            primal = float(_norm(x - z_new).max())
            dual = self.rho * float(_norm(z_new - z).max())
            factor = 2.0 if primal > 10.0 * dual else 0.5 if dual > 10.0 * primal else 1.0
            if factor != 1.0:  # u = w - z scales by 1 / factor with the penalty
                self.rho *= factor
                w_new = z_new + (w_new - z_new) / factor
        return {"x": z_new, "w": w_new}, _norm(e)

    def _objective(self, state):
        if self.scheme == "pnp" or not callable(self.fidelity) or not callable(self.prior):
            return None
        z = state["x"]
        return self.fidelity(z) + self.lam * self.prior(z)

    def _current_step_size(self):
        return None

    def __repr__(self) -> str:
        return f"ADMM(scheme={self.scheme!r}, lam={self.lam}, rho={self.rho:.4g})"



#: Iterations during which residual balancing may change rho (then it is fixed).
ADAPT_ITERATIONS = 100

#: rho / lambda for priors with a prox and no certified smoothness (TV, l1, ...). Measured
#: with TV on 128x128 camera deblurring (Gaussian 1-2 px and 9x9 box blurs, sigma 0.003 to
#: 0.03, lambda = 10 sigma^2): rho = 10 / 20 / 40 lambda reached the FISTA minimiser's PSNR
#: within 0.005 dB in 38-166 iterations, where rho = ||A||^2 = 1 ended 0.1-1.1 dB short
#: after 300; below 10 lambda the TV prox (weight lambda / rho) becomes slow.
RHO_PER_LAM = 20.0

#: rho / (lambda L_R) for smooth priors. Measured with the shipped crr on the same problem
#: (Gaussian 2 px, sigma 0.01, lambda = 1, L_R = 0.855; FISTA minimiser 25.853 dB): rho =
#: 1 / 0.3 / 0.1 / 0.03 reached 25.59 (300 its, not converged) / 25.82 (200, not
#: converged) / 25.847 (98) / 25.850 dB (41 iterations, 23 s on 1 thread vs 12 s for
#: FISTA to tol 1e-5). With Anderson inner solves (ConvexRidge.prox's default) and
#: INNER_TOL = 0.1, on 2 BSD68 crops: 1/30 took 38-40 iterations and 116-135 inner
#: gradients, 1/100 took 28-35 and 116-118, against 86-96 gradients for accelerated PGD;
#: but on a weaker prior (lambda L_R = 0.37 against ||A||^2 = 1, the ridge interop test)
#: 1/100 took 500 iterations to 1e-8 where 1/30 took 137: 1/30 is the robust choice.
RHO_PER_LAM_LR = 1.0 / 30.0


def default_rho(name: str, fidelity, prior, lam, scheme: str) -> float:
    r"""The default ADMM penalty.

    * PnP (a denoiser): :math:`\rho = L_f`, the fidelity's certified Lipschitz constant,
      so that PnP-ADMM and PnP-FBS with step :math:`1/L_f` share their fixed points.
    * A prior with a certified gradient Lipschitz constant :math:`L_R` (a smooth learned
      prior): :math:`\rho = \lambda L_R / 30` (``RHO_PER_LAM_LR``). The inner solve of
      the z-step :math:`\operatorname{prox}_{(\lambda/\rho) R}` is warm-started from the
      previous :math:`z` and stops at its certified accuracy.
    * Any other prox (TV, :math:`\ell_1`): :math:`\rho = 20\lambda` (``RHO_PER_LAM``; the
      scale on which :math:`\lambda g` acts; scale-covariant: :math:`A \to cA`,
      :math:`y \to cy`, :math:`\lambda \to c^2\lambda` gives :math:`\rho \to c^2\rho`
      and the same iterates).

    With :math:`\lambda = 0` the prox scheme falls back to :math:`L_f`.
    """
    if scheme == "prox" and lam:
        lr = getattr(prior, "grad_lipschitz", None)
        lr = lr() if callable(lr) else lr
        if isinstance(lr, (int, float)) and 0 < lr < float("inf"):
            return float(lam) * float(lr) * RHO_PER_LAM_LR
        return RHO_PER_LAM * float(lam)
    lf = cert.read_grad_lipschitz(name, fidelity, "fidelity")
    if not lf:
        raise ValueError(f"{name}: cannot choose rho: the fidelity has no certified "
                         "grad_lipschitz > 0; pass rho")
    return lf


def _accepts_x0(prior) -> bool:
    import inspect

    try:
        return "x0" in inspect.signature(prior.prox).parameters
    except (TypeError, ValueError):
        return False
