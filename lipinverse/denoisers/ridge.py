r"""The proximal denoiser of a learned ridge regulariser."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RidgeProxDenoiser"]


class RidgeProxDenoiser(nn.Module):
    r"""Denoiser :math:`D(y) = \arg\min_x \tfrac12\|x-y\|^2 + R_\sigma(x)` of a ridge regulariser.

    Parameters
    ----------
    regularizer : ConvexRidge or WeakConvexRidge
    sigma : float, optional
        Noise level used when the call gives none (default ``regularizer.sigma``).
    tol, max_iter :
        Of the inner solver (:meth:`~lipinverse.regularizers.ConvexRidge.solve`).

    Notes
    -----
    For a convex :math:`R_\sigma`, :math:`D = \operatorname{prox}_{R_\sigma}` is firmly
    nonexpansive: ``lipschitz_bound() = 1``, ``averagedness = 1/2``.  For a
    :math:`\rho`-weakly convex one (:math:`\rho < 1`), :math:`D = (I + \nabla R_\sigma)^{-1}`
    is the inverse of a :math:`(1-\rho)`-strongly monotone map, so only
    :math:`\mathrm{Lip}(D) \le 1/(1-\rho)` holds, and ``averagedness`` is ``None``.
    Both hold up to the inner tolerance ``tol`` (relative error of the minimiser,
    certified by the solver).
    Calling ``D(y, sigma)`` with a noise level uses :math:`R_\sigma` at that level; the
    certificates refer to the default ``sigma``.
    """

    def __init__(self, regularizer, sigma: float | None = None, *, tol: float = 1e-4,
                 max_iter: int = 1000) -> None:
        super().__init__()
        from lipinverse.regularizers.ridge import ConvexRidge

        if not isinstance(regularizer, ConvexRidge):
            raise TypeError(f"RidgeProxDenoiser: expected a ConvexRidge or WeakConvexRidge, "
                            f"got {type(regularizer).__name__}")
        self.regularizer = regularizer
        self.sigma = float(regularizer.sigma if sigma is None else sigma)
        self.tol, self.max_iter = float(tol), int(max_iter)

    def forward(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        s = self.sigma if sigma is None else sigma
        return self.regularizer.denoise(x, s, tol=self.tol, max_iter=self.max_iter)

    def _rho(self) -> float:
        return max(0.0, -self.regularizer.curvature_bounds(self.sigma)[0])

    def lipschitz_bound(self) -> float:
        r""":math:`1/(1-\rho)` (:math:`= 1` for a convex regulariser)."""
        return 1.0 / (1.0 - self._rho())

    @property
    def averagedness(self) -> float | None:
        """1/2 (firmly nonexpansive) for a convex regulariser, else ``None``."""
        return 0.5 if self._rho() == 0.0 else None

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:.4g}, tol={self.tol}"
