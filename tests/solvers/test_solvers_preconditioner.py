"""PGD(preconditioner="fourier"): steps in the metric P = A^T A + cI, with its certificate."""

import pytest
import torch

from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import TV
from lipinverse.solvers import PGD
from operators import Blur, Radon, kernels

from ._problems import SmoothPrior, log_prior, make_problem, rel_err


def pseudo_huber():
    r""":math:`R(x) = \sum \sqrt{1 + x^2}`: convex, :math:`R'' = (1 + x^2)^{-3/2} \in (0, 1]`."""
    return SmoothPrior(lambda x: torch.sqrt(1 + x**2).flatten(1).sum(1),
                       lambda x: x / torch.sqrt(1 + x**2), 1.0, True)


def dense(op, n):
    eye = torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
    return op(eye).reshape(n * n, -1).T      # column j = op(e_j)


@pytest.mark.parametrize("lam", [0.02, 0.3, 3.0])
def test_metric_smoothness_is_a_certified_upper_bound(lam):
    """1/step = L_P bounds the largest generalised eigenvalue of (H, P) over the Hessians
    H = A^T A + lam diag(R''(x)) of the objective (sup at x = 0 for this prior), in
    float64 against dense matrices; and it is tight up to A^T A's smallest eigenvalue."""
    n = 12
    A = Blur(kernels.gaussian(1.2), in_shape=(1, n, n))
    y = torch.rand(1, 1, n, n, dtype=torch.float64)
    solver = PGD(L2Fidelity(A, y), pseudo_huber(), lam, scheme="grad", accelerate=True,
                 preconditioner="fourier")
    c = solver._metric
    ata = dense(lambda v: A.adjoint(A(v)), n)
    P = ata + c * torch.eye(n * n, dtype=torch.float64)
    worst = 0.0
    for x in [torch.zeros(n * n, dtype=torch.float64), torch.randn(n * n, dtype=torch.float64)]:
        H = ata + lam * torch.diag((1 + x**2) ** -1.5)
        ev = torch.linalg.eigvals(torch.linalg.solve(P, H)).real.max()
        worst = max(worst, float(ev))
    assert 1 / solver.step_size >= worst * (1 - 1e-12)
    assert 1 / solver.step_size <= worst * 1.05
    assert "in the metric P = A^T A + c I" in str(solver.guarantee)
    assert solver.guarantee.holds


def test_preconditioned_fista_reaches_the_plain_minimiser_in_fewer_iterations():
    A, y = make_problem(batch=2, size=16, blur=2.0, noise=0.02, seed=1)
    f, R = L2Fidelity(A, y), pseudo_huber()
    plain = PGD(f, R, 0.5, scheme="grad", accelerate=True).solve(max_iter=20000, tol=1e-11)
    pre = PGD(f, R, 0.5, scheme="grad", accelerate=True, preconditioner="fourier").solve(
        max_iter=20000, tol=1e-11)
    assert bool(plain.converged.all()) and bool(pre.converged.all())
    assert rel_err(pre.x, plain.x) < 1e-7
    assert int(pre.iterations.max()) < int(plain.iterations.max())
    gd = PGD(f, R, 0.5, scheme="grad", preconditioner="fourier")
    assert str(gd.guarantee).startswith("Gradient descent in the metric")


def test_monotone_apg_in_the_metric_on_a_nonconvex_prior():
    """log(1 + x^2) (R'' in [-1/4, 2]): the Hessians' generalised eigenvalues lie in
    [-L_P, L_P]; F never increases; the gradient vanishes; the guarantee is Li & Lin's in
    the metric."""
    A, y = make_problem(batch=2, size=16, blur=1.8, noise=0.05, seed=3)
    f, R = L2Fidelity(A, y), log_prior()
    solver = PGD(f, R, 0.5, accelerate=True, preconditioner="fourier")
    assert str(solver.guarantee).startswith("Monotone accelerated gradient (nonconvex R) in "
                                            "the metric")
    res = solver.solve(max_iter=20000, tol=1e-10)
    assert bool(res.converged.all())
    assert bool((res.history.objective.diff(dim=0) <= 1e-12).all())
    grad = f.grad(res.x) + 0.5 * R.grad(res.x)
    assert grad.flatten(1).norm(dim=1).max() < 1e-6
    n = 12
    B = Blur(kernels.gaussian(1.2), in_shape=(1, n, n))
    sm = PGD(L2Fidelity(B, torch.rand(1, 1, n, n, dtype=torch.float64)), R, 0.5,
             accelerate=True, preconditioner="fourier")
    ata = dense(lambda v: B.adjoint(B(v)), n)
    P = ata + sm._metric * torch.eye(n * n, dtype=torch.float64)
    for x in [torch.zeros(n * n), 3 * torch.randn(n * n), 1.7 * torch.ones(n * n)]:
        x = x.double()
        H = ata + 0.5 * torch.diag(2 * (1 - x**2) / (1 + x**2) ** 2)
        ev = torch.linalg.eigvals(torch.linalg.solve(P, H)).real
        assert float(ev.abs().max()) <= (1 / sm.step_size) * (1 + 1e-12)


def test_refusals_name_what_is_needed(problem):
    A, y, f = problem
    R = pseudo_huber()
    cases = [
        (dict(prior=R, preconditioner="newton"), "expected preconditioner None or 'fourier'"),
        (dict(prior=TV(), lam=0.1), "the grad scheme"),
        (dict(prior=R, step_size=0.1), "leave step_size and backtracking unset"),
        (dict(prior=SmoothPrior(None, lambda x: x, None, True)), "certified grad_lipschitz"),
    ]
    for kw, msg in cases:
        kw = {"lam": 0.1, "preconditioner": "fourier"} | kw
        prior = kw.pop("prior")
        with pytest.raises(ValueError, match=msg):
            PGD(f, prior, **kw)
    radon = Radon(16, 6)
    fr = L2Fidelity(radon, radon(torch.rand(1, 1, 16, 16)))
    with pytest.raises(ValueError, match="closed-form gram_solve"):
        PGD(fr, R, 0.1, scheme="grad", preconditioner="fourier")


def test_cli_uses_the_metric_where_it_applies():
    """``lipinverse deblur --solver pgd``'s solver: the Fourier metric for both ridges with a
    circular blur (FISTA for crr, monotone APG for wcrr); none for CT (no closed-form gram
    solve)."""
    pretrained = pytest.importorskip("lipinverse.pretrained")
    from lipinverse.cli.priors import make_solver

    A = Blur(kernels.gaussian(1.5))
    y = A(torch.rand(1, 1, 32, 32))
    crr = make_solver(A, y, "crr", pretrained.load("crr"), sigma=0.01, solver="pgd")
    wcrr = make_solver(A, y, "wcrr", pretrained.load("wcrr"), sigma=0.01, solver="pgd")
    assert str(crr.guarantee).startswith("Accelerated gradient (FISTA with g = 0) in the metric")
    assert str(wcrr.guarantee).startswith("Monotone accelerated gradient (nonconvex R) in the")
    radon = Radon(32, 8, normalize=True)
    ct = make_solver(radon, radon(torch.rand(1, 1, 32, 32)), "crr", pretrained.load("crr"),
                     sigma=0.01, solver="pgd")
    assert ct.guarantee.holds and "in the metric" not in str(ct.guarantee)


def test_cli_auto_solver_is_lbfgs_for_the_ridges_and_pgd_otherwise():
    pretrained = pytest.importorskip("lipinverse.pretrained")
    from lipinverse.cli.priors import make_solver, resolve_solver
    from lipinverse.solvers import LBFGS

    A = Blur(kernels.gaussian(1.5))
    y = A(torch.rand(1, 1, 32, 32))
    crr = make_solver(A, y, "crr", pretrained.load("crr"), sigma=0.01)
    wcrr = make_solver(A, y, "wcrr", pretrained.load("wcrr"), sigma=0.01)
    for solver in (crr, wcrr):  # a blur: preconditioned by the Fourier metric
        assert isinstance(solver, LBFGS) and solver.preconditioner == "fourier"
        assert "preconditioned" in str(solver.guarantee)
    radon = Radon(32, 8, normalize=True)
    ct = make_solver(radon, radon(torch.rand(1, 1, 32, 32)), "crr", pretrained.load("crr"),
                     sigma=0.01)
    assert isinstance(ct, LBFGS) and ct.preconditioner == "fourier"  # CT: Radon
    assert isinstance(make_solver(A, y, "tv", TV(), sigma=0.01), PGD)
    assert resolve_solver("auto", "lipdenoiser", pretrained.load("lipdenoiser")) == "pgd"
    with pytest.raises(ValueError, match="--solver lbfgs: needs a ridge prior"):
        resolve_solver("lbfgs", "tv", TV())
    with pytest.raises(ValueError, match="expected one of auto, pgd, admm, lbfgs"):
        resolve_solver("newton", "crr", pretrained.load("crr"))
