"""Plug-and-play: convergence with certified denoisers, agreement with the prox problem,
divergence detection with an expansive one."""

import pytest
import torch

from lipinverse.denoisers import ProxDenoiser
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import TV
from lipinverse.solvers import ADMM, PGD, DivergenceError

from ._problems import Denoiser, make_problem, rel_err

S = 0.02  # strength of the TV prox used as the denoiser


def _fixed_point_residual(f, D, tau, x):
    t = D(x - tau * f.grad(x))
    return ((t - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).max().item()


def test_pnp_fbs_with_tv_prox_converges_to_tv_solution():
    A, y = make_problem(size=8, blur=0.8)
    f = L2Fidelity(A, y)
    tv = TV(tol=1e-4)
    D = ProxDenoiser(tv, S)
    res = PGD(f, D, strict=True).solve(max_iter=2000, tol=1e-6)
    assert bool(res.converged.all())
    rc = res.history.relative_change
    assert rc[-1].max() < 1e-6 < rc[0].min()
    # fixed-point residual of T = D(I - tau grad f) goes to zero
    tau = 1 / f.grad_lipschitz
    assert _fixed_point_residual(f, D, tau, res.x) < 1e-5
    # the fixed point minimises F = f + (S / tau) TV, so it is also a fixed point of the
    # forward-backward map of F with another step (an independent optimality test) ...
    x = res.x
    assert rel_err(tv.prox(x - tau / 2 * f.grad(x), S / 2), x) < 1e-5
    # ... and PnP-ADMM (rho = 1/tau) reaches the same point
    admm = ADMM(f, D, strict=True).solve(max_iter=2000, tol=1e-6)
    assert bool(admm.converged.all())
    assert rel_err(admm.x, x) < 1e-4


def test_km_relaxation_with_merely_nonexpansive_denoiser():
    A, y = make_problem(size=8, blur=0.8)
    f = L2Fidelity(A, y)
    tv = TV(tol=1e-4)
    # the reflected prox 2 prox - I is nonexpansive, not averaged
    R = Denoiser(lambda x: 2 * tv.prox(x, S) - x, 1.0, None)
    s = PGD(f, R, strict=True)
    assert s.relaxation == 0.5
    res = s.solve(max_iter=2000, tol=1e-6)
    assert bool(res.converged.all())
    assert _fixed_point_residual(f, R, s.step_size, res.x) < 1e-5


def test_expansive_denoiser_diverges_with_clear_error(problem):
    _, _, f = problem
    D = Denoiser(lambda x: 3.0 * x, 3.0, None)
    s = PGD(f, D, step_size=1 / f.grad_lipschitz, relaxation=1.0)
    assert str(s.guarantee).startswith("none:")
    with pytest.raises(DivergenceError, match=r"sample\(s\) \[0, 1\] at iteration \d+"):
        s.solve(max_iter=500)


def test_nan_denoiser_names_sample_and_iteration(problem):
    _, _, f = problem

    def fn(x):
        out = x.clone()
        out[1] = float("nan")
        return out

    with pytest.raises(DivergenceError, match=r"NaN or Inf .* sample\(s\) \[1\] at iteration 1"):
        PGD(f, Denoiser(fn, 1.0, 0.5)).solve(max_iter=10)
    with pytest.raises(DivergenceError, match=r"sample\(s\) \[1\]"):
        ADMM(f, Denoiser(fn, 1.0, 0.5)).solve(max_iter=10)


def test_sigma_is_passed_to_the_denoiser(problem):
    _, _, f = problem
    seen = []

    class Sig:
        averagedness = 0.5

        def __call__(self, x, sigma=None):
            seen.append(sigma)
            return x

        def lipschitz_bound(self):
            return 1.0

    PGD(f, Sig(), sigma=0.3).solve(max_iter=2)
    ADMM(f, Sig(), sigma=0.3).solve(max_iter=2)
    assert seen == [0.3] * 4


def test_pnp_step_from_user_without_fidelity_certificate(problem):
    _, _, f = problem

    class NoCert:
        convex = True
        grad = f.grad
        Aty = f.Aty

    D = Denoiser(lambda x: x, 1.0, 0.5)
    with pytest.raises(ValueError, match="pass step_size"):
        PGD(NoCert(), D)
    s = PGD(NoCert(), D, step_size=0.5)
    assert str(s.guarantee).startswith("none:") and "Lipschitz" in str(s.guarantee)
    assert torch.isfinite(s.solve(max_iter=5).x).all()
