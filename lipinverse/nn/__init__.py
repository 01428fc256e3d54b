"""1-Lipschitz building blocks with certified Lipschitz bounds.

Splines and activations, linear maps with exact transposes and certified norm bounds,
gradient-step residual blocks, 1-Lipschitz ResNets, and :func:`certify` /
:func:`empirical_lipschitz` / :func:`export`.
"""

from .activations import (
    GroupSort,
    MaxMin,
    ScaledActivation,
    activation_derivative_bounds,
    activation_slope_bounds,
)
from .blocks import GradientStepBlock
from .certify import certify, empirical_lipschitz, export
from .linear import Constrained, ConvMap, DenseMap, LinearMap
from .multiconv import MultiConv
from .norms import circular_symbol_norm, symbol_norm_bound
from .resnet import LipschitzResNet, SpatialPool, UnrolledNetwork
from .splines import LipschitzSpline

__all__ = [
    "LipschitzSpline",
    "GroupSort",
    "MaxMin",
    "ScaledActivation",
    "activation_slope_bounds",
    "activation_derivative_bounds",
    "LinearMap",
    "ConvMap",
    "MultiConv",
    "DenseMap",
    "Constrained",
    "symbol_norm_bound",
    "circular_symbol_norm",
    "GradientStepBlock",
    "LipschitzResNet",
    "UnrolledNetwork",
    "SpatialPool",
    "certify",
    "empirical_lipschitz",
    "export",
]
