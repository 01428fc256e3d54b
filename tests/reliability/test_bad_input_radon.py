"""Property-based bad-input tests for the Radon transform (see ``_policy``): random
geometries, angle sets (empty, NaN, 2-D, complex), detector sizes, distances, memory budgets
and backends; random inputs to ``forward`` / ``adjoint`` / ``fbp``."""

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from operators import Radon

from ._policy import DTYPES, assert_finite, attempt, fuzz, make_tensor

ANGLES = st.one_of(
    st.integers(-2, 9),
    st.sampled_from(["nan", "inf", "empty", "2d", "complex", "list", "int_tensor", "string",
                     "bool"]))


def _angles(kind):
    return {
        "nan": torch.tensor([0.0, float("nan")]),
        "inf": torch.tensor([0.0, float("inf")]),
        "empty": torch.zeros(0),
        "2d": torch.zeros(2, 2),
        "complex": torch.zeros(3, dtype=torch.complex64),
        "list": [0.0, 0.5, 1.0],
        "int_tensor": torch.tensor([0, 1, 2]),
        "string": "0,1",
        "bool": True,
    }.get(kind, kind)


@fuzz(60)
@given(n=st.one_of(st.integers(-1, 12), st.sampled_from([2.5, (8, 9), (6, 6), "8", None])),
       angles=ANGLES,
       detector=st.one_of(st.none(), st.integers(-1, 14), st.just(3.5)),
       geometry=st.sampled_from(["parallel", "fan", "cone"]),
       backend=st.sampled_from(["auto", "matrix", "matrix_free", "gpu"]),
       budget=st.sampled_from([0, 1, 2**30, -1, float("nan"), float("inf"), "1GB"]),
       source_distance=st.sampled_from([None, -5.0, 1.0, 40.0, float("nan")]),
       circle=st.sampled_from([False, True, 1]))
def test_radon_construction(n, angles, detector, geometry, backend, budget, source_distance,
                            circle):
    kw = dict(geometry=geometry, backend=backend, memory_budget=budget, circle=circle)
    if source_distance is not None:
        kw["source_distance"] = source_distance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # auto -> matrix_free fallback
        ok, A = attempt("Radon", lambda: Radon(n, _angles(angles), detector, **kw))
    if not ok:
        return
    assert geometry in ("parallel", "fan") and backend != "gpu"
    if backend == "matrix":
        assert A.matrix_bytes <= budget, "matrix backend built past its memory budget"
    x = make_tensor((1,) + tuple(A.in_shape), torch.float64, seed=3)
    y = A(x)
    assert y.shape[1:] == A.out_shape
    assert_finite("Radon.forward", y)
    assert_finite("Radon.adjoint", A.adjoint(y))
    assert math.isfinite(A.norm())


RADON = Radon(8, 5)
RADON_FREE = Radon(8, 5, backend="matrix_free")


@fuzz(60)
@given(which=st.sampled_from(["forward", "adjoint", "fbp"]),
       backend=st.sampled_from(["matrix", "matrix_free"]),
       shape=st.one_of(st.lists(st.integers(0, 12), min_size=0, max_size=5),
                       st.sampled_from([[2, 1, 8, 8], [1, 1, 5, 12], [3, 1, 5, 12]])),
       dtype=st.sampled_from(DTYPES), fill=st.sampled_from(["rand", "nan", "inf", "huge"]),
       layout=st.sampled_from(["contiguous", "strided", "channels_last"]))
def test_radon_inputs(which, backend, shape, dtype, fill, layout):
    A = RADON if backend == "matrix" else RADON_FREE
    x = make_tensor(shape, dtype, fill=fill, layout=layout)
    ok, out = attempt(f"Radon.{which}", lambda: getattr(A, which)(x))
    if ok:
        assert dtype in (torch.float32, torch.float64) and out.dtype == dtype
        if fill in ("rand", "huge"):
            assert_finite(f"Radon.{which}", out)
        ref = getattr(A, which)(x.contiguous())
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=0, equal_nan=True)


def test_memory_budget_is_checked_before_building():
    """A 512 x 512, 720-angle matrix needs GBs: refused (matrix) or matrix-free (auto), at
    once and without allocating it."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="memory_budget"):
        Radon(512, 720, backend="matrix", memory_budget=2**28)
    with pytest.warns(UserWarning, match="matrix_free"):
        A = Radon(512, 720, memory_budget=2**28)
    assert A.backend == "matrix_free" and A.matrix_bytes > 2**28
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200


def test_huge_image_size_is_refused_before_allocating():
    """Regression: Radon(100000, ...) allocated its n^2 int64 pixel index (80 GB) before any
    check and failed in torch's allocator (RuntimeError 'can't allocate memory')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the matrix_free fallback
        ok, _ = attempt("Radon", lambda: Radon(100_000, 4, memory_budget=2**30))
    assert not ok
