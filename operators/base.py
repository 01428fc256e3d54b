r"""The linear operator contract.

Every forward operator of the library is a :class:`Operator`: a linear map between
batches of images ``(B, C, H, W)``, implemented as a :class:`torch.nn.Module` so that its
kernels (buffers) follow ``.to(device)`` and ``state_dict``.

Public methods validate, private hooks compute: a subclass implements ``_forward`` and
``_adjoint`` (and, where it can do better than the defaults, ``_norm``,
``_gram_solve``), while :meth:`Operator.forward` and :meth:`Operator.adjoint` check the
input's type, dtype, device and shape first.

The algebra of operators lives here too, since ``A @ B``, ``A + B``, ``c * A`` and ``A.T``
are methods of every operator: adjoint views, composition, sums, scaling and the identity.
Norms combine by the usual certified rules: :math:`\|A^\top\| = \|A\|`,
:math:`\|AB\| \le \|A\|\,\|B\|`, :math:`\|A + B\| \le \|A\| + \|B\|`,
:math:`\|cA\| = |c|\,\|A\|`. The iterative numerics (conjugate gradients, the
Collatz-Wielandt bound) are in :mod:`operators.linalg`, the argument checks in
:mod:`operators.validation`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch

from .bounds import Bound
from .linalg import (
    NORM_SAFETY,
    ConvergenceError,
    collatz_wielandt,
    operator_norm,
    shifted_normal_cg,
)
from .validation import check_positive, check_tensor, shape_str

__all__ = ["Operator", "ConvergenceError", "NORM_SAFETY", "Identity", "Adjoint",
           "Composition", "Sum", "Scaled", "compose", "add", "scale"]


class Operator(torch.nn.Module, abc.ABC):
    r"""A linear operator :math:`A : \mathbb{R}^{n} \to \mathbb{R}^{m}`.

    Parameters
    ----------
    in_shape, out_shape : tuple of int or None
        Per-sample shapes ``(C, H, W)`` of the domain and range. ``None`` makes the operator
        shape-polymorphic (e.g. a circular blur acts on any image at least as large as its
        kernel); then :meth:`output_shape` maps an input shape to an output shape.

    Notes
    -----
    The public API is

    * ``A(x)`` / ``A.forward(x)``: :math:`Ax`, ``A.adjoint(y)``: :math:`A^\top y`;
    * ``A.T``: the adjoint as an operator (``A.T.T is A``);
    * ``A @ B``, ``A + B``, ``c * A``, ``A - B``, ``-A`` (see below);
    * ``A.norm()``: :math:`\|A\|_2` exactly or a certified upper bound;
    * ``A.gram_solve(b, rho)``: :math:`(A^\top A + \rho I)^{-1} b`.

    Subclasses implement :meth:`_forward` and :meth:`_adjoint` on validated input.
    """

    #: True when every entry of the matrix of ``A`` is >= 0 (enables the Collatz-Wielandt
    #: certified norm bound).
    nonnegative: bool = False
    #: True when :math:`A^\top A` is close to a convolution (blurs, Radon): its symbol
    #: (:func:`operators.linalg.normal_symbol`) then preconditions L-BFGS, nothing else.
    shift_invariant: bool = False
    #: True when :meth:`gram` is one pass, cheaper than ``adjoint(forward(x))`` (circular
    #: blurs); else least squares take their gradient and value from one residual Ax - y.
    fused_gram: bool = False

    def __init__(self, in_shape: Sequence[int] | None = None,
                 out_shape: Sequence[int] | None = None):
        super().__init__()
        self.in_shape = None if in_shape is None else tuple(int(s) for s in in_shape)
        self.out_shape = None if out_shape is None else tuple(int(s) for s in out_shape)
        object.__setattr__(self, "_adjoint_view", None)
        object.__setattr__(self, "_norm_cache", {})

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute ``A x`` on validated input."""

    @abc.abstractmethod
    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Compute ``A^T y`` on validated input."""

    def _norm(self, dtype: torch.dtype, device: torch.device) -> float | None:
        """Exact operator norm or a certified bound from a closed form, else ``None``."""
        return None

    def _majorant(self) -> Operator | None:
        """A nonnegative operator ``M`` with ``|A_ij| <= M_ij`` entrywise, else ``None``."""
        return self if self.nonnegative else None

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input shape."""
        return tuple(in_shape) if self.out_shape is None else self.out_shape

    def input_shape(self, out_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample input shape for a per-sample output shape (inverse of output_shape)."""
        return tuple(out_shape) if self.in_shape is None else self.in_shape

    def _check_sample_shape(self, name: str, shape: tuple[int, ...], expected) -> None:
        """Hook for shape-polymorphic operators to reject unsupported sizes."""
        if expected is not None and shape != expected:
            raise ValueError(f"{type(self).__name__}.{name}: expected input of shape "
                             f"(B, {', '.join(map(str, expected))}), got "
                             f"{shape_str((-1,) + shape)}".replace("(-1,", "(B,"))

    # ----------------------------------------------------------- validation
    def _device(self) -> torch.device | None:
        """Device of the operator's buffers (cached; ``.to()`` clears the cache)."""
        if "_device_cache" not in self.__dict__:
            dev = next((b.device for b in self.buffers()), None)
            object.__setattr__(self, "_device_cache", dev)
        return self.__dict__["_device_cache"]

    def _validate(self, name: str, x, expected) -> torch.Tensor:
        cls = type(self).__name__
        check_tensor(f"{cls}.{name}", x)
        dev = self._device()
        if dev is not None and x.device != dev:
            raise ValueError(f"{cls}.{name}: expected input on device {dev} (the operator's), "
                             f"got {x.device}")
        shape = tuple(x.shape[1:])
        if expected is not None and shape != tuple(expected):
            raise ValueError(
                f"{cls}.{name}: expected input of shape (B, {', '.join(map(str, expected))}), "
                f"got {shape_str(x.shape)}"
            )
        self._check_sample_shape(name, shape, None)
        return x

    # ---------------------------------------------------------------- public
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator: :math:`y = A x` for ``x`` of shape ``(B, *in_shape)``."""
        return self._forward(self._validate("forward", x, self.in_shape))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        r"""Apply the adjoint: :math:`x = A^\top y` for ``y`` of shape ``(B, *out_shape)``."""
        return self._adjoint(self._validate("adjoint", y, self.out_shape))

    def gram(self, x: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
        r"""Apply the (shifted) normal operator :math:`(A^\top A + s I)\,x`.

        One fused pass where the operator has one (a single FFT round trip for circular
        blurs). ``shift`` :math:`s` may be any finite real (a gradient step
        :math:`x - \tau A^\top A x` is :math:`-\tau (A^\top A - I/\tau) x`);
        :meth:`gram_solve` with ``rho = s > 0`` is its inverse.
        """
        x = self._validate("gram", x, self.in_shape)
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) \
                or not math.isfinite(shift):
            raise ValueError(f"{type(self).__name__}.gram: expected a finite float shift, "
                             f"got {shift!r}")
        return self._gram(x, float(shift))

    def _gram(self, x: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
        """``(A^T A + shift I) x`` on validated input; override with a fused computation."""
        out = self._adjoint(self._forward(x))
        return out if shift == 0.0 else torch.add(out, x, alpha=shift)

    @property
    def T(self) -> Operator:  # noqa: N802 - mathematical notation
        """The adjoint operator as a view (``A.T.T is A``)."""
        if self._adjoint_view is None:
            object.__setattr__(self, "_adjoint_view", Adjoint(self))
        return self._adjoint_view

    def __matmul__(self, other):
        return compose(self, other)

    def __add__(self, other):
        return add(self, other)

    def __sub__(self, other):
        return add(self, scale(-1.0, other))

    def __neg__(self):
        return scale(-1.0, self)

    def __mul__(self, c):
        if isinstance(c, torch.nn.Module):
            raise TypeError(
                f"{type(self).__name__} * {type(c).__name__}: use `A @ B` to compose operators; "
                "`*` only multiplies by a scalar"
            )
        return scale(c, self)

    __rmul__ = __mul__

    # ------------------------------------------------------------------ norm
    def norm(self, dtype: torch.dtype = torch.float64, device=None, *, rtol: float = 1e-4,
             max_iter: int = 2000) -> Bound:
        r"""Spectral norm :math:`\|A\|_2`, exact or a certified upper bound (cached).

        In order of preference:

        1. a closed form (``_norm``), exact or an analytic upper bound;
        2. if a nonnegative entrywise majorant :math:`M \ge |A|` is known, the
           Collatz-Wielandt bound :math:`\|A\|^2 \le \|M\|^2 = \rho(M^\top M)
           \le \max_i (M^\top M v)_i / v_i` for any positive ``v``, iterated (power
           iteration from the all-ones vector) until the gap between this upper bound and
           the Rayleigh-quotient lower bound is below ``rtol``: a rigorous bound;
        3. otherwise a power-iteration estimate run to relative change ``rtol``, multiplied
           by ``1 + NORM_SAFETY``. This last case is a bound only with high probability;
           a warning says so.

        Results are cached per (dtype, device). The value is a norm, never its square, and
        a :class:`~operators.bounds.Bound`: a float whose ``certified`` says whether it is
        a rigorous upper bound (cases 1 and 2) or an estimate (case 3), and ``how`` how it
        was obtained. The solvers state no theorem on an estimate.
        """
        device = torch.device(device) if device is not None else (self._device() or
                                                                   torch.device("cpu"))
        key = (dtype, str(device))
        if key not in self._norm_cache:
            self._norm_cache[key] = operator_norm(self, dtype, device, rtol, max_iter)
        return self._norm_cache[key]

    def _apply(self, fn, *args, **kwargs):  # device / dtype moves invalidate caches
        out = super()._apply(fn, *args, **kwargs)
        self._norm_cache.clear()
        self.__dict__.pop("_device_cache", None)
        return out

    # ------------------------------------------------------------ gram solve
    def gram_solve(self, b: torch.Tensor, shift: float, *, tol: float = 1e-6,
                   max_iter: int = 500, x0: torch.Tensor | None = None) -> torch.Tensor:
        r"""Solve :math:`(A^\top A + s I)\, x = b` (``s = shift > 0``) for each sample of ``b``
        (the inverse of :meth:`gram` with the same shift; ADMM's x-step uses ``shift = rho``).

        Uses the operator's fast solver when it has one (FFT for circular blurs, pointwise
        for masks); otherwise conjugate gradients, per sample, to relative residual ``tol``.

        Raises
        ------
        ValueError
            If ``shift <= 0`` or ``b`` has the wrong shape.
        ConvergenceError
            If conjugate gradients does not reach ``tol`` within ``max_iter`` iterations.
        """
        name = f"{type(self).__name__}.gram_solve"
        shift = check_positive(name, shift, "shift")
        self._validate("gram_solve", b, self.in_shape)
        out = self._gram_solve(b, shift)
        if out is not None:
            return out
        return shifted_normal_cg(self, b, shift, tol=tol, max_iter=max_iter, x0=x0, name=name)

    def _gram_solve(self, b: torch.Tensor, shift: float) -> torch.Tensor | None:
        """Fast exact solve of (A^T A + shift I) x = b, or None to use conjugate gradients."""
        return None

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


# ------------------------------------------------------------------ the algebra
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
    return min(bound, collatz_wielandt(maj, dtype, device, 1e-6, 500))


class Identity(Operator):
    r"""The identity :math:`I x = x`; self-adjoint, :math:`\|I\| = 1`.

    Parameters
    ----------
    shape : tuple of int, optional
        Per-sample shape ``(C, H, W)``; ``None`` accepts any shape.
    """

    nonnegative = True
    shift_invariant = True

    def __init__(self, shape: Sequence[int] | None = None):
        super().__init__(shape, shape)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y

    def _norm(self, dtype, device):
        return 1.0

    def _gram_solve(self, b, shift):
        return b / (1.0 + shift)


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
        self.shift_invariant = outer.shift_invariant and inner.shift_invariant

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
        self.shift_invariant = a.shift_invariant and b.shift_invariant

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
        self.shift_invariant = op.shift_invariant

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

    def _gram_solve(self, b, shift):
        # (c^2 A^T A + shift I) x = b  <=>  x = (A^T A + shift/c^2 I)^{-1} b / c^2
        c2 = self.c * self.c
        if c2 == 0.0 or c2 * self.op.norm() ** 2 <= 1e-16 * shift:
            # c^2 A^T A is below shift's rounding: x = b / shift to working precision (relative
            # error at most c^2 ||A||^2 / shift); also where c^2 underflows
            return b / shift
        if not math.isfinite(shift / c2):
            return None  # conjugate gradients on the scaled operator
        u = self.op._gram_solve(b, shift / c2)  # solve first, then scale: no b / c^2 overflow
        return None if u is None else u / c2


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

