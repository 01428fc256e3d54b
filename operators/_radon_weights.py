r"""Distance-driven weights of the Radon transform, its sparse matrices and their cache.

Private helper of :mod:`operators.radon`. One function, :func:`chunk_weights`, maps
(angle, pixel) pairs to detector bins and weights; the sparse matrices of the ``matrix``
backend and the on-the-fly products of the ``matrix_free`` backend are both built from it,
so the two backends apply the same matrix and differ only by the order of float additions.

Notes
-----
*Coordinates* (those of :func:`skimage.transform.radon`). Pixel ``(i, j)`` of an
:math:`n\times n` image sits at :math:`x = j - \lfloor n/2\rfloor`,
:math:`y = \lfloor n/2\rfloor - i` (``y`` points up). For the angle :math:`\theta` the
detector axis is :math:`e_\theta = (\cos\theta, \sin\theta)` and the rays run along
:math:`d_\theta = (-\sin\theta, \cos\theta)`; bin ``k`` is centred at
:math:`t = k - \lfloor D/2\rfloor`.

*Parallel beam.* The pixel centre projects to :math:`t_p = p\cdot e_\theta`. The pixel's
footprint on the detector is approximated by a box of width
:math:`w = \max(|\cos\theta|, |\sin\theta|)` (its extent along the axis it crosses most
directly) and the weight of bin ``k`` is

.. math::

    a_{k,p} = \frac{|[t_p - w/2,\ t_p + w/2] \cap [t_k - 1/2,\ t_k + 1/2]|}{w},

the average, over the bin, of the length of the ray inside the pixel (De Man and Basu's
distance-driven model). Each pixel meets at most two bins; the weights of one pixel sum to
one over the bins (a partition of unity, so the back-projection :math:`A^\top` is an
interpolation), and along a ray of a constant image they add up to the ray's length.

*Fan beam* (flat detector). The source sits at :math:`-R\,d_\theta`
(``source_distance`` :math:`R`), the detector line at :math:`+R_d\,d_\theta`
(``detector_distance``) with bins of width ``detector_spacing`` :math:`\Delta`. With
:math:`s_p = p\cdot d_\theta` the pixel projects to

.. math::

    u_p = \frac{R + R_d}{\Delta}\,\frac{t_p}{R + s_p},

the ray through it has direction :math:`r = (p + R d_\theta)/L_p`, fan angle
:math:`\cos\gamma_p = (R + s_p)/L_p`, and a sideways shift :math:`\delta` at the pixel
moves its shadow by :math:`m_p\,\delta` bins, :math:`m_p = (R + R_d)/(\Delta (R + s_p)
\cos\gamma_p)`. The box then has width :math:`h_p = m_p w_p`,
:math:`w_p = \max(|r_x|, |r_y|)`, and :math:`a_{k,p} = |\text{box}\cap\text{bin}_k| / w_p`
(weights of one pixel sum to :math:`m_p`). Only this (angle, pixel) :math:`\to` (bin,
weight) map differs from the parallel beam.

References
----------
B. De Man and S. Basu, "Distance-driven projection and backprojection in three
dimensions", Phys. Med. Biol. 49 (2004) 2463-2475.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Geometry", "chunk_weights", "pixel_index", "estimate_matrix_bytes",
           "build_matrices", "cached_matrices", "clear_cache", "max_bins_per_pixel"]


@dataclass(frozen=True)
class Geometry:
    """Everything that determines the Radon matrix (hashable: the cache key)."""

    n: int
    angles: tuple[float, ...]
    detector_size: int
    kind: str  # "parallel" or "fan"
    circle: bool
    source_distance: float = math.inf
    detector_distance: float = 0.0
    detector_spacing: float = 1.0

    @property
    def n_angles(self) -> int:
        return len(self.angles)

    @property
    def n_rows(self) -> int:
        return self.n_angles * self.detector_size


def pixel_index(geom: Geometry, device=None) -> torch.Tensor:
    """Flat indices ``i * n + j`` of the pixels the operator sees (inside the inscribed circle
    ``(i - n//2)^2 + (j - n//2)^2 <= (n//2)^2`` when ``circle``, else all of them)."""
    n = geom.n
    idx = torch.arange(n * n, device=device)
    if not geom.circle:
        return idx
    c = n // 2
    i, j = idx // n - c, idx % n - c
    return idx[i * i + j * j <= c * c]


def max_bins_per_pixel(geom: Geometry) -> int:
    """An upper bound on the number of bins one pixel meets at one angle."""
    if geom.kind == "parallel":
        return 2
    R, Rd, dl = geom.source_distance, geom.detector_distance, geom.detector_spacing
    r = math.sqrt(2.0) * (geom.n / 2 + 1)  # beyond the farthest pixel centre
    # h_p <= m_p = (R + Rd) / (dl depth cos(gamma)), depth >= R - r, tan(gamma) <= r / (R - r)
    h_max = (R + Rd) / (dl * (R - r)) * math.sqrt(1.0 + (r / (R - r)) ** 2)
    return int(math.ceil(h_max)) + 1


def _pixel_coordinates(geom: Geometry, pix: torch.Tensor, dtype) -> tuple:
    n, c = geom.n, geom.n // 2
    x = (pix % n - c).to(dtype)
    y = (c - pix // n).to(dtype)
    return x, y


def chunk_weights(geom: Geometry, a0: int, a1: int, pix: torch.Tensor,
                  dtype: torch.dtype = torch.float64, *,
                  fbp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rows and weights of the matrix for angles ``a0:a1`` and pixels ``pix``.

    Returns
    -------
    rows : (a1 - a0, P, K) int64
        Row index ``a * D + k`` of each candidate bin ``k`` (a valid index even where the
        weight is zero).
    vals : (a1 - a0, P, K) tensor of ``dtype``
        Distance-driven weights (zero for bins outside the detector or outside the box).
        With ``fbp=True`` instead the interpolation weights :math:`|\text{box}\cap
        \text{bin}_k| / h_p` (summing to one) times the fan-beam FBP distance weight
        :math:`(R / (R + s_p))^2` (times one for the parallel beam).

    Notes
    -----
    Computed in float64 and then cast, so that every backend and device sees the same
    rounded weights.
    """
    dev = pix.device
    f64 = torch.float64
    th = torch.tensor(geom.angles[a0:a1], dtype=f64, device=dev)[:, None]
    cos, sin = torch.cos(th), torch.sin(th)
    x, y = _pixel_coordinates(geom, pix, f64)
    t = x[None] * cos + y[None] * sin  # (A, P)
    D = geom.detector_size
    if geom.kind == "parallel":
        w = torch.maximum(cos.abs(), sin.abs()).expand_as(t)
        centre, width = t, w
        fbp_factor = None
    else:
        R, Rd, dl = geom.source_distance, geom.detector_distance, geom.detector_spacing
        s = -x[None] * sin + y[None] * cos  # p . d_theta
        depth = R + s
        length = torch.sqrt(t * t + depth * depth)
        # ray direction r = (t e_theta + depth d_theta) / length, in (x, y) coordinates
        rx = (t * cos - depth * sin) / length
        ry = (t * sin + depth * cos) / length
        w = torch.maximum(rx.abs(), ry.abs())
        mag = (R + Rd) * length / (dl * depth * depth)  # (R+Rd) / (dl depth cos(gamma))
        centre = (R + Rd) / dl * t / depth
        width = mag * w
        fbp_factor = (R / depth) ** 2
    b = centre + (D // 2)
    lo, hi = b - 0.5 * width, b + 0.5 * width
    K = max_bins_per_pixel(geom)
    k0 = torch.floor(lo + 0.5)
    ks = k0[..., None] + torch.arange(K, dtype=f64, device=dev)  # (A, P, K)
    overlap = (torch.minimum(hi[..., None], ks + 0.5)
               - torch.maximum(lo[..., None], ks - 0.5)).clamp_min(0.0)
    inside = (ks >= 0) & (ks <= D - 1)
    if fbp:
        scale = 1.0 / width if fbp_factor is None else fbp_factor / width
    else:
        scale = 1.0 / w
    vals = torch.where(inside, overlap * scale[..., None], torch.zeros((), dtype=f64, device=dev))
    kk = ks.clamp(0, D - 1).to(torch.int64)
    arange_a = torch.arange(a0, a1, device=dev, dtype=torch.int64)[:, None, None]
    rows = arange_a * D + kk
    return rows, vals.to(dtype)


def angle_chunk(geom: Geometry, n_pix: int, columns: int = 1,
                max_elements: int = 1 << 22) -> int:
    """Number of angles per chunk so that a chunk holds at most ``max_elements`` entries."""
    per_angle = n_pix * max_bins_per_pixel(geom) * max(columns, 1)
    return max(1, min(geom.n_angles, max_elements // max(per_angle, 1)))


def estimate_matrix_bytes(geom: Geometry, value_bytes: int = 8) -> int:
    """Upper estimate of the bytes of A and its transpose as CSR with int32 indices.

    ``value_bytes`` is 8 for float64 (the worst case) and 4 for float32. The count of
    nonzeros is bounded by ``n_angles * n_pixels * max_bins_per_pixel``.
    """
    n_pix = geom.n * geom.n if not geom.circle else int(math.pi * (geom.n // 2 + 1) ** 2)
    nnz = geom.n_angles * min(n_pix, geom.n * geom.n) * max_bins_per_pixel(geom)
    per_matrix = nnz * (4 + value_bytes)
    return 2 * per_matrix + 4 * (geom.n_rows + 1) + 4 * (geom.n * geom.n + 1)


def build_matrices(geom: Geometry, dtype: torch.dtype, device) -> tuple:
    r"""Build :math:`A` and :math:`A^\top` as sparse CSR tensors with int32 indices.

    A loop over chunks of angles; inside a chunk everything is vectorised. Rows come out
    sorted (angle-major) after a stable sort by bin within the chunk, so column indices stay
    sorted inside each row; :math:`A^\top` is the CSC form of :math:`A` reinterpreted.
    """
    device = torch.device(device)
    pix = pixel_index(geom, device)
    chunk = angle_chunk(geom, pix.numel())
    counts = torch.zeros(geom.n_rows, dtype=torch.int64, device=device)
    cols_l, vals_l = [], []
    for a0 in range(0, geom.n_angles, chunk):
        a1 = min(a0 + chunk, geom.n_angles)
        rows, vals = chunk_weights(geom, a0, a1, pix, dtype)
        cols = pix[None, :, None].expand_as(rows)
        keep = vals != 0
        r, c, v = rows[keep], cols[keep], vals[keep]
        order = torch.argsort(r, stable=True)
        cols_l.append(c[order].to(torch.int32))
        vals_l.append(v[order])
        counts += torch.bincount(r, minlength=geom.n_rows)
        del rows, vals, cols, keep, r, c, v, order
    crow = torch.zeros(geom.n_rows + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cumsum(counts, 0)
    col = torch.cat(cols_l)
    val = torch.cat(vals_l)
    del cols_l, vals_l
    size = (geom.n_rows, geom.n * geom.n)
    A = torch.sparse_csr_tensor(crow.to(torch.int32), col, val, size=size)
    csc = A.to_sparse_csc()
    At = torch.sparse_csr_tensor(csc.ccol_indices().to(torch.int32),
                                 csc.row_indices().to(torch.int32), csc.values(),
                                 size=(size[1], size[0]))
    return A, At


_MATRIX_CACHE: dict = {}


def cached_matrices(geom: Geometry, dtype: torch.dtype, device) -> tuple:
    """``(A, At)`` for this geometry, dtype and device, built on the first request."""
    key = (geom, dtype, str(torch.device(device)))
    if key not in _MATRIX_CACHE:
        _MATRIX_CACHE[key] = build_matrices(geom, dtype, device)
    return _MATRIX_CACHE[key]


def clear_cache() -> None:
    """Forget every cached Radon matrix (frees their memory)."""
    _MATRIX_CACHE.clear()
