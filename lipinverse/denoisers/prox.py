r"""The proximal operator of a convex functional as a plug-and-play denoiser."""

from __future__ import annotations

import torch

from ..regularizers.classical import check_tau

__all__ = ["ProxDenoiser"]


class ProxDenoiser:
    r"""The proximal operator of a convex functional, used as a plug-and-play denoiser.

    :math:`D(x) = \operatorname{prox}_{\tau g}(x)
    = \arg\min_u \tfrac12\|u - x\|^2 + \tau g(u)`.

    Parameters
    ----------
    functional : object with ``prox(x, tau)`` and ``convex = True``
        The regulariser ``g`` (e.g. :class:`~lipinverse.regularizers.TV`).
    tau : float
        The strength :math:`\tau \ge 0`.

    Notes
    -----
    The proximal operator of a proper, convex, lower semicontinuous function is firmly
    nonexpansive (Moreau 1965; Bauschke & Combettes 2017, Prop. 12.28):
    :math:`\|D x - D y\|^2 \le \langle Dx - Dy, x - y\rangle`. Hence
    ``lipschitz_bound() = 1`` and ``averagedness = 1/2``, which is what PnP-FBS and
    PnP-ADMM need for their convergence theorems. These certificates hold *exactly* only
    when the prox is computed exactly; an iterative prox (TV) is accurate to its inner
    tolerance, see the functional's ``prox``.
    """

    averagedness = 0.5

    def __init__(self, functional, tau: float):
        if not callable(getattr(functional, "prox", None)):
            raise TypeError(f"ProxDenoiser: expected a functional with a prox(x, tau) method, "
                            f"got {type(functional).__name__}")
        if getattr(functional, "convex", False) is not True:
            raise ValueError(f"ProxDenoiser: the prox of a functional not certified convex "
                             f"({type(functional).__name__}.convex is not True) is not firmly "
                             "nonexpansive")
        self.functional = functional
        self.tau = check_tau("ProxDenoiser", tau)

    def __call__(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """Apply :math:`\\operatorname{prox}_{\\tau g}` (the strength is ``tau``, fixed)."""
        if sigma is not None:
            raise ValueError(f"ProxDenoiser.__call__: the strength is fixed by tau="
                             f"{self.tau:g} at construction; expected sigma=None, got {sigma!r}")
        return self.functional.prox(x, self.tau)

    def lipschitz_bound(self) -> float:
        """Certified Lipschitz constant: 1 (a prox is firmly nonexpansive)."""
        return 1.0

    def reset_warm_start(self) -> None:
        """Forward to the functional's ``reset_warm_start`` (iterative proxes), if any."""
        reset = getattr(self.functional, "reset_warm_start", None)
        if callable(reset):
            reset()

    def __repr__(self) -> str:
        return f"ProxDenoiser({self.functional!r}, tau={self.tau:g})"
