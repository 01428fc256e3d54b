"""Callbacks: metric and PSNR recording, time budget."""

import pytest
import torch

from lipinverse.regularizers import Tikhonov
from lipinverse.solvers import PGD
from lipinverse.solvers.callbacks import MetricRecorder, PSNRRecorder, StopAfter


def test_psnr_recorder_matches_direct_computation(problem):
    A, y, f = problem
    x_true = torch.rand_like(f.Aty)
    rec = PSNRRecorder(x_true, every=2)
    res = PGD(f, Tikhonov(), 0.05).solve(max_iter=10, tol=0.0, callback=rec)
    vals = rec.as_tensor()
    assert vals.shape == (5, 2) and rec.iterations == [2, 4, 6, 8, 10]
    mse = (res.x - x_true).flatten(1).pow(2).mean(1)
    assert torch.allclose(vals[-1], -10 * torch.log10(mse))


def test_metric_recorder_and_stop_after(problem):
    _, _, f = problem
    rec = MetricRecorder(lambda x: x.flatten(1).norm(dim=1))
    res = PGD(f, Tikhonov(), 0.05).solve(max_iter=4, tol=0.0, callback=rec)
    assert torch.allclose(rec.as_tensor()[-1], res.x.flatten(1).norm(dim=1))
    res = PGD(f, Tikhonov(), 0.05).solve(max_iter=1000, tol=0.0, callback=StopAfter(1e-9))
    assert len(res.history) <= 2
    with pytest.raises(ValueError, match="every >= 1"):
        MetricRecorder(lambda x: x, every=0)
    with pytest.raises(TypeError, match="callable metric"):
        MetricRecorder(3)
    with pytest.raises(ValueError, match="seconds > 0"):
        StopAfter(0)
