"""Denoisers: certified nonexpansiveness (dense Jacobians, float64), averaging, ridge prox."""

import pytest
import torch

from lipinverse.denoisers import LipschitzDenoiser, RidgeProxDenoiser, averaged
from lipinverse.regularizers import TV, ConvexRidge, WeakConvexRidge
from lipinverse.training import load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def jac_norm(f, x):
    J = torch.autograd.functional.jacobian(lambda z: f(z.reshape(x.shape)).reshape(-1),
                                           x.reshape(-1))
    return float(torch.linalg.matrix_norm(J, 2))


def tiny():
    return LipschitzDenoiser(width=4, depth=2, kernel_size=3)


def expand(N, steps=5):
    """Optimiser steps that try to make N expansive."""
    opt = torch.optim.Adam(N.parameters(), lr=0.1)
    a, b = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)
    for _ in range(steps):
        opt.zero_grad()
        (-(N(a) - N(b)).pow(2).sum()).backward()
        opt.step()
    return N


@torch.no_grad()
def test_default_denoiser_contract():
    D = LipschitzDenoiser().float()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float32)
    assert D(x, 0.1).shape == x.shape
    assert D.lipschitz_bound() <= 1.0
    assert D.averagedness is None
    with pytest.raises(ValueError, match=r"LipschitzDenoiser.forward: expected input of shape"):
        D(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match=r"LipschitzDenoiser.forward: expected input of shape"):
        LipschitzDenoiser(in_channels=2)(torch.rand(2, 3, 8, 8))


@torch.no_grad()
def test_grey_denoisers_on_colour_keep_their_certificate():
    """Colour through a grey denoiser (opponent channels): the same map per channel, and
    the certified Lipschitz bound still holds on colour pairs (float64)."""
    from lipinverse import pretrained
    from lipinverse.regularizers.colour import fold, unfold

    torch.manual_seed(0)
    for D in (LipschitzDenoiser(width=8, depth=3).double(),
              pretrained.load("lipdenoiser").double()):
        x, z = torch.rand(3, 3, 20, 20, dtype=torch.float64), torch.rand(3, 3, 20, 20,
                                                                          dtype=torch.float64)
        torch.testing.assert_close(D(x, 0.1), unfold(D(fold(x), 0.1), 3))
        ratio = ((D(x, 0.1) - D(z, 0.1)).flatten(1).norm(dim=1)
                 / (x - z).flatten(1).norm(dim=1))
        assert float(ratio.max()) <= D.lipschitz_bound()


@pytest.mark.parametrize("trained", [False, True])
def test_lipschitz_denoiser_jacobian_within_certificate(trained):
    N = tiny()
    if trained:
        expand(N)
    bound = N.lipschitz_bound()
    assert bound <= 1.0
    for seed in range(2):
        x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
        assert jac_norm(N, x) <= bound * (1 + 1e-9)


def test_averaged_is_firmly_nonexpansive_at_one_half():
    N = expand(tiny())
    D = averaged(N, 0.5)
    assert D.averagedness == 0.5
    assert D.lipschitz_bound() <= 1.0
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 1, 6, 6, generator=g), torch.rand(16, 1, 6, 6, generator=g)
    d, e = (D(x) - D(y)).flatten(1), (x - y).flatten(1)
    assert ((d * d).sum(1) <= (d * e).sum(1) + 1e-12).all()
    assert jac_norm(averaged(N, 0.3), x[:1]) <= averaged(N, 0.3).lipschitz_bound() * (1 + 1e-9)


def test_averaged_reports_unknown_for_expansive_maps():
    class Expansive:
        def __call__(self, x, sigma=None):
            return 2 * x

        def lipschitz_bound(self):
            return 2.0

    D = averaged(Expansive(), 0.5)
    assert D.averagedness is None and D.lipschitz_bound() == 1.5
    with pytest.raises(ValueError, match="alpha in"):
        averaged(tiny(), 1.5)
    with pytest.raises(TypeError, match="lipschitz_bound"):
        averaged(lambda x, sigma=None: x)


def test_ridge_prox_denoiser_certificates():
    R = ConvexRidge(channels=(1, 3, 6), kernel_size=3)
    D = RidgeProxDenoiser(R, 0.1, tol=1e-10)
    assert D.lipschitz_bound() == 1.0 and D.averagedness == 0.5
    x = torch.rand(1, 1, 6, 6)
    torch.testing.assert_close(D(x), R.denoise(x, 0.1, tol=1e-10))
    W = WeakConvexRidge(channels=(1, 3, 6), kernel_size=3, spline_init="clip")
    DW = RidgeProxDenoiser(W, 0.1)
    rho = W.curvature_bounds(0.1)[0]
    assert rho < 0 and DW.averagedness is None
    assert DW.lipschitz_bound() == pytest.approx(1 / (1 + rho))
    with pytest.raises(TypeError, match="RidgeProxDenoiser"):
        RidgeProxDenoiser(tiny())


def test_denoiser_checkpoint_round_trip(tmp_path):
    N = expand(tiny())
    save_checkpoint(N, tmp_path / "n")
    M = load_checkpoint(tmp_path / "n")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(M(x), N(x))
    assert M.lipschitz_bound() == N.lipschitz_bound()


def test_averaged_lipschitz_denoiser_in_pnp_fbs():
    from lipinverse import solvers
    from lipinverse.functionals import L2Fidelity
    from operators import Blur

    A = Blur(torch.ones(3, 3) / 9, padding="circular", in_shape=(1, 8, 8))
    y = A(torch.rand(1, 1, 8, 8))
    D = averaged(tiny().requires_grad_(False), 0.5)
    res = solvers.PGD(L2Fidelity(A, y), D).solve(max_iter=200, tol=1e-7)
    assert res.converged.all()
    assert str(res.guarantee).startswith("PnP-FBS: D is 0.5-averaged")


def test_training_a_lipschitz_denoiser_keeps_the_certificate():
    from lipinverse.training import DenoisingLoss, PatchDataset, TrainConfig, Trainer

    torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(0)
    imgs = torch.nn.functional.interpolate(torch.rand(4, 1, 4, 4, generator=g), scale_factor=8)
    torch.manual_seed(0)
    N = LipschitzDenoiser(width=4, depth=2)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=2e-2, steps_per_epoch=4, progress=False,
                      sigma_range=(0.1, 0.1), val_sigma=0.1)
    hist = Trainer(N, DenoisingLoss("mse", tv2_weight=1e-4), cfg,
                   PatchDataset(imgs, patch_size=16, stride=8), list(imgs[:2])).fit()
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    N = N.double()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    assert jac_norm(N, x) <= N.lipschitz_bound() * (1 + 1e-9) <= 1 + 1e-9


def _rough_convex_ridge():
    """A ConvexRidge whose spline slopes jump between 0 and 1 and whose strength is large:
    the hardest case for the unrolled network's certificate."""
    R = ConvexRidge(channels=(1, 3, 6), kernel_size=3)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for conv in R.W.linear.convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        sp = R.convex_spline
        n = sp.coefficients.shape[-1]
        slopes = (torch.rand(sp.coefficients.shape[0], n - 1, generator=g) > 0.5).double()
        step = (sp.knots()[1] - sp.knots()[0]).item()
        coeffs = torch.cat([torch.zeros(slopes.shape[0], 1), step * slopes.cumsum(1)], 1)
        sp.coefficients.copy_(coeffs - coeffs.mean(1, keepdim=True))
        R.strength.values.add_(4.0)  # lambda * mu well above 1
    return R


@pytest.mark.parametrize("t", [1, 4])
@pytest.mark.parametrize("sigma", [0.02, 0.2])
def test_ridge_resnet_denoiser_is_nonexpansive(t, sigma):
    from lipinverse.denoisers import RidgeResNetDenoiser

    R = _rough_convex_ridge()
    D = RidgeResNetDenoiser(R, t=t)
    sc = R.scalings(sigma, 1, torch.float64)
    assert float((sc.lam * sc.mu).detach()) > 5.0  # the step is far below 1: a real test
    assert D.lipschitz_bound() == 1.0 and D.averagedness is None
    worst = max(jac_norm(lambda z: D(z, sigma), sigma * torch.randn(1, 1, 5, 5) + 0.5)
                for _ in range(4))
    assert worst <= 1.0 + 1e-9
    assert worst > 0.3  # not trivially contracting


@torch.no_grad()
def test_ridge_resnet_denoiser_tends_to_the_prox_and_round_trips(tmp_path):
    from lipinverse.denoisers import RidgeResNetDenoiser

    R = _rough_convex_ridge()
    y = torch.rand(2, 1, 8, 8)
    D = RidgeResNetDenoiser(R, t=3000)
    torch.testing.assert_close(D(y, 0.05), R.denoise(y, 0.05, tol=1e-12, max_iter=20000),
                               rtol=1e-6, atol=1e-6)
    save_checkpoint(RidgeResNetDenoiser(R, t=5), tmp_path / "d")
    M = load_checkpoint(tmp_path / "d")
    assert isinstance(M, RidgeResNetDenoiser) and M.t == 5
    assert torch.equal(M(y, 0.05), RidgeResNetDenoiser(R, t=5)(y, 0.05))
    with pytest.raises(TypeError, match="ConvexRidge"):
        RidgeResNetDenoiser(TV())
    with pytest.raises(ValueError, match=r"step in \(0, 1\]"):
        RidgeResNetDenoiser(ConvexRidge(channels=(1, 3, 6), kernel_size=3), step=1.5)
    weak = RidgeResNetDenoiser(WeakConvexRidge(channels=(1, 3, 6), kernel_size=3))
    assert weak.lipschitz_bound() == pytest.approx(1.0)  # computed at sigma (no concave part yet)
    with pytest.raises(ValueError, match="t >= 1"):
        RidgeResNetDenoiser(R, t=0)
