"""One writer per run folder: a second trainer or run fails at once, naming the first."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from lipinverse.training.lock import RunFolderLocked, run_lock


def test_second_holder_fails_and_names_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\n"
                               "from lipinverse.training.lock import run_lock\n"
                               f"with run_lock({str(tmp_path)!r}):\n"
                               "    print('held', flush=True); time.sleep(30)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderLocked, match=f"process {holder.pid} on"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale and taken over
    with run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_reentrant_in_one_process(tmp_path):
    with run_lock(tmp_path), run_lock(tmp_path):
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()


def test_trainer_refuses_a_folder_in_use(tmp_path):
    from lipinverse.regularizers import ConvexRidge
    from lipinverse.training import TrainConfig, Trainer, TStepDenoisingLoss

    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(),
                                                "started": "earlier"}))  # pid 1 is alive
    model = ConvexRidge(channels=[1, 4], kernel_size=3, num_knots=11)
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, patch_size=8,
                      checkpoint_dir=str(tmp_path))
    t = Trainer(model, TStepDenoisingLoss(t=2), cfg, train_data=torch.rand(2, 1, 16, 16))
    with pytest.raises(RunFolderLocked, match="process 1 on"):
        t.fit()
