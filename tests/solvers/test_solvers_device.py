"""The same code on CUDA (run with ``-m gpu`` on a machine with a GPU)."""

import copy

import pytest
import torch

from lipinverse.denoisers import ProxDenoiser
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import TV, Tikhonov
from lipinverse.solvers import ADMM, PGD

from ._problems import make_problem, rel_err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    A, y = make_problem()
    f_cpu = L2Fidelity(A, y)
    # Module.to moves in place: the CUDA problem gets its own copy of the operator
    f_gpu = L2Fidelity(copy.deepcopy(A).to("cuda"), y.to("cuda"))
    for make in (lambda f: PGD(f, Tikhonov(), 0.05, accelerate=True),
                 lambda f: ADMM(f, Tikhonov(), 0.05),
                 lambda f: PGD(f, ProxDenoiser(TV(tol=1e-6), 0.02))):
        r_cpu = make(f_cpu).solve(max_iter=300, tol=1e-9)
        r_gpu = make(f_gpu).solve(max_iter=300, tol=1e-9)
        assert r_gpu.x.device.type == "cuda"
        assert rel_err(r_gpu.x.cpu(), r_cpu.x) < 1e-6
