r"""A learned 1-Lipschitz scalar regulariser: a scalar-output Lipschitz ResNet."""

from __future__ import annotations

import torch

from lipinverse.nn import certify
from lipinverse.nn.resnet import ResNetModel

__all__ = ["LipschitzResNetRegularizer"]


class LipschitzResNetRegularizer(ResNetModel):
    r"""Regulariser :math:`R(x) = w^\top F_L(\dots F_1(Ax))`, 1-Lipschitz by construction.

    Parameters
    ----------
    in_channels : int, default 1
    width : int, default 16
    depth : int, default 4
    kernel_size : int, default 3
    hidden : int, optional
    activation : {"spline", "relu"}, default "spline"
    padding : {"zero", "circular"}, default "zero"
    step : float in (0, 1], default 1.0
    norm : {"bound", "estimate"}, default "bound"

    Notes
    -----
    A scalar :class:`~lipinverse.nn.LipschitzResNet` (``output="scalar"``): the
    projection to one channel and the normalised spatial sum have norm at most 1, so
    :math:`|R(x) - R(x')| \le \|x - x'\|` (``value_lipschitz_bound()``, certified).
    Trained adversarially (:class:`~lipinverse.training.AdversarialLoss`): since
    :math:`R` is 1-Lipschitz, :math:`\mathbb E R(\text{degraded}) - \mathbb E
    R(\text{clean})` is a Kantorovich–Rubinstein lower bound of the Wasserstein-1
    distance, with no gradient penalty.  :meth:`grad` is computed by automatic
    differentiation; its Lipschitz constant is not certified (``grad_lipschitz = None``)
    and :math:`R` is not convex, so solvers use backtracking on the objective.
    """

    convex = False
    weak_convexity = None
    grad_lipschitz = None

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 4,
                 kernel_size: int = 3, hidden: int | None = None, activation: str = "spline",
                 padding: str = "zero", step: float = 1.0, norm: str = "bound") -> None:
        super().__init__()
        self.build_network(locals(), scalar=True)

    def _check(self, name: str, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LipschitzResNetRegularizer.{name}: expected a torch.Tensor, "
                            f"got {type(x)}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"LipschitzResNetRegularizer.{name}: expected input of shape "
                             f"(B, {self.in_channels}, H, W), got {tuple(x.shape)}")

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample values :math:`R(x)`, shape ``(B,)``."""
        self._check("value", x)
        return self.network(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`value`."""
        return self.value(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla R(x)` by automatic differentiation.

        Differentiable with respect to the weights when called with gradients enabled
        and ``x`` requiring grad (double back-propagation); otherwise detached.
        """
        self._check("grad", x)
        create = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            z = x if create else x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.network(z).sum(), z, create_graph=create)
        return g

    @torch.no_grad()
    def value_lipschitz_bound(self) -> float:
        """Certified Lipschitz constant of :math:`R` itself (at most 1)."""
        return certify(self.network)
