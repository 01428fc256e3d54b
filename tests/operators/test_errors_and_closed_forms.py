"""Bad input, closed-form norms and fast Gram solves of the concrete operators."""

import math

import numpy as np
import pytest
import torch

import operators as O
from operators import kernels
from operators.base import ConvergenceError
from operators.testing import check_norm, dense_matrix


def test_kernel_factories_sum_to_one_and_are_centred():
    for k in (kernels.gaussian(1.3), kernels.uniform(5), kernels.motion(11, seed=2)):
        assert k.dim() == 2
        assert abs(float(k.sum()) - 1.0) < 1e-12
        assert bool((k >= 0).all())
    g = kernels.gaussian(2.0)
    assert g.shape == (13, 13) and g.argmax() == 6 * 13 + 6
    torch.testing.assert_close(kernels.motion(9, seed=5), kernels.motion(9, seed=5))
    assert not torch.equal(kernels.motion(9, seed=5), kernels.motion(9, seed=6))


@pytest.mark.parametrize("call, match", [
    (lambda: kernels.gaussian(-1.0), "sigma > 0"),
    (lambda: kernels.gaussian(float("nan")), "sigma > 0"),
    (lambda: kernels.uniform(0), "size >= 1"),
    (lambda: kernels.gaussian(1e6), "default size"),
    (lambda: kernels.motion(9, smoothness=0.2), "smoothness > 0.5"),
    (lambda: kernels.motion(9, length=12.0), "does not fit"),
    (lambda: kernels.motion(2), "size >= 3"),
])
def test_kernel_factory_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("kernel, exc, match", [
    (torch.tensor([[1.0, float("nan")]]), ValueError, "finite kernel"),
    (torch.ones(3), ValueError, "2-D kernel"),
    (torch.ones(0, 3), ValueError, "non-empty kernel"),
    (torch.ones(3, 3, dtype=torch.complex64), TypeError, "real kernel"),
    ("gaussian", TypeError, "2-D torch.Tensor or numpy array"),
])
def test_blur_bad_kernel(kernel, exc, match):
    with pytest.raises(exc, match=match):
        O.Blur(kernel)


def test_blur_bad_padding_and_kernel_larger_than_image():
    with pytest.raises(ValueError, match="padding in"):
        O.Blur(kernels.gaussian(1.0), padding="mirror")
    A = O.Blur(kernels.uniform(9))
    with pytest.raises(ValueError, match=r"kernel \(9x9\) is larger than the image \(8x8\)"):
        A(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="larger than the image"):
        O.Blur(kernels.uniform(9), in_shape=(1, 4, 20))


def test_device_mismatch_is_reported():
    A = O.Blur(kernels.gaussian(1.0)).to("meta")
    with pytest.raises(ValueError, match="expected input on device meta"):
        A(torch.zeros(1, 1, 16, 16))


def test_numpy_kernel_accepted_and_blur_is_convolution():
    k = np.zeros((3, 3))
    k[1, 2] = 1.0  # shift by +1 column: (k * x)[i, j] = x[i, j - 1]
    x = torch.arange(25.0, dtype=torch.float64).reshape(1, 1, 5, 5)
    y = O.Blur(k, "circular")(x)
    torch.testing.assert_close(y, torch.roll(x, 1, dims=-1))
    yz = O.Blur(k, "zero")(x)
    torch.testing.assert_close(yz[..., 1:], x[..., :-1])
    assert float(yz[..., 0].abs().sum()) == 0.0


def test_circular_blur_norm_exact_and_shape_free_bound():
    k = kernels.gaussian(1.5)
    A = O.Blur(k, in_shape=(1, 16, 16))
    exact = torch.linalg.matrix_norm(dense_matrix(A), 2).item()
    assert abs(A.norm() - exact) < 1e-12
    assert O.Blur(k).norm() == pytest.approx(1.0, abs=1e-12)  # ||k||_1, attained
    signed = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    free = O.Blur(signed, "reflect").norm()
    for shape in [(1, 6, 7), (1, 9, 9)]:
        fixed = O.Blur(signed, "reflect", shape)
        exact = torch.linalg.matrix_norm(dense_matrix(fixed), 2).item()
        assert free >= exact and fixed.norm() >= exact


def test_finite_difference_norms_closed_form():
    for b in ("neumann", "circular"):
        for shape in [(1, 1, 7), (1, 5, 8), (2, 6, 3)]:
            D = O.FiniteDifference(b, shape)
            exact = torch.linalg.matrix_norm(dense_matrix(D), 2).item()
            assert D.norm() == pytest.approx(exact, rel=1e-12, abs=1e-12)
    assert O.FiniteDifference().norm() == pytest.approx(math.sqrt(8))
    with pytest.raises(ValueError, match="boundary in"):
        O.FiniteDifference("dirichlet")
    with pytest.raises(ValueError, match="even number of channels"):
        O.FiniteDifference().adjoint(torch.zeros(1, 3, 4, 4))


def test_mask_closed_forms_and_fusion():
    m1 = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m2 = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fused = O.Mask(m1) @ O.Mask(m2)
    assert isinstance(fused, O.Mask)
    torch.testing.assert_close(fused.mask, m1 * m2)
    assert O.Mask(m1).norm() == float(m1.max())
    with pytest.raises(ValueError, match="finite mask"):
        O.Mask(torch.tensor([[float("inf")]]))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        O.Mask(torch.ones(5))


def test_subsample_errors():
    with pytest.raises(ValueError, match="divisible by the factor 3"):
        O.Subsample(3)(torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match="factor >= 1"):
        O.Downsample(0)
    with pytest.raises(TypeError, match="int factor"):
        O.Downsample(2.5)


def test_algebra_errors():
    A = O.Blur(kernels.gaussian(1.0), in_shape=(1, 8, 8))
    B = O.Identity((1, 6, 6))
    with pytest.raises(TypeError, match="use `A @ B` to compose"):
        A * A
    with pytest.raises(ValueError, match="does not match"):
        A @ B
    with pytest.raises(ValueError, match="in_shape differ"):
        A + B
    with pytest.raises(TypeError, match="operators.Operator"):
        A @ torch.zeros(3)
    with pytest.raises(ValueError, match="finite scalar"):
        float("inf") * A


def test_conjugate_gradient_raises_when_capped():
    A = O.Blur(kernels.gaussian(2.0), "zero", (1, 16, 16))
    b = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    with pytest.raises(ConvergenceError, match="did not reach relative residual"):
        A.gram_solve(b, 1e-6, tol=1e-12, max_iter=3)


def test_circular_gram_solve_is_fft_exact():
    A = O.Blur(kernels.gaussian(2.0), in_shape=(1, 16, 16))
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    b = A.adjoint(A(x)) + 1e-3 * x
    torch.testing.assert_close(A.gram_solve(b, 1e-3), x, rtol=1e-8, atol=1e-8)


def test_check_norm_detects_a_wrong_certificate():
    class Liar(O.Identity):
        def _norm(self, dtype, device):
            return 0.5

    with pytest.raises(AssertionError, match="not an upper bound"):
        check_norm(Liar((1, 4, 4)))


def test_norm_fallback_warns_without_certificate():
    class Plain(O.Operator):
        def __init__(self):
            super().__init__((1, 4, 4), (1, 4, 4))

        def _forward(self, x):
            return x - 0.5 * torch.roll(x, 1, -1)

        def _adjoint(self, y):
            return y - 0.5 * torch.roll(y, -1, -1)

    P = Plain()
    with pytest.warns(UserWarning, match="power-iteration estimate"):
        bound = P.norm()
    exact = torch.linalg.matrix_norm(dense_matrix(P), 2).item()
    assert bound >= exact


def test_motion_kernels_blur_like_camera_shake():
    """Seeded shake paths: no pixel holds most of the weight, the support spans the path
    length given in pixels, and a 15x15 kernel visibly blurs a photo (< 30 dB)."""
    from lipinverse.io import builtin_image, to_tensor
    from lipinverse.metrics import image_metrics

    x = to_tensor(builtin_image("camera")[::2, ::2].copy(), dtype=torch.float64)
    for seed in range(8):
        k = kernels.motion(15, seed)
        assert float(k.min()) >= 0 and abs(float(k.sum()) - 1) < 1e-12
        assert float(k.max()) < 0.35
        assert image_metrics(O.Blur(k)(x), x)[0] < 30.0
        for length in (6.0, 20.0):
            k = kernels.motion(25, seed, length=length)
            rows, cols = torch.nonzero(k > 1e-4, as_tuple=True)
            extent = max(int(rows.max() - rows.min()), int(cols.max() - cols.min()))
            assert 0.3 * length <= extent <= length + 2
