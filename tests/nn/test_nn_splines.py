import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipinverse.nn import LipschitzSpline


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0), (-0.3, 1.0), (0.2, 0.7)])
@pytest.mark.parametrize("init", ["identity", "relu", "zero", "soft_threshold"])
def test_slopes_inside_bounds_after_arbitrary_updates(bounds, init):
    s = LipschitzSpline(3, num_knots=11, knot_range=1.5, slope_bounds=bounds, init=init)
    with torch.no_grad():
        s.coefficients.add_(5 * torch.randn_like(s.coefficients))
    lo, hi = bounds
    x = torch.linspace(-4, 4, 2001).repeat(3, 1)[None]
    y = s(x)
    diff = torch.diff(y, dim=-1) / torch.diff(x, dim=-1)
    assert diff.min() >= lo - 1e-12 and diff.max() <= hi + 1e-12
    slopes = s.slopes()
    assert slopes.min() >= lo and slopes.max() <= hi
    dlo, dhi = s.derivative_bounds()
    assert lo <= dlo <= dhi <= hi
    assert s.lipschitz == max(abs(lo), abs(hi))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(-2.0, 0.5), st.floats(0.6, 3.0))
def test_slopes_bounded_after_optimiser_steps(seed, lo, hi):
    torch.manual_seed(seed)
    s = LipschitzSpline(2, num_knots=7, slope_bounds=(lo, hi), init="zero")
    opt = torch.optim.SGD(s.parameters(), lr=10.0)
    for _ in range(3):
        x = 3 * torch.randn(16, 2)
        loss = -(s(x) * torch.randn(16, 2)).sum() * 100
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.linspace(-3, 3, 501).repeat(2, 1)[None]
    d = torch.diff(s(x), dim=-1) / torch.diff(x, dim=-1)
    assert d.min() >= lo - 1e-10 and d.max() <= hi + 1e-10


def test_interpolates_knots_and_extends_linearly():
    s = LipschitzSpline(2, num_knots=5, knot_range=(-1.0, 1.0), slope_bounds=(-1.0, 1.0))
    with torch.no_grad():
        s.coefficients.copy_(torch.tensor([[0.0, 0.2, -0.1, 0.3, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]]))
    c = s.projected_coefficients()
    assert torch.allclose(c, s.coefficients)  # slopes within bounds: projection is identity
    t = s.knots()
    assert torch.allclose(s(t.repeat(2, 1)[None])[0], c)
    # outside: linear with end slopes
    x = torch.tensor([[[-3.0], [5.0]]])
    y = s(x)
    left = c[0, 0] + (c[0, 1] - c[0, 0]) / 0.5 * (-3.0 + 1.0)
    assert torch.allclose(y[0, 0, 0], left)
    assert torch.allclose(y[0, 1, 0], torch.tensor(1.0))


def test_projection_clamps_and_preserves_mean():
    s = LipschitzSpline(1, num_knots=5, slope_bounds=(0.0, 1.0))
    with torch.no_grad():
        s.coefficients.copy_(torch.tensor([[0.0, 3.0, 3.0, -1.0, 0.0]]))
    c = s.projected_coefficients()
    assert torch.allclose(c.mean(), s.coefficients.mean())
    d = torch.diff(c, dim=1) / s.spacing
    assert torch.allclose(d, torch.tensor([[1.0, 0.0, 0.0, 1.0]]))  # raw: 6, 0, -8, 2
    s.project_()
    assert torch.allclose(s.coefficients, c)


def test_tv2_is_l1_of_second_differences():
    s = LipschitzSpline(2, num_knots=9, slope_bounds=(-1.0, 1.0), init="zero")
    with torch.no_grad():
        s.coefficients.copy_(0.1 * torch.randn(2, 9))
    c = s.projected_coefficients()
    ref = sum(abs(c[i, k + 1] - 2 * c[i, k] + c[i, k - 1]) for i in range(2) for k in range(1, 8))
    assert torch.allclose(s.tv2(), ref)
    assert float(LipschitzSpline(2, init="identity").tv2().detach()) < 1e-12
    assert abs(float(LipschitzSpline(1, num_knots=21, init="relu").tv2().detach()) - 0.1) < 1e-12


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-0.5, 1.0)])
def test_integrate_matches_quadrature(bounds):
    s = LipschitzSpline(3, num_knots=8, knot_range=(-1.0, 2.0), slope_bounds=bounds, init="zero")
    with torch.no_grad():
        s.coefficients.copy_(torch.randn(3, 8))
    x = torch.tensor([-3.5, -1.0, -0.2, 0.0, 0.37, 1.9, 4.2])
    for i, xv in enumerate(x):
        t = torch.linspace(0.0, float(xv), 200_001)
        vals = s(t.repeat(3, 1)[None])[0]
        ref = torch.trapezoid(vals, t, dim=-1)
        got = s.integrate(torch.full((1, 3), float(xv)))[0]
        assert torch.allclose(got, ref, atol=1e-8), (i, got, ref)
    # derivative of the primitive is the spline
    z = torch.randn(4, 3, requires_grad=True)
    (g,) = torch.autograd.grad(s.integrate(z).sum(), z)
    assert torch.allclose(g, s(z.detach()), atol=1e-12)


def test_freeze_gives_identical_outputs_and_shapes():
    s = LipschitzSpline(4, slope_bounds=(-1.0, 1.0))
    with torch.no_grad():
        s.coefficients.add_(torch.randn_like(s.coefficients))
    x = 2 * torch.randn(3, 4, 5, 6)
    y = s(x)
    s.freeze()
    assert s.frozen
    assert torch.equal(s(x), y)
    assert torch.equal(s.derivative(x), s.unfreeze().derivative(x))
    assert not s.frozen
    assert "frozen_table" not in s.state_dict()
    assert s(x).shape == x.shape


def bent_spline(seed):
    """A float64 spline with random slopes in [-0.5, 1] and inputs beyond its knot range."""
    torch.manual_seed(seed)
    s = LipschitzSpline(3, num_knots=17, knot_range=(-1.0, 2.0), slope_bounds=(-0.5, 1.0))
    with torch.no_grad():
        s.coefficients.add_(torch.randn_like(s.coefficients))
    return s.double(), 3 * torch.randn(4, 3, 5, 6, dtype=torch.float64)


@pytest.mark.parametrize("shapes", [((4, 1), (4, 1)), ((4, 3), (4, 3)), ((1, 1), (4, 3)),
                                    ((4, 1), (1, 1))])
def test_scaled_is_b_sigma_of_a_x(shapes):
    """The inference path b * sigma(a x) (scalings folded into index and table): the same
    values in float64, inside and outside the knot range, per sample or per channel (or
    one for all samples), and NaN stays NaN."""
    s, x = bent_spline(0)
    a = torch.rand(shapes[0] + (1, 1), dtype=torch.float64) * 3 + 0.1
    b = torch.rand(shapes[1] + (1, 1), dtype=torch.float64) * 2 + 0.1
    ref = b * s(a * x)
    assert torch.allclose(s.scaled(x, a, b), ref, rtol=0, atol=1e-13)
    x[0, 0, 0, 0] = float("nan")
    out = s.scaled(x, a, b)
    assert out[0, 0, 0, 0].isnan() and out.isnan().sum() == 1
    with pytest.raises(ValueError, match="scaled: expected input"):
        s.scaled(x[:, :2], a, b)


def test_scaled_integral_is_b_over_a_psi_of_a_x():
    s, x = bent_spline(1)
    a = torch.rand(4, 1, 1, 1, dtype=torch.float64) * 3 + 0.1
    b = torch.rand(4, 3, 1, 1, dtype=torch.float64) * 2 + 0.1
    with torch.no_grad():
        ref = b / a * s.integrate(a * x)
    assert torch.allclose(s.scaled_integral(x, a, b), ref, rtol=0, atol=1e-12)


def test_scaled_takes_numbers_and_refuses_bad_shapes():
    s = LipschitzSpline(3, slope_bounds=(-1.0, 1.0))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(s.scaled(x, 2.0, 0.5), 0.5 * s(2.0 * x), atol=1e-6)
        assert torch.allclose(s.scaled_integral(x, 2.0, 0.5), 0.25 * s.integrate(2.0 * x),
                              atol=1e-6)
    with pytest.raises(ValueError, match=r"scaled: expected a scaling of shape \(1 or 2"):
        s.scaled(x, torch.ones(3, 1, 1, 1), 1.0)
    with pytest.raises(ValueError, match="scaled_integral: expected a scaling"):
        s.scaled_integral(x, 1.0, torch.ones(2, 3))


def test_derivative_matches_autograd():
    s = LipschitzSpline(2, slope_bounds=(-1.0, 1.0))
    with torch.no_grad():
        s.coefficients.add_(torch.randn_like(s.coefficients))
    x = (2 * torch.randn(5, 2)).requires_grad_()
    (g,) = torch.autograd.grad(s(x).sum(), x)
    assert torch.allclose(g, s.derivative(x.detach()))


def test_state_dict_roundtrip():
    s = LipschitzSpline(3, slope_bounds=(0.0, 1.0))
    with torch.no_grad():
        s.coefficients.add_(torch.randn_like(s.coefficients))
    t = LipschitzSpline(3, slope_bounds=(0.0, 1.0))
    t.load_state_dict(s.state_dict())
    x = torch.randn(2, 3, 4)
    assert torch.equal(s(x), t(x))


def test_errors():
    with pytest.raises(ValueError, match="LipschitzSpline: expected finite slope_bounds"):
        LipschitzSpline(2, slope_bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="num_knots"):
        LipschitzSpline(2, num_knots=1)
    with pytest.raises(ValueError, match="init"):
        LipschitzSpline(2, init="tanh")
    with pytest.raises(ValueError, match="knot_range"):
        LipschitzSpline(2, knot_range=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"LipschitzSpline.forward: expected input \(B, 2"):
        LipschitzSpline(2)(torch.zeros(3, 4))


def test_slopes_on_a_bound_still_get_gradient():
    # projected gradient descent: a slope sitting on its bound (after project_) must be able
    # to move back inside; one outside the box gets no gradient (the clamp is flat there)
    s = LipschitzSpline(1, num_knots=5, slope_bounds=(0.0, 1.0))
    with torch.no_grad():
        s.coefficients.copy_(torch.tensor([[0.0, 0.0, 0.25, 0.5, 3.0]]) / 0.5 * s.spacing)
    sl = s.slopes()
    assert torch.allclose(sl, torch.tensor([[0.0, 0.5, 0.5, 1.0]]))  # raw 0, .5, .5, 5
    (sl * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    g = torch.diff(torch.eye(5), dim=1) / s.spacing  # d slope_k / d coefficient_j
    want = g @ torch.tensor([1.0, 2.0, 3.0, 0.0])  # the slope outside [0, 1] is flat
    assert torch.allclose(s.coefficients.grad[0], want)


def test_inference_tables_follow_the_weights():
    """The tables the inference passes keep (``inference_cache``) are rebuilt when a weight
    changes in place, when the module moves to another dtype and when it is frozen."""
    s, x = bent_spline(2)
    a, b = torch.tensor(1.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    with torch.no_grad():
        first = s.scaled(x, a, b)
        s.coefficients.mul_(-0.5)
        torch.testing.assert_close(s.scaled(x, a, b), b * s(a * x), rtol=0, atol=1e-13)
        assert not torch.allclose(s.scaled(x, a, b), first)
        torch.testing.assert_close(s.scaled_integral(x, a, b), b / a * s.integrate(a * x),
                                   rtol=0, atol=1e-12)
        s.coefficients.mul_(3.0)
        torch.testing.assert_close(s.scaled_integral(x, a, b), b / a * s.integrate(a * x),
                                   rtol=0, atol=1e-12)
        f = s.float()
        torch.testing.assert_close(f.scaled(x.float(), 1.3, 0.7), 0.7 * f(1.3 * x.float()),
                                   rtol=1e-5, atol=1e-5)
        f.freeze()
        torch.testing.assert_close(f.scaled(x.float(), 1.3, 0.7), 0.7 * f(1.3 * x.float()),
                                   rtol=1e-5, atol=1e-5)


def test_scaled_slope_is_b_sigma_prime_of_a_x():
    s, x = bent_spline(3)
    a = torch.rand(4, 1, 1, 1, dtype=torch.float64) * 3 + 0.1
    b = torch.rand(4, 3, 1, 1, dtype=torch.float64) * 2 + 0.1
    with torch.no_grad():
        torch.testing.assert_close(s.scaled_slope(x, a, b), b * s.derivative(a * x),
                                   rtol=0, atol=1e-13)
