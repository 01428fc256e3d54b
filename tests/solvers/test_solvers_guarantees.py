"""The guarantee string follows the certificates; strict mode refuses without one."""

import pytest

from lipinverse.denoisers import ProxDenoiser
from lipinverse.regularizers import TV, Tikhonov
from lipinverse.solvers import ADMM, PGD

from ._problems import Denoiser, SmoothPrior, log_prior

IDENT = Denoiser(lambda x: x)


def _ok(s):
    return not str(s.guarantee).startswith("none:")


def test_default_steps_come_from_certificates(problem):
    _, _, f = problem
    lf = f.grad_lipschitz
    assert PGD(f, Tikhonov(), 0.1).step_size == pytest.approx(1 / lf)
    assert PGD(f, Tikhonov(), 0.1, scheme="grad").step_size == pytest.approx(1 / (lf + 0.1))
    assert PGD(f, ProxDenoiser(TV(), 0.1)).step_size == pytest.approx(1 / lf)
    from lipinverse.solvers.admm import RHO_PER_LAM, RHO_PER_LAM_LR

    # ADMM's penalty: on lambda's scale with a prox (times L_R for a smooth prior), the
    # fidelity's certified constant for a denoiser (PnP-FBS's fixed points)
    assert ADMM(f, Tikhonov(), 0.1).rho == pytest.approx(0.1 * 1.0 * RHO_PER_LAM_LR)
    assert ADMM(f, TV(), 0.1).rho == pytest.approx(0.1 * RHO_PER_LAM)
    assert ADMM(f, ProxDenoiser(TV(), 0.1)).rho == pytest.approx(lf)
    assert ADMM(f, TV(), 0.0).rho == pytest.approx(lf)
    assert ADMM(f, TV(), 0.1, rho=3.0).rho == 3.0


def test_admm_default_rho_reaches_the_fista_minimiser(problem):
    """The default penalty converges to FISTA's minimiser (TV, a blur, 300 iterations);
    with residual balancing too, which then says so in the guarantee."""
    _, _, f = problem
    lam = 0.02
    ref = PGD(f, TV(), lam, accelerate=True).solve(max_iter=2000, tol=1e-10).x
    for adapt in (False, True):
        s = ADMM(f, TV(), lam, adapt_rho=adapt)
        x = s.solve(max_iter=300, tol=1e-7).x
        assert float((x - ref).norm() / ref.norm()) < 1e-3
        assert ("residual balancing" in str(s.guarantee)) == adapt


def test_prox_step_limits(problem):
    _, _, f = problem
    lf = f.grad_lipschitz
    assert _ok(PGD(f, TV(), 0.1, step_size=1.9 / lf))
    g = PGD(f, TV(), 0.1, step_size=2.1 / lf).guarantee
    assert not g.holds and str(g).startswith("none: proximal gradient")
    assert _ok(PGD(f, TV(), 0.1, step_size=1.0 / lf, accelerate=True))
    g = str(PGD(f, TV(), 0.1, step_size=1.5 / lf, accelerate=True).guarantee)
    assert g.startswith("none: FISTA needs tau <= 1/L_f")
    with pytest.raises(ValueError, match="strict=True"):
        PGD(f, TV(), 0.1, step_size=2.1 / lf, strict=True)
    # backtracking repairs a too-large step
    assert _ok(PGD(f, TV(), 0.1, step_size=10 / lf, backtracking=True, strict=True))


def test_grad_scheme_limits(problem):
    _, _, f = problem
    big_l = f.grad_lipschitz + 0.5 * 2.0
    convex = SmoothPrior(None, None, 2.0, True)
    assert str(PGD(f, convex, 0.5, step_size=1.9 / big_l).guarantee).startswith("Gradient descent:")
    assert str(PGD(f, convex, 0.5, step_size=2.0 / big_l).guarantee).startswith("none:")
    wc = PGD(f, log_prior(), 0.5)
    assert str(wc.guarantee).startswith("Gradient descent (nonconvex R)")
    acc = str(PGD(f, log_prior(), 0.5, accelerate=True).guarantee)
    assert acc.startswith("Monotone accelerated gradient (nonconvex R)") and "Li & Lin" in acc
    too_big = str(PGD(f, log_prior(), 0.5, accelerate=True, step_size=2.0 / big_l).guarantee)
    assert too_big.startswith("none: monotone accelerated gradient needs tau < 2/L")
    bt = str(PGD(f, log_prior(), 0.5, accelerate=True, backtracking=True).guarantee)
    assert bt.startswith("none: accelerated gradient with backtracking")
    unknown = SmoothPrior(lambda x: x.sum(), lambda x: x, None, True)
    s = PGD(f, unknown, 0.5)
    assert s.backtracking and not s.guarantee.holds and "Lipschitz" in str(s.guarantee)
    with pytest.raises(ValueError, match="no convergence guarantee"):
        PGD(f, unknown, 0.5, strict=True)


def test_nonconvex_prox_prior(problem):
    _, _, f = problem

    class WeaklyConvexProx:
        convex, weak_convexity = False, 1.0

        def prox(self, x, tau):
            return x

    lf = f.grad_lipschitz
    assert str(PGD(f, WeaklyConvexProx(), 0.1).guarantee).startswith("none:")  # tau = 1/L_f
    assert str(PGD(f, WeaklyConvexProx(), 0.1, step_size=0.9 / lf).guarantee).startswith(
        "PGD (nonconvex)")
    assert str(PGD(f, WeaklyConvexProx(), 20.0, step_size=0.9 / lf).guarantee).startswith(
        "none: the prox of tau*lam*g is not single-valued")
    assert str(ADMM(f, WeaklyConvexProx(), 0.1).guarantee).startswith("none:")


def test_pnp_guarantees(problem):
    _, _, f = problem
    lf = f.grad_lipschitz
    firm = Denoiser(lambda x: x, 1.0, 0.5)
    s = PGD(f, firm)
    assert str(s.guarantee).startswith("PnP-FBS: D is 0.5-averaged") and s.relaxation == 1.0
    assert _ok(ADMM(f, firm)) and str(ADMM(f, firm).guarantee).startswith("PnP-ADMM")
    # merely nonexpansive: Krasnoselskii-Mann relaxation 1/2 by default
    ne = PGD(f, Denoiser(lambda x: x, 1.0, None))
    assert ne.relaxation == 0.5 and str(ne.guarantee).startswith("PnP-FBS with Krasnoselskii-Mann")
    assert not PGD(f, Denoiser(lambda x: x, 1.0, None), relaxation=1.0).guarantee.holds
    assert str(ADMM(f, Denoiser(lambda x: x, 1.0, None)).guarantee).startswith("none:")
    # 0.75-averaged: fine for PnP-FBS, not for PnP-ADMM
    assert _ok(PGD(f, Denoiser(lambda x: x, 1.0, 0.75)))
    assert str(ADMM(f, Denoiser(lambda x: x, 1.0, 0.75)).guarantee).startswith("none: PnP-ADMM")
    # no certificate, expansive, too large a step, momentum
    assert "no certified Lipschitz" in str(PGD(f, Denoiser(lambda x: x, None)).guarantee)
    assert "> 1" in str(PGD(f, Denoiser(lambda x: x, 1.5, 0.5)).guarantee)
    assert str(PGD(f, firm, step_size=2.5 / lf).guarantee).startswith("none: PnP-FBS needs tau")
    assert str(PGD(f, firm, accelerate=True).guarantee).startswith("none: momentum")
    for bad in (Denoiser(lambda x: x, None), Denoiser(lambda x: x, 1.5, 0.5)):
        with pytest.raises(ValueError, match="strict"):
            PGD(f, bad, strict=True)
        with pytest.raises(ValueError, match="strict"):
            ADMM(f, bad, strict=True)


def test_relaxation_bound_for_averaged_map(problem):
    _, _, f = problem
    s = PGD(f, Denoiser(lambda x: x, 1.0, 0.5))  # tau = 1/L: I - tau grad f is 1/2-averaged
    # T = D(I - tau grad f) is 2/3-averaged: relaxation must stay below 3/2
    assert "0.6667-averaged" in str(s.guarantee)
    assert _ok(PGD(f, Denoiser(lambda x: x, 1.0, 0.5), relaxation=1.4))
    assert not _ok(PGD(f, Denoiser(lambda x: x, 1.0, 0.5), relaxation=1.6))


def test_result_carries_guarantee(problem):
    _, _, f = problem
    res = PGD(f, IDENT).solve(max_iter=3)
    assert res.guarantee == PGD(f, IDENT).guarantee and res.scheme == "pnp"


def test_inexact_prox_is_stated(problem):
    _, _, f = problem
    assert "certified relative accuracy 0.0001" in str(PGD(f, TV(tol=1e-4), 0.1).guarantee)
    assert "certified relative accuracy" in str(ADMM(f, ProxDenoiser(TV(), 0.1)).guarantee)
    assert "certified relative accuracy" not in str(PGD(f, Tikhonov(), 0.1).guarantee)


def test_uncertified_denoiser_runs_plain_pnp(problem):
    _, _, f = problem
    assert PGD(f, Denoiser(lambda x: x, None)).relaxation == 1.0
    assert PGD(f, Denoiser(lambda x: x, 2.0, None)).relaxation == 1.0


def test_weakly_convex_prox_without_fidelity_certificate(problem):
    _, _, f = problem

    class NoLip(type(f)):
        grad_lipschitz = None

    class WeaklyConvexProx:
        convex, weak_convexity = False, 1.0

        def prox(self, x, tau):
            return x

    s = PGD(NoLip(f.A, f.y), WeaklyConvexProx(), 0.1)
    assert s.backtracking and str(s.guarantee).startswith("none:")


# ------------------------------------------------------------------ typed guarantees
class _NoCertificate:
    """An operator whose norm can only be estimated (signed entries, no closed form)."""

    @staticmethod
    def make(n=6):
        import torch

        from operators import Operator

        g = torch.Generator().manual_seed(0)
        M = torch.randn(n * n, n * n, generator=g, dtype=torch.float64)

        class Dense(Operator):
            def __init__(self):
                super().__init__((1, n, n), (1, n, n))

            def _forward(self, x):
                return (x.flatten(1) @ M.T).reshape(x.shape)

            def _adjoint(self, y):
                return (y.flatten(1) @ M).reshape(y.shape)

        return Dense(), M


def test_a_guarantee_never_rests_on_an_estimated_norm():
    import torch

    from lipinverse.functionals import L2Fidelity

    A, M = _NoCertificate.make()
    y = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    with pytest.warns(UserWarning, match="not certified"):
        norm = A.norm()
    assert not norm.certified and "power-iteration" in norm.how
    f = L2Fidelity(A, y)
    assert not f.grad_lipschitz.certified  # ||A||^2 keeps the flag
    for solver in (PGD(f, TV(), 0.01), PGD(f, TV(), 0.01, step_size=0.5 / float(norm) ** 2)):
        g = solver.guarantee
        assert not g.holds and "L_f" in str(g) and "estimate" in str(g), str(g)
    with pytest.raises(ValueError, match="estimate"):
        PGD(f, TV(), 0.01, strict=True)
    # backtracking does not rest on L_f: its theorem stands
    assert PGD(f, TV(), 0.01, backtracking=True).guarantee.holds


def test_guarantee_is_a_value_with_its_conditions(problem):
    _, _, f = problem
    lf = f.grad_lipschitz
    res = PGD(f, TV(), 0.1, accelerate=True).solve(max_iter=3)
    g = res.guarantee
    assert res.guaranteed and g.holds and g.theorem == "FISTA" and g.rate == "O(1/k^2)"
    cond = dict(g.conditions)
    assert cond["tau"] == pytest.approx(1 / lf) and cond["L_f"] == pytest.approx(lf)
    assert str(g).startswith("FISTA: ") and "Beck & Teboulle" in g.reference
    bad = PGD(f, Tikhonov(), 0.1, step_size=2.1 / lf).solve(max_iter=2)
    assert not bad.guaranteed and str(bad.guarantee).startswith("none: ")
    assert bad.guarantee.theorem is None and bad.guarantee.conditions == ()
    with pytest.raises(AttributeError):
        g.theorem = "other"  # frozen


def test_default_schemes_are_documented_rules(problem):
    from lipinverse.regularizers import ConvexRidge

    _, _, f = problem
    R = ConvexRidge(channels=(1, 2), num_knots=5).double().at_sigma(0.1)
    assert PGD(f, R, 0.1).scheme == "grad"          # smooth: no inner solve per iteration
    assert PGD(f, R, 0.1, scheme="prox").scheme == "prox"  # forcing is always possible
    assert PGD(f, Tikhonov(), 0.1).scheme == "prox"  # declares a closed-form prox
    assert PGD(f, TV(), 0.1).scheme == "prox"
    assert ADMM(f, R, 0.1).scheme == "prox"          # ADMM has no gradient scheme
