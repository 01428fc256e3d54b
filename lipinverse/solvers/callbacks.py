r"""Callbacks for :meth:`~lipinverse.solvers.base.IterativeSolver.solve`.

A callback is any callable taking an :class:`~lipinverse.solvers.base.IterationInfo`; it
returns ``True`` to stop the solve. These record per-iteration figures without printing
and without keeping images.
"""

from __future__ import annotations

import math

import torch

from ..metrics import psnr
from .base import IterationInfo

__all__ = ["PSNRRecorder", "MetricRecorder", "StopAfter"]


class MetricRecorder:
    r"""Record ``metric(x)`` (a ``(B,)`` tensor) after every ``every``-th iteration.

    Parameters
    ----------
    metric : callable
        ``metric(x) -> (B,)`` tensor.
    every : int
        Record at iterations ``every, 2 every, ...``.

    Attributes
    ----------
    iterations : list of int
    values : list of ``(B,)`` CPU tensors; :meth:`as_tensor` stacks them to ``(K, B)``.
    """

    def __init__(self, metric, every: int = 1):
        if not callable(metric):
            raise TypeError(f"MetricRecorder: expected a callable metric, got "
                            f"{type(metric).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"MetricRecorder: expected an int every >= 1, got {every!r}")
        self.metric = metric
        self.every = every
        self.iterations: list[int] = []
        self.values: list[torch.Tensor] = []

    def __call__(self, info: IterationInfo) -> bool:
        if info.iteration % self.every == 0:
            with torch.no_grad():
                self.values.append(self.metric(info.x).detach().cpu())
            self.iterations.append(info.iteration)
        return False

    def as_tensor(self) -> torch.Tensor:
        """The recorded values, ``(K, B)``."""
        if not self.values:
            return torch.zeros(0)
        return torch.stack(self.values)


class PSNRRecorder(MetricRecorder):
    r"""Record the per-sample PSNR :math:`10\log_{10}(\text{peak}^2 / \text{MSE})` against a
    reference ``x_true`` of the iterate's shape."""

    def __init__(self, x_true: torch.Tensor, peak: float = 1.0, every: int = 1):
        if not isinstance(x_true, torch.Tensor):
            raise TypeError(f"PSNRRecorder: expected x_true as a torch.Tensor, got "
                            f"{type(x_true).__name__}")
        if not (isinstance(peak, (int, float)) and math.isfinite(peak) and peak > 0):
            raise ValueError(f"PSNRRecorder: expected a finite peak > 0, got {peak!r}")
        ref = x_true.detach()

        def record(x):
            if x.shape != ref.shape:
                raise ValueError(f"PSNRRecorder: expected iterates of shape {tuple(ref.shape)}, "
                                 f"got {tuple(x.shape)}")
            return psnr(x, ref, peak)

        super().__init__(record, every)


class StopAfter:
    """Stop the solve after a wall-clock budget of ``seconds`` (measured from the first
    call)."""

    def __init__(self, seconds: float):
        if not (isinstance(seconds, (int, float)) and seconds > 0):
            raise ValueError(f"StopAfter: expected seconds > 0, got {seconds!r}")
        self.seconds = float(seconds)
        self._start = None

    def __call__(self, info: IterationInfo) -> bool:
        import time

        now = time.perf_counter()
        if self._start is None:
            self._start = now
        return now - self._start >= self.seconds
