"""Contract tests run over every operator of the registry (tests/operators/conftest.py)."""

import math

import pytest
import torch

from operators import Operator
from operators.testing import check_adjoint, dense_matrix, estimate_norm, random_pair


def test_is_operator(op):
    assert isinstance(op, Operator)
    assert op.in_shape is not None and op.out_shape is not None


def test_dot_test_float64(op):
    assert check_adjoint(op, dtype=torch.float64) < 1e-10


def test_dot_test_float32(op):
    assert check_adjoint(op.float(), dtype=torch.float32) < 1e-5


def test_adjoint_equals_autograd_vjp(op):
    x, y = random_pair(op, batch=2)
    x.requires_grad_(True)
    (vjp,) = torch.autograd.grad(op(x), x, grad_outputs=y)
    torch.testing.assert_close(vjp, op.adjoint(y), rtol=1e-10, atol=1e-12)


def test_adjoint_view_is_involution(op):
    assert op.T.T is op
    x, y = random_pair(op)
    torch.testing.assert_close(op.T(y), op.adjoint(y))
    torch.testing.assert_close(op.T.adjoint(x), op(x))


def test_norm_is_upper_bound_of_exact(op):
    exact = torch.linalg.matrix_norm(dense_matrix(op), 2).item()
    bound = op.norm()
    assert bound.certified, bound  # every operator of the library certifies its norm
    assert bound >= exact * (1 - 1e-12), (bound, exact)
    assert bound >= estimate_norm(op) * (1 - 1e-12)
    # certified bounds should not be absurdly loose either
    assert bound <= 3.0 * exact + 1e-9  # sums use the triangle inequality


def test_norm_cached_per_dtype(op):
    a = op.norm(torch.float64)
    assert op.norm(torch.float64) == a
    assert (torch.float64, "cpu") in op._norm_cache


def test_gram_solve_solves_system(op):
    x, _ = random_pair(op, batch=2)
    rho = 0.3
    b = op.adjoint(op(x)) + rho * x
    sol = op.gram_solve(b, rho, tol=1e-10, max_iter=2000)
    torch.testing.assert_close(sol, x, rtol=1e-7, atol=1e-7)


def test_gram_solve_rejects_bad_rho(op):
    x, _ = random_pair(op)
    for rho in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="shift > 0"):
            op.gram_solve(x, rho)


def test_algebra_matches_dense(op):
    M = dense_matrix(op)
    torch.testing.assert_close(dense_matrix(op.T), M.T)
    torch.testing.assert_close(dense_matrix(3.0 * op), 3.0 * M)
    torch.testing.assert_close(dense_matrix(op.T @ op), M.T @ M)
    torch.testing.assert_close(dense_matrix(op.T @ op + op.T @ op), 2 * M.T @ M)
    torch.testing.assert_close(dense_matrix(-op), -M)


def test_wrong_shape_rejected(op):
    c, h, w = op.in_shape
    bad = torch.zeros(1, c + 1, h, w, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"expected input of shape"):
        op(bad)


def test_wrong_dtype_rejected(op):
    x, _ = random_pair(op)
    for dt in (torch.int64, torch.complex64, torch.float16):
        with pytest.raises(TypeError, match="expected dtype float32 or float64"):
            op(x.to(dt))


def test_not_a_tensor_rejected(op):
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        op([1.0, 2.0])


def test_noncontiguous_and_channels_last_input(op):
    x, _ = random_pair(op, batch=2)
    ref = op(x)
    torch.testing.assert_close(op(x.contiguous(memory_format=torch.channels_last)), ref)
    torch.testing.assert_close(op(x.transpose(-1, -2).contiguous().transpose(-1, -2)), ref)


def test_state_dict_round_trip(op, make_op):
    other = make_op()
    sd = op.state_dict()
    for v in other.state_dict().values():
        v.zero_() if v.is_floating_point() else None
    other.load_state_dict(sd)
    x, _ = random_pair(op)
    torch.testing.assert_close(other(x), op(x))


def test_dtype_move_keeps_maths(op):
    x, y = random_pair(op)
    ref = op(x)
    op32 = op.float()
    torch.testing.assert_close(op32(x.float()), ref.float(), rtol=1e-4, atol=1e-5)
    assert math.isfinite(op32.norm(torch.float32))


def test_gram_equals_adjoint_of_forward(op):
    x, _ = random_pair(op, batch=2)
    torch.testing.assert_close(op.gram(x), op.adjoint(op(x)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shift", [-2.5, 0.7])
def test_shifted_gram_and_its_inverse(op, shift):
    x, _ = random_pair(op, batch=2)
    want = op.adjoint(op(x)) + shift * x
    torch.testing.assert_close(op.gram(x, shift), want, rtol=1e-10, atol=1e-12)
    if shift > 0:  # gram_solve(., rho) inverts gram(., rho)
        back = op.gram_solve(op.gram(x, shift), shift, tol=1e-12, max_iter=2000)
        torch.testing.assert_close(back, x, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="finite float shift"):
        op.gram(x, float("nan"))


def test_device_cache_follows_moves(op):
    op._device()
    moved = op.to("meta")
    if any(True for _ in moved.buffers()):
        assert moved._device() == torch.device("meta")
