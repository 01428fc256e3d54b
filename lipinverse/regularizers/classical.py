r"""Classical regularisers: Tikhonov, and a prox wrapped as a denoiser.

Total variation lives in :mod:`lipinverse.regularizers.tv`.
"""

from __future__ import annotations

import torch

from operators.validation import check_float, check_tensor

__all__ = ["Tikhonov", "check_tau"]


def check_tau(name: str, tau) -> float:
    """A prox step ``tau``: a finite number >= 0 (or a one-element tensor)."""
    return check_float(name, tau, "tau")


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
