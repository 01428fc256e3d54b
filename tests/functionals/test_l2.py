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


@pytest.mark.parametrize("op", ["radon", "blur"])
def test_grad_value_matches_grad_and_value(op):
    """``grad_value``: the gradient and the per-sample value; with an operator without a
    fused normal operator (Radon) the value comes from the kept residual, with no second
    forward pass."""
    from lipinverse.functionals import grad_value

    g = torch.Generator().manual_seed(1)
    A = (O.Radon(16, 7, normalize=True) if op == "radon"
         else O.Blur(kernels.gaussian(1.0).double(), "circular"))
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    y = A(torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64))
    f = L2Fidelity(A, y)
    calls = []
    real = A._forward
    object.__setattr__(A, "_forward", lambda z: calls.append(1) or real(z))
    grad, value = grad_value(f, x)
    torch.testing.assert_close(grad, f.grad(x), rtol=1e-12, atol=1e-12)
    n = len(calls)
    v = value()
    assert len(calls) - n == (0 if op == "radon" else 1)
    torch.testing.assert_close(v, f(x), rtol=1e-13, atol=0)
    assert v.shape == (2,)
    rows = torch.tensor([1])
    torch.testing.assert_close(value(rows), f(x)[rows], rtol=1e-13, atol=0)


def test_grad_value_falls_back_to_grad_and_call():
    """A functional without ``grad_value``: its ``grad`` and its ``__call__``, the latter
    only when asked."""
    from lipinverse.functionals import grad_value

    class Quadratic:
        calls = 0

        def __call__(self, x):
            Quadratic.calls += 1
            return 0.5 * x.flatten(1).pow(2).sum(1)

        def grad(self, x):
            return x

    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    grad, value = grad_value(Quadratic(), x)
    assert torch.equal(grad, x) and Quadratic.calls == 0
    torch.testing.assert_close(value(), 0.5 * x.flatten(1).pow(2).sum(1))
    assert Quadratic.calls == 1


def test_fused_gram_flags_the_one_pass_normal_operators():
    """``fused_gram``: circular blurs compute A^T A x in one pass (the same result as
    adjoint(forward)); other paddings, Radon and wrappers take the generic route."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 12, 12, generator=g, dtype=torch.float64)
    k = kernels.gaussian(1.0).double()
    circ = O.Blur(k, "circular")
    assert circ.fused_gram
    torch.testing.assert_close(circ.gram(x), circ.adjoint(circ(x)), rtol=0, atol=1e-12)
    assert not any(A.fused_gram for A in (O.Blur(k, "zero"), O.Blur(k, "valid"),
                                          O.Radon(12, 5), 2.0 * circ))


def test_curvature_along_is_the_exact_quadratic_curvature():
    """``curvature_along(d)`` = (|Ad|^2, |Ad|^2): f(x + t d) - f(x) - t grad f(x)^T d is
    t^2/2 times it (float64)."""
    A, y, x = _problem()
    f = L2Fidelity(A, y)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    lo, hi = f.curvature_along(d)
    assert torch.equal(lo, hi) and lo.shape == (3,)
    t = 0.7
    rest = f(x + t * d) - f(x) - t * (f.grad(x) * d).flatten(1).sum(1)
    torch.testing.assert_close(rest, 0.5 * t * t * lo, rtol=1e-10, atol=1e-12)
