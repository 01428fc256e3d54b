"""Smoke test of demos/tomography.py at a small size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import skimage.io

DEMO = Path(__file__).resolve().parents[2] / "demos" / "tomography.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("demo_tomography", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demo():
    return _load_demo()


def test_demo_main_small(demo, tmp_path, capsys):
    out = tmp_path / "fig" / "tomography.png"
    rows = demo.main(size=48, n_angles=24, max_iter=40, out=str(out), progress=False)
    text = capsys.readouterr().out
    assert "PSNR" in text and "guarantee [TV]" in text and f"wrote {out}" in text
    assert rows["FBP"]["iterations"] == 0
    tv = rows["TV"]
    # TV must beat the streaky, noisy FBP, under a real convergence theorem
    assert tv["psnr"] > rows["FBP"]["psnr"] + 1.0
    assert 1 <= tv["iterations"] <= 40 and tv["seconds"] > 0
    assert not tv["guarantee"].startswith("none")
    if "learned (crr)" in rows:
        assert rows["learned (crr)"]["psnr"] > rows["FBP"]["psnr"]
        assert not rows["learned (crr)"]["guarantee"].startswith("none")
    else:
        assert "showing FBP and TV only" in text
    fig = skimage.io.imread(out)
    assert fig.ndim == 3 and fig.shape[1] > 2 * fig.shape[0]  # panels side by side
    assert np.ptp(fig[..., :3]) > 0


def test_demo_ellipses_without_figure(demo):
    rows = demo.main(size=32, n_angles=16, max_iter=10, out=None, phantom="ellipses",
                     noise=0.0, progress=False)
    assert set(rows) >= {"FBP", "TV"}
    assert all(np.isfinite(r["psnr"]) for r in rows.values())


@pytest.mark.parametrize("kwargs, match", [({"noise": -1.0}, "noise >= 0"),
                                           ({"phantom": "head"}, "phantom")])
def test_demo_rejects_bad_arguments(demo, kwargs, match):
    with pytest.raises(ValueError, match=match):
        demo.main(size=32, out=None, progress=False, **kwargs)
