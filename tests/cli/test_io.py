"""lipinverse.io: image reading / writing conventions, kernel specs, figures."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.io
import torch

from lipinverse import io


def _save(path, arr):
    skimage.io.imsave(str(path), arr, check_contrast=False)
    return path


# ------------------------------------------------------------------ read_image
def test_read_uint8_gray_is_scaled_by_255(tmp_path):
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    img = io.read_image(_save(tmp_path / "g.png", arr))
    assert img.dtype == np.float64 and img.shape == (8, 8)
    np.testing.assert_allclose(img, arr / 255.0, atol=0)


def test_read_uint16_is_scaled_by_65535(tmp_path):
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    img = io.read_image(_save(tmp_path / "g16.png", arr))
    np.testing.assert_allclose(img, arr / 65535.0)


def test_read_rgb_and_rgba_give_luminance(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    expected = (0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2]) / 255.0
    np.testing.assert_allclose(io.read_image(_save(tmp_path / "c.png", rgb)), expected,
                               atol=1e-12)
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_allclose(io.read_image(_save(tmp_path / "a.png", rgba)), expected,
                               atol=1e-12)


def test_read_float_image_outside_unit_range_is_refused(tmp_path):
    arr = np.linspace(-0.5, 2.0, 64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "f.tif"
    skimage.io.imsave(str(path), arr, check_contrast=False)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        io.read_image(path)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="could not read"):
        io.read_image(bad)
    with pytest.raises(ValueError, match="directory"):
        io.read_image(tmp_path)


def test_builtin_camera_and_unknown_name():
    cam = io.read_image("skimage:camera")
    assert cam.shape == (512, 512) and 0 <= cam.min() and cam.max() <= 1
    with pytest.raises(ValueError, match="unknown scikit-image image"):
        io.read_image("skimage:no_such_image")


# ----------------------------------------------------------------- write_image
def test_write_then_read_roundtrip_within_quantisation(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(9, 11))
    path = io.write_image(tmp_path / "sub" / "x.png", torch.from_numpy(x)[None, None])
    back = io.read_image(path)
    assert np.abs(back - x).max() <= 0.5 / 255 + 1e-12


def test_write_clips_for_display_only(tmp_path):
    x = np.array([[-0.2, 0.5], [1.3, 1.0]])
    back = io.read_image(io.write_image(tmp_path / "c.png", x))
    np.testing.assert_allclose(back, [[0.0, 128 / 255], [1.0, 1.0]])
    assert x[0, 0] == -0.2  # the caller's array is untouched


def test_write_rejects_nan_and_bad_shape(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        io.write_image(tmp_path / "n.png", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match=r"write_image: expected a grey \(H, W\) or"):
        io.write_image(tmp_path / "s.png", np.zeros((2, 3, 4, 4)))


def test_colour_round_trip_tensor_array_and_crop(tmp_path):
    """A colour image reads as (H, W, 3) with gray=False and as its luminance by default;
    to_tensor gives (1, 3, H, W); write_image takes the tensor back to the same pixels."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
    from skimage.color import rgb2gray

    skimage.io.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    img = io.read_image(tmp_path / "c.png", gray=False)
    assert img.shape == (40, 36, 3)
    np.testing.assert_allclose(img, rgb / 255.0)
    np.testing.assert_allclose(io.read_image(tmp_path / "c.png"), rgb2gray(rgb / 255.0))
    t = io.to_tensor(img, dtype=torch.float64)
    assert t.shape == (1, 3, 40, 36)
    np.testing.assert_allclose(t[0, 1].numpy(), img[..., 1])
    io.write_image(tmp_path / "back.png", t)
    np.testing.assert_array_equal(skimage.io.imread(tmp_path / "back.png"), rgb)
    c = io.center_crop(img, 16)  # factor 2: 2x2 means per channel, then the crop
    assert c.shape == (16, 16, 3)
    assert io.center_crop(io.read_image(tmp_path / "c.png"), 16).shape == (16, 16)


# ----------------------------------------------------------------- center_crop
def test_center_crop_takes_the_middle_and_downscales_large_images():
    img = np.arange(40 * 50, dtype=float).reshape(40, 50)
    c = io.center_crop(img, 20)  # factor 2: 2x2 means, then crop
    assert c.shape == (20, 20)
    small = img.reshape(20, 2, 25, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(c, small[0:20, 2:22])
    c = io.center_crop(img, 30)  # factor 1: a plain crop
    np.testing.assert_allclose(c, img[5:35, 10:40])
    with pytest.raises(ValueError, match="smaller than"):
        io.center_crop(img, 41)


# ---------------------------------------------------------------- parse_kernel
@pytest.mark.parametrize("spec", ["gaussian:2.0", "uniform:5", "motion:3", "motion:3:9"])
def test_parse_kernel_builtin_specs_sum_to_one(spec):
    k = io.parse_kernel(spec)
    assert k.dim() == 2 and k.dtype == torch.float64
    assert abs(float(k.sum()) - 1) < 1e-12 and bool((k >= 0).all())


def test_parse_kernel_matches_factories():
    from operators import kernels

    assert torch.equal(io.parse_kernel("gaussian:1.5"), kernels.gaussian(1.5))
    assert torch.equal(io.parse_kernel("uniform:7"), kernels.uniform(7))
    assert torch.equal(io.parse_kernel("motion:4"), kernels.motion(15, 4))
    assert not torch.equal(io.parse_kernel("motion:4"), io.parse_kernel("motion:5"))


def test_parse_kernel_files_are_normalised(tmp_path):
    k = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=float)
    np.save(tmp_path / "k.npy", k)
    np.testing.assert_allclose(io.parse_kernel(str(tmp_path / "k.npy")).numpy(), k / 8)
    np.savez(tmp_path / "ks.npz", arr_0=k, arr_1=2 * k[:2])
    np.testing.assert_allclose(io.parse_kernel(str(tmp_path / "ks.npz")).numpy(), k / 8)
    np.testing.assert_allclose(io.parse_kernel(f"{tmp_path / 'ks.npz'}:arr_1").numpy(),
                               k[:2] / 7)


@pytest.mark.parametrize("spec, match", [
    ("", "expected a kernel spec"),
    ("blob:3", "unknown kernel spec"),
    ("gaussian", "expected a standard deviation"),
    ("gaussian:abc", "expected a standard deviation"),
    ("gaussian:-1", "0 < sigma"),
    ("gaussian:nan", "finite"),
    ("uniform:2.5", "integer size"),
    ("uniform:0", "1 <= size"),
    ("motion:x", "integer seed"),
    ("motion:1:2", "3 <= size"),
])
def test_parse_kernel_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        io.parse_kernel(spec)


def test_parse_kernel_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such kernel file"):
        io.parse_kernel(str(tmp_path / "nope.npy"))
    np.save(tmp_path / "neg.npy", np.array([[1.0, -2.0]]))
    with pytest.raises(ValueError, match="nonnegative"):
        io.parse_kernel(str(tmp_path / "neg.npy"))
    np.save(tmp_path / "three.npy", np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        io.parse_kernel(str(tmp_path / "three.npy"))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="could not read"):
        io.parse_kernel(str(tmp_path / "junk.npy"))
    np.savez(tmp_path / "a.npz", arr_0=np.ones((3, 3)))
    with pytest.raises(ValueError, match="no array 'zz'"):
        io.parse_kernel(f"{tmp_path / 'a.npz'}:zz")


# ---------------------------------------------------------------------- figure
def test_history_series_accepts_records_dicts_and_tensors():
    class Rec:  # a record-list history
        def __init__(self, r):
            self.relative_change = r

    assert io.history_series([Rec(1.0), Rec(None), Rec(torch.tensor([0.5, 0.25]))]) == [1.0, 0.5]
    assert io.history_series({"relative_change": [3.0, float("nan"), 1.0]}) == [3.0, 1.0]
    assert io.history_series([{"relative_change": 2.0}]) == [2.0]
    assert io.history_series(None) == []

    class Hist:  # the solvers' History: tensors (K, B), worst sample per iteration
        relative_change = torch.tensor([[1.0, 3.0], [0.5, 0.2]])
        objective = None

    assert io.history_series(Hist()) == [3.0, 0.5]
    assert io.history_series(Hist(), "objective") == []


def test_save_figure_writes_a_png(tmp_path):
    class Result:
        history = {"relative_change": [1.0, 0.1, 0.01]}

    x = np.random.default_rng(0).uniform(size=(16, 16))
    p = io.save_figure(tmp_path / "f.png", [("a", x), ("b", torch.from_numpy(x)), ("c", None)],
                       curves={"r": Result()})
    img = skimage.io.imread(p)
    assert img.ndim == 3 and img.shape[1] > img.shape[0]
    with pytest.raises(ValueError, match="nothing to draw"):
        io.save_figure(tmp_path / "g.png", [])


def test_image_metrics_on_colour_tensors_and_arrays():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from lipinverse.metrics import image_metrics
    rng = np.random.default_rng(0)
    truth = rng.random((32, 40, 3))
    x = np.clip(truth + 0.05 * rng.standard_normal(truth.shape), 0, 1)
    want = (peak_signal_noise_ratio(truth, x, data_range=1.0),
            structural_similarity(truth, x, data_range=1.0, channel_axis=-1))
    assert image_metrics(x, truth) == pytest.approx(want)
    as_tensor = [torch.from_numpy(a).permute(2, 0, 1)[None] for a in (x, truth)]
    assert image_metrics(*as_tensor) == pytest.approx(want)
    with pytest.raises(ValueError, match="same shape"):
        image_metrics(x[..., :2], truth)
