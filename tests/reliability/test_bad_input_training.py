"""Property-based bad-input tests for TrainConfig, PatchDataset and Trainer (see ``_policy``).

Every field of the configuration gets random values (negative, zero, huge, NaN / Inf, wrong
types, bools for ints); the patch dataset gets random sources (shapes, dtypes, NaN,
layouts) and parameters; the trainer runs one tiny step on what is accepted and must end
with finite weights.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lipinverse.regularizers import ConvexRidge
from lipinverse.training import PatchDataset, TrainConfig, Trainer, TStepDenoisingLoss

from ._policy import DTYPES, attempt, fuzz, make_tensor

ANY_NUMBER = st.one_of(
    st.integers(-10, 10), st.integers(2**40, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.sampled_from(["1", "", "cosine", (0.1, 0.2), (0.1,), (0.2, 0.1), (0, float("inf"))]))

INT_FIELDS = ("epochs", "batch_size", "checkpoint_every", "patch_size")
OPTIONAL_INT_FIELDS = ("steps_per_epoch", "patch_stride", "val_limit")
FLOAT_FIELDS = {"lr": "positive", "weight_decay": "nonneg", "val_sigma": "nonneg",
                "grad_clip": "positive_or_none"}


def _is_int(v, optional=False):
    if v is None:
        return optional
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _is_float(v, kind):
    if v is None:
        return kind == "positive_or_none"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return v > 0 if kind.startswith("positive") else v >= 0


def config_valid(field, value) -> bool:
    """What a correct TrainConfig must accept for ``field = value``."""
    if field in INT_FIELDS:
        return _is_int(value)
    if field in OPTIONAL_INT_FIELDS:
        return _is_int(value, optional=True)
    if field in FLOAT_FIELDS:
        return _is_float(value, FLOAT_FIELDS[field])
    if field == "lr_schedule":
        return value in ("constant", "cosine")
    if field == "seed":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32
    if field == "sigma_range":
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            return False
        return 0 <= lo <= hi and math.isfinite(hi)
    raise AssertionError(field)


FIELDS = sorted((*INT_FIELDS, *OPTIONAL_INT_FIELDS, *FLOAT_FIELDS, "lr_schedule", "seed",
                 "sigma_range"))


@fuzz(100)
@given(field=st.sampled_from(FIELDS), value=ANY_NUMBER)
def test_train_config_fields(field, value):
    ok, out = attempt("TrainConfig", lambda: TrainConfig(**{field: value}))
    assert ok == config_valid(field, value), f"TrainConfig({field}={value!r}): {out}"


def _images():
    return make_tensor((2, 1, 12, 12), torch.float32, seed=4)


@fuzz(50)
@given(patch_size=st.one_of(st.integers(-2, 14), st.floats(allow_nan=True), st.booleans()),
       stride=st.one_of(st.none(), st.integers(-1, 5), st.just(2.0)),
       scales=st.lists(st.floats(min_value=-1, max_value=3)
                       | st.sampled_from([float("inf"), float("nan")]), max_size=2),
       max_patches=st.one_of(st.none(), st.integers(-2, 5), st.just(True)))
def test_patch_dataset_parameters(patch_size, stride, scales, max_patches):
    scales = tuple(scales)
    ok, out = attempt("PatchDataset", lambda: PatchDataset(
        _images(), patch_size, stride, scales=scales, max_patches=max_patches))
    valid = (isinstance(patch_size, int) and not isinstance(patch_size, bool)
             and 1 <= patch_size and (stride is None or (isinstance(stride, int) and stride >= 1))
             and bool(scales) and all(0 < s < math.inf for s in scales)
             and (max_patches is None or (type(max_patches) is int and max_patches >= 1)))
    if not valid:
        assert not ok, f"accepted patch_size={patch_size}, stride={stride}, scales={scales}, "\
                       f"max_patches={max_patches}"
    if ok:
        p = out.patches
        assert p.dtype == torch.float32 and p.shape[-1] == patch_size and len(out) >= 1
        assert max_patches is None or len(out) <= max_patches
        assert bool(torch.isfinite(p).all())


@fuzz(50)
@given(shape=st.lists(st.integers(0, 10), min_size=0, max_size=5),
       dtype=st.sampled_from(DTYPES), fill=st.sampled_from(["rand", "nan", "inf", "zero"]),
       layout=st.sampled_from(["contiguous", "strided", "channels_last"]))
def test_patch_dataset_sources(shape, dtype, fill, layout):
    src = make_tensor(shape, dtype, fill=fill, layout=layout)
    ok, out = attempt("PatchDataset", lambda: PatchDataset(src, patch_size=4))
    if ok:
        assert not dtype.is_complex
        assert fill in ("rand", "zero") or not dtype.is_floating_point  # ints have no NaN
        assert bool(torch.isfinite(out.patches).all())
        assert out.patches.dtype == torch.float32 and out.patches.shape[-2:] == (4, 4)
        # same patches as from the contiguous tensor
        ref = PatchDataset(src.contiguous(), patch_size=4)
        assert torch.equal(ref.patches, out.patches)


def _ridge():
    torch.manual_seed(0)
    return ConvexRidge(channels=(1, 2, 3), kernel_size=3, num_knots=7)


@fuzz(10)
@given(lr=st.sampled_from([1e-3, 1.0, 1e3, 1e30]),
       sigma_hi=st.sampled_from([0.0, 0.1, 10.0, 1e30]),
       batch_size=st.integers(1, 12), grad_clip=st.sampled_from([None, 1e-8, 1.0]),
       schedule=st.sampled_from(["constant", "cosine"]))
def test_trainer_extreme_but_valid_settings(lr, sigma_hi, batch_size, grad_clip, schedule):
    """Huge learning rates and noise levels either train to finite weights or stop loudly
    (FloatingPointError naming the step); too large batches are refused."""
    cfg = TrainConfig(epochs=1, batch_size=batch_size, steps_per_epoch=2, lr=lr,
                      sigma_range=(0.0, sigma_hi), grad_clip=grad_clip, lr_schedule=schedule,
                      progress=False)
    ds = PatchDataset(_images(), patch_size=4, stride=4)  # 18 patches
    model = _ridge()
    ok, out = attempt("Trainer", lambda: Trainer(model, TStepDenoisingLoss(t=2), cfg, ds).fit())
    if batch_size > len(ds):
        assert not ok
    if ok:
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        assert not bad, f"training 'succeeded' with non-finite weights {bad}"


@pytest.mark.parametrize("data", [
    torch.full((8, 1, 6, 6), float("nan")),
    torch.rand(2, 0, 8, 8),  # no channel: was an opaque reshape RuntimeError
    torch.rand(8, 1, 6, 6, dtype=torch.complex64),
    torch.rand(8, 6, 6, 2)[..., 0],  # (N, H, W) non-contiguous: accepted
    [torch.rand(6, 6), torch.rand(2, 6, 6)],
    "/nonexistent/folder",
    3,
])
def test_trainer_data_sources(data):
    cfg = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=1, progress=False)
    model = _ridge()
    ok, out = attempt("Trainer", lambda: Trainer(model, TStepDenoisingLoss(t=2), cfg,
                                                 data).fit())
    if ok:
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_trainer_overflowing_learning_rate():
    cfg = TrainConfig(epochs=1, batch_size=1, steps_per_epoch=3, lr=1e30, progress=False)
    ds = PatchDataset(_images(), patch_size=4, stride=4)
    model = _ridge()
    ok, err = attempt("Trainer", lambda: Trainer(model, TStepDenoisingLoss(t=2), cfg,
                                                 ds).fit())
    # regression: the weights overflow, then NaN reached LipschitzSpline (opaque IndexError)
    assert not ok and isinstance(err, FloatingPointError)


@pytest.mark.parametrize("device", ["nonsense", "cpu:x", 3, "cuda:7"])
def test_trainer_device_refused(device):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    cfg = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=1, progress=False, device=device)
    ds = PatchDataset(_images(), patch_size=4)
    ok, _ = attempt("Trainer", lambda: Trainer(_ridge(), TStepDenoisingLoss(t=2), cfg, ds))
    assert not ok
