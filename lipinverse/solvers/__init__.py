"""Convergent solvers that certify their own convergence.

``PGD`` (proximal gradient / FISTA, plug-and-play forward-backward, gradient descent on a
smooth learned regulariser), ``ADMM`` (and plug-and-play ADMM / Douglas-Rachford) and
``LBFGS`` (safeguarded quasi-Newton on a smooth objective). Each result carries
``guarantee`` (a :class:`Guarantee`): the theorem whose conditions the parts' certificates
meet, or why none applies; ``result.guaranteed`` says which.
"""

from .admm import ADMM
from .base import DivergenceError, History, IterationInfo, SolverResult
from .callbacks import MetricRecorder, PSNRRecorder, StopAfter
from .guarantee import Guarantee
from .lbfgs import LBFGS
from .pgd import PGD

__all__ = ["PGD", "ADMM", "LBFGS", "SolverResult", "History", "IterationInfo", "DivergenceError",
           "MetricRecorder", "PSNRRecorder", "StopAfter", "Guarantee"]
