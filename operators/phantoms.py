r"""Test images for tomography: the Shepp-Logan phantom and seeded random-ellipse phantoms.

Both return batches ``(B, 1, n, n)`` with values in :math:`[0, 1]` that vanish outside the
inscribed circle of the image (up to the anti-aliasing blur of a resized Shepp-Logan, below
:math:`10^{-3}`), so they suit ``Radon(..., circle=True)`` as well.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .validation import check_int

__all__ = ["shepp_logan", "random_ellipses"]


def shepp_logan(n: int, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    r"""The modified Shepp-Logan head phantom of scikit-image, resized to :math:`n\times n`.

    Parameters
    ----------
    n : int
        Side of the image (at least 8).
    dtype, device
        Of the returned tensor.

    Returns
    -------
    (1, 1, n, n) tensor
        Values in :math:`[0, 1]` (scikit-image's 400x400 phantom, resized with
        anti-aliasing; resizing interpolates, so it stays in the range).

    Raises
    ------
    TypeError, ValueError
        If ``n`` is not an int, or is below 8.

    Examples
    --------
    >>> from operators.phantoms import shepp_logan
    >>> tuple(shepp_logan(64).shape)
    (1, 1, 64, 64)
    """
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    n = check_int("shepp_logan", n, "image size n", 8)
    img = shepp_logan_phantom()
    if img.shape != (n, n):
        img = resize(img, (n, n), order=1, anti_aliasing=n < img.shape[0], mode="constant")
    return torch.as_tensor(np.ascontiguousarray(img), dtype=dtype, device=device)[None, None]


def random_ellipses(n: int, n_ellipses: int = 8, seed: int = 0, *, batch: int = 1,
                    dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    r"""Seeded random phantoms: ellipses painted over a body ellipse.

    Each image is a large "body" ellipse of intensity in :math:`[0.2, 0.5]` with
    ``n_ellipses`` smaller ellipses painted over it (later ones on top), each with a
    random centre inside the body, semi-axes between 3 % and 30 % of the image, a random
    orientation and an intensity uniform in :math:`[0, 1]`. Painting replaces values, so
    the image stays in :math:`[0, 1]` by construction (nothing is clipped).

    Parameters
    ----------
    n : int
        Side of the image (at least 8).
    n_ellipses : int
        Number of inner ellipses per image (>= 0).
    seed : int
        Seed of the generator: the same seed gives the same images on every platform.
    batch : int
        Number of images.

    Returns
    -------
    (batch, 1, n, n) tensor
        Zero outside the inscribed circle of radius :math:`n/2`.

    Raises
    ------
    TypeError, ValueError
        If ``n`` or ``seed`` is not an int, ``n < 8``, ``n_ellipses < 0`` or ``batch < 1``.

    Notes
    -----
    A pixel centred at :math:`p` (coordinates scaled to :math:`[-1, 1]`) is inside the
    ellipse of centre :math:`c`, semi-axes :math:`(a, b)` and angle :math:`\phi` when
    :math:`(u/a)^2 + (v/b)^2 \le 1` with :math:`(u, v) = R_{-\phi}(p - c)`.
    """
    n = check_int("random_ellipses", n, "image size n", 8)
    for name, val, low in (("n_ellipses", n_ellipses, 0), ("batch", batch, 1)):
        if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < low:
            raise ValueError(f"random_ellipses: expected {name} as an int >= {low}, got {val!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"random_ellipses: expected seed as an int, got {type(seed).__name__}")
    g = torch.Generator().manual_seed(int(seed))
    coords = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / (n / 2)
    yy, xx = torch.meshgrid(-coords, coords, indexing="ij")

    def uniform(lo, hi, size=()):
        return lo + (hi - lo) * torch.rand(size, generator=g, dtype=torch.float64)

    out = torch.zeros(batch, 1, n, n, dtype=torch.float64)
    for b in range(batch):
        # the body: semi-axes up to 0.9 so that it stays inside the inscribed circle
        ba, bb = uniform(0.6, 0.9), uniform(0.6, 0.9)
        img = torch.where(_inside(xx, yy, 0.0, 0.0, ba, bb, uniform(0, math.pi)),
                          uniform(0.2, 0.5), torch.zeros((), dtype=torch.float64))
        for _ in range(int(n_ellipses)):
            r, phi = uniform(0, 0.6) * min(ba, bb), uniform(0, 2 * math.pi)
            cx, cy = r * math.cos(phi), r * math.sin(phi)
            room = min(ba, bb) - r  # keeps the ellipse within the body's inscribed disc
            a, c = (min(uniform(0.06, 0.6), room) for _ in range(2))  # room >= 0.24
            mask = _inside(xx, yy, cx, cy, a, c, uniform(0, math.pi))
            img = torch.where(mask, uniform(0.0, 1.0), img)
        out[b, 0] = img
    return out.to(dtype=dtype, device=device)


def _inside(xx, yy, cx, cy, a, b, angle) -> torch.Tensor:
    ca, sa = math.cos(float(angle)), math.sin(float(angle))
    u = (xx - float(cx)) * ca + (yy - float(cy)) * sa
    v = -(xx - float(cx)) * sa + (yy - float(cy)) * ca
    return (u / float(a)) ** 2 + (v / float(b)) ** 2 <= 1.0
