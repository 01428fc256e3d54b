"""Round trips between our operators and deepinv's LinearPhysics."""

import pytest
import torch

import operators as O
from operators import kernels
from operators.deepinv import from_deepinv, to_deepinv
from operators.testing import check_adjoint

deepinv = pytest.importorskip("deepinv")


def test_to_deepinv_uses_our_maths():
    A = O.Blur(kernels.gaussian(1.0), in_shape=(1, 16, 16))
    phys = to_deepinv(A)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    y = A(x)
    torch.testing.assert_close(phys.A(x), y)
    torch.testing.assert_close(phys.A_adjoint(y), A.adjoint(y))
    gamma = 0.7
    z = torch.randn_like(x)
    p = phys.prox_l2(z, y, gamma)
    # optimality: gamma A^T (A p - y) + (p - z) = 0
    res = gamma * A.adjoint(A(p) - y) + (p - z)
    assert float(res.abs().max()) < 1e-8
    assert float(phys.compute_sqnorm(x)) == pytest.approx(A.norm() ** 2)


def test_from_deepinv_round_trip_and_adjoint():
    A = O.Blur(kernels.gaussian(1.2), in_shape=(1, 12, 12))
    back = from_deepinv(to_deepinv(A), (1, 12, 12), norm_bound=A.norm())
    assert back.out_shape == (1, 12, 12)
    assert check_adjoint(back) < 1e-10
    assert back.norm() == A.norm()
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(back(x), A(x))


def test_from_deepinv_native_physics():
    phys = deepinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5,
                                      rng=torch.Generator().manual_seed(0))
    A = from_deepinv(phys, (1, 8, 8))
    assert check_adjoint(A, dtype=torch.float32) < 1e-5
    with pytest.raises(TypeError, match="LinearPhysics"):
        from_deepinv(object(), (1, 8, 8))
