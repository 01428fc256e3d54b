r"""Adapters between :class:`operators.Operator` and ``deepinv.physics.LinearPhysics``.

deepinv is imported lazily, inside these functions, so that ``import operators`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Operator

__all__ = ["from_deepinv", "to_deepinv", "DeepinvOperator"]


class DeepinvOperator(Operator):
    r"""A ``deepinv.physics.LinearPhysics`` seen as an :class:`Operator`.

    Uses the physics' noiseless ``A`` and ``A_adjoint`` (never its noisy ``forward``).

    Notes
    -----
    The norm is not known in closed form: :meth:`norm` falls back to a power-iteration
    estimate with a safety margin (and warns), unless ``norm_bound`` is given.
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

    def _forward(self, x):
        return self.physics.A(x)

    def _adjoint(self, y):
        return self.physics.A_adjoint(y)

    def _norm(self, dtype, device):
        return self.norm_bound


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
