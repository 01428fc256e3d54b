"""Blur(padding="valid"): the model of a real blurred photo (unknown boundary)."""

import numpy as np
import pytest
import scipy.ndimage
import torch

from operators import Blur, kernels
from operators.testing import check_adjoint, dense_matrix

KERNELS = {
    "gaussian": kernels.gaussian(1.2),
    "non-square, signed": torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.4, -0.1]],
                                       dtype=torch.float64),
}


@pytest.mark.parametrize("name", KERNELS)
def test_valid_is_the_linear_convolution_restricted(name):
    k = KERNELS[name]
    A = Blur(k, padding="valid")
    x = torch.randn(2, 3, 21, 18, dtype=torch.float64)
    y = A(x)
    kh, kw = k.shape
    assert y.shape == (2, 3, 21 - kh + 1, 18 - kw + 1)
    for b in range(2):
        for c in range(3):
            ref = scipy.ndimage.convolve(x[b, c].numpy(), k.numpy(), mode="constant")
            # scipy centres the kernel at (kh // 2, kw // 2), as Blur does: the valid part
            top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
            ref = ref[top:top + y.shape[-2], left:left + y.shape[-1]]
            np.testing.assert_allclose(y[b, c].numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("name", KERNELS)
def test_valid_adjoint_and_certified_norm(name):
    k = KERNELS[name]
    shape = (1, 30, 27)
    A = Blur(k, padding="valid", in_shape=shape)
    assert A.out_shape == (1, 30 - k.shape[0] + 1, 27 - k.shape[1] + 1)
    assert check_adjoint(A) < 1e-13
    M = dense_matrix(A)
    assert M.shape == (A.out_shape[1] * A.out_shape[2], 30 * 27)
    true = float(torch.linalg.matrix_norm(M, 2))
    assert A.norm() >= true
    assert A.norm() <= true * 1.2  # and not vacuous
    free = Blur(k, padding="valid")
    assert check_adjoint(free, shape=shape) < 1e-13
    assert free.norm() >= true  # the every-size bound too


def test_valid_crop_extend_and_shapes():
    A = Blur(kernels.gaussian(1.0), padding="valid")  # 7x7
    x = torch.rand(1, 1, 30, 26, dtype=torch.float64)
    y = A(x)
    assert A.crop(x).shape == y.shape
    assert A.extend(y).shape == x.shape
    assert A.input_shape(y.shape[1:]) == x.shape[1:]
    assert A.output_shape(x.shape[1:]) == y.shape[1:]
    # the centre of the crop is the pixel under the centre of the kernel
    torch.testing.assert_close(A.crop(x)[..., 0, 0], x[..., 3, 3])
    with pytest.raises(ValueError, match="larger than the image"):
        A(torch.rand(1, 1, 5, 30))
    with pytest.raises(ValueError, match="expected padding"):
        Blur(kernels.gaussian(1.0), padding="same")


def test_valid_deblurs_a_reflect_blurred_image_without_stripes():
    """A photo blurred the ordinary way (scipy, reflect boundary): the valid model recovers
    it up to the border, the circular model leaves errors along the border."""
    from lipinverse.functionals import L2Fidelity
    from lipinverse.regularizers import TV
    from lipinverse.solvers import PGD

    rng = np.random.default_rng(0)
    img = scipy.ndimage.gaussian_filter(rng.random((64, 64)), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    k = kernels.gaussian(1.5)
    y = torch.from_numpy(scipy.ndimage.convolve(img, k.numpy(), mode="reflect"))[None, None]
    truth = torch.from_numpy(img)
    err = {}
    for padding in ("circular", "valid"):
        A = Blur(k, padding=padding)
        res = PGD(L2Fidelity(A, y), TV(), lam=1e-5).solve(x0=A.extend(y), max_iter=200,
                                                          tol=1e-8)
        x = A.crop(res.x)[0, 0]
        assert x.shape == truth.shape
        e = (x - truth).abs()
        err[padding] = (float(torch.cat([e[:3].flatten(), e[-3:].flatten(), e[:, :3].flatten(),
                                         e[:, -3:].flatten()]).mean()),
                        float(e[12:-12, 12:-12].mean()))
    assert err["valid"][0] < 0.5 * err["circular"][0]
    assert err["valid"][1] <= 1.2 * err["circular"][1] + 1e-3
