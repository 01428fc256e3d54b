r"""Data-fidelity functionals."""

from __future__ import annotations

import torch

from operators import Operator
from operators.validation import check_positive, check_tensor

__all__ = ["L2Fidelity", "grad_value"]


def grad_value(fn, x: torch.Tensor):
    r"""``(fn.grad(x), v)`` with ``v(rows=None)`` :math:`= f(x)` per sample (of the samples
    ``rows``, int64 indices, where given), computed when called.

    Uses ``fn.grad_value(x)`` where the functional has one (it keeps what the gradient
    computed, e.g. the residual :math:`Ax - y`, so the value costs a reduction, not another
    operator pass), else ``fn.grad(x)`` and ``fn(x)``. Line searches call ``v`` only where
    a value is needed, for the samples that need it."""
    own = getattr(fn, "grad_value", None)
    if callable(own):
        return own(x)
    return fn.grad(x), lambda rows=None: fn(x) if rows is None else fn(x)[rows]


class L2Fidelity:
    r"""Least-squares data fidelity :math:`f(x) = \tfrac12 \|Ax - y\|^2` (per sample).

    Parameters
    ----------
    A : operators.Operator
        The forward operator.
    y : tensor ``(B, *A.out_shape)``
        The measurements (finite).

    Notes
    -----
    * :math:`\nabla f(x) = A^\top A x - A^\top y` (``A^T y`` is computed once);
      ``grad_step(x, tau)`` is the fused :math:`x - \tau\nabla f(x)`;
    * :math:`\operatorname{prox}_{\tau f}(x) = (A^\top A + I/\tau)^{-1}(A^\top y + x/\tau)`,
      through ``A.gram_solve``;
    * ``grad_lipschitz`` :math:`= \|A\|^2` from the operator's certified norm; ``f`` is
      convex, so ``convex = True`` and ``weak_convexity = 0``.
    """

    convex = True
    weak_convexity = 0.0

    def __init__(self, A: Operator, y: torch.Tensor):
        if not isinstance(A, Operator):
            raise TypeError(f"L2Fidelity: expected an operators.Operator, got {type(A).__name__}")
        check_tensor("L2Fidelity (y)", y)
        if A.out_shape is not None and tuple(y.shape[1:]) != tuple(A.out_shape):
            want = ", ".join(map(str, A.out_shape))
            raise ValueError(f"L2Fidelity: expected y of shape (B, {want}), got {tuple(y.shape)}")
        bad = ~torch.isfinite(y.flatten(1)).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"L2Fidelity: y has NaN or Inf entries in sample(s) "
                             f"{bad.nonzero().flatten().tolist()}")
        self.A = A
        self.y = y
        self.Aty = A.adjoint(y)
        self._scaled_aty = None  # (tau, tau * A^T y) of the last grad_step

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample values :math:`\\tfrac12\\|Ax - y\\|^2`, shape ``(B,)``."""
        return self._residual_value(self.A(x) - self.y)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`A^\top(Ax - y)`."""
        return self.A.gram(x) - self.Aty

    def grad_value(self, x: torch.Tensor):
        r"""``(grad(x), v)``, ``v(rows=None)`` the per-sample value at ``x`` (see
        :func:`grad_value`).

        Where the operator has no fused normal operator (``A.fused_gram`` False, e.g. the
        Radon transform) the gradient is computed as :math:`A^\top r`, :math:`r = Ax - y`,
        and ``v`` is :math:`\tfrac12\|r\|^2` from the kept :math:`r` (no second forward
        pass); with a fused one (circular blurs) it is :meth:`grad` and ``v`` calls
        :meth:`__call__`."""
        if self.A.fused_gram:
            return self.grad(x), lambda rows=None: (
                self(x) if rows is None else self._residual_value(self.A(x[rows]) - self.y[rows]))
        r = self.A(x) - self.y
        return self.A.adjoint(r), lambda rows=None: self._residual_value(
            r if rows is None else r[rows])

    @staticmethod
    def _residual_value(r: torch.Tensor) -> torch.Tensor:
        return 0.5 * r.flatten(1).pow(2).sum(1)

    @torch.no_grad()
    def curvature_along(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(n, n)``, :math:`n = \|Ad\|^2` per sample (float64): :math:`f` is quadratic,
        its curvature along ``d`` is that everywhere (for slope-certified line searches)."""
        n = self.A(d).flatten(1).square().sum(1, dtype=torch.float64)
        return n, n

    def grad_step(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        r"""The gradient step :math:`x - \tau\nabla f(x) = \tau A^\top y -
        \tau (A^\top A - I/\tau)\, x`, in one pass of the shifted normal operator
        (for a circular blur: one FFT round trip and one add)."""
        tau = check_positive("L2Fidelity.grad_step", tau, "tau")
        if self._scaled_aty is None or self._scaled_aty[0] != tau:
            self._scaled_aty = (tau, tau * self.Aty)
        return torch.add(self._scaled_aty[1], self.A.gram(x, -1.0 / tau), alpha=-tau)

    def prox(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        r""":math:`\arg\min_u \tfrac12\|Au - y\|^2 + \tfrac1{2\tau}\|u - x\|^2`."""
        tau = check_positive("L2Fidelity.prox", tau, "tau")
        return self.A.gram_solve(torch.add(self.Aty, x, alpha=1.0 / tau), 1.0 / tau)

    @property
    def grad_lipschitz(self) -> float:
        r"""Certified Lipschitz constant of the gradient, :math:`\|A\|^2`."""
        return self.A.norm(self.y.dtype, self.y.device) ** 2
