r"""The linear operator contract.

Every forward operator of the library is a :class:`Operator`: a linear map between
batches of images ``(B, C, H, W)``, implemented as a :class:`torch.nn.Module` so that its
kernels (buffers) follow ``.to(device)`` and ``state_dict``.

Public methods validate, private hooks compute: a subclass implements ``_forward`` and
``_adjoint`` (and, where it can do better than the defaults, ``_norm``,
``_gram_solve``), while :meth:`Operator.forward` and :meth:`Operator.adjoint` check the
input's type, dtype, device and shape first.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch

__all__ = ["Operator", "ConvergenceError", "NORM_SAFETY"]

#: Relative safety margin applied to a power-iteration estimate when no closed form and no
#: nonnegative majorant is available (see :meth:`Operator.norm`).
NORM_SAFETY = 1e-2

_FLOAT_DTYPES = (torch.float32, torch.float64)


class ConvergenceError(RuntimeError):
    """An inner iterative method did not reach its tolerance within its iteration cap."""


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tensor(name: str, x, *, ndim: int | None = 4) -> torch.Tensor:
    """Check that ``x`` is a real floating tensor (float32 / float64) of ``ndim`` dims.

    Raises
    ------
    TypeError
        If ``x`` is not a tensor or has a dtype other than float32 / float64.
    ValueError
        If ``x`` has the wrong number of dimensions or is empty.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-D tensor (B, C, H, W), got shape {_shape_str(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {_shape_str(x.shape)}")
    return x


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
    * ``A @ B``, ``A + B``, ``c * A``, ``A - B``, ``-A`` (see :mod:`operators.algebra`);
    * ``A.norm()``: :math:`\|A\|_2` exactly or a certified upper bound;
    * ``A.gram_solve(b, rho)``: :math:`(A^\top A + \rho I)^{-1} b`.

    Subclasses implement :meth:`_forward` and :meth:`_adjoint` on validated input.
    """

    #: True when every entry of the matrix of ``A`` is >= 0 (enables the Collatz-Wielandt
    #: certified norm bound).
    nonnegative: bool = False

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
            raise ValueError(
                f"{type(self).__name__}.{name}: expected input of shape "
                f"(B, {', '.join(map(str, expected))}), got {_shape_str((-1,) + shape)}"
                .replace("(-1,", "(B,")
            )

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
            raise ValueError(
                f"{cls}.{name}: expected input on device {dev} (the operator's), got {x.device}"
            )
        shape = tuple(x.shape[1:])
        if expected is not None and shape != tuple(expected):
            raise ValueError(
                f"{cls}.{name}: expected input of shape (B, {', '.join(map(str, expected))}), "
                f"got {_shape_str(x.shape)}"
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
            from .algebra import Adjoint

            object.__setattr__(self, "_adjoint_view", Adjoint(self))
        return self._adjoint_view

    def __matmul__(self, other):
        from .algebra import compose

        return compose(self, other)

    def __add__(self, other):
        from .algebra import add

        return add(self, other)

    def __sub__(self, other):
        from .algebra import add, scale

        return add(self, scale(-1.0, other))

    def __neg__(self):
        from .algebra import scale

        return scale(-1.0, self)

    def __mul__(self, c):
        from .algebra import scale

        if isinstance(c, torch.nn.Module):
            raise TypeError(
                f"{type(self).__name__} * {type(c).__name__}: use `A @ B` to compose operators; "
                "`*` only multiplies by a scalar"
            )
        return scale(c, self)

    __rmul__ = __mul__

    # ------------------------------------------------------------------ norm
    def norm(self, dtype: torch.dtype = torch.float64, device=None, *, rtol: float = 1e-4,
             max_iter: int = 2000) -> float:
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

        Results are cached per (dtype, device). The value is a norm, never its square.
        """
        device = torch.device(device) if device is not None else (self._device() or
                                                                   torch.device("cpu"))
        key = (dtype, str(device))
        if key in self._norm_cache:
            return self._norm_cache[key]
        val = self._norm(dtype, device)
        if val is None:
            maj = self._majorant()
            if maj is not None:
                val = _collatz_wielandt(maj, dtype, device, rtol, max_iter)
            else:
                import warnings

                from .testing import estimate_norm

                warnings.warn(
                    f"{type(self).__name__}.norm: no closed form or nonnegative majorant; "
                    f"returning a power-iteration estimate times (1 + {NORM_SAFETY})",
                    stacklevel=2,
                )
                val = estimate_norm(self, dtype=dtype, device=device, tol=rtol,
                                    max_iter=max_iter) * (1.0 + NORM_SAFETY)
        self._norm_cache[key] = float(val)
        return float(val)

    def _apply(self, fn, *args, **kwargs):  # device / dtype moves invalidate caches
        out = super()._apply(fn, *args, **kwargs)
        self._norm_cache.clear()
        self.__dict__.pop("_device_cache", None)
        return out

    # ------------------------------------------------------------ gram solve
    def gram_solve(self, b: torch.Tensor, rho: float, *, tol: float = 1e-6,
                   max_iter: int = 500, x0: torch.Tensor | None = None) -> torch.Tensor:
        r"""Solve :math:`(A^\top A + \rho I)\, x = b` for each sample of ``b``.

        Uses the operator's fast solver when it has one (FFT for circular blurs, pointwise
        for masks); otherwise conjugate gradients, per sample, to relative residual ``tol``.

        Raises
        ------
        ValueError
            If ``rho <= 0`` or ``b`` has the wrong shape.
        ConvergenceError
            If conjugate gradients does not reach ``tol`` within ``max_iter`` iterations.
        """
        name = f"{type(self).__name__}.gram_solve"
        rho = _check_rho(name, rho)
        self._validate("gram_solve", b, self.in_shape)
        out = self._gram_solve(b, rho)
        if out is not None:
            return out
        if rho <= 1.0:
            return conjugate_gradient(lambda v: self._adjoint(self._forward(v)) + rho * v, b,
                                      tol=tol, max_iter=max_iter, x0=x0, name=name)
        # rho > 1: solve (A^T A / rho + I) u = b for u = rho x instead. Its residual is the
        # same vector (so the same tolerance test), and no vector grows to rho * |b|, which
        # overflowed (NaN, then max_iter wasted iterations) for rho near the float maximum.
        u0 = None if x0 is None else x0 * rho
        if u0 is not None and not bool(torch.isfinite(u0).all()):
            u0 = None
        u = conjugate_gradient(lambda v: self._adjoint(self._forward(v)) / rho + v, b,
                               tol=tol, max_iter=max_iter, x0=u0, name=name)
        return u / rho

    def _gram_solve(self, b: torch.Tensor, rho: float) -> torch.Tensor | None:
        """Fast exact solve of (A^T A + rho I) x = b, or None to use conjugate gradients."""
        return None

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


def _check_rho(name: str, rho) -> float:
    if isinstance(rho, torch.Tensor):
        if rho.numel() != 1:
            raise ValueError(f"{name}: expected a scalar rho > 0, got a tensor of shape "
                             f"{tuple(rho.shape)}")
        rho = rho.item()
    if not isinstance(rho, (int, float)) or isinstance(rho, bool):
        raise TypeError(f"{name}: expected a float rho > 0, got {type(rho).__name__}")
    if not math.isfinite(rho) or rho <= 0:
        raise ValueError(f"{name}: expected a finite rho > 0, got {rho}")
    return float(rho)


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(apply, b: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 500,
                       x0: torch.Tensor | None = None, name: str = "conjugate_gradient"):
    r"""Batched conjugate gradients for an SPD map ``apply`` (one system per sample).

    Iterates until :math:`\|r_k\| \le \mathrm{tol}\,\|b\|` for every sample.

    Raises
    ------
    ConvergenceError
        If some sample has not converged after ``max_iter`` iterations.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = _batch_dot(r, r)
    bnorm = b.flatten(1).norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    shape = (-1,) + (1,) * (b.dim() - 1)
    for _ in range(max_iter):
        if bool((rs.sqrt() <= tol * bnorm).all()):
            return x
        ap = apply(p)
        denom = _batch_dot(p, ap)
        alpha = torch.where(denom > 0, rs / denom.where(denom > 0, torch.ones_like(denom)),
                            torch.zeros_like(denom))
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * ap
        rs_new = _batch_dot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.where(rs > 0, torch.ones_like(rs)),
                           torch.zeros_like(rs))
        p = r + beta.view(shape) * p
        rs = rs_new
    if bool((rs.sqrt() <= tol * bnorm).all()):
        return x
    worst = (rs.sqrt() / bnorm).max().item()
    raise ConvergenceError(
        f"{name}: conjugate gradients did not reach relative residual {tol:g} in {max_iter} "
        f"iterations (worst sample at {worst:.3g}); raise max_iter or tol"
    )


def _collatz_wielandt(M: Operator, dtype, device, rtol: float, max_iter: int) -> float:
    r"""Certified upper bound of :math:`\|M\|` for an entrywise nonnegative operator.

    For nonnegative :math:`G = M^\top M` and positive :math:`v`,
    :math:`\rho(G) \le \max_i (Gv)_i / v_i` (Collatz-Wielandt). Power iteration from the
    all-ones vector keeps ``v`` positive; the bound decreases towards :math:`\rho(G)`.
    Zero entries of ``Gv`` (pixels that no measurement sees) are handled by a tiny
    positive floor, which keeps the bound valid.
    """
    shape = M.in_shape
    if shape is None:
        raise ValueError(
            f"{type(M).__name__}.norm: a shape-polymorphic operator needs a closed-form norm"
        )
    v = torch.ones((1,) + tuple(shape), dtype=dtype, device=device)
    best_upper = math.inf
    for _ in range(max_iter):
        g = M._adjoint(M._forward(v))
        upper = (g / v).max().item()
        lower = (_batch_dot(v, g) / _batch_dot(v, v)).item()
        best_upper = min(best_upper, upper)
        if best_upper - lower <= rtol * best_upper:
            break
        gmax = g.max()
        if gmax <= 0:
            return 0.0
        v = (g / gmax).clamp_min(1e-30)
    # a few ulps of float64 rounding on top
    return math.sqrt(best_upper) * (1.0 + 1e-12)
