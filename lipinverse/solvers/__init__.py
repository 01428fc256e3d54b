"""Convergent solvers that certify their own convergence.

``PGD`` (proximal gradient / FISTA, plug-and-play forward-backward, gradient descent on a
smooth learned regulariser) and ``ADMM`` (and plug-and-play ADMM / Douglas-Rachford). Each
result carries ``guarantee``: the theorem whose conditions the parts' certificates meet.
"""

from .admm import ADMM
from .base import DivergenceError, History, IterationInfo, SolverResult
from .callbacks import MetricRecorder, PSNRRecorder, StopAfter
from .pgd import PGD

__all__ = ["PGD", "ADMM", "SolverResult", "History", "IterationInfo", "DivergenceError",
           "MetricRecorder", "PSNRRecorder", "StopAfter"]
