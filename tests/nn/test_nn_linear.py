import math

import pytest
import torch

from lipinverse.nn import Constrained, ConvMap, DenseMap, MultiConv, symbol_norm_bound
from operators.testing import adjoint_error, dense_matrix, spectral_norm

CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=p, stride=s, groups=g)
    for p in ("zero", "circular")
    for s in (1, 2, (1, 2))
    for g in (1,)
] + [
    dict(in_channels=4, out_channels=6, kernel_size=k, padding=p, stride=s, groups=2)
    for p in ("zero", "circular")
    for s in (1, 2)
    for k in (3, (3, 5))
]
SIZES = [(7, 7), (8, 6)]


@pytest.mark.parametrize("cfg", CONV_CASES)
@pytest.mark.parametrize("size", SIZES)
@torch.no_grad()
def test_conv_adjoint_and_norm_bound(cfg, size):
    c = ConvMap(**cfg)
    x = torch.randn(2, cfg["in_channels"], *size)
    assert adjoint_error(c, lambda y: c.transpose(y, input_size=size), x) < 1e-12
    exact = spectral_norm(dense_matrix(c, shape=(cfg["in_channels"], *size)))
    bound = float(c.norm_bound().detach())
    assert exact <= bound
    est = float(c.norm_estimate(n_iter=30, size=size).detach())
    assert est <= exact * (1 + 1e-9)


@pytest.mark.parametrize("groups", [1, 3])
@torch.no_grad()
def test_circular_exact_norm_and_symbol_bound_tightness(groups):
    c = ConvMap(3, 6, 5, padding="circular", groups=groups)
    size = (9, 10)
    exact = spectral_norm(dense_matrix(c, shape=(3, *size)))
    at_size = float(c.norm_bound(input_size=size))
    assert exact <= at_size <= exact * (1 + 1e-9)
    # the all-size bound is >= the norm at any size and within ~2% of the torus sup,
    # approximated by a very fine grid
    fine = float(symbol_norm_bound([(c.weight, groups)], grid_size=256)) / (1 + 1e-10)
    bound = float(c.norm_bound())
    assert exact <= bound <= 1.02 * fine


@torch.no_grad()
def test_zero_padding_bound_tight_on_large_images():
    c = ConvMap(2, 3, 3)
    bound = float(c.norm_bound())
    # power iteration at a large size: lower estimate close to the sup of the symbol
    est = float(c.norm_estimate(n_iter=100, size=(40, 40)).detach())
    assert est <= bound <= 1.02 * est


@pytest.mark.parametrize("pad_once", [True, False])
@pytest.mark.parametrize("padding", ["zero", "circular"])
@torch.no_grad()
def test_multiconv_adjoint_and_bound(pad_once, padding):
    m = MultiConv([ConvMap(1, 4, 5, padding=padding), ConvMap(4, 6, 3, padding=padding)],
                  pad_once=pad_once)
    size = (8, 9)
    x = torch.randn(2, 1, *size)
    assert adjoint_error(m, m.transpose, x) < 1e-12
    exact = spectral_norm(dense_matrix(m, shape=(1, *size)))
    bound = float(m.norm_bound())
    product = float(m.convs[0].norm_bound() * m.convs[1].norm_bound())
    assert exact <= bound <= product * (1 + 1e-12)
    if padding == "circular":
        assert exact <= float(m.norm_bound(input_size=size)) <= exact * (1 + 1e-9)


@torch.no_grad()
def test_multiconv_strided_falls_back_to_product():
    m = MultiConv([ConvMap(2, 4, 3, stride=2), ConvMap(4, 3, 3, groups=1)])
    assert m.mode == "sequential"
    size = (9, 8)
    x = torch.randn(1, 2, *size)
    assert adjoint_error(m, lambda y: m.transpose(y, input_size=size), x) < 1e-12
    exact = spectral_norm(dense_matrix(m, shape=(2, *size)))
    assert exact <= float(m.norm_bound())


@torch.no_grad()
def test_pad_once_is_compression_of_composed_convolution():
    """pad_once output = full composed convolution restricted to the image."""
    a, b = ConvMap(1, 2, 3), ConvMap(2, 1, 5)
    m = MultiConv([a, b])
    x = torch.randn(1, 1, 6, 6)
    big = torch.nn.functional.pad(x, (10, 10, 10, 10))
    ref = b(a(big))[..., 10:16, 10:16]
    assert torch.allclose(m(x), ref)


@torch.no_grad()
def test_dense_and_constrained():
    d = DenseMap(5, 3)
    x = torch.randn(4, 5)
    assert adjoint_error(d, d.transpose, x) < 1e-12
    exact = spectral_norm(d.weight.detach())
    assert exact <= float(d.norm_bound()) <= exact * (1 + 1e-9)
    c = Constrained(d)
    assert spectral_norm(dense_matrix(c, shape=(5,))) <= 1.0
    assert float(c.norm_bound()) == 1.0
    conv = Constrained(ConvMap(2, 5, 3, padding="zero"))
    assert spectral_norm(dense_matrix(conv, shape=(2, 6, 6))) <= 1.0
    x = torch.randn(1, 2, 6, 6)
    assert adjoint_error(conv, conv.transpose, x) < 1e-12


def test_norm_bound_is_differentiable_and_cached():
    c = ConvMap(2, 2, 3)
    b = c.norm_bound()
    assert b.requires_grad and b.dtype == torch.float64
    b.backward()
    assert c.weight.grad is not None and torch.isfinite(c.weight.grad).all()
    with torch.no_grad():
        first = c.norm_bound()
        assert c._bound_cache[1] == float(first)  # cached while weights are unchanged
        c.weight.mul_(2.0)
        assert math.isclose(float(c.norm_bound()), 2 * float(first), rel_tol=1e-12)


@torch.no_grad()
def test_float32_weights_bound_still_float64():
    c = ConvMap(2, 3, 3).float()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float32)
    assert c(x).dtype == torch.float32
    assert c.norm_bound().dtype == torch.float64


@torch.no_grad()
def test_errors():
    with pytest.raises(ValueError, match="ConvMap: expected odd kernel sizes"):
        ConvMap(1, 1, 4)
    with pytest.raises(ValueError, match="ConvMap: expected padding"):
        ConvMap(1, 1, 3, padding="reflect")
    with pytest.raises(ValueError, match="divisible by groups"):
        ConvMap(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"ConvMap.forward: expected input \(B, 2"):
        ConvMap(2, 1, 3)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="ConvMap.transpose: input_size"):
        ConvMap(1, 1, 3, stride=2).transpose(torch.zeros(1, 1, 4, 4), input_size=(3, 3))
    with pytest.raises(TypeError, match="MultiConv: expected a non-empty sequence"):
        MultiConv([DenseMap(2, 2)])
    with pytest.raises(ValueError, match="MultiConv: channels do not chain"):
        MultiConv([ConvMap(1, 2, 3), ConvMap(3, 1, 3)])
    with pytest.raises(TypeError, match="Constrained: expected a LinearMap"):
        Constrained(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="DenseMap.forward"):
        DenseMap(3, 2)(torch.zeros(2, 3, 1))


@pytest.mark.parametrize("chans, ks, groups", [((1, 4, 8, 60), (5, 5), (1, 1, 1)),
                                               ((1, 3, 6), (3, 5), (1, 3)),
                                               ((2, 4, 4), (3, 3), (1, 2))])
def test_composed_kernel_is_the_chain(chans, ks, groups):
    """The one-convolution path (no autograd, one input channel) and composed_kernel equal
    the chain of convolutions in float64, grouped and non-square kernels included."""
    torch.manual_seed(0)
    convs = [ConvMap(a, b, ks, groups=g) for a, b, g in zip(chans[:-1], chans[1:], groups,
                                                            strict=True)]
    M = MultiConv(convs).double()
    x = torch.randn(3, chans[0], 23, 17, dtype=torch.float64)
    chain = M._chain(torch.nn.functional.pad(x, (M.total_pad[1],) * 2 + (M.total_pad[0],) * 2))
    K = M.composed_kernel()
    assert K.shape == (chans[-1], chans[0], 2 * M.total_pad[0] + 1, 2 * M.total_pad[1] + 1)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, K, padding=M.total_pad), chain,
                               rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(M(x), chain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(M(x.requires_grad_(True)), chain, rtol=1e-12, atol=1e-12)


def test_composed_kernel_cache_follows_the_weights():
    """At inference the composed kernel is cached; an in-place weight update (an optimiser
    step, load_state_dict) must not leave a stale kernel."""
    m = MultiConv([ConvMap(1, 2, 3), ConvMap(2, 3, 3)])
    x = torch.randn(1, 1, 7, 7)
    with torch.no_grad():
        k1 = m.composed_kernel()
        assert m.composed_kernel() is k1               # cached
        m.convs[1].weight.add_(1.0)
        k2 = m.composed_kernel()
        assert not torch.allclose(k1, k2)
        assert torch.allclose(m(x), m._chain(torch.nn.functional.pad(x, (2, 2, 2, 2))),
                              atol=1e-6)
