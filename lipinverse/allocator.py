r"""Reuse of freed tensor buffers by the C allocator (glibc): the CPU speed-up of every solve.

On Linux, torch's CPU tensors come from ``malloc``. By default glibc serves a block above its
*mmap threshold* (128 KiB, raised on the fly up to 32 MiB) by a fresh ``mmap`` and gives it
back to the kernel on ``free``; it also trims the top of its heap when more than the *trim
threshold* is free there. An iterative solver allocates and frees image-sized temporaries
(a ridge prior's filter responses: 32 channels x 256 x 256 float32 = 8 MiB) every iteration,
so each new buffer is mapped again and its pages are faulted in and zeroed by the kernel, one
by one: on this project's 2-core machine that costs more than the arithmetic. Measured on a
256 x 256 image, 1 thread: an elementwise op on 2M floats 3.8 ms -> 0.27 ms, 40 iterations
of accelerated PGD with the shipped ``crr`` 4.2-6.1 s -> 1.8-2.3 s; 2048 x 2048 deblurring,
10 iterations: ``crr`` 222 -> 53 s (peak resident memory 1.45 -> 1.72 GiB), TV 27 -> 11 s
(1.44 -> 1.42 GiB).

:func:`reuse_buffers` fixes both thresholds (``mallopt(M_MMAP_THRESHOLD)``,
``mallopt(M_TRIM_THRESHOLD)``) so that blocks up to ``threshold`` bytes come from the heap
and freed ones are reused. It changes the allocator of the whole process, not only of
lipinverse: memory freed by the program stays mapped to it (the resident size does not go
down after a large solve; the peak is unchanged up to fragmentation). The ``lipinverse``
command calls it; a Python program opts in with one call. It changes no result: only where
the bytes of a tensor live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["reuse_buffers", "DEFAULT_THRESHOLD"]

#: Blocks up to this size (bytes) come from the heap after :func:`reuse_buffers`.
DEFAULT_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD = -1   # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def reuse_buffers(threshold: int = DEFAULT_THRESHOLD) -> bool:
    r"""Let the C allocator keep and reuse freed blocks up to ``threshold`` bytes.

    Parameters
    ----------
    threshold : int
        Largest block, in bytes, served from the heap instead of a fresh ``mmap``; also the
        free space kept at the top of the heap. Between 0 and ``2**31 - 1`` (glibc's
        ``int``); the default, 1 GiB, covers the temporaries of a 2048 x 2048 solve.

    Returns
    -------
    bool
        ``True`` when glibc accepted both settings; ``False`` where the C library is not
        glibc (macOS, Windows, musl): there nothing is changed and nothing is needed
        (their allocators cache freed blocks already).

    Raises
    ------
    TypeError, ValueError
        ``threshold`` not an integer in ``[0, 2**31 - 1]``.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(f"reuse_buffers: expected an integer threshold in bytes, got "
                        f"{type(threshold).__name__}")
    if not 0 <= threshold <= 2 ** 31 - 1:
        raise ValueError(f"reuse_buffers: expected a threshold in [0, 2**31 - 1] bytes, "
                         f"got {threshold}")
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold))


def _glibc_mallopt():
    """glibc's ``mallopt``, or None where the C library is another one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
    except (OSError, AttributeError):
        return None
    fn = libc.mallopt
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn
