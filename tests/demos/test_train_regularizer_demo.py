"""Smoke test of demos/train_regularizer.py at a tiny size."""

import importlib.util
import math
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demos" / "train_regularizer.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("train_regularizer_demo", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_runs_small(tmp_path, capsys):
    demo = load_demo()
    res = demo.main(epochs=1, steps_per_epoch=2, max_iter=10, size=32, out=str(tmp_path),
                    progress=False, batch_size=4, patch_size=24)
    for key in ("observation", "TV", "learned ridge"):
        assert math.isfinite(res[key]["psnr"])
    assert res["learned ridge"]["grad_lipschitz"] > 0
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "last.json").is_file()
    from lipinverse.training import load_checkpoint

    assert type(load_checkpoint(tmp_path / "last")).__name__ == "ConvexRidge"
    assert "learned ridge" in capsys.readouterr().out


def test_demo_trains_on_a_user_folder(tmp_path):
    import numpy as np
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    for i in range(2):
        imsave(tmp_path / f"im{i}.png", (rng.random((48, 48)) * 255).astype(np.uint8),
               check_contrast=False)
    demo = load_demo()
    model, history, seconds = demo.train(str(tmp_path), epochs=1, steps_per_epoch=2,
                                         batch_size=4, patch_size=24, progress=False)
    assert len(history) == 2 and seconds > 0
