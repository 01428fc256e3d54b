"""Data-parallel training with torchrun (gloo, CPU) equals single-process training."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lipinverse.training import load_checkpoint, read_checkpoint_metadata

from . import _dist_worker


@pytest.mark.slow  # about 30 s: two fresh interpreters on a shared 2-core machine
def test_torchrun_two_processes_matches_single_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    worker = Path(_dist_worker.__file__)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(tmp_path / "dist")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_checkpoint_metadata(tmp_path / "dist")["metadata"]["world"] == 2
    parallel = load_checkpoint(tmp_path / "dist")
    single = _dist_worker.run()
    for (name, a), b in zip(single.named_parameters(), parallel.parameters(), strict=True):
        torch.testing.assert_close(b, a.detach(), rtol=1e-9, atol=1e-12, msg=name)
    # and training did move the weights
    torch.manual_seed(0)
    fresh = type(parallel)(**parallel.config())
    assert not torch.equal(parallel.strength.values, fresh.strength.values)
