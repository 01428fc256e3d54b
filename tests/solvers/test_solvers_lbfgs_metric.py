"""LBFGS preconditioned by the Fourier metric: same minimiser, fewer iterations, same theorem."""

import pytest
import torch

from lipinverse import pretrained
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import Tikhonov
from lipinverse.solvers import LBFGS
from operators import Blur, Mask, kernels

from ._problems import make_problem, rel_err


def _ridge(name, sigma=0.02):
    return pretrained.load(name).double().at_sigma(sigma)


@pytest.mark.parametrize("name", ["crr", "wcrr"])
def test_metric_reaches_the_same_point_in_fewer_iterations(name):
    A, y = make_problem(batch=2, size=24, noise=0.01, blur=1.6)
    f, R = L2Fidelity(A, y), _ridge(name)
    plain = LBFGS(f, R, lam=1.0, preconditioner=None)
    pre = LBFGS(f, R, lam=1.0)               # "auto": a circular blur and a ridge prior
    assert plain.preconditioner is None and pre.preconditioner == "fourier"
    a = plain.solve(max_iter=3000, tol=1e-10)
    b = pre.solve(max_iter=3000, tol=1e-10)
    assert bool(a.converged.all()) and bool(b.converged.all())
    if name == "crr":  # convex: the one minimiser
        assert rel_err(b.x, a.x) < 1e-7
    else:  # nonconvex with a blur: each a stationary point (two paths may reach two of them)
        x0 = A.adjoint(y)
        for r in (a, b):
            assert (R.grad(r.x) + f.grad(r.x)).norm() < 1e-6 * (R.grad(x0) + f.grad(x0)).norm()
        fa, fb = float(f(a.x).sum() + R(a.x).sum()), float(f(b.x).sum() + R(b.x).sum())
        assert abs(fb - fa) < 1e-2 * abs(fa)
    assert int(b.iterations.max()) < int(a.iterations.max())
    assert "preconditioned" in str(b.guarantee) and "preconditioned" not in str(a.guarantee)
    assert b.guarantee.theorem == a.guarantee.theorem == "L-BFGS (safeguarded)"


def test_metric_on_a_colour_image():
    """A grey ridge prior on a colour blur: the symbol is the mean over the folded channels;
    the same minimiser as without the metric."""
    g = torch.Generator().manual_seed(4)
    A = Blur(kernels.gaussian(1.2).double(), "circular", in_shape=(3, 20, 20))
    x = torch.rand(1, 3, 20, 20, generator=g, dtype=torch.float64)
    y = A(x) + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    f, R = L2Fidelity(A, y), _ridge("crr")
    a = LBFGS(f, R, lam=1.0, preconditioner=None).solve(max_iter=3000, tol=1e-10)
    b = LBFGS(f, R, lam=1.0, preconditioner="fourier").solve(max_iter=3000, tol=1e-10)
    assert bool(b.converged.all()) and rel_err(b.x, a.x) < 1e-7


def test_auto_falls_back_and_fourier_names_what_it_needs():
    A, y = make_problem(batch=1, size=12)
    f, R = L2Fidelity(A, y), _ridge("crr")
    M = Mask((torch.rand(1, 12, 12) > 0.5).double())
    fm = L2Fidelity(M, M(torch.rand(1, 1, 12, 12, dtype=torch.float64)))
    assert LBFGS(fm, R, lam=1.0).preconditioner is None
    # a blur with an unknown ("valid") boundary: A^T A is far from a convolution at the
    # border of the larger domain, where the metric slowed L-BFGS down
    V = Blur(kernels.gaussian(1.0).double(), "valid", in_shape=(1, 14, 14))
    fv = L2Fidelity(V, V(torch.rand(1, 1, 14, 14, dtype=torch.float64)))
    assert not V.shift_invariant and LBFGS(fv, R, lam=1.0).preconditioner is None
    with pytest.raises(ValueError, match="shift_invariant.*Mask"):
        LBFGS(fm, R, lam=1.0, preconditioner="fourier")
    with pytest.raises(ValueError, match="curvature_symbol.*Tikhonov"):
        LBFGS(f, Tikhonov(), lam=0.1, preconditioner="fourier")
    assert LBFGS(f, Tikhonov(), lam=0.1).preconditioner is None
    with pytest.raises(ValueError, match="preconditioner in"):
        LBFGS(f, R, lam=1.0, preconditioner="jacobi")
