"""demos/deepinv_interop.py: our prior inside deepinv.optim and deepinv's physics inside our
solver reach the same minimiser."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "demos"))


def test_both_ways_reach_the_same_image():
    import deepinv_interop

    out = deepinv_interop.run(size=32, iters=300, quiet=True)
    assert out["psnr_deepinv_pgd"] > out["psnr_observation"] + 1.5
    assert out["psnr_lipinverse_pgd"] > out["psnr_observation"] + 1.5
    assert out["relative_difference"] < 0.02
    assert out["operator_norm_bound"] >= 1.0  # a normalised blur has norm 1
    assert "FISTA" in out["guarantee"]
