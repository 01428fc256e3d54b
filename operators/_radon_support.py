r"""Support of :mod:`operators.radon`: checks of the geometry arguments (image size, angles,
index memory) and the filters of filtered back-projection (ramp and windows, angular
quadrature weights)."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch


def _as_size(image_size) -> int:
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2 or image_size[0] != image_size[1]:
            raise ValueError(f"Radon: expected a square image, image_size n or (n, n), "
                             f"got {tuple(image_size)}")
        image_size = image_size[0]
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
        raise TypeError(f"Radon: expected image_size as an int, got {type(image_size).__name__}")
    if image_size < 2:
        raise ValueError(f"Radon: expected image_size >= 2, got {image_size}")
    return int(image_size)


def _check_index_memory(n: int) -> None:
    """Refuse an image size whose int64 pixel index (kept by every backend, ``8 n^2``
    bytes) alone exceeds the machine's physical memory, before allocating it."""
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX: let the allocator decide
        return
    need = 8 * n * n
    if need > phys:
        raise ValueError(f"Radon: image_size {n} needs {need / 2**30:.1f} GiB for its pixel "
                         f"index alone, more than this machine's {phys / 2**30:.1f} GiB; "
                         f"expected a smaller image_size")


def _as_angles(angles, period: float) -> tuple[float, ...]:
    if isinstance(angles, bool):
        raise TypeError("Radon: expected angles as an int or a 1-D tensor of radians, got bool")
    if isinstance(angles, numbers.Integral):
        if angles < 1:
            raise ValueError(f"Radon: expected a positive number of angles, got {angles}")
        return tuple(float(a) for a in np.arange(int(angles)) * (period / int(angles)))
    if isinstance(angles, torch.Tensor):
        if angles.is_complex() or not (angles.is_floating_point() or angles.dtype in (
                torch.int32, torch.int64)):
            raise TypeError(f"Radon: expected real angles (radians), got dtype {angles.dtype}")
        arr = angles.detach().cpu().to(torch.float64).numpy()
    elif isinstance(angles, (np.ndarray, list, tuple)):
        try:
            arr = np.asarray(angles, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"Radon: expected real angles (radians), got {angles!r:.60}") from err
    else:
        raise TypeError(f"Radon: expected angles as an int or a 1-D tensor of radians, "
                        f"got {type(angles).__name__}")
    if arr.ndim != 1:
        raise ValueError(f"Radon: expected a 1-D tensor of angles, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("Radon: expected at least one angle, got an empty tensor")
    if not np.isfinite(arr).all():
        raise ValueError("Radon: expected finite angles (radians), got NaN or Inf")
    return tuple(float(a) for a in arr)


def _positive(name: str, value, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Radon: expected {name} as a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Radon: expected a finite {name} {kind}, got {value}")
    return value


def filter_response(size: int, filter: str, dtype, device) -> torch.Tensor:
    r"""Frequency response (``rfft`` layout, ``size // 2 + 1`` entries) of the FBP filter.

    The ramp is the band-limited one of Ramachandran and Lakshminarayanan defined in space,
    :math:`h_0 = 1/4`, :math:`h_k = -1/(\pi k)^2` for odd :math:`k`, 0 for even
    :math:`k \ne 0`, whose transform is :math:`|\nu|` on :math:`|\nu| \le 1/2` without the
    zero-frequency error of sampling :math:`|\nu|` directly. The windows multiply it:
    ``hann`` by :math:`(1 + \cos 2\pi\nu)/2`, ``shepp-logan`` by
    :math:`\mathrm{sinc}\,\nu = \sin(\pi\nu)/(\pi\nu)`.
    """
    k = torch.cat([torch.arange(0, size // 2 + 1), torch.arange(-(size // 2) + 1, 0)])
    k = k.to(torch.float64)
    h = torch.zeros(size, dtype=torch.float64)
    h[0] = 0.25
    odd = (k.remainder(2) == 1)
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    response = torch.fft.rfft(h).real
    nu = torch.fft.rfftfreq(size, dtype=torch.float64)
    if filter == "hann":
        response = response * 0.5 * (1.0 + torch.cos(2 * math.pi * nu))
    elif filter == "shepp-logan":
        response = response * torch.sinc(nu)
    return response.to(dtype=dtype, device=device)


def angular_weights(angles: tuple[float, ...], period: float) -> torch.Tensor:
    r"""Quadrature weights :math:`\Delta\theta_i` of the angles over one period.

    Half the gap to each neighbour, angles taken modulo ``period`` (so equispaced angles
    get ``period / n_angles``).
    """
    a = np.mod(np.asarray(angles, dtype=np.float64), period)
    order = np.argsort(a, kind="stable")
    s = a[order]
    if s.size == 1:
        gaps = np.array([period])
    else:
        nxt = np.roll(s, -1)
        nxt[-1] += period
        gap = nxt - s  # gap to the next angle
        gaps = 0.5 * (gap + np.roll(gap, 1))
    w = np.empty_like(gaps)
    w[order] = gaps
    return torch.from_numpy(w)
