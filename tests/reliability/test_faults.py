"""Faults: a training run killed (SIGKILL) mid-epoch or mid-save, damaged checkpoint files,
and a diverging solver.

The training runs are subprocesses of :mod:`._train_worker` (3 epochs of 4 steps, a
checkpoint at every epoch end); each takes a few seconds.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import operators as O
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import ConvexRidge, Tikhonov
from lipinverse.solvers import ADMM, PGD, DivergenceError
from lipinverse.training import load_checkpoint, load_optimizer_state, save_checkpoint
from lipinverse.training.checkpoint import checkpoint_paths
from operators import kernels

from . import _train_worker as worker
from ._policy import attempt, fuzz

WORKER = Path(worker.__file__)
STEPS_PER_EPOCH = worker.STEPS


def run_worker(out, mode, kill_at=None, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [sys.executable, str(WORKER), str(out), mode] + ([kill_at] if kill_at else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def final_weights(out):
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "final.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    worker.main(str(out), "full")  # in-process: same threads (1), same results
    return final_weights(out)


def _same(a, b):
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


# a kill in the middle of epoch 2 (global step 6) and one in epoch 3 (step 10)
@pytest.mark.parametrize("kill_step", [6, pytest.param(10, marks=pytest.mark.slow)])
def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(tmp_path, uninterrupted,
                                                              kill_step):
    proc = run_worker(tmp_path, "resume", f"step:{kill_step}")
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "final.safetensors").exists()
    info = json.loads((tmp_path / "ckpt" / "last.json").read_text())
    assert info["metadata"]["step"] == (kill_step - 1) // STEPS_PER_EPOCH * STEPS_PER_EPOCH
    worker.main(str(tmp_path), "resume")
    # bitwise: the epoch is replayed from its checkpoint with the same data, noise and
    # optimiser state (the data order depends only on (seed, epoch))
    assert _same(final_weights(tmp_path), uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("replaces_done", [0, 3])
def test_sigkill_during_save_leaves_a_loadable_checkpoint(tmp_path, uninterrupted,
                                                          replaces_done):
    """Killed while writing the temporary files (0) or after all three renames (3): the
    checkpoint on disk is the old or the new one, complete, and the run resumes exactly."""
    proc = run_worker(tmp_path, "resume", f"save:2:{replaces_done}")
    assert proc.returncode == -signal.SIGKILL
    model, info = load_checkpoint(tmp_path / "ckpt" / "last", return_metadata=True)
    assert info["metadata"]["epoch"] == (1 if replaces_done == 0 else 2)
    worker.main(str(tmp_path), "resume")
    assert _same(final_weights(tmp_path), uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("replaces_done", [1, 2])
def test_sigkill_between_renames_never_loads_a_mixed_checkpoint(tmp_path, replaces_done):
    """Killed after 1 (optimiser) or 2 (optimiser, weights) of the 3 renames: the files
    disagree with the old JSON; loading must refuse (SHA-256), never mix old and new."""
    proc = run_worker(tmp_path, "resume", f"save:2:{replaces_done}")
    assert proc.returncode == -signal.SIGKILL
    stem = tmp_path / "ckpt" / "last"
    if replaces_done == 2:
        with pytest.raises(ValueError, match="SHA-256"):
            load_checkpoint(stem)
    else:
        model = load_checkpoint(stem)  # weights and JSON are both the old (epoch 1) ones
        opt = torch.optim.Adam(model.parameters())
        with pytest.raises(ValueError, match="SHA-256"):
            load_optimizer_state(opt, stem)


@pytest.mark.slow
@pytest.mark.parametrize("replaces_done", [1, 2])
def test_sigkill_between_renames_still_resumes(tmp_path, uninterrupted, replaces_done):
    """Regression: the three files are replaced one by one, so a kill between two renames
    left 'last' unresumable. save_checkpoint now keeps the previous complete generation
    (last.prev.*, hard links) and Trainer.resume falls back to it, with a warning."""
    proc = run_worker(tmp_path, "resume", f"save:2:{replaces_done}")
    assert proc.returncode == -signal.SIGKILL
    with pytest.warns(RuntimeWarning, match="previous complete checkpoint"):
        worker.main(str(tmp_path), "resume")
    assert _same(final_weights(tmp_path), uninterrupted)


# ------------------------------------------------------------------ damaged files
def _saved(tmp_path):
    torch.manual_seed(0)
    m = ConvexRidge(channels=(1, 2, 4), kernel_size=3, num_knots=9)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.value(torch.rand(1, 1, 8, 8)).sum().backward()
    opt.step()
    save_checkpoint(m, tmp_path / "c", optimizer=opt)
    return m, checkpoint_paths(tmp_path / "c")


def _load_all(stem):
    model = load_checkpoint(stem)
    load_optimizer_state(torch.optim.Adam(model.parameters()), stem)
    return model


@fuzz(25)
@given(which=st.sampled_from([0, 1, 2]), cut=st.floats(0.0, 0.999),
       flip=st.one_of(st.none(), st.floats(0.0, 0.999)))
def test_truncated_or_flipped_files_are_refused(tmp_path_factory, which, cut, flip):
    """Any truncation or any single flipped byte of any of the three files: refused with a
    clear ValueError naming load_checkpoint / load_optimizer_state, or (a JSON byte that
    does not change its meaning, e.g. whitespace) loads the original weights."""
    tmp = tmp_path_factory.mktemp("ck")
    m, paths = _saved(tmp)
    path = paths[which]
    data = bytearray(path.read_bytes())
    if flip is None:
        data = data[:int(cut * len(data))]
    else:
        data[int(flip * len(data))] ^= 0x5A
    path.write_bytes(bytes(data))
    ok, out = attempt("load_checkpoint", lambda: _load_all(tmp / "c"))
    if ok:
        assert which == 1 and flip is not None, "a truncated or altered tensor file loaded"
        for a, b in zip(m.state_dict().values(), out.state_dict().values(), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("edit", [
    lambda i: i.update(format="lipinverse-checkpoint/99"),
    lambda i: i.pop("weights_sha256"),
    lambda i: i.update(model_config=[1, 2]),
    lambda i: i.update(weights_sha256=0),
    lambda i: i["optimizer"].update(sha256="0" * 64),
    lambda i: i["optimizer"].update(param_groups=[]),
    lambda i: i["optimizer"].update(**{"class": "SGD"}),
])
def test_tampered_json_fields_are_refused(tmp_path, edit):
    _, (w, j, o) = _saved(tmp_path)
    info = json.loads(j.read_text())
    edit(info)
    j.write_text(json.dumps(info))
    ok, err = attempt("load_checkpoint", lambda: _load_all(tmp_path / "c"))
    assert not ok and isinstance(err, ValueError)


def test_json_that_is_not_an_object_is_refused(tmp_path):
    _, (w, j, o) = _saved(tmp_path)
    for text in ("[]", "null", '"x"', "1e999", ""):
        j.write_text(text)
        ok, err = attempt("load_checkpoint", lambda: load_checkpoint(tmp_path / "c"))
        assert not ok and isinstance(err, ValueError)


# ------------------------------------------------------------------ diverging solvers
class ExpansiveDenoiser:
    """A deliberately expansive 'denoiser': D(x) = 1.5 x (Lipschitz 1.5), with an honest
    or a missing certificate."""

    averagedness = None

    def __init__(self, bound):
        self.bound = bound

    def __call__(self, x, sigma=None):
        return 1.5 * x

    def lipschitz_bound(self):
        return self.bound


def _fid():
    A = O.Blur(kernels.gaussian(1.0))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 16, 16, generator=g, dtype=torch.float64)
    return L2Fidelity(A, A(x))


@pytest.mark.parametrize("bound", [None, 1.5])
@pytest.mark.parametrize("solver", ["PGD", "ADMM"])
def test_expansive_denoiser_stops_with_a_report(solver, bound):
    f = _fid()
    D = ExpansiveDenoiser(bound)
    s = PGD(f, D, step_size=1.9) if solver == "PGD" else ADMM(f, D)
    assert str(s.guarantee).startswith("none:")
    with pytest.raises(DivergenceError, match=r"sample\(s\) \[[0-9, ]+\] at iteration \d+"):
        s.solve(max_iter=500, tol=0.0)
    with pytest.raises(ValueError, match="strict"):
        (PGD(f, D, step_size=1.9, strict=True) if solver == "PGD"
         else ADMM(f, D, strict=True))


def test_too_large_step_with_a_convex_prior_stops_with_a_report():
    f = _fid()
    s = PGD(f, Tikhonov(), lam=0.01, step_size=10.0)
    assert str(s.guarantee).startswith("none:")
    with pytest.raises(DivergenceError, match=r"iteration \d+"):
        s.solve(max_iter=1000, tol=0.0)


def test_one_diverging_sample_is_named():
    """Divergence is reported per sample: only the bad sample is named."""
    f = _fid()

    class PerSample(ExpansiveDenoiser):
        def __call__(self, x, sigma=None):
            scale = torch.tensor([1.0, 3.0, 1.0], dtype=x.dtype).view(-1, 1, 1, 1)
            return x * scale / 1.2

    with pytest.raises(DivergenceError, match=r"sample\(s\) \[1\]"):
        PGD(f, PerSample(None), step_size=1.0).solve(max_iter=500, tol=0.0)


def test_nan_in_the_iterate_is_reported_at_once():
    f = _fid()

    class NaNAt3(ExpansiveDenoiser):
        calls = 0

        def __call__(self, x, sigma=None):
            NaNAt3.calls += 1
            y = x.clone()
            if NaNAt3.calls == 3:
                y[2, 0, 0, 0] = float("nan")
            return y

    with pytest.raises(DivergenceError, match=r"NaN or Inf .* sample\(s\) \[2\] at iteration 3"):
        PGD(f, NaNAt3(1.0), step_size=1.0).solve(max_iter=50, tol=0.0)
