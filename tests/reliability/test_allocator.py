"""``lipinverse.allocator.reuse_buffers``: large tensors come from the heap afterwards."""

import ctypes
import ctypes.util
import subprocess
import sys
import textwrap

import pytest

from lipinverse.allocator import reuse_buffers


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_mallinfo2(),
                    reason="needs glibc >= 2.33 (mallinfo2) to read the mmapped bytes")
def test_large_buffers_leave_mmap_after_reuse_buffers():
    # a fresh process: the setting is process-wide, and the dynamic threshold of glibc
    # depends on what the process freed before
    code = textwrap.dedent("""
        import ctypes, ctypes.util, torch
        from lipinverse.allocator import reuse_buffers

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = Info

        def mapped_for(n):
            before = libc.mallinfo2().hblkhd
            t = torch.empty(n, dtype=torch.uint8)
            grew = libc.mallinfo2().hblkhd - before
            del t
            return grew

        big = 48 << 20          # above glibc's largest dynamic threshold (32 MiB)
        print(mapped_for(big) >= big, reuse_buffers(), mapped_for(big) == 0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "True"]


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (2 ** 31, ValueError),
                                      (1.5, TypeError), (True, TypeError), ("1G", TypeError)])
def test_bad_threshold_is_refused(bad, err):
    with pytest.raises(err, match="threshold"):
        reuse_buffers(bad)
