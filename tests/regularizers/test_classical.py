"""Tikhonov and TV: values by hand, prox optimality and certificates, warm start, errors."""

import math

import pytest
import torch

from lipinverse.denoisers import ProxDenoiser
from lipinverse.regularizers import TV, Tikhonov
from operators import ConvergenceError


def _img(rows):
    return torch.tensor(rows, dtype=torch.float64)[None, None]


# ---------------------------------------------------------------- Tikhonov
def test_tikhonov_value_grad_prox():
    g = Tikhonov()
    x = torch.randn(3, 1, 4, 5, dtype=torch.float64)
    assert torch.allclose(g(x), 0.5 * (x**2).flatten(1).sum(1))
    assert torch.equal(g.grad(x), x)
    u = g.prox(x, 0.3)
    # optimality of argmin 1/2||u - x||^2 + tau/2 ||u||^2:  u - x + tau u = 0
    assert torch.allclose(u - x + 0.3 * u, torch.zeros_like(x), atol=1e-15)
    assert g.convex and g.weak_convexity == 0 and g.grad_lipschitz == 1.0
    with pytest.raises(ValueError, match=r"Tikhonov.prox: expected a finite tau >= 0, got -1"):
        g.prox(x, -1.0)
    with pytest.raises(TypeError, match="Tikhonov.__call__: expected a torch.Tensor"):
        g([1.0])


# --------------------------------------------------------------- TV values
def test_tv_values_by_hand():
    x = _img([[0.0, 1.0], [1.0, 1.0]])
    # neumann: only pixel (0,0) has a gradient, (dv, dh) = (1, 1)
    assert TV(isotropic=True)(x).item() == pytest.approx(math.sqrt(2))
    assert TV(isotropic=False)(x).item() == pytest.approx(2.0)
    # circular: (0,0): (1, 1); (0,1): (0, -1); (1,0): (-1, 0); (1,1): (0, 0)
    assert TV(True, "circular")(x).item() == pytest.approx(2 + math.sqrt(2))
    assert TV(False, "circular")(x).item() == pytest.approx(4.0)
    # per-sample values, channels summed
    xb = torch.cat([x, 2 * x])
    assert TV()(xb).tolist() == pytest.approx([math.sqrt(2), 2 * math.sqrt(2)])
    assert TV()(torch.cat([x, x], dim=1)).item() == pytest.approx(2 * math.sqrt(2))


@pytest.mark.parametrize("isotropic", [True, False])
def test_tv_prox_two_pixels_closed_form(isotropic):
    # 1-D TV of (a, b): the prox moves both ends by tau towards each other, or to the mean
    tv = TV(isotropic, tol=1e-10)
    u = tv.prox(_img([[0.0, 1.0]]), 0.1)
    assert u.flatten().tolist() == pytest.approx([0.1, 0.9], abs=1e-9)
    u = tv.prox(_img([[0.0, 1.0]]), 0.7)
    assert u.flatten().tolist() == pytest.approx([0.5, 0.5], abs=1e-9)


def _primal(tv, u, x, tau):
    return 0.5 * (u - x).flatten(1).pow(2).sum(1) + tau * tv(u)


@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize("boundary", ["neumann", "circular"])
def test_tv_prox_is_certified_minimiser(isotropic, boundary):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 7, 6, generator=g, dtype=torch.float64)
    tau, tol = 0.15, 1e-5
    tv = TV(isotropic, boundary, tol=tol, max_iter=20000)
    u = tv.prox(x, tau)
    # the certificate: ||u - prox|| <= sqrt(2 gap) <= tol ||x||
    bound = torch.sqrt(2 * tv.last_gap)
    assert bool((bound <= tol * x.flatten(1).norm(dim=1)).all())
    # u minimises the primal up to that accuracy: no random perturbation does better
    pu = _primal(tv, u, x, tau)
    for scale in (1e-1, 1e-3, 1e-5):
        for _ in range(10):
            d = scale * torch.randn(x.shape, generator=g, dtype=torch.float64)
            assert bool((pu <= _primal(tv, u + d, x, tau) + tv.last_gap + 1e-14).all())
    # a tighter solve lands within the sum of the two certified bounds
    tv_tight = TV(isotropic, boundary, tol=1e-7, max_iter=50000)
    tight = tv_tight.prox(x, tau)
    both = bound + torch.sqrt(2 * tv_tight.last_gap)
    assert bool(((u - tight).flatten(1).norm(dim=1) <= both).all())


def test_tv_prox_firmly_nonexpansive():
    g = torch.Generator().manual_seed(2)
    tv = TV(tol=1e-7, max_iter=50000)
    D = ProxDenoiser(tv, 0.2)
    assert D.lipschitz_bound() == 1.0 and D.averagedness == 0.5
    for _ in range(5):
        a = torch.rand(1, 1, 6, 6, generator=g, dtype=torch.float64)
        b = a + 0.3 * torch.randn(a.shape, generator=g, dtype=torch.float64)
        da, db = D(a), D(b)
        lhs = (da - db).pow(2).sum()
        rhs = ((da - db) * (a - b)).sum()
        # inexactness tol * (||a|| + ||b||) enters linearly through ||a - b||
        slack = 1e-7 * (a.norm() + b.norm()) * 3 * (a - b).norm()
        assert lhs <= rhs + slack


def test_tv_warm_start_reduces_iterations():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    tv = TV(tol=1e-5)
    tv.prox(x, 0.1)
    cold = tv.last_iterations
    x2 = x + 1e-3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    tv.prox(x2, 0.1)
    warm = tv.last_iterations
    tv.reset_warm_start()
    tv.prox(x2, 0.1)
    assert warm < tv.last_iterations and warm < cold
    # the same input again: the stored dual already certifies it
    tv.prox(x2, 0.1)
    assert tv.last_iterations == 0


def test_tv_prox_edge_cases_and_errors():
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    tv = TV()
    assert torch.equal(tv.prox(x, 0.0), x)
    const = torch.full((1, 1, 5, 5), 0.3, dtype=torch.float64)
    assert torch.allclose(tv.prox(const, 1.0), const)
    with pytest.raises(ConvergenceError, match="TV.prox: the duality gap did not certify"):
        TV(tol=1e-12).prox(torch.rand(1, 1, 16, 16, dtype=torch.float64), 0.5, max_iter=3)
    with pytest.raises(ValueError, match="TV.prox: expected a finite tau >= 0, got -0.1"):
        tv.prox(x, -0.1)
    with pytest.raises(ValueError, match="expected a 4-D tensor"):
        tv.prox(x[0], 0.1)
    with pytest.raises(ValueError, match="boundary"):
        TV(boundary="periodic")
    with pytest.raises(TypeError, match="isotropic to be a bool"):
        TV(isotropic="yes")
    with pytest.raises(ValueError, match="tol > 0"):
        TV(tol=0.0)
    with pytest.raises(ValueError, match="ProxDenoiser.__call__: the strength is fixed"):
        ProxDenoiser(tv, 0.1)(x, sigma=0.1)


def test_prox_denoiser_requires_convexity():
    class NotConvex:
        convex = False

        def prox(self, x, tau):
            return x

    with pytest.raises(ValueError, match="not firmly nonexpansive"):
        ProxDenoiser(NotConvex(), 0.1)
    with pytest.raises(TypeError, match="prox"):
        ProxDenoiser(object(), 0.1)
    D = ProxDenoiser(Tikhonov(), 1.0)
    x = torch.ones(1, 1, 2, 2)
    assert torch.equal(D(x), x / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tv_float32_and_dtype(dtype):
    x = torch.rand(2, 1, 8, 8, dtype=dtype)
    u = TV().prox(x, 0.1)
    assert u.dtype == dtype and u.shape == x.shape
