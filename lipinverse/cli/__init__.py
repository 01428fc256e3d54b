r"""The ``lipinverse`` command: deblur, CT, denoise, train, certify, list the shipped models.

Run ``lipinverse --help`` or ``lipinverse SUBCOMMAND --help``. Every subcommand reads images
as floats in [0, 1] (integer images are divided by their maximum value, e.g. 255); deblur
and denoise keep colour (``--gray`` for the luminance), CT reads the luminance. Outputs are
8-bit PNGs clipped to [0, 1] for display only; PSNR and SSIM (over all channels) are
computed on the unclipped values.

Exit status: 0 on success, 2 for a user error (missing or unreadable file, bad kernel spec,
unknown prior, negative noise, CUDA requested but unavailable: one line
``lipinverse: error: ...`` on stderr, never a traceback), 1 when a solve fails (divergence,
NaN, a full disk, a problem larger than the memory), 130 on Ctrl-C.

The package: :mod:`~lipinverse.cli.parser` (flags), :mod:`~lipinverse.cli.commands` (one
``run_<command>`` per subcommand), :mod:`~lipinverse.cli.priors` (priors and solvers by
name), :mod:`~lipinverse.cli.train` (training), :mod:`~lipinverse.cli.errors` (exit
statuses and the error line). Nothing here imports this ``__init__``: no cycle.

The command runs with :func:`lipinverse.allocator.reuse_buffers` (freed tensor buffers are
reused instead of mapped again: about 2x faster ridge-prior solves on the CPU).
"""

from __future__ import annotations

import sys

from ..allocator import reuse_buffers
from . import commands
from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    RUNTIME_ERRORS,
    USER_ERRORS,
    say,
)
from .parser import build_parser

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``lipinverse`` command; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(commands, f"run_{args.command}")
    reuse_buffers()
    try:
        handler(args)
    except KeyboardInterrupt:
        print("lipinverse: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which closed it: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as err:
        say(err)
        return EXIT_USER_ERROR
    except RUNTIME_ERRORS as err:  # divergence, NaN, disk full, larger than the memory
        say(err)
        return EXIT_FAILURE
    return 0
