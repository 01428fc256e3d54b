r"""Certified operator-norm bounds for (compositions of) multichannel convolutions.

All bounds here are computed in float64 and are *upper bounds* of the operator norm of
the convolution acting on images of **every** size, with zero or circular padding.

Notes
-----
Let :math:`\hat K(\omega) = \sum_n k[n] e^{-i\omega\cdot n}` be the matrix-valued symbol
(``C_out x C_in``) of a stride-1 convolution.  A zero-padded convolution on an
:math:`H\times W` image is a compression of the convolution on :math:`\mathbb Z^2`,
whose norm is :math:`S = \sup_{\omega\in\mathbb T^2}\|\hat K(\omega)\|_2`; a circular one
is the restriction of :math:`\hat K` to the DFT grid.  Both are therefore :math:`\le S`.
Subsampling (stride) has norm :math:`\le 1`.

To bound :math:`S` we take the maximum :math:`G` of :math:`\|\hat K\|_2` on an
:math:`N\times N` grid.  Let :math:`\omega^*` attain :math:`S`, :math:`u` a top right
singular vector there and :math:`q(\omega) = \|\hat K(\omega)u\|^2`, a real trigonometric
polynomial with frequencies :math:`|m_j| \le d_j` (:math:`d_j` = kernel extent minus one,
summed over a composition).  Along the segment from :math:`\omega^*` to its nearest
grid point (:math:`|\delta_j|\le\pi/N`), :math:`g(t) = q(\omega^* + t\delta)` is an entire
function of exponential type :math:`\tau = \pi(d_1 + d_2)/N` bounded by :math:`S^2`; by
Bernstein's inequality :math:`|g''| \le \tau^2 S^2`, and :math:`g'(0) = 0` (maximum), so

.. math::

    G^2 \ge g(1) \ge S^2 (1 - \tau^2/2)
    \quad\Longrightarrow\quad
    S \le G / \sqrt{1 - \tau^2 / 2}.

A relative margin of :math:`10^{-10}` covers float64 rounding in the FFT and SVD.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "FP_MARGIN",
    "dense_kernel",
    "symbol_grid_size",
    "symbol_norm_bound",
    "circular_symbol_norm",
    "symbol_power_estimate",
    "round_down_f32",
]

#: relative safety margin on every certified float64 norm computation
FP_MARGIN = 1e-10


def round_down_f32(t: torch.Tensor) -> torch.Tensor:
    r"""Round a float64 scalar tensor *down* (towards zero) to the float32 grid.

    The returned value is exactly representable in float32 and float64, and is used
    as-is in the forward pass, so the certificate and the computation use the same
    number.  Gradients pass straight through.
    """
    t64 = t.to(torch.float64)
    with torch.no_grad():
        r = t64.to(torch.float32)
        r = torch.where(r.to(torch.float64).abs() > t64.abs(),
                        torch.nextafter(r, torch.zeros_like(r)), r)
        r = r.to(torch.float64)
    return t64 + (r - t64).detach()


def dense_kernel(weight: torch.Tensor, groups: int) -> torch.Tensor:
    r"""Expand a grouped conv weight ``(C_out, C_in/g, kh, kw)`` to ``(C_out, C_in, kh, kw)``.

    The result is block diagonal in the channel dimensions (zeros outside the groups).
    """
    if groups == 1:
        return weight
    c_out, c_in_g, kh, kw = weight.shape
    out_g = c_out // groups
    blocks = [weight[i * out_g:(i + 1) * out_g] for i in range(groups)]
    full = weight.new_zeros(c_out, c_in_g * groups, kh, kw)
    for i, blk in enumerate(blocks):
        full[i * out_g:(i + 1) * out_g, i * c_in_g:(i + 1) * c_in_g] = blk
    return full


def symbol_grid_size(degree: int, grid_size: int | None = None) -> int:
    r"""Grid size ``N`` used for a symbol of total degree :math:`d_1 + d_2` = ``degree``.

    Default: the smallest power of two ``>= max(16, 16 * degree)``, which makes the
    correction factor :math:`1/\sqrt{1-\tau^2/2}` at most about 1.0098.
    """
    if grid_size is not None:
        n = int(grid_size)
    else:
        n = 16
        while n < 16 * degree:
            n *= 2
    tau = math.pi * degree / n
    if tau * tau >= 1.0:
        raise ValueError(
            f"symbol_grid_size: grid_size {n} too small for a symbol of degree {degree}; "
            f"expected grid_size > {math.pi * degree:.1f}"
        )
    return n


def _half_grid(n: int, dtype, device) -> torch.Tensor:
    """Frequencies of the ``n x (n//2+1)`` half grid, shape ``(F, 2)``."""
    w1 = 2 * math.pi * torch.arange(n, dtype=dtype, device=device) / n
    w2 = w1[: n // 2 + 1]
    g1, g2 = torch.meshgrid(w1, w2, indexing="ij")
    return torch.stack([g1.reshape(-1), g2.reshape(-1)], dim=1)


def _symbol_parts(weight: torch.Tensor, groups: int, freqs: torch.Tensor, key=None):
    r"""Real and imaginary parts of :math:`\hat K(\omega)` at ``freqs`` ``(F, 2)``.

    :math:`\hat K(\omega) = \sum_n k[n]e^{-i\omega\cdot n}` (taps centred), computed as
    products with the cosine/sine phase tables; returns two ``(F, C_out, C_in)`` tensors.
    """
    k = dense_kernel(weight.to(freqs.dtype), groups)
    c_out, c_in, kh, kw = k.shape
    cos, sin = _phases(kh, kw, freqs, key)
    taps = k.reshape(c_out * c_in, kh * kw).T
    shape = (freqs.shape[0], c_out, c_in)
    return (cos.T @ taps).reshape(shape), -(sin.T @ taps).reshape(shape)


def _composed_symbol(weights, freqs: torch.Tensor, key=None) -> torch.Tensor:
    """Complex product of the symbols at ``freqs``, shape ``(F, out, in)``."""
    total = None
    for w, groups in weights:
        re, im = _symbol_parts(w, groups, freqs, key)
        sym = torch.complex(re, im)
        total = sym if total is None else sym @ total
    return total


def _spectral_norms(sym: torch.Tensor) -> torch.Tensor:
    if min(sym.shape[-2:]) == 1:
        return torch.linalg.vector_norm(sym, dim=(-2, -1))
    return torch.linalg.svdvals(sym)[..., 0]


def _degree(weights) -> int:
    return sum(w.shape[-2] - 1 + w.shape[-1] - 1 for w, _ in weights)


def _chunks(n_freqs: int, per_freq: int, budget: int = 1 << 23):
    """Slices of the frequency axis so that per-chunk temporaries stay about ``budget``
    elements (large compositions on fine grids would otherwise need gigabytes)."""
    size = max(1, min(n_freqs, budget // max(per_freq, 1)))
    return [slice(i, min(i + size, n_freqs)) for i in range(0, n_freqs, size)]


def _symbol_size(weights) -> int:
    """Real numbers per frequency held by the symbol computation (complex matrices)."""
    return max(4 * w.shape[0] * w.shape[1] * g for w, g in weights)


def _needs_grad(weights) -> bool:
    return torch.is_grad_enabled() and any(w.requires_grad for w, _ in weights)


def symbol_norm_bound(weights, grid_size: int | None = None) -> torch.Tensor:
    r"""Certified bound on the norm of a composition of stride-1 convolutions, any size.

    Parameters
    ----------
    weights : list of (torch.Tensor, int)
        ``(weight, groups)`` pairs in the order they are applied, each weight of shape
        ``(C_out, C_in/groups, kh, kw)``.
    grid_size : int, optional
        Frequency grid size ``N`` (default from :func:`symbol_grid_size`).

    Returns
    -------
    torch.Tensor
        0-d float64 tensor bounding :math:`\sup_\omega \|\hat K_L(\omega)\cdots
        \hat K_1(\omega)\|_2` (module Notes).  Its gradient w.r.t. the weights is that
        of the maximising frequency (the whole grid is evaluated without autograd).
    """
    degree = _degree(weights)
    n = symbol_grid_size(degree, grid_size)
    device = weights[0][0].device
    freqs = _half_grid(n, torch.float64, device)
    with torch.no_grad():
        norms = torch.cat([_spectral_norms(_composed_symbol(weights, freqs[sl],
                                                            (n, sl.start, sl.stop)))
                           for sl in _chunks(freqs.shape[0], _symbol_size(weights))])
        j = int(torch.argmax(norms))
        grid_max = norms[j]
    if _needs_grad(weights):
        at_max = _spectral_norms(_composed_symbol(weights, freqs[j:j + 1], (n, j)))[0]
        grid_max = at_max + (grid_max - at_max).detach()
    tau = math.pi * degree / n
    return grid_max * ((1.0 + FP_MARGIN) / math.sqrt(1.0 - tau * tau / 2.0))


def circular_symbol_norm(weights, size: tuple[int, int]) -> torch.Tensor:
    r"""Norm of a composition of stride-1 *circular* convolutions on ``size`` images.

    Exact (up to float64 rounding, covered by :data:`FP_MARGIN`): the maximum of
    :math:`\|\hat K(\omega)\|_2` over the DFT grid of ``size``.  Kernels larger than the
    image wrap around, which the DFT of the zero-padded-then-aliased kernel accounts for.
    """
    h, w = size
    total = None
    for wt, groups in weights:
        k = dense_kernel(wt.to(torch.float64), groups)
        kh, kw = k.shape[-2:]
        # alias the kernel onto the h x w torus (circular convolution wraps it)
        ph, pw = -(-kh // h) * h, -(-kw // w) * w
        k = torch.nn.functional.pad(k, (0, pw - kw, 0, ph - kh))
        k = k.reshape(*k.shape[:2], ph // h, h, pw // w, w).sum(dim=(2, 4))
        s = torch.fft.fft2(k).permute(2, 3, 0, 1)
        total = s if total is None else s @ total
    return _spectral_norms(total).max() * (1.0 + FP_MARGIN)


#: Phase tables by (key, kh, kw, dtype, device): they depend on the kernel size and the
#: frequencies only, not on the weights (a training step would otherwise recompute them).
_PHASES: dict = {}


def _phases(kh: int, kw: int, freqs: torch.Tensor, key=None):
    r"""``cos, sin`` of :math:`\omega\cdot n` for the centred taps ``n`` of a ``kh x kw``
    kernel, each ``(kh kw, F)``; cached when ``key`` names ``freqs`` (grid size, slice)."""
    full_key = None if key is None else (key, kh, kw, freqs.dtype, str(freqs.device))
    tables = _PHASES.get(full_key) if full_key is not None else None
    if tables is None:
        n1 = torch.arange(kh, dtype=freqs.dtype, device=freqs.device) - (kh - 1) / 2
        n2 = torch.arange(kw, dtype=freqs.dtype, device=freqs.device) - (kw - 1) / 2
        phase = (n1[:, None, None] * freqs[None, None, :, 0]
                 + n2[None, :, None] * freqs[None, None, :, 1]).reshape(kh * kw, -1)
        tables = (torch.cos(phase), torch.sin(phase))
        if full_key is not None:
            if len(_PHASES) >= 16:
                _PHASES.clear()
            _PHASES[full_key] = tables
    return tables


def _taps_phases(weight: torch.Tensor, groups: int, freqs: torch.Tensor, key=None):
    """Taps ``(T, C_out, C_in)`` and phase tables ``cos, sin`` ``(T, F)`` of one kernel
    (``key``: see :func:`_phases`)."""
    k = dense_kernel(weight, groups)
    c_out, c_in, kh, kw = k.shape
    taps = k.permute(2, 3, 0, 1).reshape(kh * kw, c_out, c_in)
    return (taps, *_phases(kh, kw, freqs, key))


def _apply_symbol(tables, vr: torch.Tensor, vi: torch.Tensor, adjoint: bool = False):
    r"""Apply :math:`\hat K(\omega)` (or :math:`\hat K(\omega)^H`) at every frequency.

    ``vr, vi``: real and imaginary parts ``(C, F)``; ``tables`` from :func:`_taps_phases`
    (one per layer, in order).  Uses :math:`\hat K v = \sum_n e^{-i\omega n}(k[n]v)`: one
    GEMM per layer, no symbol matrix is formed.
    """
    seq = reversed(tables) if adjoint else tables
    for taps, cos, sin in seq:
        t = taps.transpose(1, 2) if adjoint else taps
        f = vr.shape[-1]
        prod = t @ torch.cat([vr, vi], dim=-1)  # (T, C_out, 2F)
        ar, ai = prod[..., :f], prod[..., f:]
        c, sn = cos[:, None, :], sin[:, None, :]
        if adjoint:  # e^{+i w n}
            vr, vi = (c * ar - sn * ai).sum(0), (c * ai + sn * ar).sum(0)
        else:  # e^{-i w n}
            vr, vi = (c * ar + sn * ai).sum(0), (c * ai - sn * ar).sum(0)
    return vr, vi


def symbol_power_estimate(weights, vectors=None, n_iter: int = 1, grid_size: int | None = None):
    r"""Cheap estimate of :func:`symbol_norm_bound` by per-frequency power iteration.

    Parameters
    ----------
    weights : list of (torch.Tensor, int)
        As in :func:`symbol_norm_bound`.
    vectors : torch.Tensor, optional
        Persistent real tensor ``(2, C_in, F)`` (real and imaginary parts of one vector
        per frequency) from a previous call; when ``None`` (or of the wrong shape) random
        vectors are drawn and 20 iterations run.
    n_iter : int, default 1
        Power iterations on :math:`\hat K^H\hat K` (without autograd) before evaluating.

    Returns
    -------
    (estimate, vectors)
        ``estimate`` = :math:`\max_\omega\|\hat K(\omega)v(\omega)\|` times the same
        grid correction factor as the bound (in the weights' dtype; differentiable through
        the maximising frequency only).  It increases to the bound as the iteration
        converges but is **not** a certificate.  ``vectors`` are the updated vectors.
    """
    degree = _degree(weights)
    n = symbol_grid_size(degree, grid_size)
    w0 = weights[0][0]
    freqs = _half_grid(n, w0.dtype, w0.device)
    c_in = weights[0][0].shape[1] * weights[0][1]
    shape = (2, c_in, freqs.shape[0])
    with torch.no_grad():
        if vectors is None or tuple(vectors.shape) != shape or vectors.dtype != w0.dtype:
            vectors = torch.randn(shape, dtype=w0.dtype, device=w0.device)
            n_iter = max(n_iter, 20)
        parts, values = [], []
        per_freq = max(w.shape[-2] * w.shape[-1] * w.shape[0] * 2 for w, _ in weights)
        for sl in _chunks(freqs.shape[0], per_freq):
            tables = [_taps_phases(w.detach(), g, freqs[sl], (n, sl.start, sl.stop))
                      for w, g in weights]
            vr, vi = vectors[0][:, sl], vectors[1][:, sl]
            for _ in range(n_iter):
                ur, ui = _apply_symbol(tables, vr, vi)
                vr, vi = _apply_symbol(tables, ur, ui, adjoint=True)
                nrm = (vr.square().sum(0) + vi.square().sum(0)).sqrt().clamp_min(1e-30)
                vr, vi = vr / nrm, vi / nrm
            nrm = (vr.square().sum(0) + vi.square().sum(0)).sqrt().clamp_min(1e-30)
            vr, vi = vr / nrm, vi / nrm
            parts.append(torch.stack([vr, vi]))
            ur, ui = _apply_symbol(tables, vr, vi)
            values.append(ur.square().sum(0) + ui.square().sum(0))
        vectors = torch.cat(parts, dim=-1)
        vr, vi = vectors[0], vectors[1]
        j = int(torch.argmax(torch.cat(values)))
    tables_j = [_taps_phases(w, g, freqs[j:j + 1], (n, j)) for w, g in weights]
    ur, ui = _apply_symbol(tables_j, vr[:, j:j + 1], vi[:, j:j + 1])
    est = (ur.square().sum() + ui.square().sum()).sqrt()
    tau = math.pi * degree / n
    return est / math.sqrt(1.0 - tau * tau / 2.0), vectors
