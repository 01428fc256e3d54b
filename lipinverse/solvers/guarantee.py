r"""The convergence statement of a solve, as a value: :class:`Guarantee`.

A guarantee either holds (``theorem`` names it) or not (``theorem is None``, and ``reason``
says which condition fails). When it holds it lists the conditions it rests on with their
values, every one read from a certified bound (an estimated constant makes the guarantee
fail and names the constant), the rate and the reference. ``str(g)`` is the one-line
sentence that the CLI prints; a failed guarantee's sentence starts with ``"none: "``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from operators.bounds import how, is_certified

__all__ = ["Guarantee", "holds", "fails", "uncertified"]


@dataclass(frozen=True)
class Guarantee:
    """A convergence theorem whose conditions the certificates meet, or why none applies.

    Attributes
    ----------
    theorem : str or None
        Short name (``"FISTA"``, ``"PGD"``, ``"Gradient descent"``, ``"PnP-FBS"``,
        ``"ADMM"``, ...); ``None`` when no theorem applies.
    sentence : str
        The statement (conditions => conclusion (reference)), or the failed condition.
    conditions : tuple of (str, float)
        The certified quantities the theorem uses (e.g. ``("tau", 0.5)``, ``("1/L_f",
        0.54)``).
    rate : str or None
        The convergence rate, where the theorem gives one (e.g. ``"O(1/k^2)"``).
    reference : str or None
    notes : tuple of str
        Additions (inexact inner solves, adapted penalties) that qualify the statement.
    """

    theorem: str | None
    sentence: str
    conditions: tuple[tuple[str, float], ...] = ()
    rate: str | None = None
    reference: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        """Whether a theorem applies."""
        return self.theorem is not None

    def __str__(self) -> str:
        text = self.sentence if self.holds else f"none: {self.sentence}"
        return text + "".join(f"; {n}" for n in self.notes)

    def with_note(self, note: str) -> Guarantee:
        """The same guarantee with one more qualifying note (no-op for an empty note)."""
        note = note.strip().lstrip(";").strip()
        return dataclasses.replace(self, notes=self.notes + (note,)) if note else self


def holds(theorem: str, sentence: str, *, rate: str | None = None,
          reference: str | None = None, **conditions) -> Guarantee:
    """A guarantee that holds, with its conditions (``None`` values are left out)."""
    conds = tuple((k, float(v)) for k, v in conditions.items() if v is not None)
    return Guarantee(theorem, sentence, conds, rate, reference)


def fails(reason: str) -> Guarantee:
    """No theorem applies; ``reason`` names the condition that fails."""
    return Guarantee(None, reason)


def uncertified(**constants) -> Guarantee | None:
    """A failed guarantee naming the first constant that is an estimate, not a certified
    bound (a :class:`~operators.bounds.Bound` with ``certified=False``); ``None`` if all
    are certified (or not given)."""
    for name, value in constants.items():
        if value is not None and not is_certified(value):
            return fails(f"{name} = {float(value):.4g} is an estimate ({how(value)}), not a "
                         "certified bound; no theorem may rest on it (give the operator a "
                         "closed-form norm or a nonnegative majorant, or pass step_size)")
    return None

