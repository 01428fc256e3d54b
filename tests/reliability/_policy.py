"""The bad-input policy shared by the reliability tests, and a case counter.

A call on bad input must do one of two things:

* work correctly (the test then checks the result: finite, right shape and dtype); or
* raise one clear error: ``ValueError`` / ``TypeError`` whose message starts with the
  library function or class that refused it and says what was wrong (:func:`is_clear`),
  or one of the library's own loud stops (``DivergenceError`` of the solvers,
  ``ConvergenceError`` of an inner solver, the trainer's ``FloatingPointError``), whose
  message names the function too.

Anything else (``IndexError``, ``RuntimeError`` from deep inside torch, a hang, a silent NaN)
fails the test.  :data:`COUNTS` counts the cases tried per target and outcome, so that
``benchmarks/reliability.py`` can run the same generators and report the totals.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import re
import signal

import torch
from hypothesis import HealthCheck, settings

from lipinverse.solvers import DivergenceError
from operators import ConvergenceError

#: ``(target, outcome) -> number of cases``; outcome is ``"ok"`` or ``"refused"``.
COUNTS: collections.Counter = collections.Counter()

#: The library's own loud stops, accepted besides ValueError / TypeError.
LOUD_STOPS = (DivergenceError, ConvergenceError, FloatingPointError)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32,
          torch.int64, torch.uint8, torch.complex64, torch.bool]


#: ``benchmarks/reliability.py`` multiplies every test's number of examples by this.
SCALE = float(os.environ.get("LIPINVERSE_FUZZ_SCALE", "1"))


def fuzz(max_examples: int):
    """Hypothesis settings of these tests: derandomised (same examples on every run, so
    the benchmark's count is reproducible), no deadline, no example database;
    ``max_examples`` times the environment's ``LIPINVERSE_FUZZ_SCALE`` (default 1)."""
    return settings(max_examples=max(1, int(max_examples * SCALE)), deadline=None,
                    derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow,
                                                          HealthCheck.filter_too_much])


class Hang(Exception):
    """Raised by :func:`no_hang` when a call runs past its time limit."""


@contextlib.contextmanager
def no_hang(seconds: int = 120):
    """Fail (raise :class:`Hang`) if the block runs longer than ``seconds`` (main thread,
    POSIX; elsewhere a no-op)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def _alarm(signum, frame):
        raise Hang(f"call still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)[\w.]*(?: \([^)]*\))?:\s+\S")


@functools.lru_cache(maxsize=1)
def library_names() -> frozenset:
    """Public names of the library (classes, functions): a clear message starts with one."""
    import lipinverse.denoisers
    import lipinverse.functionals
    import lipinverse.nn
    import lipinverse.regularizers
    import lipinverse.solvers
    import lipinverse.training
    import operators

    mods = (operators, lipinverse.denoisers, lipinverse.functionals, lipinverse.nn,
            lipinverse.regularizers, lipinverse.solvers, lipinverse.training)
    return frozenset(n for m in mods for n in dir(m) if not n.startswith("_"))


def is_clear(msg: str) -> bool:
    """A clear message names the library function or class that refused (``"Name.method:
    ..."``), then says what was wrong; torch's and Python's own messages (``"linalg.vector_norm:
    ..."``, ``"could not convert string to float"``) are not clear."""
    m = _PREFIX.match(msg)
    return bool(m) and m.group(1) in library_names() and len(msg) > len(m.group(0)) + 10


def attempt(target: str, fn, *, seconds: int = 120):
    """Run ``fn()`` under the policy; returns ``(True, result)`` or ``(False, error)``.

    Raises ``AssertionError`` for an unclear error message, and lets any other exception
    (an opaque internal error) propagate so that the test fails.
    """
    try:
        with no_hang(seconds):
            out = fn()
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert is_clear(msg), f"{target}: unclear {type(err).__name__}: {msg}"
        COUNTS[(target, "refused")] += 1
        return False, err
    except LOUD_STOPS as err:
        msg = str(err)
        assert is_clear(msg), f"{target}: {type(err).__name__} without naming the function: {msg}"
        COUNTS[(target, "refused")] += 1
        return False, err
    COUNTS[(target, "ok")] += 1
    return True, out


def assert_finite(name: str, t: torch.Tensor) -> None:
    """A result must never carry a silent NaN / Inf."""
    assert isinstance(t, torch.Tensor), f"{name}: expected a tensor, got {type(t).__name__}"
    if t.is_floating_point() or t.is_complex():
        assert bool(torch.isfinite(t).all()), f"{name}: silent NaN / Inf in the result"


def relayout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``x`` in another memory layout: ``contiguous``, ``strided`` (every
    other column of a wider tensor) or ``channels_last`` (channel slice of a channels-last
    tensor, so that even one-channel images are non-contiguous)."""
    if layout == "strided" and x.dim() >= 1:
        big = torch.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if layout == "channels_last" and x.dim() == 4:
        b, c, h, w = x.shape
        big = torch.zeros(b, c + 2, h, w, dtype=x.dtype).contiguous(
            memory_format=torch.channels_last)
        big[:, :c] = x
        return big[:, :c]
    return x


def make_tensor(shape, dtype, *, seed: int = 0, fill: str = "rand",
                layout: str = "contiguous") -> torch.Tensor:
    """A test input: random values (``fill``: ``rand``, ``nan``, ``inf``, ``zero``,
    ``huge``), of any dtype, in any layout (see :func:`relayout`)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tuple(shape), generator=g, dtype=torch.float64)
    if fill == "zero":
        x.zero_()
    elif fill == "huge":
        x.mul_(1e30)
    elif fill in ("nan", "inf") and x.numel():
        x[(0,) * x.dim()] = float(fill)
    if dtype == torch.bool:
        x = x > 0.5
    elif dtype.is_complex:
        x = x.to(dtype) * (1 + 1j)
    elif not dtype.is_floating_point:
        x = (x * 255).clamp(-2**30, 2**30).nan_to_num(0).to(dtype)
    else:
        x = x.to(dtype)
    return relayout(x, layout)
