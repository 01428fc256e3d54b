"""Scale: the solver's memory does not grow with the number of iterations.

The full-size cases (2048 x 2048 deblur, 512 x 512 CT with 720 angles) are in
``benchmarks/reliability.py``; the slow tests here run reduced versions of the same code
(``--case``) in fresh subprocesses and compare their peak RSS.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import operators as O
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import TV, Tikhonov
from lipinverse.solvers import ADMM, PGD
from operators import kernels

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "reliability.py"


def _tensors(obj, seen=None):
    """Every tensor reachable from a result's history (dataclass fields, lists, dicts)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v, seen)]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v, seen)]
    if hasattr(obj, "__dataclass_fields__"):
        return [t for f in obj.__dataclass_fields__ for t in _tensors(getattr(obj, f), seen)]
    return []


@pytest.mark.parametrize("make", [
    lambda f: PGD(f, Tikhonov(), lam=0.1, accelerate=True),
    lambda f: PGD(f, Tikhonov(), lam=0.1, backtracking=True),
    lambda f: ADMM(f, TV(tol=1e-2), lam=0.01),
])
def test_history_holds_scalars_only(make):
    A = O.Blur(kernels.gaussian(1.0))
    y = A(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    res = make(L2Fidelity(A, y)).solve(max_iter=20, tol=0.0)
    k = len(res.history)
    assert k == 20
    tensors = _tensors(res.history)
    assert tensors
    for t in tensors:
        assert t.numel() <= 2 * k, f"history holds a tensor of shape {tuple(t.shape)}"


def _case(*args):
    # a fixed mmap threshold: glibc's dynamic one lets heap fragmentation raise the peak
    # RSS with the number of iterations although nothing is kept (see the benchmark)
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run([sys.executable, str(BENCH), "--case", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_deblur_memory_does_not_grow_with_max_iter():
    short, long = _case("deblur", 512, 5, 5e-3), _case("deblur", 512, 35, 5e-3)
    assert long["iterations"] == 35 and long["history_entries"] == 35
    grown = long["peak_rss_mib"] - short["peak_rss_mib"]
    # keeping the 30 extra iterates would add 30 images (30 MiB); allow 2 for noise
    assert grown < 2 * long["image_mib"], (short, long)
    assert long["psnr_db"] > long["psnr_blurred_db"]


@pytest.mark.slow
def test_reduced_ct_runs_within_its_budget():
    r = _case("ct", 128, 180, 10, "auto")
    assert r["backend"] == "matrix" and r["iterations"] == 10
    assert r["peak_rss_mib"] < 4096
    assert r["psnr_db"] > r["psnr_fbp_db"]
