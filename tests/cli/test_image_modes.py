"""Every image mode PIL writes comes in as its RGB values in [0, 1] (or their luminance),
or is refused with a clear error; the training loader reads the same way."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2gray

from lipinverse import io
from lipinverse.training import load_images

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, size=(16, 12), dtype=np.uint8)


def test_cmyk_jpeg_of_grey_and_colour_is_not_zero_or_inverted(tmp_path):
    for name, src in (("grey", Image.fromarray(GREY).convert("RGB")),
                      ("colour", Image.fromarray(RGB))):
        path = tmp_path / f"{name}.jpg"
        src.convert("CMYK").save(path, quality=100)
        ref = np.asarray(Image.open(path).convert("RGB")) / 255.0
        img = io.read_image(path, gray=False)
        assert img.shape == (16, 12, 3)
        np.testing.assert_allclose(img, ref)
        # and close to the source (JPEG loses a little): not zero, not inverted
        src_rgb = np.asarray(src) / 255.0
        assert np.abs(img - src_rgb).mean() < 0.08
        assert np.corrcoef(img.ravel(), src_rgb.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("mode", ["P", "1", "LA", "L", "RGBA", "YCbCr", "I;16", "I"])
def test_png_and_tiff_modes(tmp_path, mode):
    base = Image.fromarray(RGB)
    if mode in ("I;16", "I"):
        arr16 = (GREY.astype(np.uint16) * 257)
        im = Image.fromarray(arr16)  # I;16
        if mode == "I":
            im = im.convert("I")  # 32-bit container of 16-bit data
        expect_grey = arr16 / 65535.0
    else:
        im = base.convert(mode)
        expect_grey = rgb2gray(np.asarray(im.convert("RGB")) / 255.0)
    path = tmp_path / f"x.{'tif' if mode in ('YCbCr', 'I') else 'png'}"
    im.save(path)
    grey = io.read_image(path)
    assert grey.shape == (16, 12) and grey.dtype == np.float64
    assert 0.0 <= grey.min() and grey.max() <= 1.0
    np.testing.assert_allclose(grey, expect_grey, atol=2e-3)


def test_float_tiff_with_nan_and_multiframe_are_refused(tmp_path):
    f = (GREY / 255.0).astype(np.float32)
    f[3, 4] = np.nan
    Image.fromarray(f, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        io.read_image(tmp_path / "nan.tif")
    frames = [Image.fromarray(GREY), Image.fromarray(255 - GREY)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="2 frames"):
        io.read_image(tmp_path / "anim.gif")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="regular image file"):
        io.read_image(fifo)


def test_training_loader_reads_like_the_cli_and_names_the_file(tmp_path):
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "a.jpg", quality=100)
    Image.fromarray(GREY).convert("P").save(tmp_path / "b.png")
    imgs = load_images(tmp_path, dtype=__import__("torch").float64)
    for t, name in zip(imgs, ("a.jpg", "b.png"), strict=True):
        np.testing.assert_allclose(t[0].numpy(), io.read_image(tmp_path / name))
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="c.png"):
        load_images(tmp_path)
