"""Ridge regularisers: gradients, certificates (float64, dense Hessians), prox, unrolling."""

import warnings

import pytest
import torch

from lipinverse.denoisers import RidgeResNetDenoiser
from lipinverse.regularizers import ConvexRidge, RidgeAtSigma, WeakConvexRidge

SIGMA = 20.0 / 255


def small(cls, **kw):
    torch.manual_seed(0)
    return cls(channels=(1, 3, 6), kernel_size=3, num_knots=11, **kw).double()


def perturb(R, scale=0.5, seed=1):
    """Random spline / sigma-function / filter updates (leave the defaults' symmetries)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in R.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return R


def adversarial_steps(R, n=5):
    """Optimiser steps that try to make the gradient map as expansive as possible."""
    opt = torch.optim.Adam(R.parameters(), lr=0.2)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    v = torch.randn_like(x)
    for _ in range(n):
        opt.zero_grad()
        loss = -(R.grad(x + 1e-3 * v) - R.grad(x)).pow(2).sum() - R.value(x).sum()
        loss.backward()
        opt.step()
    return R


def hessian(R, x, sigma):
    flat = x.reshape(-1)

    def g(z):
        return R.grad(z.reshape(x.shape), sigma).reshape(-1)

    return torch.autograd.functional.jacobian(g, flat)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_defaults_construct_and_have_the_contract():
    for cls in (ConvexRidge, WeakConvexRidge):
        R = cls()
        x = torch.rand(2, 1, 16, 16)
        assert R.value(x).shape == (2,)
        assert R(x).shape == (2,)
        assert R.grad(x).shape == x.shape
        assert R.grad_lipschitz > 0
        assert isinstance(R.convex, bool)
        assert R.weak_convexity >= 0


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_grad_is_the_gradient_of_value(cls):
    R = perturb(small(cls), 0.3)
    x = torch.rand(2, 1, 9, 7, requires_grad=True)
    (g,) = torch.autograd.grad(R.value(x, SIGMA).sum(), x)
    torch.testing.assert_close(R.grad(x.detach(), SIGMA), g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
@pytest.mark.parametrize("stage", ["init", "perturbed", "adversarial"])
def test_certificates_bound_the_dense_hessian(cls, stage):
    R = small(cls)
    if stage != "init":
        perturb(R, 0.5)
    if stage == "adversarial":
        adversarial_steps(R)
    for sigma in (2 / 255, SIGMA, 50 / 255):
        R.sigma = sigma
        lo, hi = R.curvature_bounds()
        for seed in range(3):
            x = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(seed)) * 3
            H = hessian(R, x, sigma)
            torch.testing.assert_close(H, H.T, rtol=0, atol=1e-10)
            ev = torch.linalg.eigvalsh(0.5 * (H + H.T))
            assert ev.max() <= R.grad_lipschitz * (1 + 1e-9) + 1e-12
            assert ev.max() <= hi * (1 + 1e-9) + 1e-12
            assert ev.min() >= -R.weak_convexity * (1 + 1e-9) - 1e-12
        if cls is ConvexRidge:
            assert R.convex and R.weak_convexity == 0.0
        else:
            assert R.weak_convexity < R.rho_max


def test_weak_convexity_is_reached_and_capped():
    R = perturb(small(WeakConvexRidge, rho_max=0.8), 2.0, seed=3)
    with torch.no_grad():  # steepest possible concave spline and a large cap factor
        R.concave_part.spline.coefficients.copy_(
            torch.tensor([0.0, 1, 2, 3, 2, 1, 0, -1, -2, -3, -4]).repeat(3, 1) * 0.1)
        R.kappa_nu.values.fill_(6.0)
    assert 0.79 < R.weak_convexity <= 0.8
    assert not R.convex


def test_channels_of_the_concave_part_can_redescend():
    """Steep convex part, concave part bending it down: psi' rises, then falls."""
    R = small(WeakConvexRidge, rho_max=0.9, spline_init="clip")
    with torch.no_grad():
        R.kappa_nu.values.fill_(6.0)
        R.strength.values.add_(5.0)              # a convex part 150x steeper than at its init
    act = R.activation_at(SIGMA)
    mu = float(act.mu)
    t = torch.linspace(0, 3.0 / mu, 301).view(1, 1, -1).expand(1, 6, -1).contiguous()
    d = act(t)[0, -1]                       # a channel of C2
    rise, top = d[:20].diff(), int(d.argmax())
    assert (rise > 0).all() and 0 < top < 300 and d[-1] < d[top] - 1e-3
    lo, hi = R.curvature_bounds(SIGMA)
    assert -0.9 <= lo < -0.4 and hi > 50    # and yet only 0.9-weakly convex


def test_from_convex_keeps_the_convex_part():
    C = perturb(small(ConvexRidge), 0.3)
    W = WeakConvexRidge.from_convex(C, nonconvex_channels=2)
    assert W.convex_spline is not C.convex_spline
    x = torch.rand(2, 1, 9, 9)
    concave = W.value(x, SIGMA) - C.value(x, SIGMA)
    assert (concave < 0).all()              # the subtracted part, and only it
    with torch.no_grad():                   # slopes 0: phi = 0, the two coincide
        W.concave_part.spline.coefficients.zero_()
    torch.testing.assert_close(W.grad(x, SIGMA), C.grad(x, SIGMA), rtol=0, atol=1e-14)
    torch.testing.assert_close(W.nu(torch.tensor([SIGMA])), C.mu(torch.tensor([SIGMA])) / 32)
    with pytest.raises(TypeError, match="expected a ConvexRidge, got WeakConvexRidge"):
        WeakConvexRidge.from_convex(W)


def test_nu_ratio_starts_the_concave_part_inside_its_range(tmp_path):
    from lipinverse.training import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    plain = WeakConvexRidge(channels=(1, 4, 12), num_knots=11, noise_response=1.0)
    torch.manual_seed(0)
    R = WeakConvexRidge(channels=(1, 4, 12), num_knots=11, noise_response=1.0,
                        nu_ratio=1 / 32)
    s = torch.tensor([5 / 255, 15 / 255, 25 / 255])
    torch.testing.assert_close(plain.nu(s), plain.mu(s))            # the default: nu = mu
    torch.testing.assert_close(R.nu(s), R.mu(s) / 32)
    torch.testing.assert_close(R.mu(s), plain.mu(s), rtol=0, atol=0)  # nothing else moves
    # responses of the size of image structure (10x the noise's): with nu = mu most fall
    # beyond the concave part's knot range (where it is linear), with nu = mu/32 most inside
    n = 15 / 255 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        def inside(m):
            sc = m.scalings(15 / 255)
            z2 = m._filters(n * 10, sc)[:, m.num_convex_only:]
            return float(((sc.nu * z2).abs() < m.concave_part.range).double().mean())
        assert inside(plain) < 0.2 and inside(R) > 0.8
    assert R.config()["nu_ratio"] == 1 / 32 and "nu_ratio" not in plain.config()
    save_checkpoint(R, tmp_path / "w")
    back = load_checkpoint(tmp_path / "w")
    torch.testing.assert_close(back.nu(s), R.nu(s), rtol=0, atol=0)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises((ValueError, TypeError), match="nu_ratio"):
            WeakConvexRidge(channels=(1, 4, 12), nu_ratio=bad)
        with pytest.raises((ValueError, TypeError), match="nu_ratio"):
            WeakConvexRidge.from_convex(small(ConvexRidge), nu_ratio=bad)
    with torch.device("meta"):  # a shape-only build (as the checkpoint check makes) works
        meta = WeakConvexRidge(channels=(1, 4, 12), num_knots=11, nu_ratio=1 / 32)
    assert meta.nu.values.is_meta and meta.config()["nu_ratio"] == 1 / 32


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_state_dicts_with_the_former_name_lam_load(cls):
    R = perturb(small(cls), 0.3)
    old = {("lam." + k[len("strength."):] if k.startswith("strength.") else k): v
           for k, v in R.state_dict().items()}
    assert "lam.values" in old and not any(k.startswith("strength.") for k in old)
    fresh = small(cls)
    fresh.load_state_dict(old)                  # strict: every key found under its new name
    x = torch.rand(2, 1, 9, 9)
    torch.testing.assert_close(fresh.grad(x, SIGMA), R.grad(x, SIGMA), rtol=0, atol=0)
    both = dict(old) | {"strength.values": R.strength.values.clone()}
    with pytest.raises(RuntimeError, match="Unexpected key"):
        small(cls).load_state_dict(both)        # a state dict with both names is refused


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_noise_response_places_noise_on_the_spline_grid(cls):
    torch.manual_seed(0)
    plain = cls(channels=(1, 4, 12), num_knots=11)
    torch.manual_seed(0)
    R = cls(channels=(1, 4, 12), num_knots=11, noise_response=0.5)
    g = torch.Generator().manual_seed(3)
    for sigma in (5 / 255, 25 / 255):
        n = sigma * torch.randn(1, 1, 96, 96, generator=g)
        with torch.no_grad():
            sc, sc0 = R.scalings(sigma), plain.scalings(sigma)
            med = float((R._filters(n, sc) * sc.mu).abs().median())
            med0 = float((plain._filters(n, sc0) * sc0.mu).abs().median())
        assert med == pytest.approx(0.5, rel=0.1)                  # on the grid [-1, 1]
        assert med0 < 0.2
        torch.testing.assert_close(sc.lam * sc.mu, sc0.lam * sc0.mu)  # same curvature
    assert cls(**R.config()).config() == R.config()
    with pytest.raises(ValueError, match="noise_response"):
        cls(channels=(1, 4, 12), noise_response=0.0)


def _tail_increments(R, sigma, T):
    """p_c(2T) - p_c(T) and p_c(-2T) - p_c(-T) for every channel potential p_c."""
    act = R.activation_at(sigma)
    z = torch.tensor([T, 2 * T, -T, -2 * T]).view(1, 1, -1).expand(1, R.channels[-1], -1)
    p = act.integrate(z.contiguous())[0]
    return p[:, 1] - p[:, 0], p[:, 3] - p[:, 2]


@pytest.mark.parametrize("seed", range(8))
def test_bounded_below_certificate_matches_the_tails(seed):
    cls = (ConvexRidge, WeakConvexRidge)[seed % 2]
    R = perturb(small(cls, spline_init="clip"), 0.05, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():                   # flat ends, random end levels: either outcome
        sp = R.convex_spline
        sp.coefficients[:, :2] = sp.coefficients[:, :2].mean() + torch.randn(1, generator=g)
        sp.coefficients[:, -2:] = sp.coefficients[:, -2:].mean() + torch.randn(1, generator=g)
        if R.concave_part is not None:
            R.kappa_nu.values.fill_(float(3 * torch.randn(1, generator=g)))
    with torch.no_grad():                   # far beyond both grids (mu z, nu z >> 1)
        sc = R.scalings(SIGMA)
        T = 1e3 / float(sc.mu) / (1.0 if sc.nu is None else min(1.0, float(sc.nu / sc.mu)))
    right, left = _tail_increments(R, SIGMA, T)
    tails_ok = bool((right >= -1e-9 * T).all() and (left >= -1e-9 * T).all())
    assert R.bounded_below(SIGMA) == tails_ok


def test_bounded_below_both_outcomes_occur():
    R = small(ConvexRidge, spline_init="clip")
    assert R.bounded_below(SIGMA)           # Huber potentials
    with torch.no_grad():                   # psi' = 1 everywhere: linear, unbounded
        R.convex_spline.coefficients.fill_(1.0)
    assert not R.bounded_below(SIGMA)
    W = small(WeakConvexRidge, spline_init="clip")
    with torch.no_grad():                   # a concave part larger than the convex plateau
        W.kappa_nu.values.fill_(8.0)
        W.nu.values.fill_(-8.0)
        W.concave_part.spline.coefficients.copy_(torch.linspace(0, 1, 11).repeat(3, 1))
    sc = W.scalings(SIGMA)                  # is capped at the plateau: bounded below
    top = 1.0                               # f(r) of the concave splines above
    torch.testing.assert_close(sc.kappa.flatten() * top, sc.lam.flatten() * 0.5 * torch.ones(3))
    assert W.bounded_below(SIGMA)
    with torch.no_grad():                   # unless the convex part itself is not
        W.convex_spline.coefficients[0].fill_(1.0)
    assert not W.bounded_below(SIGMA)


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_unrolled_blocks_equal_explicit_gradient_steps(cls):
    R = perturb(small(cls), 0.3)
    y = torch.rand(2, 1, 10, 10)
    t, step = 6, 0.5
    D = RidgeResNetDenoiser(R, t, SIGMA, step=step)
    # explicit steps with the public gradient
    sc = R.scalings(SIGMA, 1)
    h = float(R.unrolled_step(sc, step).detach())
    x = y.clone()
    for _ in range(t):
        x = x - h * (x - y + R.grad(x, SIGMA))
    torch.testing.assert_close(D(y), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(R.gradient_steps(y, SIGMA, t, step), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls, step", [("ConvexRidge", 0.5), ("ConvexRidge", 0.9),
                                       ("WeakConvexRidge", 0.5)])
def test_unrolled_denoiser_certificate_bounds_its_jacobian(cls, step):
    R = perturb(small({"ConvexRidge": ConvexRidge, "WeakConvexRidge": WeakConvexRidge}[cls]),
                0.3).double()
    D = RidgeResNetDenoiser(R, 4, SIGMA, step=step)
    y = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda z: D(z.reshape(y.shape)).reshape(-1),
                                           y.reshape(-1))
    assert torch.linalg.matrix_norm(J, 2) <= D.lipschitz_bound() * (1 + 1e-9)
    if cls == "ConvexRidge" and step == 0.5:
        assert D.lipschitz_bound() == 1.0


def test_prox_is_firmly_nonexpansive_and_optimal():
    R = perturb(small(ConvexRidge), 0.5)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 1, 8, 8, generator=g)
    y = x + 0.3 * torch.randn(x.shape, generator=g)
    tol = 1e-10
    px = R.prox(x, 1.7, SIGMA, tol=tol, max_iter=5000)
    py = R.prox(y, 1.7, SIGMA, tol=tol, max_iter=5000)
    d, e = (px - py).flatten(1), (x - y).flatten(1)
    slack = 4 * tol * (x.flatten(1).norm(dim=1) + y.flatten(1).norm(dim=1)) * e.norm(dim=1)
    assert ((d * d).sum(1) <= (d * e).sum(1) + slack).all()
    # optimality: p - x + tau grad R(p) = 0
    res = px - x + 1.7 * R.grad(px, SIGMA)
    assert res.flatten(1).norm(dim=1).max() < 1e-8


def test_weakly_convex_prox_is_lipschitz_within_its_bound():
    R = perturb(small(WeakConvexRidge), 1.0, seed=4)
    rho = R.weak_convexity
    g = torch.Generator().manual_seed(6)
    x = torch.rand(4, 1, 8, 8, generator=g)
    y = x + 0.2 * torch.randn(x.shape, generator=g)
    px, py = R.denoise(x, R.sigma, tol=1e-10), R.denoise(y, R.sigma, tol=1e-10)
    ratio = (px - py).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert (ratio <= 1 / (1 - rho) + 1e-6).all()


def test_solve_is_independent_of_the_batch_and_per_sample_sigma():
    R = perturb(small(WeakConvexRidge), 0.3)
    y = torch.rand(3, 1, 8, 8)
    sig = torch.tensor([5 / 255, 15 / 255, 40 / 255])
    batch, info = R.solve(y, 1.0, sig, tol=1e-8)
    assert info.converged.all()
    for i in range(3):
        single, _ = R.solve(y[i:i + 1], 1.0, float(sig[i]), tol=1e-8)
        torch.testing.assert_close(batch[i:i + 1], single, rtol=0, atol=1e-13)
    grads = R.grad(y, sig)
    for i in range(3):
        torch.testing.assert_close(grads[i:i + 1], R.grad(y[i:i + 1], float(sig[i])))


def test_denoising_with_more_noise_smooths_more():
    R = small(ConvexRidge)
    y = torch.rand(1, 1, 12, 12)
    r_small = (R.denoise(y, 2 / 255) - y).norm()
    r_big = (R.denoise(y, 50 / 255) - y).norm()
    assert r_big > r_small


def test_prox_warns_when_the_tolerance_is_not_reached():
    R = small(ConvexRidge)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        R.prox(torch.rand(1, 1, 8, 8), 1.0, 50 / 255, tol=1e-14, max_iter=2)


def test_at_sigma_view():
    R = perturb(small(WeakConvexRidge), 0.3)
    V = R.at_sigma(7 / 255)
    assert isinstance(V, RidgeAtSigma)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(V(x), R.value(x, 7 / 255))
    torch.testing.assert_close(V.grad(x), R.grad(x, 7 / 255))
    lo, hi = R.curvature_bounds(7 / 255)
    assert V.grad_lipschitz == max(-lo, hi)
    assert V.weak_convexity == max(0.0, -lo)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(V.prox(x, 0.5, tol=1e-9), R.prox(x, 0.5, 7 / 255, tol=1e-9))


def test_bad_inputs_raise_clear_errors():
    R = small(ConvexRidge)
    with pytest.raises(ValueError, match=r"ConvexRidge.grad: expected input of shape \(B, C, H"):
        R.grad(torch.rand(2, 1, 8))
    with pytest.raises(TypeError, match="ConvexRidge.value: expected a torch.Tensor"):
        R.value([1.0])
    with pytest.raises(ValueError, match="expected finite sigma >= 0"):
        R.grad(torch.rand(1, 1, 8, 8), -0.1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        R.grad(torch.rand(2, 1, 8, 8), torch.ones(3))
    with pytest.raises(ValueError, match="expected tau > 0"):
        R.prox(torch.rand(1, 1, 8, 8), 0.0)
    W = perturb(small(WeakConvexRidge), 1.0)
    with pytest.raises(ValueError, match="not strongly convex"):
        W.solve(torch.rand(1, 1, 8, 8), 1e6)
    with pytest.raises(ValueError, match="rho_max"):
        WeakConvexRidge(rho_max=1.0)


@pytest.mark.parametrize("cls", ["ConvexRidge", "WeakConvexRidge"])
def test_denoise_default_meets_its_certified_accuracy(cls):
    from lipinverse.regularizers.ridge import DENOISE_TOL

    R = perturb(small({"ConvexRidge": ConvexRidge, "WeakConvexRidge": WeakConvexRidge}[cls]),
                0.3).double()
    y = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    x = R.denoise(y, SIGMA)  # Anderson to DENOISE_TOL
    exact = R.denoise(y, SIGMA, tol=1e-12, max_iter=20000, method="fista")
    dist = (x - exact).flatten(1).norm(dim=1)
    assert (dist <= DENOISE_TOL * y.flatten(1).norm(dim=1)).all(), dist
