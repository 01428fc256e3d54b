"""Ridge regularisers inside lipinverse's solvers and deepinv's."""

import pytest
import torch

from lipinverse.adapters import to_deepinv_denoiser, to_deepinv_prior
from lipinverse.denoisers import RidgeProxDenoiser
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import ConvexRidge, WeakConvexRidge
from operators import Blur

SIGMA = 10 / 255


def ridge(cls=ConvexRidge):
    torch.manual_seed(0)
    R = cls(channels=(1, 3, 6), kernel_size=3, num_knots=11, sigma=SIGMA).double()
    with torch.no_grad():
        for p in R.parameters():
            p.add_(0.2 * torch.randn_like(p))
    # a trained prior used for reconstruction: no parameter gradients (and no autograd
    # graph growing across solver iterations)
    return R.requires_grad_(False)


def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    k = torch.ones(3, 3, dtype=torch.float64) / 9
    A = Blur(k, padding="circular", in_shape=(1, 8, 8)).double()
    y = A(x) + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return A, y


def objective_gradient_norm(R, A, y, x):
    return (A.adjoint(A(x) - y) + R.grad(x)).flatten(1).norm(dim=1).max()


def test_ridge_in_pgd_grad_and_prox_schemes_agree():
    from lipinverse import solvers
    R = ridge()
    A, y = problem()
    grad = solvers.PGD(L2Fidelity(A, y), R, 1.0, accelerate=True, scheme="grad")
    xg = grad.solve(max_iter=300, tol=1e-10).x
    assert objective_gradient_norm(R, A, y, xg) < 1e-6
    prox = solvers.PGD(L2Fidelity(A, y), R, 1.0, accelerate=True, scheme="prox")
    xp = prox.solve(max_iter=60, tol=1e-10).x
    assert objective_gradient_norm(R, A, y, xp) < 1e-3
    torch.testing.assert_close(xp, xg, rtol=0, atol=1e-3)


def test_ridge_prox_denoiser_in_admm():
    from lipinverse import solvers
    R = ridge()
    A, y = problem()
    D = RidgeProxDenoiser(R, tol=1e-9)
    assert D.averagedness == 0.5 and D.lipschitz_bound() == 1.0
    res = solvers.ADMM(L2Fidelity(A, y), R, 1.0, rho=1.0).solve(max_iter=100, tol=1e-9)
    assert objective_gradient_norm(R, A, y, res.x) < 1e-3


def test_admm_defaults_with_a_ridge_reach_the_pgd_minimiser():
    """Default penalty, warm-started Anderson z-step with the summable inner tolerance."""
    from lipinverse import solvers
    R = ridge()
    A, y = problem()
    f = L2Fidelity(A, y)
    ref = solvers.PGD(f, R, 1.0, accelerate=True).solve(max_iter=2000, tol=1e-12).x
    admm = solvers.ADMM(f, R, 1.0)
    assert admm.rho == pytest.approx(R.grad_lipschitz / 30)
    res = admm.solve(max_iter=500, tol=1e-8)
    assert res.guaranteed and bool(res.converged.all())
    assert "eps_k = 0.1 (k+1)^-1.5" in str(res.guarantee)
    torch.testing.assert_close(res.x, ref, rtol=0, atol=1e-5)


def test_weakly_convex_ridge_in_pgd_grad_scheme():
    from lipinverse import solvers
    R = ridge(WeakConvexRidge)
    A, y = problem()
    res = solvers.PGD(L2Fidelity(A, y), R, 1.0, scheme="grad").solve(max_iter=200, tol=1e-9,
                                                                       track_objective=False)
    assert objective_gradient_norm(R, A, y, res.x) < 1e-3
    assert res.x.abs().max() < 2  # bounded-below prior: no escape along the blur's kernel


def test_deepinv_prior_in_deepinv_pgd():
    import deepinv

    from operators.deepinv import to_deepinv

    R = ridge()
    A, y = problem()
    prior = to_deepinv_prior(R)
    assert prior.explicit_prior
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(prior.grad(x, SIGMA), R.grad(x, SIGMA))
    torch.testing.assert_close(prior.fn(x, SIGMA), R.value(x, SIGMA))
    torch.testing.assert_close(prior.prox(x, SIGMA, gamma=0.5), R.prox(x, 0.5, SIGMA))
    step = 1.0 / A.norm() ** 2
    model = deepinv.optim.optim_builder(
        iteration="PGD", prior=to_deepinv_prior(R),
        data_fidelity=deepinv.optim.data_fidelity.L2(), max_iter=60, early_stop=False,
        params_algo={"stepsize": step, "lambda": 1.0, "g_param": SIGMA})
    xhat = model(y, to_deepinv(A))
    # the same iteration (x <- prox(x - step grad f(x)), from A^T y) in lipinverse's PGD
    from lipinverse import solvers
    ours = solvers.PGD(L2Fidelity(A, y), R, 1.0, step_size=float(step), scheme="prox")
    ref = ours.solve(max_iter=60, tol=0, track_objective=False).x
    torch.testing.assert_close(xhat, ref, rtol=0, atol=1e-6)


def test_deepinv_denoiser_adapter():
    import deepinv
    R = ridge()
    D = to_deepinv_denoiser(RidgeProxDenoiser(R))
    assert isinstance(D, deepinv.models.Denoiser)
    x = torch.rand(2, 1, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(D(x, 0.05), R.denoise(x, 0.05, tol=RidgeProxDenoiser(R).tol))
    assert D.lipschitz_bound() == 1.0 and D.averagedness == 0.5
    with pytest.raises(TypeError, match="to_deepinv_denoiser"):
        to_deepinv_denoiser(3)
    with pytest.raises(TypeError, match="to_deepinv_prior"):
        to_deepinv_prior(object())
