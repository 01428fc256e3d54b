"""Typed bounds: certified-ness follows the operations that keep an upper bound."""

import math
import pickle

import pytest

from operators.bounds import Bound, how, is_certified


def test_monotone_operations_keep_the_type_and_the_flag():
    a = Bound(2.0, certified=True, how="closed form")
    e = Bound(3.0, certified=False, how="power iteration")
    assert (a * a).certified and (a ** 2).certified and (a + 1.0).certified
    assert isinstance(3.0 * a, Bound) and float(3.0 * a) == 6.0
    for mixed in (a * e, a + e, e ** 2, 2 * e):
        assert isinstance(mixed, Bound) and not mixed.certified
    assert "power iteration" in how(a * e)


def test_operations_that_do_not_keep_an_upper_bound_return_floats():
    a = Bound(2.0, certified=True, how="closed form")
    for out in (a - 1.0, a / 2.0, -1.0 * a, a ** -1, 1.0 / a):
        assert type(out) is float
    assert math.isclose(1.0 / a, 0.5)


def test_plain_numbers_count_as_given_and_bounds_refuse_negatives():
    assert is_certified(1.5) and how(1.5) == "given"
    assert not is_certified(Bound(1.0, certified=False, how="x"))
    with pytest.raises(ValueError, match=">= 0"):
        Bound(-1.0, certified=True, how="x")
    with pytest.raises(ValueError, match=">= 0"):
        Bound(float("nan"), certified=True, how="x")


def test_str_and_pickle():
    a = Bound(0.25, certified=True, how="Collatz-Wielandt")
    assert str(a) == "0.25" and f"{a:.1f}" == "0.2" and "certified" in repr(a)
    b = pickle.loads(pickle.dumps(a))
    assert b == a and b.certified and b.how == "Collatz-Wielandt"
