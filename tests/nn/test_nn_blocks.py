import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipinverse.nn import (
    ConvMap,
    DenseMap,
    GradientStepBlock,
    GroupSort,
    LipschitzSpline,
    MultiConv,
    ScaledActivation,
)
from operators.testing import jacobian_norm


def _perturb(module, scale=1.0):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _max_jacobian_norm(f, shape, n=3):
    return max(jacobian_norm(f, 2 * torch.randn(1, *shape)) for _ in range(n))


def _maximise_energy(block, shape, steps=3, lr=0.5):
    opt = torch.optim.Adam(block.parameters(), lr=lr)
    for _ in range(steps):
        x = torch.randn(4, *shape)
        loss = -(block(x) - block(x + 0.1 * torch.randn_like(x))).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


BLOCKS = {
    "conv_relu": lambda: (GradientStepBlock(ConvMap(2, 4, 3), torch.nn.ReLU()), (2, 5, 5)),
    "conv_spline": lambda: (
        GradientStepBlock(ConvMap(2, 3, 3, padding="circular"), LipschitzSpline(3, init="relu")),
        (2, 5, 4),
    ),
    "strided_grouped": lambda: (
        GradientStepBlock(ConvMap(2, 4, 3, stride=2, groups=2), LipschitzSpline(4)),
        (2, 5, 6),
    ),
    "multiconv": lambda: (
        GradientStepBlock(MultiConv([ConvMap(1, 3, 3), ConvMap(3, 4, 3)]), LipschitzSpline(4)),
        (1, 6, 6),
    ),
    "dense_half_step": lambda: (
        GradientStepBlock(DenseMap(5, 8), LipschitzSpline(8), step=0.5),
        (5,),
    ),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_nonexpansive_init_trained_train_eval(name):
    block, shape = BLOCKS[name]()
    _perturb(block, 0.3)
    for phase in ("init", "trained"):
        if phase == "trained":
            _maximise_energy(block, shape)
        for mode in ("train", "eval"):
            block.train(mode == "train")
            bound = block.lipschitz_bound()
            assert bound <= 1.0 + 1e-12
            assert _max_jacobian_norm(block, shape) <= bound + 1e-9, (phase, mode)


def test_step_size_from_certified_bound():
    lin = ConvMap(2, 3, 3)
    block = GradientStepBlock(lin, LipschitzSpline(3, slope_bounds=(0.0, 0.5)), step=0.8)
    beta = float(lin.norm_bound().detach())
    h = float(block.unrolled_step().detach())
    assert h <= 0.8 * 2 / (0.5 * beta**2)
    assert h >= 0.8 * 2 / (0.5 * beta**2) * (1 - 1e-7)
    assert float(torch.tensor(h, dtype=torch.float32)) == h  # float32-representable


def test_block_is_gradient_step_of_potential():
    block = GradientStepBlock(ConvMap(1, 3, 3), LipschitzSpline(3, slope_bounds=(-1.0, 1.0)),
                              fidelity_weight=0.7)
    _perturb(block, 0.5)
    x = torch.randn(2, 1, 5, 5, requires_grad=True)
    a = torch.randn(2, 1, 5, 5)
    (g,) = torch.autograd.grad(block.potential(x, a).sum(), x)
    assert torch.allclose(g, block.gradient(x.detach(), a), atol=1e-12)
    h = block.unrolled_step().detach()
    assert torch.allclose(block(x.detach(), a), x.detach() - h * g, atol=1e-12)


def test_shared_weights_between_blocks():
    lin, act = ConvMap(1, 2, 3), LipschitzSpline(2)
    b1, b2 = GradientStepBlock(lin, act), GradientStepBlock(lin, act)
    net = torch.nn.Sequential(b1, b2)
    assert len(list(net.parameters())) == 4  # weight, coefficients, two biases
    assert b1.linear is b2.linear


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 1.0), st.floats(0.0, 2.0))
def test_ridge_denoiser_step_weakly_convex(seed, lam, rho):
    """x <- x - h (x - y + lam W^T sigma(Wx)), sigma' in [-rho, 1]: bound and exact norm."""
    torch.manual_seed(seed)
    spline = LipschitzSpline(3, slope_bounds=(-rho, 1.0), init="zero")
    _perturb(spline, 1.0)
    lin = ConvMap(1, 3, 3)
    block = GradientStepBlock(lin, ScaledActivation(spline, lam), bias=False, fidelity_weight=1.0)
    y = torch.randn(1, 1, 5, 5)
    bound = block.lipschitz_bound()
    m, big_m = block.curvature_bounds()
    if m >= 0:
        assert bound <= 1.0 + 1e-12
    exact = _max_jacobian_norm(lambda x: block(x, anchor=y), (1, 5, 5), n=2)
    assert exact <= bound + 1e-9


def test_learnable_scale_gets_gradient():
    lam = torch.nn.Parameter(torch.tensor(0.5))
    block = GradientStepBlock(DenseMap(3, 4), ScaledActivation(LipschitzSpline(4), lam),
                              fidelity_weight=1.0)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    block(x, y).sum().backward()
    assert lam.grad is not None and torch.isfinite(lam.grad)


def test_errors():
    with pytest.raises(TypeError, match="GradientStepBlock: expected linear a LinearMap"):
        GradientStepBlock(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with pytest.raises(TypeError, match="activation_slope_bounds"):
        GradientStepBlock(DenseMap(2, 2), GroupSort())
    with pytest.raises(ValueError, match=r"GradientStepBlock: expected step in \(0, 1\]"):
        GradientStepBlock(DenseMap(2, 2), torch.nn.ReLU(), step=1.5)
    with pytest.raises(ValueError, match="fidelity_weight"):
        GradientStepBlock(DenseMap(2, 2), torch.nn.ReLU(), fidelity_weight=-1.0)


@pytest.mark.parametrize("linear", [lambda: ConvMap(2, 3, 3),
                                    lambda: MultiConv([ConvMap(1, 2, 3), ConvMap(2, 3, 5)])])
def test_estimate_mode_is_certified_with_the_step_it_uses(linear):
    lin = linear()
    block = GradientStepBlock(lin, LipschitzSpline(3), norm="estimate")
    shape = (lin.in_channels, 6, 6)
    _perturb(block, 0.5)
    for mode in (True, False):
        block.train(mode)
        x = torch.randn(1, *shape)
        block(x)  # train mode: refines the estimate, and the step it used is reported below
        assert jacobian_norm(block, x) <= block.lipschitz_bound() + 1e-9
    block.refine_estimate(100)
    block.eval()
    assert block.lipschitz_bound() <= 1.0 + 1e-12
    est = float(block.linear.norm_estimate(n_iter=0).detach())
    assert est <= float(block.linear.norm_bound().detach()) * (1 + 1e-9)
