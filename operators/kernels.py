r"""Blur kernel factories. Each returns a 2-D float64 tensor, centred, summing to 1."""

from __future__ import annotations

import math

import torch

from .validation import check_int, check_positive

__all__ = ["gaussian", "uniform", "motion", "MAX_SIZE"]

#: Largest kernel side accepted by the factories (a larger kernel is almost surely a unit
#: mistake, e.g. sigma given in image fractions instead of pixels).
MAX_SIZE = 1025


def gaussian(sigma: float, size: int | None = None) -> torch.Tensor:
    r"""Isotropic Gaussian :math:`k_{ij} \propto \exp(-(i^2 + j^2) / (2\sigma^2))`.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, > 0.
    size : int, optional
        Side length; default ``2 * ceil(3 sigma) + 1`` (odd, so the kernel is centred).
    """
    sigma = check_positive("kernels.gaussian", sigma, "sigma")
    if size is None:
        if sigma > (MAX_SIZE - 1) / 6:
            raise ValueError(f"kernels.gaussian: expected sigma <= {(MAX_SIZE - 1) / 6:g} pixels "
                             f"for the default size 2*ceil(3*sigma)+1 <= {MAX_SIZE}, got {sigma:g}")
        size = 2 * math.ceil(3 * sigma) + 1
    size = check_int("kernels.gaussian", size, "size", 1, MAX_SIZE)
    t = torch.arange(size, dtype=torch.float64) - (size // 2)
    g = torch.exp(-0.5 * (t / sigma) ** 2)  # (t / sigma) keeps a tiny sigma free of 0/0
    k = g[:, None] * g[None, :]
    return k / k.sum()


def uniform(size: int) -> torch.Tensor:
    """Box blur: a ``size x size`` kernel of equal weights."""
    size = check_int("kernels.uniform", size, "size", 1, MAX_SIZE)
    return torch.full((size, size), 1.0 / size**2, dtype=torch.float64)


def motion(size: int = 15, seed: int = 0, *, length: float | None = None,
           smoothness: float = 1.5, drift: float = 1.0, n_terms: int = 8) -> torch.Tensor:
    r"""Random camera-shake kernel: the path of a smooth random trajectory (seeded).

    The camera path during the exposure :math:`t \in [0, 1]` is, per axis,

    .. math:: p(t) = d\,t + \sum_{j=1}^{J} rac{a_j \cos(\pi j t) + b_j \sin(\pi j t)}
              {j^{s}}, \qquad a_j, b_j \sim \mathcal N(0, 1),

    a random drift :math:`d` (direction uniform, size ``drift``) plus a random smooth
    shake whose spectrum decays as :math:`j^{-s}` (``smoothness``; larger is smoother).
    The path is scaled to ``length`` pixels of arc length, centred on its bounding box, and
    its time samples are splatted onto the grid with bilinear weights (the kernel is the
    time the sensor spends at each offset), then normalised to sum 1. This follows the
    usual model of hand-held shake (a dominant direction, smooth turns, varying speed; cf.
    Boracchi & Foi 2012; Schmidt et al. 2013, who draw kernels from random trajectories).

    Parameters
    ----------
    size : int
        Side of the (square) kernel, at least ``length + 1``.
    seed : int
        Seed of the trajectory: the same seed gives the same kernel.
    length : float, optional
        Arc length of the path in pixels, default ``0.6 * (size - 1)`` (at most
        ``size - 1``, so that the path fits).
    smoothness : float
        Decay exponent :math:`s > 0.5` of the shake's spectrum.
    drift : float
        Size of the linear drift relative to the shake (0: shake only).
    n_terms : int
        Number :math:`J` of terms of the shake.
    """
    size = check_int("kernels.motion", size, "size", 1, MAX_SIZE)
    if size < 3:
        raise ValueError(f"kernels.motion: expected size >= 3, got {size}")
    length = 0.6 * (size - 1) if length is None else check_positive("kernels.motion", length,
                                                                     "length")
    if length > size - 1:
        raise ValueError(f"kernels.motion: a path of length {length:g} pixels does not fit in a "
                         f"{size}x{size} kernel; expected length <= size - 1 = {size - 1}")
    smoothness = check_positive("kernels.motion", smoothness, "smoothness")
    if smoothness <= 0.5:
        raise ValueError(f"kernels.motion: expected smoothness > 0.5, got {smoothness}")
    if isinstance(drift, bool) or not isinstance(drift, (int, float)) or not (
            math.isfinite(drift) and drift >= 0):
        raise ValueError(f"kernels.motion: expected a finite drift >= 0, got {drift!r}")
    if isinstance(n_terms, bool) or not isinstance(n_terms, int) or n_terms < 1:
        raise ValueError(f"kernels.motion: expected an int n_terms >= 1, got {n_terms!r}")
    g = torch.Generator().manual_seed(int(seed))
    coef = torch.randn(2, 2, n_terms, generator=g, dtype=torch.float64)
    angle = 2 * math.pi * float(torch.rand(1, generator=g, dtype=torch.float64))
    n = max(2048, int(40 * length))  # dense in time: about 0.025 pixel per sample or less
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    j = torch.arange(1, n_terms + 1, dtype=torch.float64)
    phase = math.pi * t[:, None] * j[None, :]
    weight = j ** (-smoothness)
    path = (torch.cos(phase) * weight) @ coef[:, 0].T + (torch.sin(phase) * weight) @ coef[:, 1].T
    path = path + float(drift) * t[:, None] * torch.tensor([math.cos(angle), math.sin(angle)],
                                                           dtype=torch.float64)
    arc = float((path[1:] - path[:-1]).norm(dim=1).sum())
    path = path * (length / max(arc, 1e-12))
    lo, hi = path.min(0).values, path.max(0).values
    path = path - (lo + hi) / 2 + (size - 1) / 2  # inside [0, size - 1] since extent <= length
    k = torch.zeros(size, size, dtype=torch.float64)
    i0 = path.floor().long().clamp(0, size - 1)
    f = path - i0
    for di in (0, 1):
        for dj in (0, 1):
            w = (f[:, 0] if di else 1 - f[:, 0]) * (f[:, 1] if dj else 1 - f[:, 1])
            ii = (i0[:, 0] + di).clamp(max=size - 1)
            jj = (i0[:, 1] + dj).clamp(max=size - 1)
            k.index_put_((ii, jj), w, accumulate=True)
    return k / k.sum()
