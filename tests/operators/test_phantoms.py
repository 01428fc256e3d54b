"""Tests of the tomography phantoms."""

import pytest
import torch

from operators.phantoms import random_ellipses, shepp_logan


def _outside_circle(n):
    c = (n - 1) / 2
    i, j = torch.meshgrid(torch.arange(n) - c, torch.arange(n) - c, indexing="ij")
    return i**2 + j**2 > (n / 2) ** 2


@pytest.mark.parametrize("n", [32, 57, 128])
def test_shepp_logan_shape_range_and_support(n):
    x = shepp_logan(n)
    assert x.shape == (1, 1, n, n) and x.dtype == torch.float64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) > 0.5  # the (thin, anti-aliased) skull is at 1
    assert float(x[0, 0][_outside_circle(n)].abs().max()) < 1e-3  # anti-aliasing blur only


def test_shepp_logan_matches_scikit_image_at_native_size():
    from skimage.data import shepp_logan_phantom

    ref = torch.from_numpy(shepp_logan_phantom())
    torch.testing.assert_close(shepp_logan(400, dtype=torch.float64)[0, 0], ref)
    assert shepp_logan(32, dtype=torch.float32).dtype == torch.float32


def test_random_ellipses_seeded_in_range_and_inside_circle():
    a = random_ellipses(48, n_ellipses=6, seed=7, batch=3)
    b = random_ellipses(48, n_ellipses=6, seed=7, batch=3)
    c = random_ellipses(48, n_ellipses=6, seed=8, batch=3)
    assert a.shape == (3, 1, 48, 48)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # images of a batch differ
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float(a[:, 0][:, _outside_circle(48)].abs().max()) == 0.0
    # several distinct intensities: the inner ellipses are visible
    assert all(len(torch.unique(a[k])) >= 3 for k in range(3))


def test_random_ellipses_zero_inner_ellipses_is_one_body():
    x = random_ellipses(32, n_ellipses=0, seed=1)
    assert len(torch.unique(x)) == 2


@pytest.mark.parametrize("call, exc, match", [
    (lambda: shepp_logan(4), ValueError, "n >= 8"),
    (lambda: shepp_logan(32.0), TypeError, "expected an int image size n"),
    (lambda: random_ellipses(4), ValueError, "n >= 8"),
    (lambda: random_ellipses(32, n_ellipses=-1), ValueError, "n_ellipses"),
    (lambda: random_ellipses(32, batch=0), ValueError, "batch"),
    (lambda: random_ellipses(32, seed=1.5), TypeError, "seed as an int"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
