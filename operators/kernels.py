r"""Blur kernel factories. Each returns a 2-D float64 tensor, centred, summing to 1."""

from __future__ import annotations

import math

import torch

__all__ = ["gaussian", "uniform", "motion", "MAX_SIZE"]

#: Largest kernel side accepted by the factories (a larger kernel is almost surely a unit
#: mistake, e.g. sigma given in image fractions instead of pixels).
MAX_SIZE = 1025


def _check_positive(name: str, value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number for {what}, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite {what} > 0, got {value}")
    return float(value)


def _check_size(name: str, size) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{name}: expected an int size, got {type(size).__name__}")
    if size < 1 or size > MAX_SIZE:
        raise ValueError(f"{name}: expected size >= 1 and <= {MAX_SIZE}, got {size}")
    return size


def gaussian(sigma: float, size: int | None = None) -> torch.Tensor:
    r"""Isotropic Gaussian :math:`k_{ij} \propto \exp(-(i^2 + j^2) / (2\sigma^2))`.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, > 0.
    size : int, optional
        Side length; default ``2 * ceil(3 sigma) + 1`` (odd, so the kernel is centred).
    """
    sigma = _check_positive("kernels.gaussian", sigma, "sigma")
    if size is None:
        if sigma > (MAX_SIZE - 1) / 6:
            raise ValueError(f"kernels.gaussian: expected sigma <= {(MAX_SIZE - 1) / 6:g} pixels "
                             f"for the default size 2*ceil(3*sigma)+1 <= {MAX_SIZE}, got {sigma:g}")
        size = 2 * math.ceil(3 * sigma) + 1
    size = _check_size("kernels.gaussian", size)
    t = torch.arange(size, dtype=torch.float64) - (size // 2)
    g = torch.exp(-0.5 * (t / sigma) ** 2)  # (t / sigma) keeps a tiny sigma free of 0/0
    k = g[:, None] * g[None, :]
    return k / k.sum()


def uniform(size: int) -> torch.Tensor:
    """Box blur: a ``size x size`` kernel of equal weights."""
    size = _check_size("kernels.uniform", size)
    return torch.full((size, size), 1.0 / size**2, dtype=torch.float64)


def motion(size: int = 15, seed: int = 0, *, length: float | None = None,
           inertia: float = 0.7, n_steps: int = 2000) -> torch.Tensor:
    r"""Random camera-shake kernel from a random trajectory (seeded).

    A 2-D trajectory with momentum is simulated (velocity
    :math:`v_{t+1} = \text{inertia}\, v_t + (1-\text{inertia})\, \xi_t`, unit-speed
    normalised), scaled to ``length`` pixels of path and splatted onto the grid with
    bilinear weights, then centred on its centre of mass and normalised to sum 1.

    Parameters
    ----------
    size : int
        Side of the (square) kernel.
    seed : int
        Seed of the trajectory: the same seed gives the same kernel.
    length : float, optional
        Path length in pixels, default ``0.75 * size``.
    inertia : float in [0, 1)
        Smoothness of the trajectory.
    """
    size = _check_size("kernels.motion", size)
    if not 0 <= inertia < 1:
        raise ValueError(f"kernels.motion: expected inertia in [0, 1), got {inertia}")
    length = 0.75 * size if length is None else _check_positive("kernels.motion", length,
                                                                  "length")
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(2, generator=g, dtype=torch.float64)
    pos = torch.zeros(2, dtype=torch.float64)
    path = [pos.clone()]
    step = length / n_steps
    for _ in range(n_steps):
        v = inertia * v + (1 - inertia) * torch.randn(2, generator=g, dtype=torch.float64)
        pos = pos + step * v / v.norm().clamp_min(1e-12)
        path.append(pos.clone())
    p = torch.stack(path)
    p = p - p.mean(0) + (size - 1) / 2
    p = p.clamp(0, size - 1 - 1e-9)
    k = torch.zeros(size, size, dtype=torch.float64)
    i0 = p.floor().long()
    f = p - i0
    for di in (0, 1):
        for dj in (0, 1):
            w = (f[:, 0] if di else 1 - f[:, 0]) * (f[:, 1] if dj else 1 - f[:, 1])
            ii = (i0[:, 0] + di).clamp(max=size - 1)
            jj = (i0[:, 1] + dj).clamp(max=size - 1)
            k.index_put_((ii, jj), w, accumulate=True)
    return k / k.sum()
