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
    The iteration (:math:`u` is the scaled dual variable):

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
        self.prior = prior
        self.scheme = cert.classify_prior(name, prior, scheme)
        if self.scheme == "grad":
            raise TypeError(f"{name}: the prior {type(prior).__name__} has no prox and is not a "
                            "denoiser; use PGD for a smooth prior")
        self.sigma = check_float(name, sigma, "sigma", allow_none=True)
        if self.scheme == "pnp":
            if lam is not None:
                raise ValueError(f"{name}: lam has no role with a denoiser (its strength is "
                                 f"set by the denoiser, e.g. sigma); expected lam=None, got {lam}")
            self.lam = None
        else:
            if lam is None:
                raise ValueError(f"{name}: expected a regularisation weight lam >= 0, got None")
            self.lam = check_float(name, lam, "lam")
            if sigma is not None:
                raise ValueError(f"{name}: sigma is for denoisers; the prior "
                                 f"{type(prior).__name__} is a functional (use lam)")
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
        # state["x"] holds z (the prior step's output, the returned solution)
        return {"x": x0, "u": torch.zeros_like(x0)}

    def _step(self, state, k, active):
        z, u = state["x"], state["u"]
        x = self.fidelity.prox(z - u, 1.0 / self.rho)
        w = x + u
        z_new = self._z_step(w)
        # x_{k+1} - z_k is the step of the Douglas-Rachford sequence w_k = x_{k+1} + u_k
        return {"x": z_new, "u": w - z_new}, _norm(x - z)

    def _objective(self, state):
        if self.scheme == "pnp" or not callable(self.fidelity) or not callable(self.prior):
            return None
        z = state["x"]
        return self.fidelity(z) + self.lam * self.prior(z)

    def _current_step_size(self):
        return None

    def __repr__(self) -> str:
        return f"ADMM(scheme={self.scheme!r}, lam={self.lam}, rho={self.rho:.4g})"
