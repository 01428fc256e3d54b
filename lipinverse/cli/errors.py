"""Exit statuses and the one-line error format of the ``lipinverse`` command."""

from __future__ import annotations

import sys

__all__ = ["EXIT_FAILURE", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "USER_ERRORS",
           "RUNTIME_ERRORS", "say"]

#: A usage error: a bad flag, a missing or unreadable file, an unknown prior.
EXIT_USER_ERROR = 2
#: A runtime failure: divergence, NaN, a full disk, a problem larger than the memory.
EXIT_FAILURE = 1
#: Ctrl-C.
EXIT_INTERRUPTED = 130

#: Exceptions reported in one line with :data:`EXIT_USER_ERROR`.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError,
               KeyError)
#: Exceptions reported in one line with :data:`EXIT_FAILURE`.
RUNTIME_ERRORS = (RuntimeError, OSError, ArithmeticError, MemoryError)


def say(err: BaseException) -> None:
    """Print ``lipinverse: error: <message>`` on stderr, on one line."""
    msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    msg = " ".join(str(msg).split()) or type(err).__name__
    print(f"lipinverse: error: {msg}", file=sys.stderr)
