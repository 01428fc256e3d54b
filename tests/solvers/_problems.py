"""Small float64 deblurring problems shared by the solver tests."""


import pytest
import torch

from lipinverse.functionals import L2Fidelity
from operators import Blur, kernels

SIZE = 12


def make_problem(batch=2, size=SIZE, noise=0.02, seed=0, blur=1.2):
    g = torch.Generator().manual_seed(seed)
    A = Blur(kernels.gaussian(blur), in_shape=(1, size, size))
    x = torch.rand(batch, 1, size, size, generator=g, dtype=torch.float64)
    y = A(x) + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return A, y


def tikhonov_closed_form(A, y, lam):
    r"""Fourier solution of :math:`(A^\top A + \lambda I) x = A^\top y` for a circular blur."""
    h, w = y.shape[-2:]
    k = torch.zeros(h, w, dtype=y.dtype)
    kh, kw = A.kernel.shape
    k[:kh, :kw] = A.kernel
    k = torch.roll(k, (-(kh // 2), -(kw // 2)), dims=(0, 1))
    kf = torch.fft.fft2(k)
    return torch.fft.ifft2(kf.conj() * torch.fft.fft2(y) / (kf.abs() ** 2 + lam)).real


@pytest.fixture
def problem():
    A, y = make_problem()
    return A, y, L2Fidelity(A, y)


def rel_err(a, b):
    return ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max().item()


class Denoiser:
    """A test denoiser from a function and declared certificates."""

    def __init__(self, fn, lip=1.0, alpha=None):
        self.fn, self.lip, self.averagedness = fn, lip, alpha

    def __call__(self, x, sigma=None):
        return self.fn(x)

    def lipschitz_bound(self):
        return self.lip


class SmoothPrior:
    """A smooth prior from value / gradient functions and declared certificates."""

    def __init__(self, value, grad, lipschitz, convex, weak_convexity=0.0):
        self.value, self._grad = value, grad
        self.grad_lipschitz, self.convex, self.weak_convexity = lipschitz, convex, weak_convexity

    def __call__(self, x):
        return self.value(x)

    def grad(self, x):
        return self._grad(x)


def log_prior():
    r""":math:`R(x) = \sum \log(1 + x^2)`: smooth, :math:`R'' \in [-1/4, 2]`, so
    ``grad_lipschitz = 2`` and ``weak_convexity = 1/4`` (nonconvex)."""
    return SmoothPrior(lambda x: torch.log1p(x**2).flatten(1).sum(1),
                       lambda x: 2 * x / (1 + x**2), 2.0, False, 0.25)
