import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipinverse.nn import (
    Constrained,
    ConvMap,
    DenseMap,
    GradientStepBlock,
    GroupSort,
    LipschitzResNet,
    LipschitzSpline,
    ScaledActivation,
    certify,
    empirical_lipschitz,
    export,
)
from operators.testing import jacobian_norm


def _perturb(module, scale):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _maximise_energy(net, shape, steps=3, lr=0.3):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        x = torch.randn(4, *shape)
        loss = -(net(x) - net(x + 0.1 * torch.randn_like(x))).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _exact_max(net, shape, n=2):
    return max(jacobian_norm(net, 2 * torch.randn(1, *shape)) for _ in range(n))


def _check(net, shape, bound_max=1.0):
    cert = certify(net)
    assert cert <= bound_max + 1e-12
    assert _exact_max(net, shape) <= cert + 1e-9
    assert empirical_lipschitz(net, torch.randn(3, *shape), n_iter=10,
                               adversarial_steps=10) <= cert + 1e-9
    return cert


NETS = {
    "conv_image": lambda: (LipschitzResNet(width=4, depth=2), (1, 6, 6)),
    "conv_relu_circular": lambda: (
        LipschitzResNet(in_channels=2, out_channels=3, width=4, depth=2, activation="relu",
                        padding="circular", kernel_size=5),
        (2, 5, 6),
    ),
    "conv_scalar": lambda: (LipschitzResNet(width=3, depth=2, output="scalar"), (1, 5, 5)),
    "dense_scalar": lambda: (
        LipschitzResNet(in_channels=2, width=6, depth=3, dense=True, output="scalar"), (2,)
    ),
    "dense_estimate": lambda: (
        LipschitzResNet(in_channels=3, out_channels=2, width=6, depth=2, dense=True,
                        norm="estimate"),
        (3,),
    ),
}


@pytest.mark.parametrize("name", list(NETS))
def test_networks_certified_everywhere(name):
    net, shape = NETS[name]()
    _perturb(net, 0.3)
    for phase in ("init", "trained"):
        if phase == "trained":
            _maximise_energy(net, shape)
        for mode in (True, False):
            net.train(mode)
            if name == "dense_estimate":
                # a stale power-iteration vector after a jump of the weights: the
                # certificate may exceed 1 but must stay sound
                _check(net, shape, bound_max=float("inf"))
                for block in net.blocks:
                    block.refine_estimate(100)
            _check(net, shape)
    # state_dict reload
    fresh, _ = NETS[name]()
    fresh.load_state_dict(net.state_dict())
    x = torch.randn(2, *shape)
    net.eval()
    fresh.eval()
    if name != "dense_estimate":  # power-iteration vectors are not part of the state
        assert torch.allclose(fresh(x), net(x), atol=1e-12)
        assert certify(fresh) == pytest.approx(certify(net), rel=1e-12)
    # export: identical outputs, no parameters, still certified
    exported = export(net)
    assert list(exported.parameters()) == []
    assert torch.equal(exported(x), net(x))
    _check(exported, shape)
    again, _ = NETS[name]()
    again = export(again)
    again.load_state_dict(exported.state_dict())
    assert torch.equal(again(x), exported(x))


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3), st.integers(2, 5))
def test_random_dense_networks(seed, depth, width):
    torch.manual_seed(seed)
    net = LipschitzResNet(in_channels=2, out_channels=2, width=width, depth=depth, dense=True)
    _perturb(net, 1.0)
    _check(net, (2,))


def test_unrolled_shared_weights_ridge_denoiser():
    spline = LipschitzSpline(3, slope_bounds=(-0.2, 1.0), init="soft_threshold")
    lam = torch.nn.Parameter(torch.tensor(0.3))
    block = GradientStepBlock(ConvMap(1, 3, 3), ScaledActivation(spline, lam), bias=False,
                              fidelity_weight=1.0)
    net = LipschitzResNet.unrolled(block, depth=4)
    assert len(list(net.parameters())) == 3
    y = torch.randn(1, 1, 6, 6)
    cert = certify(net)
    assert cert == pytest.approx(block.lipschitz_bound() ** 4)
    assert jacobian_norm(lambda x: net(x, anchor=y), y) <= cert + 1e-9
    # same as applying the block 4 times
    z = y
    for _ in range(4):
        z = block(z, anchor=y)
    assert torch.allclose(net(y, anchor=y), z)
    exported = export(net)
    assert torch.equal(exported(y, anchor=y), net(y, anchor=y))


def test_certify_composition_and_parts():
    seq = torch.nn.Sequential(Constrained(DenseMap(3, 4)), GroupSort(2), torch.nn.ReLU(),
                              torch.nn.Linear(4, 2))
    w = float(torch.linalg.matrix_norm(seq[3].weight.detach(), 2))
    assert certify(seq) == pytest.approx(w, rel=1e-9)
    assert certify(seq) >= w
    assert _exact_max(seq, (3,)) <= certify(seq)
    assert certify(ScaledActivation(LipschitzSpline(2, slope_bounds=(-2.0, 1.0)), 0.5)) == 1.0
    assert certify(DenseMap(3, 3)) > 0


def test_certify_refuses_unknown_modules():
    with pytest.raises(TypeError, match="certify: cannot certify a Conv2d"):
        certify(torch.nn.Conv2d(1, 1, 3))
    with pytest.raises(TypeError, match="certify: cannot certify a GELU"):
        certify(torch.nn.Sequential(torch.nn.GELU()))


def test_empirical_lipschitz_is_tight_on_linear_map():
    d = DenseMap(4, 3)
    x = torch.randn(2, 4)
    exact = float(torch.linalg.matrix_norm(d.weight.detach(), 2))
    est = empirical_lipschitz(d, x)
    assert exact * (1 - 1e-6) <= est <= exact * (1 + 1e-9)
    assert d.weight.requires_grad and d.training  # state restored


@torch.no_grad()
def test_default_resnet_shapes():
    net = LipschitzResNet()
    x = torch.zeros(2, 1, 12, 12)
    assert net(x).shape == x.shape
    assert certify(net) <= 1.0
    scalar = LipschitzResNet(output="scalar")
    assert scalar(x).shape == (2,)
    with pytest.raises(ValueError, match="LipschitzResNet: expected output"):
        LipschitzResNet(output="vector")
    with pytest.raises(ValueError, match="out_channels=1"):
        LipschitzResNet(out_channels=2, output="scalar")
