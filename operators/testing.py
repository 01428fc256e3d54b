r"""Exact reference computations for checking operators and certificates (float64, small
sizes): dot tests, norm estimates, dense matrices, exact Jacobian norms, random test pairs.

Used by the test suite and exported for users who write their own operators::

    from operators.testing import check_adjoint, check_norm
    assert check_adjoint(MyOperator(...)) < 1e-10
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Operator
from .linalg import power_iteration

__all__ = ["random_pair", "check_adjoint", "estimate_norm", "check_norm", "dense_matrix",
           "spectral_norm", "jacobian_norm", "adjoint_error"]


def _shapes(A: Operator, shape: Sequence[int] | None):
    in_shape = A.in_shape if shape is None else tuple(shape)
    if in_shape is None:
        raise ValueError(f"{type(A).__name__} is shape-polymorphic: pass shape=(C, H, W)")
    return in_shape, A.output_shape(in_shape)


def _device(A: Operator, device):
    if device is not None:
        return torch.device(device)
    return A._device() or torch.device("cpu")


def random_pair(A: Operator, *, batch: int = 1, shape: Sequence[int] | None = None,
                dtype: torch.dtype = torch.float64, device=None,
                generator: torch.Generator | None = None):
    """Random ``x`` in the domain and ``y`` in the range of ``A`` (standard normal)."""
    in_shape, out_shape = _shapes(A, shape)
    dev = _device(A, device)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = torch.randn((batch,) + tuple(in_shape), generator=g, dtype=dtype).to(dev)
    y = torch.randn((batch,) + tuple(out_shape), generator=g, dtype=dtype).to(dev)
    return x, y


def check_adjoint(A: Operator, *, dtype: torch.dtype = torch.float64, shape=None, device=None,
                  batch: int = 2, generator: torch.Generator | None = None) -> float:
    r"""Relative dot-test error :math:`|\langle Ax, y\rangle - \langle x, A^\top y\rangle| /
    (\|Ax\|\|y\| + \|x\|\|A^\top y\|)/2` on random pairs (worst over the batch)."""
    x, y = random_pair(A, batch=batch, shape=shape, dtype=dtype, device=device,
                       generator=generator)
    ax, aty = A.forward(x), A.adjoint(y)
    lhs = (ax * y).flatten(1).sum(1)
    rhs = (x * aty).flatten(1).sum(1)
    scale = 0.5 * (ax.flatten(1).norm(dim=1) * y.flatten(1).norm(dim=1)
                   + x.flatten(1).norm(dim=1) * aty.flatten(1).norm(dim=1))
    scale = scale.clamp_min(torch.finfo(dtype).tiny)
    return float(((lhs - rhs).abs() / scale).max())


def estimate_norm(A: Operator, *, dtype: torch.dtype = torch.float64, device=None, shape=None,
                  tol: float = 1e-6, max_iter: int = 1000,
                  generator: torch.Generator | None = None) -> float:
    r"""Power-iteration estimate of :math:`\sigma_{\max}(A)` (a *lower* bound, not a
    certificate: use ``A.norm()`` for that); see :func:`operators.linalg.power_iteration`."""
    in_shape, _ = _shapes(A, shape)
    return power_iteration(A, dtype=dtype, device=_device(A, device), shape=in_shape, tol=tol,
                           max_iter=max_iter, generator=generator)


def check_norm(A: Operator, *, rtol: float = 1e-6, dtype: torch.dtype = torch.float64,
               shape=None) -> tuple[float, float]:
    """Return ``(A.norm(), estimate_norm(A))`` and raise if the certificate is below the estimate.

    Raises
    ------
    AssertionError
        If ``A.norm() < estimate * (1 - rtol)``: the certificate is wrong.
    """
    bound = A.norm(dtype=dtype)
    est = estimate_norm(A, dtype=dtype, shape=shape)
    if bound < est * (1 - rtol):
        raise AssertionError(f"{type(A).__name__}.norm() = {bound!r} is below the power-iteration "
                             f"estimate {est!r}: not an upper bound")
    return bound, est


def dense_matrix(A, *, shape=None, dtype: torch.dtype = torch.float64,
                 device=None) -> torch.Tensor:
    """The matrix of a linear map (rows: flattened outputs), by applying it to the canonical
    basis.

    ``A`` is an :class:`~operators.Operator`, or any callable linear on batches (e.g. a
    :mod:`lipinverse.nn` layer), for which ``shape``, the per-sample input shape, is required.
    """
    if isinstance(A, Operator):
        in_shape, _ = _shapes(A, shape)
        dev, apply = _device(A, device), A.forward
    elif callable(A):
        if shape is None:
            raise ValueError("dense_matrix: a callable that is not an Operator needs "
                             "shape=(C, H, W)")
        in_shape, dev, apply = tuple(shape), torch.device(device or "cpu"), A
    else:
        raise TypeError(f"dense_matrix: expected an Operator or a callable, got "
                        f"{type(A).__name__}")
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=dtype, device=dev).reshape((n,) + tuple(in_shape))
    with torch.no_grad():
        return apply(eye).reshape(n, -1).T


def spectral_norm(mat: torch.Tensor) -> float:
    """Largest singular value of a matrix, as a float (exact, by SVD)."""
    return float(torch.linalg.matrix_norm(mat.detach(), 2))


def jacobian_norm(f, x: torch.Tensor) -> float:
    r"""Exact :math:`\|J_f(x)\|_2` of a map ``f`` at one sample ``x`` of shape ``(1, ...)``
    (full Jacobian by autograd: small sizes only)."""
    jac = torch.autograd.functional.jacobian(f, x)
    return spectral_norm(jac.reshape(-1, x.numel()))


def adjoint_error(forward, transpose, x: torch.Tensor,
                  generator: torch.Generator | None = None) -> float:
    r"""Relative dot-test error :math:`|\langle Ax, y\rangle - \langle x, A^\top y\rangle|
    / (\|Ax\|\|y\|)` for a random ``y``, for a pair of callables (e.g. a layer and its
    ``transpose``); :func:`check_adjoint` does this for an :class:`~operators.Operator`."""
    with torch.no_grad():
        y = forward(x)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        yy = torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)
        lhs = (y * yy).sum()
        rhs = (x * transpose(yy)).sum()
        return float((lhs - rhs).abs() / (y.norm() * yy.norm()))
