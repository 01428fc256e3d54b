r"""Classical regularisers: Tikhonov, and a prox wrapped as a denoiser.

Total variation lives in :mod:`lipinverse.regularizers.tv`.
"""

from __future__ import annotations

import math

import torch

from operators.validation import check_tensor

__all__ = ["Tikhonov", "ProxDenoiser", "check_tau"]


def check_tau(name: str, tau) -> float:
    """Validate a prox step ``tau`` (a finite number >= 0, or a one-element tensor)."""
    if isinstance(tau, torch.Tensor):
        if tau.numel() != 1:
            raise ValueError(f"{name}: expected a scalar tau >= 0, got a tensor of shape "
                             f"{tuple(tau.shape)}")
        tau = tau.item()
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"{name}: expected a float tau >= 0, got {type(tau).__name__}")
    if not math.isfinite(tau) or tau < 0:
        raise ValueError(f"{name}: expected a finite tau >= 0, got {tau}")
    return float(tau)


class Tikhonov:
    r"""Tikhonov regulariser :math:`g(x) = \tfrac12 \|x\|_2^2` (per sample).

    With the data fidelity :math:`\tfrac12\|Ax - y\|^2`, the problem
    :math:`\min_x \tfrac12\|Ax-y\|^2 + \lambda g(x)` has the closed-form solution
    :math:`(A^\top A + \lambda I)\, x = A^\top y`.

    Notes
    -----
    * :math:`\nabla g(x) = x`, Lipschitz with constant ``grad_lipschitz = 1``;
    * :math:`\operatorname{prox}_{\tau g}(x) = x / (1 + \tau)`;
    * ``g`` is convex (1-strongly convex), so ``convex = True``, ``weak_convexity = 0``.

    Examples
    --------
    >>> import torch
    >>> g = Tikhonov()
    >>> g(torch.ones(2, 1, 2, 2)).tolist()
    [2.0, 2.0]
    """

    convex = True
    weak_convexity = 0.0
    grad_lipschitz = 1.0
    #: the prox is a closed form: the solvers default to the proximal scheme
    exact_prox = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        r"""Per-sample values :math:`\tfrac12\|x\|^2`, shape ``(B,)``."""
        check_tensor("Tikhonov.__call__", x, ndim=None)
        return 0.5 * x.flatten(1).pow(2).sum(1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """The gradient, :math:`x` itself."""
        check_tensor("Tikhonov.grad", x, ndim=None)
        return x

    def prox(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        r""":math:`\operatorname{prox}_{\tau g}(x) = x / (1 + \tau)`."""
        check_tensor("Tikhonov.prox", x, ndim=None)
        tau = check_tau("Tikhonov.prox", tau)
        return x / (1.0 + tau)

    def __repr__(self) -> str:
        return "Tikhonov()"


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
