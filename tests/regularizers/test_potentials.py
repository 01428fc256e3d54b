"""EvenPotential: exact integral, derivatives, certificates, bounded below."""

import pytest
import torch

from lipinverse.regularizers.potentials import EvenPotential


def potential(seed=0):
    torch.manual_seed(seed)
    phi = EvenPotential(3, num_knots=9, knot_range=2.0).double()
    with torch.no_grad():
        phi.spline.coefficients.copy_(torch.randn(3, 9, dtype=torch.float64) * 0.3)
    return phi


def test_derivative_of_integral_and_second_derivative():
    phi = potential()
    t = (torch.rand(2, 3, 50, dtype=torch.float64) - 0.5) * 8
    t.requires_grad_(True)
    (g,) = torch.autograd.grad(phi.integrate(t).sum(), t)
    torch.testing.assert_close(g, phi(t.detach()), rtol=1e-10, atol=1e-12)
    (h,) = torch.autograd.grad(phi(t).sum(), t)
    torch.testing.assert_close(h, phi.derivative(t.detach()), rtol=1e-10, atol=1e-12)


def test_integral_matches_quadrature():
    phi = potential(1)
    t = torch.linspace(-5, 5, 11, dtype=torch.float64).view(1, 1, -1).expand(1, 3, -1)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for j in range(11):
        s = t[:, :, j:j + 1] * grid.view(1, 1, -1)
        vals = phi(s)
        quad = torch.trapezoid(vals, dx=float(t[0, 0, j]) / 20000, dim=-1)
        torch.testing.assert_close(phi.integrate(t[:, :, j:j + 1])[..., 0], quad, atol=1e-6,
                                   rtol=1e-6)


def test_even_bounded_below_and_certified_curvature():
    for seed in range(4):
        phi = potential(seed)
        t = (torch.rand(1, 3, 400, dtype=torch.float64) - 0.5) * 10
        torch.testing.assert_close(phi.integrate(t), phi.integrate(-t))
        assert (phi.integrate(t) >= 0).all()
        assert (t * phi(t) >= 0).all()
        lo, hi = phi.derivative_bounds()
        d2 = phi.derivative(t)
        assert -1 <= lo <= d2.min() and d2.max() <= hi <= 1
        # finite differences of phi' stay within the certified interval
        s, _ = torch.sort(t, dim=-1)
        slopes = torch.diff(phi(s), dim=-1) / torch.diff(s, dim=-1).clamp_min(1e-12)
        assert slopes.min() >= lo - 1e-9 and slopes.max() <= hi + 1e-9


def test_fresh_potential_is_trainable():
    # a constant h would make phi' = max(0, h - h(0)) = 0 with no gradient reaching h
    phi = EvenPotential(2, num_knots=11, knot_range=1.0)
    t = torch.linspace(-1.5, 1.5, 31).view(1, 1, -1).expand(1, 2, -1).contiguous()
    torch.testing.assert_close(phi(t), 0.5 * t.clamp(-1, 1))
    (phi(t) * t).sum().backward()
    assert (phi.spline.coefficients.grad.abs().sum(1) > 0).all()


def bent(seed):
    """A float64 potential whose h crosses h(0) several times (nonconvex, redescending),
    inputs beyond its range, per-sample a and per-channel b."""
    torch.manual_seed(seed)
    phi = EvenPotential(4, num_knots=21, knot_range=1.3)
    with torch.no_grad():
        phi.spline.coefficients.add_(0.3 * torch.randn_like(phi.spline.coefficients))
    t = 2 * torch.randn(3, 4, 7, 9, dtype=torch.float64)
    a = torch.rand(3, 1, 1, 1, dtype=torch.float64) + 0.5
    b = torch.rand(3, 4, 1, 1, dtype=torch.float64) + 0.1
    return phi.double(), t, a, b


@pytest.mark.parametrize("seed", range(4))
def test_scaled_integral_is_b_over_a_phi_of_a_t(seed):
    """The inference path (one five-column table per interval, zero crossings included):
    b / a * phi(a t) in float64, per sample and per channel, beyond the range too."""
    phi, t, a, b = bent(seed)
    with torch.no_grad():
        ref = b / a * phi.integrate(a * t)
        assert torch.allclose(phi.scaled_integral(t, a, b), ref, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="scaled_integral: expected input"):
        phi.scaled_integral(t[:, :2], a, b)


def test_scaled_is_b_phi_prime_of_a_t():
    phi, t, a, b = bent(5)
    with torch.no_grad():
        assert torch.allclose(phi.scaled(t, a, b), b * phi(a * t), rtol=0, atol=1e-14)


def test_scaled_derivative_is_b_phi_second_of_a_t():
    """Zero beyond the range and where h <= h(0), h' elsewhere, per sample and channel."""
    phi, t, a, b = bent(6)
    with torch.no_grad():
        ref = b * phi.derivative(a * t)
        got = phi.scaled_derivative(t, a, b)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    assert bool((got == 0).any()) and bool((got != 0).any())
