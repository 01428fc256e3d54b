r"""The algebra of operators: adjoint views, composition, sums, scaling, identity.

This module is the only place where operators are combined. ``A @ B``, ``A + B``,
``c * A`` and ``A.T`` on any :class:`~operators.base.Operator` end up here.

Norms combine by the usual certified rules:
:math:`\|A^\top\| = \|A\|`, :math:`\|AB\| \le \|A\|\,\|B\|`,
:math:`\|A + B\| \le \|A\| + \|B\|`, :math:`\|cA\| = |c|\,\|A\|`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Operator, _collatz_wielandt

__all__ = ["Identity", "Adjoint", "Composition", "Sum", "Scaled", "compose", "add", "scale"]


def _require_operator(name: str, op) -> Operator:
    if not isinstance(op, Operator):
        raise TypeError(f"{name}: expected an operators.Operator, got {type(op).__name__}")
    return op


def _shapes_meet(name: str, out_shape, in_shape) -> None:
    if out_shape is not None and in_shape is not None and tuple(out_shape) != tuple(in_shape):
        raise ValueError(
            f"{name}: the inner operator's output shape {tuple(out_shape)} does not match the "
            f"outer operator's input shape {tuple(in_shape)}"
        )


def _tighten(op: Operator, bound: float, dtype, device) -> float:
    """min(bound, Collatz-Wielandt bound) when ``op`` has a known shape and a nonnegative
    majorant: both are certified, the second is tight for nonnegative operators."""
    maj = op._majorant()
    if maj is None or op.in_shape is None:
        return bound
    return min(bound, _collatz_wielandt(maj, dtype, device, 1e-6, 500))


class Identity(Operator):
    r"""The identity :math:`I x = x`; self-adjoint, :math:`\|I\| = 1`.

    Parameters
    ----------
    shape : tuple of int, optional
        Per-sample shape ``(C, H, W)``; ``None`` accepts any shape.
    """

    nonnegative = True

    def __init__(self, shape: Sequence[int] | None = None):
        super().__init__(shape, shape)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y

    def _norm(self, dtype, device):
        return 1.0

    def _gram_solve(self, b, rho):
        return b / (1.0 + rho)


class Adjoint(Operator):
    r"""The adjoint view :math:`A^\top` of an operator (use ``A.T``)."""

    def __init__(self, op: Operator):
        super().__init__(op.out_shape, op.in_shape)
        self.op = _require_operator("Adjoint", op)
        object.__setattr__(self, "_adjoint_view", op)
        self.nonnegative = op.nonnegative

    def _forward(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._forward(y)

    def output_shape(self, in_shape):
        return self.op.input_shape(in_shape)

    def input_shape(self, out_shape):
        return self.op.output_shape(out_shape)

    def _norm(self, dtype, device):
        return self.op.norm(dtype, device)

    def _majorant(self):
        m = self.op._majorant()
        return None if m is None else m.T


class Composition(Operator):
    r"""The composition :math:`(A B)x = A(Bx)` (use ``A @ B``).

    Adjoint :math:`(AB)^\top = B^\top A^\top`; norm bound :math:`\|A\|\,\|B\|`.
    """

    def __init__(self, outer: Operator, inner: Operator):
        _require_operator("compose", outer)
        _require_operator("compose", inner)
        _shapes_meet("compose (A @ B)", inner.out_shape, outer.in_shape)
        in_shape = inner.in_shape
        out_shape = outer.out_shape
        if out_shape is None and in_shape is not None:
            out_shape = outer.output_shape(inner.output_shape(in_shape))
        if in_shape is None and out_shape is not None:
            in_shape = inner.input_shape(outer.input_shape(out_shape))
        super().__init__(in_shape, out_shape)
        self.outer = outer
        self.inner = inner
        self.nonnegative = outer.nonnegative and inner.nonnegative

    def _forward(self, x):
        return self.outer._forward(self.inner._forward(x))

    def _adjoint(self, y):
        return self.inner._adjoint(self.outer._adjoint(y))

    def output_shape(self, in_shape):
        return self.outer.output_shape(self.inner.output_shape(in_shape))

    def input_shape(self, out_shape):
        return self.inner.input_shape(self.outer.input_shape(out_shape))

    def _norm(self, dtype, device):
        bound = self.outer.norm(dtype, device) * self.inner.norm(dtype, device)
        return _tighten(self, bound, dtype, device)

    def _majorant(self):
        a, b = self.outer._majorant(), self.inner._majorant()
        return None if a is None or b is None else Composition(a, b)


class Sum(Operator):
    r"""The sum :math:`(A + B)x = Ax + Bx` (use ``A + B``); norm bound :math:`\|A\| + \|B\|`."""

    def __init__(self, a: Operator, b: Operator):
        _require_operator("add", a)
        _require_operator("add", b)
        for what in ("in_shape", "out_shape"):
            sa, sb = getattr(a, what), getattr(b, what)
            if sa is not None and sb is not None and sa != sb:
                raise ValueError(f"add (A + B): {what} differ: {sa} and {sb}")
        super().__init__(a.in_shape or b.in_shape, a.out_shape or b.out_shape)
        self.a = a
        self.b = b
        self.nonnegative = a.nonnegative and b.nonnegative

    def _forward(self, x):
        return self.a._forward(x) + self.b._forward(x)

    def _adjoint(self, y):
        return self.a._adjoint(y) + self.b._adjoint(y)

    def output_shape(self, in_shape):
        return self.a.output_shape(in_shape)

    def input_shape(self, out_shape):
        return self.a.input_shape(out_shape)

    def _norm(self, dtype, device):
        bound = self.a.norm(dtype, device) + self.b.norm(dtype, device)
        return _tighten(self, bound, dtype, device)


class Scaled(Operator):
    r"""The scaled operator :math:`(cA)x = c\,Ax` (use ``c * A``); :math:`\|cA\| = |c|\|A\|`."""

    def __init__(self, c: float, op: Operator):
        _require_operator("scale", op)
        if isinstance(c, torch.Tensor):
            if c.numel() != 1:
                raise ValueError(f"scale (c * A): expected a scalar c, got shape {tuple(c.shape)}")
            c = c.item()
        if not isinstance(c, (int, float)) or isinstance(c, bool):
            raise TypeError(f"scale (c * A): expected a real scalar c, got {type(c).__name__}")
        if not math.isfinite(c):
            raise ValueError(f"scale (c * A): expected a finite scalar c, got {c}")
        super().__init__(op.in_shape, op.out_shape)
        self.c = float(c)
        self.op = op
        self.nonnegative = op.nonnegative and self.c >= 0

    def _forward(self, x):
        return self.c * self.op._forward(x)

    def _adjoint(self, y):
        return self.c * self.op._adjoint(y)

    def output_shape(self, in_shape):
        return self.op.output_shape(in_shape)

    def input_shape(self, out_shape):
        return self.op.input_shape(out_shape)

    def _norm(self, dtype, device):
        return abs(self.c) * self.op.norm(dtype, device)

    def _majorant(self):
        m = self.op._majorant()
        return None if m is None else Scaled(abs(self.c), m)

    def _gram_solve(self, b, rho):
        # (c^2 A^T A + rho I) x = b  <=>  (A^T A + rho/c^2 I) x = b / c^2
        if self.c == 0.0:
            return b / rho
        c2 = self.c * self.c
        if c2 == 0.0 or not math.isfinite(rho / c2):
            # c^2 underflows (|c| < 1e-154) or rho / c^2 overflows: c^2 A^T A is below
            # rho's rounding, so x = b / rho to working precision (relative error at most
            # c^2 ||A||^2 / rho)
            if c2 * self.op.norm() ** 2 <= 1e-16 * rho:
                return b / rho
            return None  # conjugate gradients on the scaled operator
        return self.op._gram_solve(b / c2, rho / c2)


def compose(outer: Operator, inner: Operator) -> Operator:
    """``outer @ inner``; keeps structure where an operator knows how (``_compose_with``)."""
    _require_operator("compose", outer)
    if not isinstance(inner, Operator):
        raise TypeError(
            f"compose (A @ B): expected an operators.Operator, got {type(inner).__name__}"
        )
    if isinstance(inner, Identity):
        _shapes_meet("compose (A @ B)", inner.out_shape, outer.in_shape)
        return outer
    if isinstance(outer, Identity):
        _shapes_meet("compose (A @ B)", inner.out_shape, outer.in_shape)
        return inner
    fused = getattr(outer, "_compose_with", lambda other: None)(inner)
    return fused if fused is not None else Composition(outer, inner)


def add(a: Operator, b: Operator) -> Operator:
    """``a + b``."""
    if not isinstance(b, Operator):
        raise TypeError(f"add (A + B): expected an operators.Operator, got {type(b).__name__}")
    return Sum(a, b)


def scale(c, op: Operator) -> Operator:
    """``c * op``."""
    return Scaled(c, op)

