"""Batches, freezing, history, callbacks, monotone objectives and error paths."""

import pytest
import torch

from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import TV, Tikhonov
from lipinverse.solvers import ADMM, PGD, DivergenceError

from ._problems import Denoiser, log_prior, make_problem, rel_err

LAM = 0.05


@pytest.mark.parametrize("make", [
    lambda f: PGD(f, Tikhonov(), LAM),
    lambda f: PGD(f, Tikhonov(), LAM, accelerate=True),
    lambda f: ADMM(f, Tikhonov(), LAM),
    lambda f: PGD(f, log_prior(), LAM),
    lambda f: PGD(f, log_prior(), LAM, accelerate=True),
], ids=["pgd", "fista", "admm", "grad-nonconvex", "monotone-apg-nonconvex"])
def test_batched_equals_per_sample(make):
    A, y = make_problem(batch=3)
    batched = make(L2Fidelity(A, y)).solve(max_iter=3000, tol=1e-7)
    for i in range(3):
        single = make(L2Fidelity(A, y[i:i + 1])).solve(max_iter=3000, tol=1e-7)
        assert torch.allclose(batched.x[i:i + 1], single.x, rtol=0, atol=1e-13)
        assert batched.iterations[i] == single.iterations[0]
        assert bool(batched.converged[i]) == bool(single.converged[0])


def test_converged_samples_stop_changing():
    A, y = make_problem(batch=2)
    y = torch.cat([y[:1], 10 * y[1:]])  # second sample: same contraction, farther start
    x0 = torch.cat([torch.zeros_like(y[:1]), A.adjoint(y[1:])])
    f = L2Fidelity(A, y)
    snapshots = []
    res = PGD(f, Tikhonov(), 1.0).solve(x0=x0, max_iter=2000, tol=1e-8,
                                         callback=lambda info: snapshots.append(info.x.clone()))
    assert bool(res.converged.all())
    k0, k1 = int(res.iterations[0]), int(res.iterations[1])
    assert k0 != k1 and len(snapshots) == max(k0, k1)
    early = 0 if k0 < k1 else 1
    kk = min(k0, k1)
    for snap in snapshots[kk:]:
        assert torch.equal(snap[early], snapshots[kk - 1][early])
    rc = res.history.relative_change
    assert bool((rc[kk:, early] == 0).all()) and bool((rc[:kk, early] > 0).all())


def test_history_and_callback_stop(problem):
    _, _, f = problem
    seen = []

    def cb(info):
        seen.append((info.iteration, info.relative_change.shape, info.step_size))
        return info.iteration == 7

    res = PGD(f, Tikhonov(), LAM).solve(max_iter=100, tol=0.0, callback=cb)
    assert len(res.history) == 7 and res.history.relative_change.shape == (7, 2)
    assert seen[-1][0] == 7 and seen[0][1] == (2,)
    assert seen[0][2] == pytest.approx(1 / f.grad_lipschitz)
    assert res.iterations.tolist() == [7, 7] and not bool(res.converged.any())
    assert bool((res.history.time.diff() >= 0).all())
    res = PGD(f, Tikhonov(), LAM).solve(max_iter=5, tol=0.0, track_objective=False)
    assert res.history.objective is None


def test_progress_bar_runs(problem):
    _, _, f = problem
    res = PGD(f, Tikhonov(), LAM).solve(max_iter=3, progress=True)
    assert len(res.history) == 3


def test_tv_objective_decreases_monotonically():
    A, y = make_problem(size=8, blur=0.8)
    f = L2Fidelity(A, y)
    tv = TV(tol=1e-6, max_iter=20000)
    res = PGD(f, tv, 0.05).solve(max_iter=40, tol=0.0)
    obj = res.history.objective
    # F(x+) <= F(x) - (1/tau - L/2)||x+ - x||^2 for an exact prox; the prox is certified to
    # 1e-6 relative, so allow a slack far below the decreases
    dec = obj.diff(dim=0)
    assert bool((dec <= 1e-9).all())
    assert bool((dec[:5] < -1e-6).all())
    assert bool((obj[-1] < obj[0]).all())


def test_weakly_convex_gradient_scheme_decreases():
    A, y = make_problem()
    f = L2Fidelity(A, y)
    res = PGD(f, log_prior(), 0.5).solve(max_iter=300, tol=1e-10)
    assert bool((res.history.objective.diff(dim=0) <= 1e-12).all())
    grad = f.grad(res.x) + 0.5 * log_prior().grad(res.x)
    assert grad.flatten(1).norm(dim=1).max() < 1e-6


@pytest.mark.parametrize("lam", [0.05, 0.5, 5.0])
def test_monotone_apg_decreases_and_reaches_a_critical_point(lam):
    """Accelerated gradient on a nonconvex objective (monotone APG): F never increases, the
    gradient vanishes, and on an ill-conditioned blur it needs far fewer iterations than
    gradient descent to the same tolerance."""
    A, y = make_problem(batch=2, size=16, blur=1.8, noise=0.05, seed=3)
    f = L2Fidelity(A, y)
    prior = log_prior()
    acc = PGD(f, prior, lam, accelerate=True)
    assert str(acc.guarantee).startswith("Monotone accelerated gradient")
    res = acc.solve(max_iter=20000, tol=1e-9)
    assert bool(res.converged.all())
    assert bool((res.history.objective.diff(dim=0) <= 1e-12).all())
    grad = f.grad(res.x) + lam * prior.grad(res.x)
    assert grad.flatten(1).norm(dim=1).max() < 1e-6
    # the recorded objective is the step's own F(x_k) (not evaluated twice): it must be the
    # objective of the iterate, sample by sample
    short = acc.solve(max_iter=7, tol=0.0)
    F = f(short.x) + lam * prior(short.x)
    assert torch.allclose(short.history.objective[-1], F, rtol=1e-12, atol=0)
    gd = PGD(f, prior, lam).solve(max_iter=20000, tol=1e-9)
    assert bool(gd.converged.all())
    if lam < 0.1:  # ill-conditioned: momentum pays
        assert int(res.iterations.max()) * 3 < int(gd.iterations.max())


def test_monotone_apg_falls_back_to_the_gradient_step():
    """Where the momentum candidate fails the sufficient-descent test, the step taken is the
    better of it and the plain gradient step (so F still decreases)."""
    A, y = make_problem(batch=1, seed=4)
    f = L2Fidelity(A, y)
    solver = PGD(f, log_prior(), 5.0, accelerate=True)
    state = solver._init_state(A.adjoint(y))
    # a state whose extrapolation points far uphill: z_k far from x_k with t_k large
    state["z"] = state["x"] + 3.0
    state["t"] = torch.full_like(state["t"], 50.0)
    state["t_prev"] = torch.full_like(state["t"], 49.0)
    new, _ = solver._step(state, 0, torch.ones(1, dtype=torch.bool))
    x, tau = state["x"], solver.step_size
    v = x - tau * solver._total_grad(x)
    assert torch.allclose(new["x"], v, rtol=0, atol=1e-14)
    assert bool((new["F"] < state["F"]).all())


def test_backtracking_without_certificate_converges(problem):
    A, y, f = problem
    class NoLip(type(f)):
        @property
        def grad_lipschitz(self):
            return None

    g = NoLip(A, y)
    s = PGD(g, Tikhonov(), LAM)
    assert s.backtracking and str(s.guarantee).startswith("PGD (forward-backward)")
    res = s.solve(max_iter=3000, tol=1e-11)
    ref = PGD(f, Tikhonov(), LAM).solve(max_iter=3000, tol=1e-11)
    assert rel_err(res.x, ref.x) < 1e-8


# ------------------------------------------------------------------ errors
def test_constructor_errors(problem):
    _, _, f = problem
    D = Denoiser(lambda x: x, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"PGD: expected a finite lam >= 0, got -1"):
        PGD(f, Tikhonov(), -1.0)
    with pytest.raises(ValueError, match=r"ADMM: expected a finite lam >= 0"):
        ADMM(f, Tikhonov(), float("nan"))
    with pytest.raises(ValueError, match="expected a regularisation weight lam"):
        PGD(f, Tikhonov())
    with pytest.raises(ValueError, match="lam has no role with a denoiser"):
        PGD(f, D, 0.1)
    with pytest.raises(ValueError, match="sigma is for denoisers"):
        PGD(f, Tikhonov(), 0.1, sigma=0.1)
    with pytest.raises(ValueError, match="relaxation is for the plug-and-play"):
        PGD(f, Tikhonov(), 0.1, relaxation=0.5)
    with pytest.raises(ValueError, match="step_size > 0, got 0"):
        PGD(f, Tikhonov(), 0.1, step_size=0.0)
    with pytest.raises(ValueError, match="rho > 0"):
        ADMM(f, Tikhonov(), 0.1, rho=-1.0)
    with pytest.raises(ValueError, match="expected scheme in"):
        PGD(f, Tikhonov(), 0.1, scheme="newton")
    with pytest.raises(TypeError, match="scheme='grad' needs a prior with a callable grad"):
        PGD(f, TV(), 0.1, scheme="grad")
    with pytest.raises(TypeError, match="expected a prior with prox"):
        PGD(f, object(), 0.1)
    with pytest.raises(TypeError, match="use PGD for a smooth prior"):
        ADMM(f, log_prior(), 0.1)
    with pytest.raises(TypeError, match="expected a fidelity with grad"):
        PGD(object(), Tikhonov(), 0.1)
    with pytest.raises(TypeError, match="accelerate to be a bool"):
        PGD(f, Tikhonov(), 0.1, accelerate=1)
    with pytest.raises(ValueError, match="averagedness must be in"):
        PGD(f, Denoiser(lambda x: x, 1.0, 1.5))


def test_solve_errors(problem):
    A, y, f = problem
    s = PGD(f, Tikhonov(), LAM)
    with pytest.raises(ValueError, match=r"PGD.solve: expected x0 of shape \(2, 1, 12, 12\), "
                                         r"got \(2, 1, 12, 11\)"):
        s.solve(x0=torch.zeros(2, 1, 12, 11, dtype=torch.float64))
    with pytest.raises(TypeError, match="expected x0 of dtype torch.float64, got torch.float32"):
        s.solve(x0=torch.zeros(2, 1, 12, 12))
    with pytest.raises(TypeError, match="expected x0 as a torch.Tensor"):
        s.solve(x0=[0.0])
    bad = torch.zeros(2, 1, 12, 12, dtype=torch.float64)
    bad[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x0 has NaN or Inf entries in sample\(s\) \[1\]"):
        s.solve(x0=bad)
    with pytest.raises(ValueError, match="max_iter >= 0"):
        s.solve(max_iter=-1)
    with pytest.raises(TypeError, match="int max_iter"):
        s.solve(max_iter=2.5)
    with pytest.raises(ValueError, match="finite tol >= 0"):
        s.solve(tol=-1e-3)
    with pytest.raises(TypeError, match="callable callback"):
        s.solve(callback=3)
    y_nan = y.clone()
    y_nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        L2Fidelity(A, y_nan)


def test_backtracking_on_unbounded_objective_raises(problem):
    A, y, f = problem

    class Unbounded:
        convex = False
        weak_convexity = None
        grad_lipschitz = None

        def __call__(self, x):
            return -torch.exp(x.flatten(1).pow(2).sum(1))

        def grad(self, x):
            return -2 * x * torch.exp(x.flatten(1).pow(2).sum(1)).view(-1, 1, 1, 1)

    with pytest.raises(DivergenceError, match="PGD.solve"):
        PGD(f, Unbounded(), 1.0).solve(max_iter=50)


def test_nan_objective_raises(problem):
    _, _, f = problem

    class NanValue(Tikhonov):
        def __call__(self, x):
            out = super().__call__(x)
            out[0] = float("nan")
            return out

    with pytest.raises(DivergenceError, match=r"objective is NaN or Inf in sample\(s\) \[0\] at "
                                              r"iteration 1"):
        PGD(f, NanValue(), 0.1).solve(max_iter=5)
