"""Loading never vouches for broken weights, and never builds what the file cannot hold."""

from __future__ import annotations

import json
import resource

import pytest
import torch

from lipinverse.regularizers import ConvexRidge
from lipinverse.training import load_checkpoint, save_checkpoint
from lipinverse.training.checkpoint import checkpoint_paths


def _saved(tmp_path):
    torch.manual_seed(0)
    model = ConvexRidge(channels=[1, 4], kernel_size=3, num_knots=11)
    save_checkpoint(model, tmp_path / "m")
    return tmp_path / "m"


def _rewrite_weights(stem, edit):
    """Edit the weights and record the new hash (a consistent file, not a tampered one)."""
    import hashlib

    from safetensors.torch import load_file, save_file

    w, j, _ = checkpoint_paths(stem)
    state = load_file(w)
    edit(state)
    save_file(state, w)
    info = json.loads(j.read_text())
    info["weights_sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    j.write_text(json.dumps(info))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    stem = _saved(tmp_path)

    def poison(state):
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = state[key].clone()
        state[key].view(-1)[0] = bad

    _rewrite_weights(stem, poison)
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_checkpoint(stem)


def test_absurd_configuration_fails_before_allocating(tmp_path):
    stem = _saved(tmp_path)
    _, j, _ = checkpoint_paths(stem)
    info = json.loads(j.read_text())
    info["model_config"]["num_knots"] = 400_000_000
    j.write_text(json.dumps(info))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="expects|shape"):
        load_checkpoint(stem)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200  # the 51 GB model was never built
