"""SIGTERM / Ctrl-C in 'lipinverse train' saves the last complete step and says how to resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest


def _images(folder):
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(3):
        imsave(folder / f"im{i}.png",
               (np.kron(rng.random((6, 6)), np.ones((8, 8))) * 255).astype(np.uint8))
    return folder


@pytest.mark.parametrize("recipe", [False, True])
def test_sigterm_saves_and_names_the_resume_command(tmp_path, recipe):
    imgs = _images(tmp_path / "imgs")
    out = tmp_path / "run"
    if recipe:
        (tmp_path / "r.toml").write_text(
            'name = "t"\n[model]\nclass = "ConvexRidge"\nchannels = [1, 3, 6]\n'
            'kernel_size = 3\nnum_knots = 11\n[data]\npatch_size = 16\npatch_stride = 4\n'
            '[[stage]]\nobjective = "tstep"\nt = 3\nbatch_size = 4\nepochs = 100000\n'
            'steps_per_epoch = 1000\nlr = 1e-3\n')
        args = ["--recipe", str(tmp_path / "r.toml"), "--images", str(imgs), "--out", str(out)]
    else:
        args = ["--images", str(imgs), "--out", str(out), "--epochs", "100000",
                "--patch-size", "16", "--batch-size", "4", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lipinverse.cli", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last = (out / "stage1-tstep" / "last.json") if recipe else (out / "last.json")
    deadline = time.time() + 120
    # wait until the process is past start-up (the output folder exists), then a little
    while time.time() < deadline and not (out / ("run.json" if recipe else "")).exists():
        time.sleep(0.2)
    time.sleep(4.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "--resume" in err and str(out) in err
    assert last.is_file()
    assert json.loads(last.read_text())["metadata"]["step"] >= 0
