r"""Exact reference computations for checking certificates (float64, small sizes only).

Used by the test-suite and by users who want to check a bound on a small model:
dense matrices of linear maps, exact Jacobian norms, and the dot (adjoint) test.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dense_matrix", "spectral_norm", "jacobian_norm", "adjoint_error"]


@torch.no_grad()
def dense_matrix(f, in_shape) -> torch.Tensor:
    r"""Matrix of a linear map ``f`` acting on batches of per-sample shape ``in_shape``.

    Applies ``f`` to the ``n = prod(in_shape)`` canonical basis vectors (in the default
    dtype); returns an ``(m, n)`` tensor with ``m`` the per-sample output size.
    """
    n = math.prod(in_shape)
    eye = torch.eye(n).reshape(n, *in_shape)
    return f(eye).reshape(n, -1).T


def spectral_norm(mat: torch.Tensor) -> float:
    """Largest singular value of a matrix, as a float."""
    return float(torch.linalg.matrix_norm(mat.detach(), 2))


def jacobian_norm(f, x: torch.Tensor) -> float:
    r"""Exact :math:`\|J_f(x)\|_2` for one sample ``x`` of shape ``(1, ...)`` (full Jacobian)."""
    jac = torch.autograd.functional.jacobian(f, x)
    return spectral_norm(jac.reshape(-1, x.numel()))


def adjoint_error(forward, transpose, x: torch.Tensor) -> float:
    r"""Relative dot-test error :math:`|\langle Ax, y\rangle - \langle x, A^\top y\rangle|
    / (\|Ax\|\|y\|)` for a random ``y``."""
    with torch.no_grad():
        y = forward(x)
        yy = torch.randn_like(y)
        lhs = (y * yy).sum()
        rhs = (x * transpose(yy)).sum()
        return float((lhs - rhs).abs() / (y.norm() * yy.norm()))
