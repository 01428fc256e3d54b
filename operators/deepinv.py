r"""Adapters between :class:`operators.Operator` and ``deepinv.physics.LinearPhysics``.

deepinv is imported lazily, inside these functions, so that ``import operators`` stays fast.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from .base import Operator
from .bounds import Bound
from .linalg import collatz_wielandt

__all__ = ["from_deepinv", "to_deepinv", "DeepinvOperator"]


class DeepinvOperator(Operator):
    r"""A ``deepinv.physics.LinearPhysics`` seen as an :class:`Operator`.

    Uses the physics' noiseless ``A`` and ``A_adjoint`` (never its noisy ``forward``).

    Notes
    -----
    *Dtype.* Inputs are cast to the physics' own dtype (deepinv's blurs hold float32
    filters) and results back to the input's dtype.

    *Norm.* ``norm_bound`` when given. Otherwise, for the deepinv operators whose matrix is
    entrywise nonnegative (``Blur``, ``BlurFFT`` and ``Downsampling`` with a nonnegative
    filter, ``Inpainting`` with a nonnegative mask, ``Denoising``), the Collatz-Wielandt
    bound computed on a float64 copy of the physics: a certified upper bound, no warning.
    Any other physics falls back to a power-iteration estimate with a safety margin, and
    :meth:`norm` warns that it is not certified.
    """

    def __init__(self, physics, in_shape: Sequence[int], out_shape: Sequence[int] | None = None,
                 norm_bound: float | None = None):
        import deepinv

        if not isinstance(physics, deepinv.physics.LinearPhysics):
            raise TypeError(f"from_deepinv: expected a deepinv.physics.LinearPhysics, got "
                            f"{type(physics).__name__}")
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != 3:
            raise ValueError(f"from_deepinv: expected in_shape (C, H, W), got {in_shape}")
        if out_shape is None:
            with torch.no_grad():
                probe = torch.zeros((1,) + in_shape)
                out_shape = tuple(physics.A(probe).shape[1:])
        super().__init__(in_shape, out_shape)
        self.physics = physics
        self.norm_bound = norm_bound
        self.nonnegative = _entrywise_nonnegative(physics)

    def _physics_dtype(self):
        """The most precise real dtype among the physics' tensors (deepinv's bookkeeping
        ``_device_holder`` aside), or None."""
        found = {t.dtype for name, t in list(self.physics.named_parameters())
                 + list(self.physics.named_buffers())
                 if t.is_floating_point() and not name.endswith("_device_holder")}
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            if dtype in found:
                return dtype
        return None

    def _call(self, fn, x):
        dtype = self._physics_dtype()
        if dtype is None or dtype == x.dtype:
            return fn(x)
        return fn(x.to(dtype)).to(x.dtype)

    def _forward(self, x):
        return self._call(self.physics.A, x)

    def _adjoint(self, y):
        return self._call(self.physics.A_adjoint, y)

    def _norm(self, dtype, device):
        if self.norm_bound is not None:
            return Bound(self.norm_bound, certified=True, how="norm_bound given by the user")
        if not self.nonnegative:
            return None
        exact = DeepinvOperator(_to_double(copy.deepcopy(self.physics)), self.in_shape,
                                self.out_shape)
        exact.nonnegative = True
        own = self._physics_dtype() or torch.float32
        # the physics computes in its own precision: its matrix as applied differs from the
        # float64 one by rounding, covered by 1e-5 (float32) relative
        applied = 1.0 if own == torch.float64 else 1.0 + 1e-5
        try:
            return collatz_wielandt(exact, torch.float64, device, 1e-6, 2000) * applied
        except RuntimeError:
            pass  # a physics that does not run in float64 (dtypes fixed inside it)
        # in the physics' own precision: each entry of G v is a sum of products of
        # nonnegative terms, with relative rounding error below (number of terms) * eps;
        # 1e-3 covers sums of up to ~8000 terms in float32
        margin = 1e-3 if own != torch.float64 else 1e-9
        return collatz_wielandt(self, own, device, 1e-6, 2000) * (1.0 + margin)

    def _majorant(self):
        return None  # handled (in float64) by _norm


def _to_double(module):
    """Real tensors to float64 and complex ones to complex128 (``.double()`` would drop the
    imaginary parts that some deepinv operators keep in buffers, e.g. BlurFFT's phases)."""
    return module._apply(lambda t: t.to(torch.complex128) if t.is_complex() else (
        t.to(torch.float64) if t.is_floating_point() else t))


#: deepinv physics whose matrix is entrywise nonnegative when the named tensor is (None:
#: always), by class name within the deepinv package.
_NONNEGATIVE = {"Blur": "filter", "BlurFFT": "filter", "Downsampling": "filter",
                "Inpainting": "mask", "Denoising": None}


def _entrywise_nonnegative(physics) -> bool:
    cls = type(physics)
    if not cls.__module__.startswith("deepinv.") or cls.__name__ not in _NONNEGATIVE:
        return False
    attr = _NONNEGATIVE[cls.__name__]
    if attr is None:
        return True
    t = getattr(physics, attr, None)
    return (isinstance(t, torch.Tensor) and not t.is_complex()
            and bool(torch.isfinite(t).all()) and bool((t >= 0).all()))


def from_deepinv(physics, in_shape: Sequence[int], *, norm_bound: float | None = None
                 ) -> Operator:
    """Wrap a deepinv ``LinearPhysics`` (its ``A`` / ``A_adjoint``) as an :class:`Operator`.

    Parameters
    ----------
    physics : deepinv.physics.LinearPhysics
    in_shape : tuple (C, H, W)
        Per-sample input shape (deepinv operators do not declare one).
    norm_bound : float, optional
        A known certified upper bound of the operator norm.
    """
    return DeepinvOperator(physics, in_shape, norm_bound=norm_bound)


def to_deepinv(op: Operator, *, noise_model=None):
    r"""A ``deepinv.physics.LinearPhysics`` whose ``A``, ``A_adjoint``, ``prox_l2`` and
    ``compute_sqnorm`` are those of ``op``.

    ``prox_l2(z, y, gamma)`` solves :math:`(A^\top A + I/\gamma)x = A^\top y + z/\gamma`
    with ``op.gram_solve``; ``compute_sqnorm`` returns :math:`\|A\|^2` from ``op.norm()``.
    """
    import deepinv

    if not isinstance(op, Operator):
        raise TypeError(f"to_deepinv: expected an operators.Operator, got {type(op).__name__}")

    class _Physics(deepinv.physics.LinearPhysics):
        def __init__(self):
            kw = {} if noise_model is None else {"noise_model": noise_model}
            super().__init__(**kw)
            self.op = op

        def A(self, x, **kwargs):  # noqa: N802 - deepinv's name
            return self.op.forward(x)

        def A_adjoint(self, y, **kwargs):  # noqa: N802 - deepinv's name
            return self.op.adjoint(y)

        def prox_l2(self, z, y, gamma, **kwargs):
            gamma = float(gamma)
            return self.op.gram_solve(self.op.adjoint(y) + z / gamma, 1.0 / gamma)

        def compute_sqnorm(self, x0=None, **kwargs):
            dtype = x0.dtype if isinstance(x0, torch.Tensor) else torch.float64
            return torch.tensor(self.op.norm(dtype) ** 2)

    return _Physics()
