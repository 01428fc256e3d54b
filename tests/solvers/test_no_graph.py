"""A solve never builds an autograd graph across iterations."""

import torch

import operators as O
from lipinverse.functionals import L2Fidelity
from lipinverse.regularizers import ConvexRidge
from lipinverse.solvers import PGD


def test_solve_with_trainable_prior_keeps_no_graph():
    torch.manual_seed(0)
    R = ConvexRidge().double()  # parameters require grad, as during training
    assert any(p.requires_grad for p in R.parameters())
    A = O.Blur(O.kernels.gaussian(1.0), in_shape=(1, 16, 16))
    y = A(torch.rand(1, 1, 16, 16, dtype=torch.float64))
    res = PGD(L2Fidelity(A, y), R, lam=1.0, scheme="grad").solve(max_iter=5, tol=0)
    assert res.x.grad_fn is None and not res.x.requires_grad
