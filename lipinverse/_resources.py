r"""Peak-memory estimates of a reconstruction, checked against the memory available before
the solve (so that a problem that cannot fit is refused in one line, not by the allocator
or the kernel's OOM killer half-way through).

The estimates count image-sized arrays: the solver state (iterates, momentum, gradient,
temporaries) and, for a ridge prior, its filter responses (``K`` channels, a few arrays
each). The constants were measured with ``/usr/bin/time -v`` on 2048x2048 deblurring on
CPU (float32): TV 1.7 GiB (about 110 image copies); shipped ``crr`` (32 channels) 4.4 GiB
before its gradient went in strips of rows, 1.5 GiB since (the filter responses of a large
image are bounded by the strip size, ``ridge_calculus.STRIP_ELEMENTS``). They are
estimates, not bounds; the check refuses only problems above the memory available.
"""

from __future__ import annotations

import os

__all__ = ["available_memory", "estimate_solve_bytes", "check_fits", "STRIP_ELEMENTS"]

#: Elements (batch x channels x pixels) of one filter-response map above which a ridge
#: prior's gradient or value without autograd is computed in strips of rows (64 MiB of
#: float32 per map; used by :mod:`lipinverse.regularizers.ridge_calculus`).
STRIP_ELEMENTS = 1 << 24

#: Image-sized float arrays held by a solve, beyond the prior's own.
SOLVER_COPIES = 110
#: Image-sized arrays per filter channel of a ridge prior (responses, activations,
#: curvatures, the transposed convolution's temporaries).
RIDGE_COPIES_PER_CHANNEL = 5


def available_memory() -> int | None:
    """Bytes available to a new allocation (``MemAvailable`` of ``/proc/meminfo``, or the
    cgroup limit if smaller), or None where unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and avail is not None:
            try:
                used = int(open(os.path.join(os.path.dirname(path), "memory.current")).read())
            except (OSError, ValueError):
                used = 0
            avail = min(avail, max(int(text) - used, 0))
    return avail


def estimate_solve_bytes(n_pixels: int, channels: int, prior, bytes_per_value: int = 4,
                         extra: int = 0) -> int:
    """Estimated peak bytes of a solve on ``channels`` x ``n_pixels`` values with ``prior``
    (``extra``: operator storage, e.g. a Radon matrix)."""
    total = SOLVER_COPIES * n_pixels * channels * bytes_per_value
    filters = getattr(prior, "channels", None)
    if isinstance(filters, (list, tuple)) and filters:
        # the responses of one pass: the whole image, or one strip of rows when larger
        elements = min(int(filters[-1]) * n_pixels * channels, STRIP_ELEMENTS)
        total += RIDGE_COPIES_PER_CHANNEL * elements * bytes_per_value
    return int(total) + int(extra)


def check_fits(estimate: int, what: str) -> None:
    """Raise ``MemoryError`` (one line) when ``estimate`` exceeds the available memory."""
    avail = available_memory()
    if avail is not None and estimate > avail:
        raise MemoryError(f"{what}: needs about {estimate / 2**30:.1f} GiB at its peak, "
                          f"{avail / 2**30:.1f} GiB available; use --size to work on a crop, "
                          f"or a machine with more memory")
