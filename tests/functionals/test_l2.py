"""L2Fidelity: value, gradient, prox and certificate."""

import pytest
import torch

import operators as O
from lipinverse.functionals import L2Fidelity
from operators import kernels


def _problem():
    g = torch.Generator().manual_seed(0)
    A = O.Blur(kernels.gaussian(1.0), "zero", (1, 10, 10))
    y = torch.randn(3, 1, 10, 10, generator=g, dtype=torch.float64)
    x = torch.randn(3, 1, 10, 10, generator=g, dtype=torch.float64)
    return A, y, x


def test_value_grad_match_autograd():
    A, y, x = _problem()
    f = L2Fidelity(A, y)
    xr = x.clone().requires_grad_(True)
    v = f(xr)
    assert v.shape == (3,)
    (g,) = torch.autograd.grad(v.sum(), xr)
    torch.testing.assert_close(f.grad(x), g)


def test_prox_optimality():
    A, y, x = _problem()
    f = L2Fidelity(A, y)
    tau = 0.4
    p = f.prox(x, tau)
    res = f.grad(p) + (p - x) / tau
    assert float(res.abs().max()) < 1e-6
    with pytest.raises(ValueError, match="tau > 0"):
        f.prox(x, -1.0)


@pytest.mark.parametrize("padding", ["zero", "circular"])
def test_grad_step_is_fused_gradient_step(padding):
    g = torch.Generator().manual_seed(1)
    A = O.Blur(kernels.gaussian(1.5), padding, (1, 12, 12))
    y = torch.randn(2, 1, 12, 12, generator=g, dtype=torch.float64)
    x = torch.randn(2, 1, 12, 12, generator=g, dtype=torch.float64)
    f = L2Fidelity(A, y)
    for tau in (0.3, 1.7, 0.3):  # the cached tau * A^T y follows tau
        torch.testing.assert_close(f.grad_step(x, tau), x - tau * f.grad(x))
    with pytest.raises(ValueError, match="tau > 0"):
        f.grad_step(x, 0.0)


def test_grad_lipschitz_is_certified():
    A, y, x = _problem()
    f = L2Fidelity(A, y)
    L = f.grad_lipschitz
    d = torch.randn_like(x)
    ratio = (f.grad(x + d) - f.grad(x)).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
    assert float(ratio.max()) <= L
    assert f.convex and f.weak_convexity == 0.0


def test_bad_measurements():
    A, y, _ = _problem()
    bad = y.clone()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf entries in sample\(s\) \[1\]"):
        L2Fidelity(A, bad)
    with pytest.raises(ValueError, match="expected y of shape"):
        L2Fidelity(A, y[..., :5])
    with pytest.raises(TypeError, match="operators.Operator"):
        L2Fidelity("A", y)
