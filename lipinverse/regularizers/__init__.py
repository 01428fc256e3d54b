"""Regularisers: classical (TV, Tikhonov) and learned.

Every regulariser is a functional: per-sample values ``g(x)`` of shape ``(B,)``, ``prox``
and / or ``grad``, and the certificates ``convex``, ``weak_convexity``, ``grad_lipschitz``.
"""

from .classical import Tikhonov
from .resnet_regularizer import LipschitzResNetRegularizer
from .ridge import ConvexRidge
from .ridge_parts import RidgeAtSigma
from .ridge_weak import WeakConvexRidge
from .tv import TV

__all__ = ["TV", "Tikhonov", "ConvexRidge", "WeakConvexRidge", "RidgeAtSigma",
           "LipschitzResNetRegularizer"]
