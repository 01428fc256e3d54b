"""Property-based bad-input tests for operators and the data fidelity.

Every call either works correctly or raises one clear ValueError / TypeError: never an
opaque internal error, a hang or a silent NaN.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import operators as O
from lipinverse.functionals import L2Fidelity
from operators import kernels

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32,
          torch.int64, torch.complex64, torch.bool]


def _ops():
    return {
        "blur": O.Blur(kernels.gaussian(1.0)),
        "blur_zero_fixed": O.Blur(kernels.gaussian(1.0), "zero", (1, 8, 8)),
        "mask": O.Mask(torch.ones(1, 8, 8)),
        "grad": O.FiniteDifference(),
        "down": O.Downsample(2, kernels.gaussian(0.7)),
    }


OPS = _ops()


@SETTINGS
@given(name=st.sampled_from(sorted(OPS)),
       shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
       dtype=st.sampled_from(DTYPES),
       adjoint=st.booleans())
def test_random_shapes_and_dtypes(name, shape, dtype, adjoint):
    op = OPS[name]
    x = torch.zeros(shape, dtype=dtype) if dtype != torch.bool else torch.zeros(shape).bool()
    fn = op.adjoint if adjoint else op.forward
    try:
        y = fn(x)
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert type(op).__name__ in msg or "expected" in msg
        assert "expected" in msg
        return
    # it worked: the input must have been a valid float batch
    assert dtype in (torch.float32, torch.float64)
    assert y.dtype == dtype and y.dim() == 4
    assert bool(torch.isfinite(y).all())


@SETTINGS
@given(sigma=st.floats(allow_nan=True, allow_infinity=True, width=64),
       size=st.one_of(st.none(), st.integers(-3, 15)))
def test_gaussian_factory_params(sigma, size):
    try:
        k = kernels.gaussian(sigma, size)
    except (ValueError, TypeError) as err:
        assert "expected" in str(err)
        ok_size = (size is None and sigma <= (kernels.MAX_SIZE - 1) / 6) or (
            size is not None and 1 <= size <= kernels.MAX_SIZE)
        assert not (math.isfinite(sigma) and sigma > 0 and ok_size)
        return
    assert math.isfinite(sigma) and sigma > 0
    assert abs(float(k.sum()) - 1) < 1e-9 and bool(torch.isfinite(k).all())


@SETTINGS
@given(rho=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                     st.just("1"), st.just(None)))
def test_gram_solve_shift(rho):
    op = OPS["blur_zero_fixed"]
    b = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    try:
        x = op.gram_solve(b, rho)
    except (ValueError, TypeError) as err:
        assert "shift" in str(err)
        return
    assert float(rho) > 0 and math.isfinite(float(rho))
    assert bool(torch.isfinite(x).all())


@SETTINGS
@given(bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
       where=st.integers(0, 63))
def test_fidelity_refuses_nonfinite_measurements(bad, where):
    A = OPS["blur_zero_fixed"]
    y = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    y.view(2, -1)[1, where] = bad
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        L2Fidelity(A, y)


def test_huge_and_tiny_values_stay_finite():
    A = O.Blur(kernels.gaussian(1.0), in_shape=(1, 16, 16))
    for scale in (1e-300, 1e300):
        x = torch.full((1, 1, 16, 16), scale, dtype=torch.float64)
        y = A(x)
        assert bool(torch.isfinite(y).all())


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 3, 3), (2, 1, 2, 3)])
@pytest.mark.parametrize("adjoint", [False, True])
def test_downsample_refuses_images_smaller_than_its_kernel(shape, adjoint):
    """Regression: Downsample (a composition) did not check the size its blur sees; a 1x1
    image gave torch's 'expanded size' RuntimeError from inside the circular blur."""
    op = OPS["down"]
    fn = op.adjoint if adjoint else op.forward
    with pytest.raises(ValueError, match="expected an image at least as large as the kernel"):
        fn(torch.zeros(shape))
