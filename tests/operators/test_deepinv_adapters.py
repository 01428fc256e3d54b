"""Round trips between our operators and deepinv's LinearPhysics."""

import deepinv  # noqa: E402  (a hard dependency: an import error fails)
import pytest
import torch

import operators as O
from operators import kernels
from operators.deepinv import from_deepinv, to_deepinv
from operators.testing import check_adjoint


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


def _physics(name):
    g = torch.Generator().manual_seed(0)
    k = torch.rand(1, 1, 5, 5, generator=g)
    k = (k / k.sum()).float()  # deepinv's usual float32 filter
    return {
        "Blur reflect": lambda: deepinv.physics.Blur(filter=k, padding="reflect"),
        "BlurFFT": lambda: deepinv.physics.BlurFFT(img_size=(1, 12, 12), filter=k),
        "Inpainting": lambda: deepinv.physics.Inpainting(img_size=(1, 12, 12), mask=0.5,
                                                         rng=g),
        "Downsampling": lambda: deepinv.physics.Downsampling(img_size=(1, 12, 12),
                                                             filter="gaussian", factor=2),
    }[name]()


@pytest.mark.parametrize("name", ["Blur reflect", "BlurFFT", "Inpainting", "Downsampling"])
def test_from_deepinv_float32_physics_certified_norm_without_warning(name):
    """float32 deepinv physics: float64 inputs work, and the norm of a nonnegative physics
    is a certified bound (>= the exact norm of its float64 matrix), with no warning."""
    import warnings

    from operators.deepinv import _to_double
    from operators.testing import dense_matrix

    phys = _physics(name)
    A = from_deepinv(phys, (1, 12, 12))
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    assert A(x).dtype == torch.float64
    assert check_adjoint(A) < 1e-5  # float32 arithmetic inside
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bound = A.norm()
    import copy

    try:
        exact = from_deepinv(_to_double(copy.deepcopy(phys)), (1, 12, 12))
        true = float(torch.linalg.matrix_norm(dense_matrix(exact), 2))
    except RuntimeError:  # a physics that runs in float32 only: its float32 matrix
        true = float(torch.linalg.matrix_norm(dense_matrix(A).double(), 2))
    assert true <= bound <= true * (1 + 1e-4)


def test_from_deepinv_signed_physics_warns_uncertified():
    k = torch.tensor([[[[0.0, 0.25, 0.0], [0.25, 0.5, -0.25], [0.0, 0.25, 0.0]]]])
    A = from_deepinv(deepinv.physics.Blur(filter=k, padding="circular"), (1, 8, 8))
    assert not A.nonnegative
    with pytest.warns(UserWarning, match="power-iteration estimate"):
        A.norm()
