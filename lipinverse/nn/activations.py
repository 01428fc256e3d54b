r"""1-Lipschitz activations and the slope-bound protocol used by the blocks.

An *elementwise* activation usable inside a :class:`~lipinverse.nn.GradientStepBlock`
must report an interval ``(lo, hi)`` containing all its derivatives; see
:func:`activation_slope_bounds`.  :class:`GroupSort` / :class:`MaxMin` are 1-Lipschitz
and norm-preserving but not elementwise, so they are for other architectures.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "GroupSort",
    "MaxMin",
    "ScaledActivation",
    "activation_slope_bounds",
    "activation_derivative_bounds",
]


class GroupSort(nn.Module):
    r"""Sort consecutive groups of ``group_size`` channels (dimension 1) in ascending order.

    Parameters
    ----------
    group_size : int, default 2
        Size of each group; the number of channels must be a multiple of it.

    Notes
    -----
    On each region where the sorting permutation is fixed the map is a permutation
    matrix, so it is piecewise isometric, continuous, hence 1-Lipschitz and norm
    preserving: :math:`\|\mathrm{GS}(x)\| = \|x\|`.

    Shape
    -----
    Input ``(B, C, *)`` with ``C % group_size == 0``, output the same shape.
    """

    lipschitz = 1.0

    def __init__(self, group_size: int = 2) -> None:
        super().__init__()
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"GroupSort: expected group_size a positive int, got {group_size!r}")
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] % self.group_size != 0:
            raise ValueError(
                f"GroupSort.forward: expected input (B, C, ...) with C a multiple of "
                f"{self.group_size}, got {tuple(x.shape)}"
            )
        g = self.group_size
        if g == 1:
            return x
        shape = x.shape
        y = x.reshape(shape[0], shape[1] // g, g, *shape[2:])
        if g == 2:
            a, b = y[:, :, 0], y[:, :, 1]
            y = torch.stack([torch.minimum(a, b), torch.maximum(a, b)], dim=2)
        else:
            y = torch.sort(y, dim=2).values
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(GroupSort):
    r"""GroupSort with groups of two: :math:`(a, b) \mapsto (\min(a,b), \max(a,b))`."""

    def __init__(self) -> None:
        super().__init__(group_size=2)

    def extra_repr(self) -> str:
        return ""


def _leaky_bounds(m: nn.LeakyReLU) -> tuple[float, float]:
    a = float(m.negative_slope)
    return min(a, 1.0), max(a, 1.0)


_TORCH_BOUNDS = {
    nn.ReLU: lambda m: (0.0, 1.0),
    nn.Identity: lambda m: (1.0, 1.0),
    nn.Tanh: lambda m: (0.0, 1.0),
    nn.Sigmoid: lambda m: (0.0, 0.25),
    nn.Softplus: lambda m: (0.0, 1.0),
    nn.Hardtanh: lambda m: (0.0, 1.0),
    nn.LeakyReLU: _leaky_bounds,
}


def activation_slope_bounds(act: nn.Module) -> tuple:
    r"""Interval ``(lo, hi)`` that contains every derivative of an elementwise activation.

    Parameters
    ----------
    act : torch.nn.Module
        A module with a ``slope_bounds`` attribute (e.g. :class:`LipschitzSpline`,
        :class:`ScaledActivation`) or one of ``nn.ReLU``, ``nn.Identity``, ``nn.Tanh``,
        ``nn.Sigmoid``, ``nn.Softplus``, ``nn.Hardtanh`` (default range), ``nn.LeakyReLU``.

    Returns
    -------
    (lo, hi) : floats or 0-d tensors (tensors when a learnable scale is involved).

    Raises
    ------
    TypeError
        For a module whose derivative range is unknown (never guessed).
    """
    if hasattr(act, "slope_bounds"):
        return tuple(act.slope_bounds)
    if isinstance(act, nn.Hardtanh):  # includes ReLU6: derivative in {0, 1}
        return (0.0, 1.0)
    for cls, fn in _TORCH_BOUNDS.items():
        if type(act) is cls:
            return fn(act)
    raise TypeError(
        "activation_slope_bounds: expected an elementwise activation with known slope bounds "
        f"(a module with `slope_bounds`, or one of {[c.__name__ for c in _TORCH_BOUNDS]}), "
        f"got {type(act).__name__}"
    )


@torch.no_grad()
def activation_derivative_bounds(act: nn.Module) -> tuple[float, float]:
    """Certified ``(lo, hi)`` floats for the current activation (tightest available).

    Uses ``act.derivative_bounds()`` when provided, else :func:`activation_slope_bounds`.
    """
    if hasattr(act, "derivative_bounds"):
        lo, hi = act.derivative_bounds()
    else:
        lo, hi = activation_slope_bounds(act)
    return float(lo), float(hi)


class ScaledActivation(nn.Module):
    r"""Activation multiplied by a scale: :math:`\sigma_\lambda(t) = \lambda\,\sigma(t)`.

    Parameters
    ----------
    activation : torch.nn.Module
        Elementwise activation with known slope bounds.
    scale : float or torch.Tensor
        The factor :math:`\lambda` (a 0-d tensor or ``nn.Parameter`` to learn it).

    Notes
    -----
    The slope bounds are :math:`\lambda\,[lo, hi]` (end points swapped when
    :math:`\lambda < 0`), and :meth:`integrate` is :math:`\lambda\Psi`.  Used for
    the gradient step of :math:`\tfrac12\|x-y\|^2 + \lambda\sum\Psi(Wx)`.
    """

    def __init__(self, activation: nn.Module, scale: float | torch.Tensor) -> None:
        super().__init__()
        activation_slope_bounds(activation)  # raises TypeError if unknown
        self.activation = activation
        if isinstance(scale, torch.Tensor):
            if scale.numel() != 1:
                raise ValueError(
                    f"ScaledActivation: expected a scalar scale, got shape {tuple(scale.shape)}"
                )
            if isinstance(scale, nn.Parameter):
                self.scale = scale
            else:
                self.register_buffer("scale", scale.detach().clone().reshape(()))
        else:
            s = float(scale)
            if not math.isfinite(s):
                raise ValueError(f"ScaledActivation: expected a finite scale, got {scale!r}")
            self.register_buffer("scale", torch.tensor(s, dtype=torch.get_default_dtype()))

    @property
    def slope_bounds(self) -> tuple:
        lo, hi = activation_slope_bounds(self.activation)
        s = self.scale.reshape(())
        a, b = s * lo, s * hi
        return torch.minimum(a, b), torch.maximum(a, b)

    @property
    def lipschitz(self) -> float:
        lo, hi = activation_slope_bounds(self.activation)
        return abs(float(self.scale)) * max(abs(float(lo)), abs(float(hi)))

    @torch.no_grad()
    def derivative_bounds(self) -> tuple[float, float]:
        lo, hi = activation_derivative_bounds(self.activation)
        s = float(self.scale)
        return min(s * lo, s * hi), max(s * lo, s * hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.to(x.dtype) * self.activation(x)

    def integrate(self, x: torch.Tensor) -> torch.Tensor:
        r"""Scaled antiderivative :math:`\lambda\int_0^x\sigma`."""
        if not hasattr(self.activation, "integrate"):
            raise TypeError(
                "ScaledActivation.integrate: the wrapped activation "
                f"{type(self.activation).__name__} has no `integrate`"
            )
        return self.scale.to(x.dtype) * self.activation.integrate(x)
