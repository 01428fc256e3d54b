"""The Fourier symbol of A^T A and the circulant metric that preconditions L-BFGS."""

import pytest
import torch

from operators import Blur, Mask, Radon, kernels
from operators.linalg import FourierMetric, LBFGSMemory, batch_dot, normal_symbol


def _circular_power(kernel, h, w):
    """|DFT|^2 of the kernel embedded in an h x w grid (centred at the origin)."""
    k = torch.zeros(h, w, dtype=torch.float64)
    kh, kw = kernel.shape
    k[:kh, :kw] = kernel
    k = torch.roll(k, (-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.rfft2(k).abs().square()


@pytest.mark.parametrize("padding", ["circular", "zero", "reflect"])
def test_symbol_of_a_blur_is_the_squared_kernel_spectrum(padding):
    """Exact for a circular blur; for other boundaries the impulse at the centre does not
    reach the edges, so the symbol is exact there too."""
    k = kernels.gaussian(1.3).double()
    A = Blur(k, padding, in_shape=(1, 24, 20))
    got = normal_symbol(A, (1, 24, 20), torch.float64)
    assert got.shape == (24, 11)
    torch.testing.assert_close(got, _circular_power(k, 24, 20), rtol=0, atol=1e-12)


def test_symbol_of_a_scaled_colour_blur_and_of_radon():
    k = kernels.gaussian(1.0).double()
    A = 3.0 * Blur(k, "circular", in_shape=(3, 16, 16))
    assert A.shift_invariant
    torch.testing.assert_close(normal_symbol(A, (3, 16, 16), torch.float64),
                               9.0 * _circular_power(k, 16, 16), rtol=0, atol=1e-11)
    R = Radon(32, 20, normalize=True)
    s = normal_symbol(R, (1, 32, 32), torch.float64)
    # A^T A is close to a convolution with 1/|x|: its symbol falls off with the frequency
    assert bool((s >= 0).all()) and float(s[0, 0]) == pytest.approx(float(s.max()))
    assert float(s[0, 0]) > 10 * float(s[8, 8])
    assert not Mask(torch.ones(1, 8, 8)).shift_invariant


def _symbol(n, g):
    """Symbols of real circulants: 0.5 + |DFT|^2 of real images (even in the frequency)."""
    return 0.5 + torch.fft.rfft2(torch.randn(n, 8, 8, generator=g, dtype=torch.float64)
                                 ).abs().square()


def test_metric_inverts_its_circulant_per_sample():
    g = torch.Generator().manual_seed(0)
    sym = _symbol(3, g)
    M = FourierMetric(sym, (8, 8))
    v = torch.randn(2, 2 * 64, generator=g, dtype=torch.float64)   # 2 channels per sample
    idx = torch.tensor([2, 0])
    img = v.reshape(2, 2, 8, 8)
    pv = torch.fft.irfft2(torch.fft.rfft2(img) * sym[idx][:, None], s=(8, 8)).reshape(2, -1)
    torch.testing.assert_close(M.solve(pv, idx), v, rtol=0, atol=1e-12)
    # symmetric positive definite: <u, P^-1 u> > 0 and <u, P^-1 v> = <P^-1 u, v>
    u = torch.randn(2, 128, generator=g, dtype=torch.float64)
    assert bool((batch_dot(u, M.solve(u, idx)) > 0).all())
    torch.testing.assert_close(batch_dot(u, M.solve(v, idx)), batch_dot(M.solve(u, idx), v))


def test_metric_rejects_a_symbol_that_is_not_positive_or_has_the_wrong_shape():
    with pytest.raises(ValueError, match="symbol > 0"):
        FourierMetric(torch.zeros(8, 5), (8, 8))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8, 5\)"):
        FourierMetric(torch.ones(8, 8), (8, 8))


def test_memory_starts_from_the_metric_and_keeps_the_secant_equation():
    """With H0 = gamma P^-1: the first direction is -gamma0 P^-1 g, gamma becomes
    s^T y / y^T P^-1 y, and the recursion maps the newest y to s (secant equation)."""
    g = torch.Generator().manual_seed(1)
    sym = _symbol(1, g)
    M = FourierMetric(sym, (8, 8))
    mem = LBFGSMemory(1, 64, 3, 1.0, torch.float64, "cpu", metric=M)
    idx = torch.tensor([0])
    grad = torch.randn(1, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mem.direction(grad, idx), -M.solve(grad, idx))
    for _ in range(3):
        s = torch.randn(1, 64, generator=g, dtype=torch.float64)
        y = s + 0.1 * torch.randn(1, 64, generator=g, dtype=torch.float64)
        mem.push(s, y, idx)
    torch.testing.assert_close(mem.gamma, batch_dot(s, y) / batch_dot(y, M.solve(y, idx)))
    torch.testing.assert_close(mem.direction(y, idx), -s, rtol=1e-10, atol=1e-10)


def test_set_metric_rescales_gamma_from_the_newest_pair():
    g = torch.Generator().manual_seed(2)
    M1, M2 = FourierMetric(_symbol(1, g), (8, 8)), FourierMetric(_symbol(1, g), (8, 8))
    mem = LBFGSMemory(2, 64, 2, 1.0, torch.float64, "cpu", metric=M1)
    idx = torch.tensor([0])   # sample 1 keeps no pair: its gamma stays gamma0
    s = torch.randn(1, 64, generator=g, dtype=torch.float64)
    y = s + 0.1 * torch.randn(1, 64, generator=g, dtype=torch.float64)
    mem.push(s, y, idx)
    mem.set_metric(M2)
    assert mem.metric is M2
    torch.testing.assert_close(mem.gamma[:1], batch_dot(s, y) / batch_dot(y, M2.solve(y, idx)))
    assert float(mem.gamma[1]) == 1.0
