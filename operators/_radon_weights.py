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
interpolation), and along a ray through a constant image they add up to the ray's length
(up to one pixel step where the ray leaves the image).

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
import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Geometry", "chunk_weights", "pixel_index", "estimate_matrix_bytes",
           "build_matrices", "cached_matrices", "is_cached", "clear_cache", "max_bins_per_pixel"]


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


def _pixel_coordinates(geom: Geometry, pix: torch.Tensor) -> tuple:
    n, c = geom.n, geom.n // 2
    x = (pix % n - c).to(torch.float64)
    y = (c - pix // n).to(torch.float64)
    return x, y


_TRIG_CACHE: dict = {}


def _trig(geom: Geometry, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every angle, computed once (so every chunking sees the same bits)."""
    key = (geom.angles, str(device))
    if key not in _TRIG_CACHE:
        a = np.asarray(geom.angles, dtype=np.float64)
        _TRIG_CACHE[key] = (torch.from_numpy(np.cos(a)).to(device),
                            torch.from_numpy(np.sin(a)).to(device))
    return _TRIG_CACHE[key]


def chunk_weights(geom: Geometry, angle_ids: torch.Tensor, pix: torch.Tensor,
                  dtype: torch.dtype = torch.float64, *,
                  fbp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rows and weights of the matrix for the angles ``angle_ids`` and pixels ``pix``.

    Returns
    -------
    rows : (len(angle_ids), len(pix), K) int64
        Row index ``a * D + k`` of each candidate bin ``k`` (a valid index even where the
        weight is zero).
    vals : (len(angle_ids), len(pix), K) tensor of ``dtype``
        Distance-driven weights (zero for bins outside the detector or outside the box).
        With ``fbp=True`` instead the interpolation weights :math:`|\text{box}\cap
        \text{bin}_k| / h_p` (summing to one) times the fan-beam FBP distance weight
        :math:`(R / (R + s_p))^2` (times one for the parallel beam).

    Notes
    -----
    Every entry is computed from its own (angle, pixel) by the same sequence of IEEE
    operations in float64 and then rounded to ``dtype``, so it has the same value whatever
    the chunking, the backend or the (CPU) device.
    """
    dev = pix.device
    cos_all, sin_all = _trig(geom, dev)
    cos, sin = cos_all[angle_ids][:, None], sin_all[angle_ids][:, None]
    D = geom.detector_size
    if geom.kind == "parallel":
        w = torch.maximum(cos.abs(), sin.abs())  # (A, 1)
        # left end of the box in bin units, shifted so that bin k0 is [0, 1): separable,
        # u = (y_i sin + c) + x_j cos, from (A, n) tables. Separate IEEE operations, no
        # fused multiply-add (whose use would depend on vectorisation, hence on chunking).
        n, c = geom.n, geom.n // 2
        grid = torch.arange(n, device=dev, dtype=torch.float64)
        rows_t = ((c - grid)[None] * sin).add_((D // 2) + 0.5 - 0.5 * w)  # (A, n): row i
        cols_t = (grid - c)[None] * cos  # (A, n): column j
        if pix.numel() == n * n:  # every pixel, in order: one broadcast sum
            u = (rows_t[:, :, None] + cols_t[:, None, :]).reshape(len(angle_ids), n * n)
        else:
            u = rows_t[:, pix // n].add_(cols_t[:, pix % n])
        k0 = torch.floor(u)
        frac = u.sub_(k0)
        scale = 1.0 / w
        v0 = frac.neg_().add_(1.0).mul_(scale).clamp_max_(1.0)  # min(1, (1 - frac) / w)
        parts = [v0, 1.0 - v0]
    else:
        x, y = _pixel_coordinates(geom, pix)
        R, Rd, dl = geom.source_distance, geom.detector_distance, geom.detector_spacing
        t = x[None] * cos + y[None] * sin
        s = y[None] * cos - x[None] * sin  # p . d_theta
        depth = R + s
        length = torch.sqrt(t * t + depth * depth)
        # ray direction r = (t e_theta + depth d_theta) / length, in (x, y) coordinates
        rx = (t * cos - depth * sin) / length
        ry = (t * sin + depth * cos) / length
        w = torch.maximum(rx.abs(), ry.abs())
        mag = (R + Rd) * length / (dl * depth * depth)  # (R+Rd) / (dl depth cos(gamma))
        h = mag * w
        u = (R + Rd) / dl * t / depth + ((D // 2) + 0.5) - 0.5 * h
        k0 = torch.floor(u)
        frac = u - k0
        scale = ((R / depth) ** 2 / h) if fbp else (1.0 / w)
        parts = []
        for j in range(max_bins_per_pixel(geom)):
            lap = torch.minimum(frac + h, torch.full_like(frac, j + 1.0)) \
                - torch.clamp_min(frac, float(j))
            parts.append(lap.clamp_min(0.0) * scale)
    K = len(parts)
    vals = torch.empty(tuple(k0.shape) + (K,), dtype=dtype, device=dev)
    for j, part in enumerate(parts):
        vals[..., j] = part  # rounded to dtype here
    k0i = k0.to(torch.int64)
    offset = (angle_ids.to(dev) * D)[:, None]
    steps = torch.arange(K, device=dev)
    lo, hi = torch.aminmax(k0i)
    if bool(lo < 0) or bool(hi > D - K):
        # some candidate bins fall off the detector: zero weight, any valid row index
        ks = k0i[..., None] + steps
        vals.masked_fill_((ks < 0) | (ks > D - 1), 0.0)
        return ks.clamp_(0, D - 1).add_(offset[..., None]), vals
    return k0i.add_(offset)[..., None] + steps, vals


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


def _csr(crow_counts: torch.Tensor, cols: list, vals: list, size) -> torch.Tensor:
    crow = torch.zeros(crow_counts.numel() + 1, dtype=torch.int64, device=crow_counts.device)
    crow[1:] = torch.cumsum(crow_counts, 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow.to(torch.int32), torch.cat(cols), torch.cat(vals),
                                       size=size, check_invariants=False)


def build_matrices(geom: Geometry, dtype: torch.dtype, device,
                   max_elements: int = 1 << 22) -> tuple:
    r"""Build :math:`A` and :math:`A^\top` as sparse CSR tensors with int32 indices.

    Vectorised over chunks: :math:`A` chunk by chunk of angles (a stable sort by bin inside
    each angle keeps the columns of each row sorted), :math:`A^\top` chunk by chunk of
    pixels (entries come out pixel-major with increasing columns, no sort needed). Both
    take their values from :func:`chunk_weights`, so they are exact transposes.
    """
    device = torch.device(device)
    pix = pixel_index(geom, device)
    n_pix, K = pix.numel(), max_bins_per_pixel(geom)
    all_angles = torch.arange(geom.n_angles, device=device)
    # A: rows (angle, bin), columns sorted inside each row
    counts = torch.zeros(geom.n_rows, dtype=torch.int64, device=device)
    cols_l, vals_l = [], []
    step = angle_chunk(geom, n_pix, 1, max_elements)
    for a0 in range(0, geom.n_angles, step):
        ids = all_angles[a0:a0 + step]
        rows, vals = chunk_weights(geom, ids, pix, dtype)
        rows, order = torch.sort(rows.reshape(len(ids), -1), dim=1, stable=True)
        vals = torch.gather(vals.reshape(len(ids), -1), 1, order)
        cols = pix[torch.div(order, K, rounding_mode="floor")]
        keep = (vals != 0).flatten().nonzero().squeeze(1)  # one nonzero() for three selections
        cols_l.append(cols.flatten()[keep].to(torch.int32))
        vals_l.append(vals.flatten()[keep])
        counts += torch.bincount(rows.flatten()[keep], minlength=geom.n_rows)
    A = _csr(counts, cols_l, vals_l, (geom.n_rows, geom.n * geom.n))
    del cols_l, vals_l
    # A^T: rows pixels (all of them; masked ones are empty), columns (angle, bin)
    counts = torch.zeros(geom.n * geom.n, dtype=torch.int64, device=device)
    cols_l, vals_l = [], []
    pstep = max(1, max_elements // (geom.n_angles * K))
    for p0 in range(0, n_pix, pstep):
        p = pix[p0:p0 + pstep]
        rows, vals = chunk_weights(geom, all_angles, p, dtype)
        rows, vals = rows.permute(1, 0, 2).reshape(len(p), -1), vals.permute(1, 0, 2)
        vals = vals.reshape(len(p), -1)
        nonzero = vals != 0
        counts[p] = nonzero.sum(1)
        keep = nonzero.flatten().nonzero().squeeze(1)
        cols_l.append(rows.flatten()[keep].to(torch.int32))
        vals_l.append(vals.flatten()[keep])
    At = _csr(counts, cols_l, vals_l, (geom.n * geom.n, geom.n_rows))
    return A, At


_MATRIX_CACHE: dict = {}


def cached_matrices(geom: Geometry, dtype: torch.dtype, device) -> tuple:
    """``(A, At)`` for this geometry, dtype and device: from memory, else from the disk
    cache (:func:`disk_cache_dir`), else built (and then written to the disk cache)."""
    key = (geom, dtype, str(torch.device(device)))
    if key not in _MATRIX_CACHE:
        mats = _load_from_disk(geom, dtype, device)
        if mats is None:
            mats = build_matrices(geom, dtype, device)
            _save_to_disk(geom, dtype, mats)
        _MATRIX_CACHE[key] = mats
    return _MATRIX_CACHE[key]


#: Matrices larger than this are not written to the disk cache.
DISK_CACHE_MAX_BYTES = 1 << 30
_DISK_FORMAT = "lipinverse-radon/1"


def disk_cache_dir():
    """Folder of the on-disk Radon matrix cache, or None when disabled.

    ``$LIPINVERSE_CACHE_DIR`` if set (``off`` / ``0`` / empty disables the cache), else
    ``$XDG_CACHE_HOME/lipinverse/radon`` or ``~/.cache/lipinverse/radon``.
    """
    import os
    from pathlib import Path

    env = os.environ.get("LIPINVERSE_CACHE_DIR")
    if env is not None:
        if env.strip().lower() in ("", "0", "off", "none", "false"):
            return None
        return Path(env) / "radon"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lipinverse" / "radon"


def _disk_path(geom: Geometry, dtype: torch.dtype):
    import hashlib

    folder = disk_cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(f"{_DISK_FORMAT}|{geom!r}|{dtype}".encode()).hexdigest()[:32]
    return folder / f"{digest}.pt"


def _load_from_disk(geom: Geometry, dtype: torch.dtype, device):
    """The cached ``(A, At)`` or None (absent, unreadable or inconsistent: then rebuilt)."""
    path = _disk_path(geom, dtype)
    if path is None or not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("format") != _DISK_FORMAT or d.get("geometry") != repr(geom):
            return None
        out = []
        for name, size in (("A", (geom.n_rows, geom.n * geom.n)),
                           ("At", (geom.n * geom.n, geom.n_rows))):
            crow, col, val = d[f"{name}_crow"], d[f"{name}_col"], d[f"{name}_val"]
            if (crow.dtype != torch.int32 or col.dtype != torch.int32 or val.dtype != dtype
                    or crow.numel() != size[0] + 1 or col.numel() != val.numel()
                    or int(crow[-1]) != col.numel() or int(crow[0]) != 0
                    or (col.numel() and (int(col.min()) < 0 or int(col.max()) >= size[1]))
                    or not bool(torch.isfinite(val).all())):
                return None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                out.append(torch.sparse_csr_tensor(crow, col, val, size=size,
                                                   check_invariants=False).to(device))
        return tuple(out)
    except Exception:  # a damaged cache file is rebuilt, never an error
        return None


def _save_to_disk(geom: Geometry, dtype: torch.dtype, mats) -> None:
    """Write ``(A, At)`` atomically (temporary file in the same folder, fsync, rename); a
    cache that cannot be written is skipped silently (it is only a cache)."""
    import os
    import tempfile

    path = _disk_path(geom, dtype)
    if path is None or estimate_matrix_bytes(geom, torch.finfo(dtype).bits // 8) > \
            DISK_CACHE_MAX_BYTES:
        return
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        d = {"format": _DISK_FORMAT, "geometry": repr(geom)}
        for name, m in zip(("A", "At"), mats, strict=True):
            m = m.to("cpu")
            d[f"{name}_crow"] = m.crow_indices()
            d[f"{name}_col"] = m.col_indices()
            d[f"{name}_val"] = m.values()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
        with os.fdopen(fd, "wb") as f:
            torch.save(d, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def is_cached(geom: Geometry, dtype: torch.dtype, device) -> bool:
    """Whether the matrices of this geometry, dtype and device are already built."""
    return (geom, dtype, str(torch.device(device))) in _MATRIX_CACHE


def clear_cache() -> None:
    """Forget every cached Radon matrix (frees their memory)."""
    _MATRIX_CACHE.clear()
