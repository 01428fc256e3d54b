"""The CLI on what users bring: colour photos (kept by default, ``--gray`` for luminance)
and photos blurred with an unknown boundary (``--boundary valid``, the ``--observed``
default)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import skimage.data
import skimage.io
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import resize

from lipinverse import cli
from operators import kernels


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 48x48 colour photo (astronaut), its reflect-blurred version, and the truth."""
    rgb = resize(skimage.data.astronaut().astype(float) / 255, (48, 48), anti_aliasing=True)
    rgb = (rgb * 255).round() / 255
    k = kernels.gaussian(1.5).numpy()
    blurred = np.stack([scipy.ndimage.convolve(rgb[..., c], k, mode="reflect")
                        for c in range(3)], -1)
    folder = tmp_path_factory.mktemp("photo")
    for name, img in (("clean.png", rgb), ("blurred.png", blurred)):
        skimage.io.imsave(folder / name, (img * 255).round().astype(np.uint8),
                          check_contrast=False)
    blurred = skimage.io.imread(folder / "blurred.png") / 255.0
    return folder, rgb, blurred


def _main(*argv) -> int:
    return cli.main([str(a) for a in argv])


def test_colour_is_kept_and_gray_gives_luminance(photo, tmp_path, capsys):
    folder, _, _ = photo
    assert _main("deblur", folder / "clean.png", "--prior", "tv", "--kernel", "gaussian:1.0",
                 "--max-iter", "20", "--out", tmp_path / "c.png", "-q") == 0
    out = capsys.readouterr().out
    assert "colour 48x48" in out
    assert skimage.io.imread(tmp_path / "c.png").shape == (48, 48, 3)
    assert _main("denoise", folder / "clean.png", "--prior", "crr", "--sigma", "15",
                 "--out", tmp_path / "d.png", "-q") == 0
    out = capsys.readouterr().out
    psnr = {ln.split()[0]: float(ln.split("PSNR")[1].split("dB")[0])
            for ln in out.splitlines() if "PSNR" in ln}
    assert psnr["crr"] > psnr["noisy"] + 3
    assert skimage.io.imread(tmp_path / "d.png").shape == (48, 48, 3)
    assert _main("denoise", folder / "clean.png", "--prior", "tv", "--gray",
                 "--out", tmp_path / "g.png", "-q") == 0
    assert skimage.io.imread(tmp_path / "g.png").shape == (48, 48)


def test_observed_photo_with_unknown_boundary(photo, tmp_path):
    """On a photo blurred the ordinary way, the valid model (the --observed default) beats
    the input and the circular model; the output has the photo's size."""
    folder, truth, blurred = photo
    score = {}
    for boundary in ("valid", "circular"):
        out = tmp_path / f"{boundary}.png"
        assert _main("deblur", folder / "blurred.png", "--observed", "--boundary", boundary,
                     "--kernel", "gaussian:1.5", "--prior", "tv", "--lam", "0.002",
                     "--max-iter", "150", "--out", out, "-q") == 0
        x = skimage.io.imread(out) / 255.0
        assert x.shape == truth.shape
        score[boundary] = peak_signal_noise_ratio(truth, x, data_range=1.0)
    before = peak_signal_noise_ratio(truth, blurred, data_range=1.0)
    assert score["valid"] > before + 0.5
    assert score["valid"] > score["circular"] + 0.5
