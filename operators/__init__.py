"""Forward operators for imaging inverse problems, with exact adjoints and certified norms.

Every operator is a linear :class:`Operator` acting on batches ``(B, C, H, W)``. This package
never imports :mod:`lipinverse`.
"""

from . import kernels, phantoms
from .base import Adjoint, Composition, ConvergenceError, Identity, Operator, Scaled, Sum
from .blur import Blur
from .downsampling import Downsample, Subsample
from .gradient import FiniteDifference
from .mask import Mask
from .radon import Radon

__all__ = [
    "Operator", "ConvergenceError", "Identity", "Adjoint", "Composition", "Sum", "Scaled",
    "Blur", "Mask", "Downsample", "Subsample", "FiniteDifference", "kernels",
    "Radon", "phantoms",
]
