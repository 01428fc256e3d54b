r"""Typed bounds: a number together with whether it is certified and how it was obtained.

A :class:`Bound` is a ``float`` (so it computes like one) that also carries

- ``certified``: ``True`` when the value is a rigorous upper bound of the quantity (a closed
  form, a Collatz-Wielandt bound, a product of certified bounds), ``False`` when it is an
  estimate (e.g. power iteration times a safety factor), which can be below the truth;
- ``how``: a short phrase saying how it was obtained.

Operations that map upper bounds of nonnegative quantities to upper bounds keep the type:
:math:`a + b`, :math:`a\,b`, :math:`c\,a` (:math:`c \ge 0`), :math:`a^p` (:math:`p > 0`);
the result is certified only when every operand is. Any other operation (subtraction,
division, a negative factor) returns a plain ``float``, since it does not preserve an upper
bound. The solvers read ``certified`` (via :func:`is_certified`) before they state a theorem.
"""

from __future__ import annotations

import numbers

__all__ = ["Bound", "is_certified", "how"]


class Bound(float):
    """A nonnegative real upper bound (or estimate) with its provenance.

    Parameters
    ----------
    value : float
        The number, ``>= 0``.
    certified : bool
        Whether ``value`` is a rigorous upper bound.
    how : str
        How it was obtained (e.g. ``"closed form"``, ``"Collatz-Wielandt"``).
    """

    __slots__ = ("certified", "how")

    def __new__(cls, value, *, certified: bool, how: str):
        obj = super().__new__(cls, value)
        if not obj >= 0:
            raise ValueError(f"Bound: expected a value >= 0, got {float(obj)!r}")
        obj.certified = bool(certified)
        obj.how = str(how)
        return obj

    def __repr__(self) -> str:
        kind = "certified" if self.certified else "estimate"
        return f"Bound({float(self)!r}, {kind}, {self.how!r})"

    def __str__(self) -> str:
        return float.__repr__(self)

    def __reduce__(self):
        return (_rebuild, (float(self), self.certified, self.how))

    def _combine(self, other, value, op: str):
        if isinstance(other, Bound):
            return Bound(value, certified=self.certified and other.certified,
                         how=f"({self.how}) {op} ({other.how})")
        return Bound(value, certified=self.certified, how=self.how)

    def __add__(self, other):
        if isinstance(other, numbers.Real) and other >= 0:
            return self._combine(other, float(self) + float(other), "+")
        return float(self) + other

    __radd__ = __add__

    def __mul__(self, other):
        if isinstance(other, numbers.Real) and other >= 0:
            return self._combine(other, float(self) * float(other), "*")
        return float(self) * other

    __rmul__ = __mul__

    def __pow__(self, p):
        if isinstance(p, numbers.Real) and p > 0:
            return Bound(float(self) ** p, certified=self.certified, how=self.how)
        return float(self) ** p


def _rebuild(value, certified, how):
    return Bound(value, certified=certified, how=how)


def is_certified(value) -> bool:
    """``False`` only for a :class:`Bound` marked as an estimate (plain numbers: ``True``).

    Plain floats count as certified: a user-supplied constant is the user's statement.
    """
    return not isinstance(value, Bound) or value.certified


def how(value) -> str:
    """How a bound was obtained (``"given"`` for a plain number)."""
    return value.how if isinstance(value, Bound) else "given"
