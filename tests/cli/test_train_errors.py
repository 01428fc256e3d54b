"""Training errors reach the user as one line: a --resume with the wrong --model."""

from __future__ import annotations

import numpy as np
import skimage.io

from lipinverse import cli


def test_resume_with_the_wrong_model_is_one_line(tmp_path, capsys):
    for i in range(2):
        skimage.io.imsave(tmp_path / f"{i}.png",
                          (np.random.default_rng(i).random((48, 48)) * 255).astype(np.uint8))
    out = tmp_path / "ckpt"
    common = ["train", "--images", str(tmp_path), "--out", str(out), "--epochs", "1",
              "--max-patches", "8", "--batch-size", "4", "-q"]
    assert cli.main(common) == 0
    capsys.readouterr()
    code = cli.main(common + ["--resume", "--model", "wcrr"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "checkpoint holds a ConvexRidge, training a WeakConvexRidge" in lines[0]
