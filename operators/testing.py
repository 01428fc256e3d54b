r"""Checks for operators: dot test, norm estimate, random test pairs.

Used by the test suite and exported for users who write their own operators::

    from operators.testing import check_adjoint, check_norm
    assert check_adjoint(MyOperator(...)) < 1e-10
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Operator

__all__ = ["random_pair", "check_adjoint", "estimate_norm", "check_norm", "dense_matrix"]


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
    r"""Power-iteration estimate of :math:`\sigma_{\max}(A)` (not its square).

    Iterates :math:`v \leftarrow A^\top A v / \|A^\top A v\|` from a random start until the
    estimate changes by less than ``tol`` (relative). The result is a *lower* bound of the
    true norm (a Rayleigh quotient), not a certificate: use ``A.norm()`` for that.
    """
    in_shape, _ = _shapes(A, shape)
    dev = _device(A, device)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v = torch.randn((1,) + tuple(in_shape), generator=g, dtype=dtype).to(dev)
    v = v / v.norm()
    est = 0.0
    for _ in range(max_iter):
        w = A._adjoint(A._forward(v))
        new = math.sqrt(max(float((v * w).sum()), 0.0))
        nw = float(w.norm())
        if nw == 0.0:
            return 0.0
        v = w / nw
        if abs(new - est) <= tol * max(new, 1e-300):
            return new
        est = new
    return est


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


def dense_matrix(A: Operator, *, shape=None, dtype: torch.dtype = torch.float64,
                 device=None) -> torch.Tensor:
    """The matrix of ``A`` (rows: flattened outputs), by applying it to the canonical basis."""
    in_shape, _ = _shapes(A, shape)
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=dtype, device=_device(A, device)).reshape((n,) + tuple(in_shape))
    return A.forward(eye).reshape(n, -1).T
