r"""ADMM (Douglas-Rachford splitting) and plug-and-play ADMM."""

from __future__ import annotations

import torch

from . import certificates as cert
from .base import IterativeSolver, check_float

__all__ = ["ADMM"]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


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
        Penalty parameter. Default :math:`\rho = L_f = \|A\|^2` (the fidelity's certified
        ``grad_lipschitz``), so that :math:`1/\rho` equals :class:`PGD`'s default step: with
        a denoiser both schemes then have the same fixed points. Convergence holds for every
        :math:`\rho > 0`.
    sigma : float, optional
        Passed to the denoiser (pnp only).
    scheme : {"prox", "pnp"}, optional
        Force a scheme.
    strict : bool
        Raise ``ValueError`` at construction when no guarantee holds.

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
                 sigma: float | None = None, scheme: str | None = None, strict: bool = False):
        super().__init__(fidelity, strict=strict)
        name = type(self).__name__
        if not callable(getattr(fidelity, "prox", None)):
            raise TypeError(f"{name}: expected a fidelity with prox(x, tau) (e.g. L2Fidelity), "
                            f"got {type(fidelity).__name__}")
        self._set_prior(prior, lam, sigma, scheme, refuse={
            "grad": f"the prior {type(prior).__name__} has no prox and is not a denoiser; use "
                    "PGD for a smooth prior"})
        rho = check_float(name, rho, "rho", positive=True, allow_none=True)
        if rho is None:
            lf = cert.read_grad_lipschitz(name, fidelity, "fidelity")
            if not lf:
                raise ValueError(f"{name}: cannot choose rho: the fidelity has no certified "
                                 "grad_lipschitz > 0; pass rho")
            rho = lf
        self.rho = rho
        convex_f = getattr(fidelity, "convex", False) is True
        if self.scheme == "pnp":
            lip_d, alpha_d = cert.denoiser_certificates(name, prior)
            convex_g = False
        else:
            lip_d = alpha_d = None
            convex_g, _ = cert.prior_convexity(prior)
        self.guarantee = cert.admm_guarantee(scheme=self.scheme, convex_f=convex_f,
                                             convex_g=convex_g, lip_d=lip_d, alpha_d=alpha_d)
        if not self.guarantee.startswith("none:"):
            self.guarantee += cert.inexact_prox_note(prior)
        self._finish_guarantee()

    def _z_step(self, v):
        if self.scheme == "prox":
            return self.prior.prox(v, self.lam / self.rho)
        return self.prior(v) if self.sigma is None else self.prior(v, sigma=self.sigma)

    def _init_state(self, x0):
        # state["x"] holds z (the prior step's output, the returned solution) and
        # state["w"] the Douglas-Rachford variable w = x + u (u = 0 at the start: w = z)
        return {"x": x0, "w": x0}

    def _step(self, state, k, active):
        z, w = state["x"], state["w"]
        # z - u = 2z - w: the x-step's input, without storing u = w - z
        x = self.fidelity.prox(torch.lerp(w, z, 2.0), 1.0 / self.rho)
        e = x - z  # = w_new - w, the Douglas-Rachford step (the residual)
        w_new = w + e  # = x + u
        return {"x": self._z_step(w_new), "w": w_new}, _norm(e)

    def _objective(self, state):
        if self.scheme == "pnp" or not callable(self.fidelity) or not callable(self.prior):
            return None
        z = state["x"]
        return self.fidelity(z) + self.lam * self.prior(z)

    def _current_step_size(self):
        return None

    def __repr__(self) -> str:
        return f"ADMM(scheme={self.scheme!r}, lam={self.lam}, rho={self.rho:.4g})"
