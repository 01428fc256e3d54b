"""PGD, FISTA, ADMM and gradient descent reach the Tikhonov closed form and agree."""

import pytest
import torch

from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import Tikhonov
from lipinverse.solvers import ADMM, PGD

from ._problems import make_problem, rel_err, tikhonov_closed_form

LAM = 0.05


def _solvers(f):
    return {
        "pgd": PGD(f, Tikhonov(), LAM),
        "fista": PGD(f, Tikhonov(), LAM, accelerate=True),
        "admm": ADMM(f, Tikhonov(), LAM),
        "grad": PGD(f, Tikhonov(), LAM, scheme="grad"),
        "nesterov": PGD(f, Tikhonov(), LAM, scheme="grad", accelerate=True),
        "backtracking": PGD(f, Tikhonov(), LAM, backtracking=True, step_size=10.0),
    }


@pytest.fixture(scope="module")
def solved():
    A, y = make_problem()
    f = L2Fidelity(A, y)
    out = {k: s.solve(max_iter=5000, tol=1e-11) for k, s in _solvers(f).items()}
    return tikhonov_closed_form(A, y, LAM), out


@pytest.mark.parametrize("name", ["pgd", "fista", "admm", "grad", "nesterov", "backtracking"])
def test_reaches_closed_form(solved, name):
    xs, out = solved
    res = out[name]
    assert bool(res.converged.all())
    assert rel_err(res.x, xs) < 1e-8
    assert not str(res.guarantee).startswith("none:")


def test_solvers_agree_and_fista_is_faster(solved):
    _, out = solved
    for k in out:
        assert rel_err(out[k].x, out["pgd"].x) < 1e-8, k
    assert out["fista"].iterations.max() < out["pgd"].iterations.max()


def test_backtracking_shrinks_a_too_large_step(problem):
    _, _, f = problem
    res = PGD(f, Tikhonov(), LAM, backtracking=True, step_size=10.0).solve(max_iter=50)
    # the sufficient-decrease test holds for every step <= 1/L_f and the step only halves
    assert 0.5 / f.grad_lipschitz < res.step_size < 10.0


def test_objective_history_monotone_and_matches(problem):
    _, _, f = problem
    res = PGD(f, Tikhonov(), LAM).solve(max_iter=2000, tol=1e-10)
    obj = res.history.objective
    assert obj.shape == res.history.relative_change.shape == (len(res.history), 2)
    assert bool((obj.diff(dim=0) <= 1e-14).all())
    final = f(res.x) + LAM * Tikhonov()(res.x)
    assert torch.allclose(obj[-1], final)
    assert bool((res.history.time.diff() >= 0).all())


def test_float32_runs(problem):
    A, y, _ = problem
    f32 = L2Fidelity(A.float(), y.float())
    res = PGD(f32, Tikhonov(), LAM, accelerate=True).solve(max_iter=2000, tol=1e-5)
    assert res.x.dtype == torch.float32
    assert rel_err(res.x.double(), tikhonov_closed_form(A.double(), y, LAM)) < 1e-4
