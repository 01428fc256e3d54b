"""LBFGS: the safeguarded quasi-Newton solver, its slope certificate and its guarantee."""

import pytest
import torch

from lipinverse import pretrained
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import Tikhonov
from lipinverse.solvers import LBFGS, PGD
from operators import Radon

from ._problems import SmoothPrior, log_prior, make_problem, rel_err, tikhonov_closed_form


def _ridge(name, sigma=0.05):
    return pretrained.load(name).double().at_sigma(sigma)


def test_reaches_the_closed_form_tikhonov_minimiser():
    A, y = make_problem(batch=2, size=16, blur=2.0)
    lam = 0.05
    res = LBFGS(L2Fidelity(A, y), Tikhonov(), lam=lam).solve(max_iter=500, tol=1e-12)
    assert bool(res.converged.all())
    assert rel_err(res.x, tikhonov_closed_form(A, y, lam)) < 1e-9
    assert res.guarantee.theorem == "L-BFGS (safeguarded)"
    assert "minimiser of F (convex)" in str(res.guarantee)


@pytest.mark.parametrize("name", ["crr", "wcrr"])
def test_ct_with_a_learned_ridge_matches_pgd_and_decreases_f(name):
    """Sparse-view CT, the case LBFGS is for: the same point as accelerated PGD (convex crr:
    the minimiser; wcrr: a stationary point, so only close), F nonincreasing, and fewer
    iterations."""
    g = torch.Generator().manual_seed(3)
    A = Radon(24, 10, normalize=True)
    x = torch.rand(1, 1, 24, 24, generator=g, dtype=torch.float64)
    y = A(x) + 0.01 * torch.randn(A(x).shape, generator=g, dtype=torch.float64)
    f, R = L2Fidelity(A, y), _ridge(name)
    res = LBFGS(f, R, lam=1.0).solve(max_iter=2000, tol=1e-10)
    ref = PGD(f, R, lam=1.0, scheme="grad", accelerate=True).solve(max_iter=20000, tol=1e-11,
                                                                    track_objective=False)
    assert bool(res.converged.all()) and bool(ref.converged.all())
    assert rel_err(res.x, ref.x) < (1e-6 if name == "crr" else 1e-3)
    obj = res.history.objective[:, 0]
    assert bool((obj[1:] <= obj[:-1] + 1e-12 * obj[0].abs()).all())
    assert int(res.iterations.max()) < int(ref.iterations.max())
    grad = f.grad(res.x) + R.grad(res.x)
    assert float(grad.norm()) <= 1e-10 * res.x.norm() * LBFGS(f, R, lam=1.0).big_l * 1.01
    if name == "wcrr":
        assert "every limit point is stationary" in str(res.guarantee)


@pytest.mark.parametrize("name", ["crr", "wcrr"])
def test_rise_bound_is_an_upper_bound_of_the_exact_change(name):
    """The slope certificate majorises F(x + td) - F(x) in float64 for random points,
    directions (long ones overshoot the line minimum) and steps."""
    A, y = make_problem(batch=1, size=16)
    solver = LBFGS(L2Fidelity(A, y), _ridge(name), lam=2.0)
    g = torch.Generator().manual_seed(0)
    tight = 0.0
    for _ in range(40):
        x = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
        d = torch.randn(1, 1, 16, 16, generator=g, dtype=torch.float64)
        d *= 10 ** (torch.rand(1, generator=g, dtype=torch.float64) * 3 - 2)
        t = torch.rand(1, generator=g, dtype=torch.float64) + 0.01
        a = (solver._grad(x) * d).sum().reshape(1)
        b = (solver._grad(x + t * d) * d).sum().reshape(1)
        bound = solver._rise_bound(t, a, b, (d * d).sum().reshape(1))
        exact = solver._value(x + t * d) - solver._value(x)
        assert float(exact) <= float(bound) + 1e-12 * abs(float(exact))
        tight = max(tight, float(exact / bound) if float(bound) < 0 else 0.0)
    assert tight > 0.3  # not a vacuous bound


def test_rise_bound_uses_the_weak_convexity_of_f():
    """A nonconvex prior: the bound takes rho = lam * weak_convexity (certified), and it
    still majorises the exact change along a line where F is concave."""
    A, y = make_problem(batch=1, size=12, noise=0.0)
    solver = LBFGS(L2Fidelity(A, y * 0), log_prior(), lam=1.0)
    assert solver.rho == pytest.approx(0.25)
    x = torch.full((1, 1, 12, 12), 2.0, dtype=torch.float64)   # log(1 + x^2): concave at |x| > 1
    d = torch.ones_like(x)
    for t in (0.1, 0.5, 1.0):
        t_ = torch.tensor([t], dtype=torch.float64)
        a = (solver._grad(x) * d).sum().reshape(1)
        b = (solver._grad(x + t * d) * d).sum().reshape(1)
        bound = solver._rise_bound(t_, a, b, (d * d).sum().reshape(1))
        assert float(solver._value(x + t * d) - solver._value(x)) <= float(bound)


def test_rise_bound_with_strong_convexity_is_tighter_and_still_an_upper_bound():
    r"""rho = -mu for a mu-strongly convex F (the ridge denoiser's objective): on separable
    quadratics with curvatures in [mu, L] the bound majorises the exact change in float64,
    is below the convex (rho = 0) one, and is exact when all curvatures are L = mu."""
    from operators.linalg import batch_dot, slope_rise_bound

    g = torch.Generator().manual_seed(7)
    mu, big_l = 0.5, 8.0
    for _ in range(30):
        q = mu + (big_l - mu) * torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64)
        x = torch.randn(1, 1, 5, 5, generator=g, dtype=torch.float64)
        d = torch.randn(1, 1, 5, 5, generator=g, dtype=torch.float64)
        t = torch.rand(1, generator=g, dtype=torch.float64) * 2
        a, b, n = batch_dot(q * x, d), batch_dot(q * (x + t * d), d), batch_dot(d, d)
        exact = 0.5 * batch_dot(x + t * d, q * (x + t * d)) - 0.5 * batch_dot(x, q * x)
        strong = slope_rise_bound(t, a, b, n, big_l, -mu)
        assert float(exact) <= float(strong) + 1e-12
        assert float(strong) <= float(slope_rise_bound(t, a, b, n, big_l, 0.0)) + 1e-12
    q = torch.full((1, 1, 5, 5), 2.0, dtype=torch.float64)  # phi'' = L n exactly
    a, b = batch_dot(q * x, d), batch_dot(q * (x + t * d), d)
    exact = 0.5 * batch_dot(x + t * d, q * (x + t * d)) - 0.5 * batch_dot(x, q * x)
    torch.testing.assert_close(slope_rise_bound(t, a, b, n, 2.0, -2.0), exact)


def test_safeguard_replaces_a_bad_direction_by_the_gradient_step():
    """A negative initial scaling (as no real pair gives) makes an ascent direction: the
    safeguard takes -grad F / L, clears that sample's memory, and F decreases."""
    A, y = make_problem(batch=1, size=12)
    f = L2Fidelity(A, y)
    solver = LBFGS(f, Tikhonov(), lam=0.1)
    state = solver._init_state(f.Aty.clone())
    g, mem = state["g"], state["mem"]
    s = torch.randn(g.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mem.push(s.flatten(1), s.flatten(1), state["idx"])
    assert int(mem.count[0]) == 1
    mem.gamma[0] = -1e3
    d = mem.direction(g.flatten(1), state["idx"])
    assert float((d * g.flatten(1)).sum()) > 0            # an ascent direction
    new, _ = solver._step(state, 0, torch.ones(1, dtype=torch.bool))
    assert int(mem.count[0]) == 1                 # cleared, then the step's own pair
    assert float(mem.gamma[0]) > 0
    assert float(solver._value(new["x"])) < float(solver._value(state["x"]))


def test_fallback_step_when_no_reduction_passes(monkeypatch):
    """If neither the slopes nor the values certify any step (forced here), the step is
    the certified x - grad F / L."""
    A, y = make_problem(batch=1, size=12)
    f = L2Fidelity(A, y)
    solver = LBFGS(f, Tikhonov(), lam=0.1)
    state = solver._init_state(f.Aty.clone())
    x0, g0 = state["x"].clone(), state["g"].clone()
    real_value = solver._value
    monkeypatch.setattr(solver, "_rise_bound", lambda t, a, b, dd: torch.full_like(t, 1e30))
    monkeypatch.setattr(solver, "_value", lambda x: (real_value(x) if torch.equal(x, x0)
                                                     else real_value(x) + 1e30))
    # the trial values come from the gradient pass: route them through the forced values
    monkeypatch.setattr(solver, "_grad_value", lambda x: (
        solver._grad(x), lambda rows=None: solver._value(x)[rows]))
    new, _ = solver._step(state, 0, torch.ones(1, dtype=torch.bool))
    assert torch.allclose(new["x"], x0 - g0 / solver.big_l, rtol=0, atol=1e-15)
    assert bool(torch.isnan(new["f"]).all())


def test_batch_samples_run_independently():
    """Each sample keeps its own memory, steps and stopping: batched as alone (the same
    iterations) for the convex crr and the nonconvex log prior, and the same point for the
    nonconvex wcrr, whose path float rounding of the batched passes can change."""
    A, y = make_problem(batch=2, size=12)
    cases = [(_ridge("crr"), 1.0, True), (_ridge("wcrr"), 1.0, False), (log_prior(), 3.0, True)]
    for R, lam, same_count in cases:
        both = LBFGS(L2Fidelity(A, y), R, lam=lam, memory=3).solve(max_iter=500, tol=1e-9)
        for i in range(2):
            one = LBFGS(L2Fidelity(A, y[i:i + 1]), R, lam=lam, memory=3).solve(
                max_iter=500, tol=1e-9)
            # batched FFTs and convolutions round differently; on the nonconvex wcrr
            # (refused pairs, line-search branches) that changes the path, not the point
            assert rel_err(both.x[i:i + 1], one.x) < 1e-7
            if same_count:
                assert abs(int(both.iterations[i]) - int(one.iterations[0])) <= 1


def test_errors_name_what_was_expected():
    A, y = make_problem(batch=1, size=12)
    f = L2Fidelity(A, y)
    with pytest.raises(ValueError, match="memory >= 1"):
        LBFGS(f, Tikhonov(), lam=0.1, memory=0)
    with pytest.raises(TypeError, match="smooth prior with values"):
        LBFGS(f, object(), lam=0.1)
    with pytest.raises(ValueError, match="lam"):
        LBFGS(f, Tikhonov(), lam=None)
    no_lip = SmoothPrior(lambda x: x.flatten(1).pow(2).sum(1), lambda x: 2 * x, None, True)
    with pytest.raises(ValueError, match="certified grad_lipschitz"):
        LBFGS(f, no_lip, lam=0.1)


def test_every_step_decreases_f_by_the_guaranteed_amount():
    """F(x_k) - F(x_(k+1)) >= kappa |grad F(x_k)|^2 on a real run (nonconvex wcrr, CT), with
    kappa read from the guarantee's sentence: the theorem's premise, measured."""
    import re

    g = torch.Generator().manual_seed(5)
    A = Radon(16, 6, normalize=True)
    x = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    f = L2Fidelity(A, A(x) + 0.01 * torch.randn(A(x).shape, generator=g, dtype=torch.float64))
    solver = LBFGS(f, _ridge("wcrr"), lam=1.0)
    kappa = float(re.search(r"by at least ([0-9.e+-]+) \|grad", str(solver.guarantee))[1])
    assert 0 < kappa <= 1 / (2 * solver.big_l)
    xs = [f.Aty.clone()]
    solver.solve(max_iter=40, tol=0, callback=lambda info: xs.append(info.x.clone()))
    for a, b in zip(xs[:-1], xs[1:], strict=True):
        drop = float(solver._value(a) - solver._value(b))
        assert drop >= kappa * float(solver._grad(a).pow(2).sum()) * (1 - 1e-9)
        assert drop >= 0


def test_a_long_step_after_a_short_one_is_not_divergence():
    """LBFGS is a descent method: the residual (its step length) may jump by more than
    DIVERGENCE_FACTOR after a short step; that must not raise, as it does for PGD."""
    from lipinverse.solvers.base import DIVERGENCE_FACTOR, _Bookkeeping

    bk = _Bookkeeping(torch.float64, [1.0], jump_test=not LBFGS.descent)
    bk.update([1e-9], [1.0])
    _, bad, _ = bk.update([1e-9 * DIVERGENCE_FACTOR * 10], [1.0])
    assert bad == []
    pgd = _Bookkeeping(torch.float64, [1.0], jump_test=not PGD.descent)
    pgd.update([1e-9], [1.0])
    _, bad, _ = pgd.update([1e-9 * DIVERGENCE_FACTOR * 10], [1.0])
    assert bad == [0]
    nan = _Bookkeeping(torch.float64, [1.0], jump_test=False)
    _, bad, _ = nan.update([float("nan")], [1.0])
    assert bad == [0]


def test_armijo_search_certifies_each_step_and_falls_back_to_the_gradient_step():
    r"""``operators.linalg.armijo_search`` on separable quadratics :math:`F = \tfrac12 x^\top
    Q x` (exact values): every accepted point satisfies Armijo, rows outside ``todo`` stay,
    and with no reduction allowed a direction 100x too long ends at :math:`x - g/L`."""
    from operators.linalg import armijo_search, batch_dot, slope_rise_bound

    g0 = torch.Generator().manual_seed(5)
    q = torch.rand(3, 1, 6, 6, generator=g0, dtype=torch.float64) * 9 + 1  # curvature in [1, 10]
    big_l = 10.0
    x = torch.randn(3, 1, 6, 6, generator=g0, dtype=torch.float64)

    def grad(z):
        return q * z

    def value(z):
        return 0.5 * batch_dot(z, q * z)

    g = grad(x)
    for scale, reductions in ((1.0, 10), (100.0, 10), (100.0, 0)):
        d = -scale * g / q.amin()  # from a fine step to far past the line minimum
        gd = batch_dot(g, d)
        todo = torch.tensor([True, False, True])
        x_new, g_new, _, _ = armijo_search(
            x, g, d, gd, grad, lambda t, a, b, n: slope_rise_bound(t, a, b, n, big_l, 0.0),
            1.0 / big_l, todo=todo, reductions=reductions)
        assert torch.equal(x_new[1], x[1]) and torch.equal(g_new[1], g[1])
        assert torch.allclose(g_new, grad(x_new), rtol=0, atol=1e-15)
        rise = value(x_new) - value(x)
        assert bool((rise[todo] <= 1e-4 * batch_dot(g, x_new - x)[todo] + 1e-15).all())
        assert bool((rise[todo] < 0).all())
        if reductions == 0:
            assert torch.allclose(x_new[todo], (x - g / big_l)[todo], rtol=0, atol=1e-15)


def test_armijo_search_starts_from_t0_per_sample():
    r"""``t0``: each row's first trial is its own ``t0``; a direction 5x too long on
    :math:`F = \tfrac12\|x\|^2` is accepted at the first trial from ``t0 = 0.2`` (one
    gradient, exactly the line minimum) and shortened from ``t0 = 1`` (more gradients)."""
    from operators.linalg import armijo_search, batch_dot, slope_rise_bound

    x = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    seen = []

    def grad(z):
        seen.append(z.clone())
        return z.clone()

    g = x.clone()
    d = -5.0 * g
    rise = lambda t, a, b, n: slope_rise_bound(t, a, b, n, 1.0, -1.0)  # noqa: E731
    t0 = torch.tensor([0.2, 1.0], dtype=torch.float64)
    x_new, _, _, _, t, b = armijo_search(x, g, d, batch_dot(g, d), grad, rise, 1.0,
                                         todo=torch.tensor([True, True]), t0=t0,
                                         return_steps=True)
    assert t0.tolist() == [0.2, 1.0]                                 # not changed in place
    assert torch.allclose(seen[0][0], x[0] - g[0], atol=1e-15)      # t = 0.2: the minimum
    assert torch.allclose(seen[0][1], x[1] + d[1], atol=1e-15)      # t = 1
    assert torch.allclose(x_new[0], torch.zeros_like(x[0]), atol=1e-15)
    assert len(seen) > 1 and float(t[0]) == 0.2 and 0.0 < float(t[1]) < 1.0
    assert torch.allclose(x_new, x + t.view(-1, 1, 1, 1) * d, atol=1e-15)  # t: the steps
    assert torch.allclose(b, batch_dot(x_new, d), atol=1e-12)              # b: their slopes
    # no reduction allowed: the unit trial fails and the row takes the gradient step,
    # which is not along d: t and b are NaN there
    x_new, _, _, _, t, b = armijo_search(x, g, d, batch_dot(g, d), grad, rise, 0.5,
                                         todo=torch.tensor([True, False]), reductions=0,
                                         return_steps=True)
    assert torch.allclose(x_new[0], x[0] - 0.5 * g[0]) and torch.equal(x_new[1], x[1])
    assert bool(torch.isnan(t).all()) and bool(torch.isnan(b).all())


@pytest.mark.parametrize("name", ["crr", "wcrr"])
def test_ridge_lbfgs_first_trial_from_the_last_step_saves_gradients(name, monkeypatch):
    r"""The ridge L-BFGS starts each line search at ``LINE_MIN_FRACTION`` of the previous
    search's secant line minimum: on a noisy 64x64 crop at sigma 25/255 it needs fewer
    gradients than with unit first trials (a huge fraction) and meets the same
    certificate."""
    import lipinverse.regularizers.ridge_solve as rs
    from lipinverse.io import builtin_image, center_crop, to_tensor

    model = pretrained.load(name)
    x = to_tensor(center_crop(builtin_image("camera"), 64)).double()
    sigma = 25 / 255
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)
    counts = {}
    for fraction in (1e9, rs.LINE_MIN_FRACTION):
        monkeypatch.setattr(rs, "LINE_MIN_FRACTION", fraction)
        calls = []
        real = model.grad_scaled
        monkeypatch.setattr(model, "grad_scaled", lambda z, sc, calls=calls, real=real:
                            calls.append(1) or real(z, sc))
        with torch.no_grad():
            _, info = model.solve(y, 1.0, sigma, tol=1e-3, method="lbfgs")
        monkeypatch.undo()
        assert bool(info.converged.all()) and float(info.error_bound) <= 1e-3 * float(y.norm())
        counts[fraction] = len(calls)
    assert counts[rs.LINE_MIN_FRACTION] < counts[1e9], counts


def test_armijo_search_compares_values_past_the_line_minimum_up_to_the_first_slope():
    r"""With the slope certificate failing (forced), a trial past the line minimum is still
    accepted from the values while its slope :math:`b` is below :math:`|a|` (on the
    quadratic :math:`\varphi` Armijo holds for :math:`b \le -(1-2\alpha)a`): one gradient,
    its value taken from the pair that ``grad`` returned; at :math:`b \ge |a|` no value is
    computed and the step is shortened."""
    from operators.linalg import armijo_search, batch_dot

    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    calls = {"grad": 0, "kept": 0, "value": 0}

    def grad(z):
        calls["grad"] += 1

        def kept(rows):
            calls["kept"] += 1
            return 0.5 * batch_dot(z, z)[rows]
        return z.clone(), kept

    def value(z, rows):
        calls["value"] += 1
        return 0.5 * batch_dot(z, z)[rows]

    never = lambda t, a, b, n: torch.full_like(t, float("inf"))  # noqa: E731
    g = x.clone()
    for over, accepted in ((1.5, True), (2.5, False)):   # b = (over - 1)|a|
        calls.update(grad=0, kept=0, value=0)
        d = -over * g
        gd = batch_dot(g, d)
        x_new, _, f_new, _ = armijo_search(
            x, g, d, gd, grad, never, 1.0, todo=torch.tensor([True]), value=value,
            f0=torch.full((1,), float("nan"), dtype=torch.float64))
        if accepted:
            assert torch.allclose(x_new, x - over * g) and calls["grad"] == 1
            assert calls["kept"] == 1 and calls["value"] == 1   # value(x) once, for f0
            torch.testing.assert_close(f_new, 0.5 * batch_dot(x_new, x_new))
        else:  # t = 1 unvalued; the secant factor 1/(1 + 1.5) lands on the minimiser 0
            assert calls["grad"] == 2 and calls["kept"] == 1
            torch.testing.assert_close(x_new, torch.zeros_like(x))


@pytest.mark.parametrize("name", ["crr", "wcrr"])
def test_curvature_along_the_direction_certifies_steps_the_global_bound_cannot(name):
    """Deblurring with a learned ridge: the bounds of F's curvature along the direction
    (fidelity |Ad|^2 plus the ridge's filter responses) contain the exact second
    derivative along random lines (float64), and with them the solver needs fewer values
    of F for the same point."""
    A, y = make_problem(batch=1, size=24, blur=2.0)
    f, R = L2Fidelity(A, y), _ridge(name)
    solver = LBFGS(f, R, lam=1.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.rand(1, 1, 24, 24, generator=g, dtype=torch.float64)
        d = torch.randn(1, 1, 24, 24, generator=g, dtype=torch.float64)
        lo, hi = solver._along(d)
        q = ((A.gram(d) + R.regularizer.hvp_scaled(x, d, R.regularizer.scalings(
            R.sigma, 1, torch.float64))) * d).sum()
        assert float(lo) <= float(q) + 1e-9 <= float(hi) + 2e-9
    counts = {}
    for use in (True, False):
        s = LBFGS(f, R, lam=1.0)
        calls = []
        real = s._grad_value

        def counted(z, real=real, calls=calls):
            gz, v = real(z)
            return gz, (lambda rows=None: calls.append(1) or v(rows))
        s._grad_value = counted
        if not use:
            s._along = lambda d: None
        res = s.solve(max_iter=300, tol=1e-6)
        counts[use] = (len(calls), res.x)
    assert counts[True][0] < counts[False][0]
    assert rel_err(counts[True][1], counts[False][1]) < 1e-4
