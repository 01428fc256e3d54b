"""Determinism: same seed, same device => bitwise the same result.

Covered: training (also when other code consumed the global RNG in between), solves (PGD,
FISTA, ADMM, plug-and-play with a learned prior), the Radon matrices and matrix-free
products, and patch augmentation. CUDA is documented in ``benchmarks/results/reliability.md``
(scatter / index_add_ / sparse products use atomics there); the ``gpu`` test below checks
that ``torch.use_deterministic_algorithms(True)`` is enough on CUDA.
"""

import pytest
import torch

import operators as O
from lipinverse.denoisers import RidgeProxDenoiser
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import TV, ConvexRidge, Tikhonov
from lipinverse.solvers import ADMM, PGD
from lipinverse.training import (
    PatchDataset,
    TrainConfig,
    Trainer,
    TStepDenoisingLoss,
    seed_everything,
)
from operators import Radon, kernels, radon
from operators.phantoms import random_ellipses


def _train(consume_rng: bool):
    seed_everything(0)
    model = ConvexRidge(channels=(1, 2, 4), kernel_size=3, num_knots=9)
    if consume_rng:
        torch.rand(1000)  # unrelated code using the global generator after the model exists
        torch.randn(3, 3)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(2, 1, 16, 16, generator=g)
    cfg = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=3, lr=1e-2, seed=5,
                      progress=False)
    Trainer(model, TStepDenoisingLoss(t=2), cfg, PatchDataset(imgs, patch_size=8,
                                                              stride=4)).fit()
    return [p.detach().clone() for p in model.parameters()]


def test_training_depends_only_on_the_seed():
    a, b = _train(False), _train(True)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _deblur(batch=2, n=16, dtype=torch.float64):
    A = O.Blur(kernels.gaussian(1.2))
    x = random_ellipses(n, seed=1, batch=batch, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    y = A(x) + 0.02 * torch.randn(x.shape, generator=g, dtype=dtype)
    return L2Fidelity(A, y)


def _ridge():
    torch.manual_seed(0)
    return ConvexRidge(channels=(1, 2, 4), kernel_size=3, num_knots=9).double()


SOLVES = {
    "PGD Tikhonov": lambda f: PGD(f, Tikhonov(), lam=0.05),
    "FISTA TV (fresh TV)": lambda f: PGD(f, TV(tol=1e-3), lam=0.02, accelerate=True),
    "ADMM TV": lambda f: ADMM(f, TV(tol=1e-3), lam=0.02),
    "PGD ridge (grad scheme)": lambda f: PGD(f, _ridge(), lam=1.0, scheme="grad"),
    "PnP-ADMM ridge prox": lambda f: ADMM(f, RidgeProxDenoiser(_ridge(), tol=1e-5)),
    "PGD backtracking": lambda f: PGD(f, Tikhonov(), lam=0.05, backtracking=True),
}


@pytest.mark.parametrize("name", sorted(SOLVES))
def test_a_solve_twice_gives_the_same_bits(name):
    f = _deblur()
    a = SOLVES[name](f).solve(max_iter=8, tol=0.0)
    b = SOLVES[name](f).solve(max_iter=8, tol=0.0)
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.history.relative_change, b.history.relative_change)


def test_the_same_tv_instance_twice_gives_the_same_bits():
    f = _deblur()
    solver = PGD(f, TV(tol=1e-3), lam=0.02, accelerate=True)
    a = solver.solve(max_iter=8, tol=0.0)
    b = solver.solve(max_iter=8, tol=0.0)
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize("backend", ["matrix", "matrix_free"])
def test_radon_products_are_deterministic(backend):
    A = Radon(24, 17, backend=backend)
    x = random_ellipses(24, seed=2, batch=3, dtype=torch.float32)
    y1, y2 = A(x), A(x)
    assert torch.equal(y1, y2)
    assert torch.equal(A.adjoint(y1), A.adjoint(y2))


def test_radon_matrix_build_twice_gives_the_same_bits():
    A = Radon(20, 11, geometry="fan", backend="matrix")
    radon.clear_matrix_cache()
    M1, T1 = (m.clone() for m in A.matrices(torch.float64))
    radon.clear_matrix_cache()
    M2, T2 = A.matrices(torch.float64)
    for a, b in ((M1, M2), (T1, T2)):
        assert torch.equal(a.crow_indices(), b.crow_indices())
        assert torch.equal(a.col_indices(), b.col_indices())
        assert torch.equal(a.values(), b.values())
    radon.clear_matrix_cache()
    n1 = A.norm()
    radon.clear_matrix_cache()
    assert A.norm() == n1


def test_patch_augmentation_is_seeded():
    imgs = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ds = PatchDataset(imgs, patch_size=8, stride=4)
    idx = torch.arange(len(ds))
    a = ds.batch(idx, generator=torch.Generator().manual_seed(9))
    b = ds.batch(idx, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert not torch.equal(a, ds.batch(idx, generator=torch.Generator().manual_seed(10)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_deterministic_mode():
    """On CUDA, index_add_ (matrix-free Radon) and sparse products use atomics; with
    torch.use_deterministic_algorithms(True) two runs must agree bitwise."""
    torch.use_deterministic_algorithms(True)
    try:
        A = Radon(32, 21, backend="matrix_free").cuda()
        x = random_ellipses(32, seed=2, batch=2, dtype=torch.float32).cuda()
        assert torch.equal(A(x), A(x))
        f = _deblur(dtype=torch.float32)
        f = L2Fidelity(f.A.cuda(), f.y.cuda())
        a = PGD(f, TV(), lam=0.02, accelerate=True).solve(max_iter=10, tol=0.0)
        b = PGD(f, TV(), lam=0.02, accelerate=True).solve(max_iter=10, tol=0.0)
        assert torch.equal(a.x, b.x)
    finally:
        torch.use_deterministic_algorithms(False)
