"""Numerics at the edges (issue 19, class 7)."""

import math

import pytest
import torch

from lipinverse.metrics import image_metrics
from operators import Blur, Mask, kernels


@pytest.mark.parametrize("c", [1e-170, 1e-160, 1e-200, 1e-150])
def test_gram_solve_of_tiny_scaled_operator(c):
    A = Blur(kernels.gaussian(1.0), in_shape=(1, 12, 12))
    b = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    x = (c * A).gram_solve(b, 1.0)
    assert bool(torch.isfinite(x).all())
    # (c^2 A^T A + I) x = b: with c^2 below the rounding of 1, x = b
    torch.testing.assert_close(x, b)


def test_kernel_or_mask_requiring_grad_is_refused():
    with pytest.raises(ValueError, match="requires grad"):
        Blur(kernels.gaussian(1.0).requires_grad_(True))
    with pytest.raises(ValueError, match="requires grad"):
        Mask(torch.ones(4, 4, requires_grad=True))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_metrics_on_tiny_images(n):
    x, y = torch.rand(1, 1, n, n), torch.rand(1, 1, n, n)
    p, s = image_metrics(x, y)
    assert math.isfinite(p)
    if n < 3:
        assert math.isnan(s)  # no window fits: said, not an error after a solve
    else:
        assert -1.0 <= s <= 1.0 and image_metrics(x, x + 1e-4)[1] == pytest.approx(1.0, abs=1e-3)
