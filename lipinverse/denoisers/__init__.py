"""Denoisers with certificates: nonexpansive ResNets, averaged relaxations, ridge proxes.

Every denoiser is called as ``D(x, sigma=None)`` and exposes ``lipschitz_bound()``
(certified) and ``averagedness`` (``alpha``, or ``None`` if unknown).
"""

from .averaged import AveragedDenoiser, averaged
from .lipschitz import LipschitzDenoiser
from .prox import ProxDenoiser
from .ridge import RidgeProxDenoiser
from .ridge_resnet import RidgeResNetDenoiser

__all__ = ["LipschitzDenoiser", "AveragedDenoiser", "averaged", "RidgeProxDenoiser",
           "RidgeResNetDenoiser", "ProxDenoiser"]
