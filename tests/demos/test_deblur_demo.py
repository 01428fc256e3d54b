"""Smoke test of demos/deblur.py (what `make demo` runs), at a small size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import skimage.io

DEMO = Path(__file__).resolve().parents[2] / "demos" / "deblur.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("demo_deblur", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demo():
    return _load_demo()


def test_demo_main_small(demo, tmp_path, capsys):
    out = tmp_path / "fig" / "deblur.png"
    rows = demo.main(size=64, max_iter=40, out=str(out), progress=False)
    text = capsys.readouterr().out
    assert "PSNR" in text and "guarantee [TV]" in text and f"wrote {out}" in text
    assert rows["observation"]["iterations"] == 0
    tv = rows["TV"]
    # TV must beat the blurred observation, with a real convergence theorem
    assert tv["psnr"] > rows["observation"]["psnr"] + 0.5
    assert 1 <= tv["iterations"] <= 40 and tv["seconds"] > 0
    assert not tv["guarantee"].startswith("none")
    learned = [n for n in rows if n.startswith("learned")]
    for name in learned:
        assert rows[name]["psnr"] > rows["observation"]["psnr"]
        assert not rows[name]["guarantee"].startswith("none")
    if "learned (wcrr)" in rows:
        assert rows["learned (wcrr)"]["guarantee"].startswith("L-BFGS from H0 = gamma P^-1")
        assert "every limit point is stationary" in rows["learned (wcrr)"]["guarantee"]
    if not learned:
        assert "showing TV only" in text
    fig = skimage.io.imread(out)
    assert fig.ndim == 3 and fig.shape[1] > 2 * fig.shape[0]  # panels side by side
    assert np.ptp(fig[..., :3]) > 0


def test_demo_own_image_and_kernel_without_figure(demo, tmp_path):
    rng = np.random.default_rng(0)
    img = np.kron(rng.uniform(size=(8, 8)), np.ones((6, 6)))  # piecewise-constant 48x48
    path = tmp_path / "mine.png"
    skimage.io.imsave(path, (img * 255).astype(np.uint8), check_contrast=False)
    rows = demo.main(image=str(path), size=32, max_iter=15, out=None, kernel="uniform:3",
                     noise=0.0, progress=False)
    assert rows["TV"]["iterations"] <= 15
    assert not list(tmp_path.glob("*deblur*"))


def test_demo_rejects_negative_noise(demo):
    with pytest.raises(ValueError, match="noise"):
        demo.main(size=32, noise=-0.1, out=None, progress=False)


def test_demo_colour_photo_with_unknown_boundary(demo):
    """--colour --boundary valid: a colour scene larger than the frame; the valid model
    beats the observation and the circular model (which puts stripes at the border)."""
    rows = demo.main(size=48, max_iter=60, out=None, kernel="gaussian:1.5", colour=True,
                     boundary="valid", progress=False)
    assert rows["TV"]["psnr"] > rows["observation"]["psnr"] + 1.0
    assert rows["TV"]["psnr"] > rows["TV, circular"]["psnr"] + 2.0
    for name in (n for n in rows if n.startswith("learned")):
        assert rows[name]["psnr"] > rows["observation"]["psnr"] + 1.0
    with pytest.raises(ValueError, match="boundary"):
        demo.main(size=32, out=None, boundary="reflect", progress=False)
