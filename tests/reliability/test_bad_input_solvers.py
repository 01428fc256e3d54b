"""Property-based bad-input tests for the solvers PGD and ADMM (see ``_policy``).

Random priors (TV, Tikhonov, a learned convex ridge, prox denoisers), random parameters
(``lam``, ``step_size``, ``rho``, ``sigma``, ``max_iter``, ``tol``: negative, zero, huge,
NaN / Inf, wrong types) and random starting points (dtype, shape, NaN, layouts). A solve
either returns a finite result of the right shape and dtype, refuses its input with a clear
``ValueError`` / ``TypeError``, or stops loudly (``DivergenceError`` / ``ConvergenceError``
naming the function); small ``max_iter`` keeps every case short.
"""

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import operators as O
from lipinverse.denoisers import LipschitzDenoiser, ProxDenoiser, RidgeProxDenoiser, averaged
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import TV, ConvexRidge, Tikhonov
from lipinverse.solvers import ADMM, PGD
from operators import kernels

from ._policy import DTYPES, assert_finite, attempt, fuzz, make_tensor


def _problem():
    A = O.Blur(kernels.gaussian(1.0))
    x = make_tensor((2, 1, 12, 12), torch.float64, seed=2)
    return L2Fidelity(A, A(x))


FIDELITY = _problem()


def _priors():
    torch.manual_seed(0)
    crr = ConvexRidge(channels=(1, 2, 3), kernel_size=3, num_knots=7).double()
    return {
        "TV": TV(tol=1e-3, max_iter=200),
        "Tikhonov": Tikhonov(),
        "ConvexRidge": crr,
        "ProxDenoiser(TV)": ProxDenoiser(TV(tol=1e-3, max_iter=200), 0.05),
        "RidgeProxDenoiser": RidgeProxDenoiser(crr, tol=1e-3, max_iter=50),
        "averaged(LipschitzDenoiser)": averaged(LipschitzDenoiser(width=3, depth=2).double()),
    }


PRIORS = _priors()
DENOISERS = {"ProxDenoiser(TV)", "RidgeProxDenoiser", "averaged(LipschitzDenoiser)"}

NUMBERS = st.one_of(
    st.sampled_from([-1.0, 0.0, 1e-300, 1e-3, 0.5, 1.0, 10.0, 1e300, float("nan"),
                     float("inf"), -float("inf")]),
    st.sampled_from([None, "1", True, 3, torch.tensor(0.5)]))


def run_solver(solver, prior_name, lam, step, rho, max_iter, tol, x0_kind, sigma=None):
    prior = PRIORS[prior_name]
    denoiser = prior_name in DENOISERS
    kw = {} if lam is None and denoiser else {"lam": lam}
    if sigma is not None:
        kw["sigma"] = sigma
    if solver == "PGD":
        kw["step_size"] = step
        make = lambda: PGD(FIDELITY, prior, **kw)  # noqa: E731
    else:
        kw["rho"] = rho
        make = lambda: ADMM(FIDELITY, prior, **kw)  # noqa: E731
    x0 = {
        "none": None,
        "good": make_tensor((2, 1, 12, 12), torch.float64, seed=5),
        "strided": make_tensor((2, 1, 12, 12), torch.float64, seed=5, layout="strided"),
        "channels_last": make_tensor((2, 1, 12, 12), torch.float64, seed=5,
                                     layout="channels_last"),
        "nan": make_tensor((2, 1, 12, 12), torch.float64, fill="nan"),
        "float32": make_tensor((2, 1, 12, 12), torch.float32),
        "shape": make_tensor((1, 1, 12, 12), torch.float64),
        "empty": make_tensor((0, 1, 12, 12), torch.float64),
        "list": [[0.0]],
    }[x0_kind]
    name = f"{solver}({prior_name})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inner prox "did not reach tol"
        ok, out = attempt(name, lambda: make().solve(x0=x0, max_iter=max_iter, tol=tol),
                          seconds=300)
    if ok:
        assert x0_kind in ("none", "good", "strided", "channels_last"), f"{name}: x0 {x0_kind}"
        assert out.x.shape == (2, 1, 12, 12) and out.x.dtype == torch.float64
        assert_finite(name, out.x)
        assert out.iterations.shape == (2,) and int(out.iterations.max()) <= max_iter
        assert len(out.history) <= max_iter
    return ok


X0_KINDS = ["none", "good", "strided", "channels_last", "nan", "float32", "shape", "empty",
            "list"]


@fuzz(60)
@given(solver=st.sampled_from(["PGD", "ADMM"]), prior_name=st.sampled_from(sorted(PRIORS)),
       field=st.sampled_from(["lam", "step", "rho", "max_iter", "tol", "x0_kind", "sigma",
                              "none"]),
       number=NUMBERS,
       max_iter=st.one_of(st.integers(-2, 6), st.sampled_from([2.5, "3", None, True])),
       tol=st.sampled_from([0.0, 1e-6, 1.0, -1.0, float("nan"), float("inf"), "1e-3"]),
       x0_kind=st.sampled_from(X0_KINDS))
def test_solver_random_parameters(solver, prior_name, field, number, max_iter, tol, x0_kind):
    """Valid defaults with one field replaced by a random (often bad) value."""
    args = dict(lam=None if prior_name in DENOISERS else 0.1, step=None, rho=None,
                max_iter=5, tol=1e-6, x0_kind="none")
    if field in ("lam", "step", "rho", "sigma"):
        args[field] = number
    elif field == "max_iter":
        args["max_iter"] = max_iter
    elif field == "tol":
        args["tol"] = tol
    elif field == "x0_kind":
        args["x0_kind"] = x0_kind
    run_solver(solver, prior_name, **args)


@pytest.mark.parametrize("solver", ["PGD", "ADMM"])
@pytest.mark.parametrize("layout", ["strided", "channels_last"])
def test_non_contiguous_x0_gives_the_same_result(solver, layout):
    x0 = make_tensor((2, 1, 12, 12), torch.float64, seed=5)
    y0 = make_tensor((2, 1, 12, 12), torch.float64, seed=5, layout=layout)
    cls = PGD if solver == "PGD" else ADMM
    a = cls(FIDELITY, PRIORS["Tikhonov"], lam=0.1).solve(x0=x0, max_iter=20, tol=0.0).x
    b = cls(FIDELITY, PRIORS["Tikhonov"], lam=0.1).solve(x0=y0, max_iter=20, tol=0.0).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_measurement_dtypes(dtype):
    """The fidelity is the entry point of the measurements: only float32 / float64."""
    A = O.Blur(kernels.gaussian(1.0))
    y = make_tensor((1, 1, 8, 8), dtype)
    ok, fid = attempt("L2Fidelity", lambda: L2Fidelity(A, y))
    assert ok == (dtype in (torch.float32, torch.float64))
    if ok:
        res = PGD(fid, Tikhonov(), lam=0.1).solve(max_iter=5)
        assert res.x.dtype == dtype and bool(torch.isfinite(res.x).all())


@pytest.mark.parametrize("prior", [object(), 3, None, "TV"])
@pytest.mark.parametrize("solver", [PGD, ADMM])
def test_objects_that_are_not_priors(solver, prior):
    ok, _ = attempt(solver.__name__, lambda: solver(FIDELITY, prior, lam=0.1))
    assert not ok


@pytest.mark.parametrize("fidelity", [object(), None, torch.zeros(3)])
@pytest.mark.parametrize("solver", [PGD, ADMM])
def test_objects_that_are_not_fidelities(solver, fidelity):
    ok, _ = attempt(solver.__name__, lambda: solver(fidelity, Tikhonov(), lam=0.1))
    assert not ok


@pytest.mark.parametrize("rho", [1e-300, 1e-3, 1.0, 7.0, 2.6e306, 1.7e308])
def test_gram_solve_extreme_rho(rho):
    """Regression: CG formed rho * v, which overflowed near the float maximum (NaN, then 500
    wasted iterations and a ConvergenceError); ADMM's x-step goes through here."""
    A = O.Blur(kernels.gaussian(1.0), "zero", (1, 8, 8))
    b = make_tensor((2, 1, 8, 8), torch.float64, seed=9)
    x = A.gram_solve(b, rho)
    assert_finite("gram_solve", x)
    residual = b - (A.adjoint(A(x)) + rho * x)
    assert float(residual.norm()) <= 1e-6 * float(b.norm()) * 1.0001
