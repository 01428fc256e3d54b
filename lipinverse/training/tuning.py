r"""Tuning the strength :math:`\lambda(\sigma)` of a ridge prior on validation images."""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import psnr

__all__ = ["tune_strength", "centre_crop"]


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size x size`` crop of an image ``(..., H, W)``."""
    h, w = img.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"centre_crop: expected an image at least {size}x{size}, got {h}x{w}")
    r, c = (h - size) // 2, (w - size) // 2
    return img[..., r:r + size, c:c + size]


@torch.no_grad()
def tune_strength(reg, images, sigmas=(5, 15, 25), grid=(0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0),
                  *, crop: int | None = 96, tol: float = 1e-4, max_iter: int = 500,
                  seed: int = 0) -> dict:
    r"""Rescale :math:`\lambda(\sigma)` of ``reg`` (in place) so that its exact denoiser is
    best on ``images``.

    For each ``sigma`` (in /255 units) the factor :math:`c` of ``grid`` maximising the mean
    PSNR of :math:`\arg\min_x \tfrac12\|x-y\|^2 + c R_\sigma(x)` (seeded noise) is found;
    :math:`\log c` is interpolated linearly in :math:`\log\sigma` (constant outside) and
    added to the nodes of :math:`\log\lambda`. For a weakly convex ridge only factors with
    :math:`c\rho_\sigma < 1` are tried (the denoising problem must stay strongly convex).

    Parameters
    ----------
    reg : ConvexRidge or WeakConvexRidge
    images : list of ``(1, H, W)`` tensors in [0, 1] (validation images only)
    crop : int, optional
        Centre crops of this size (faster); ``None`` keeps the whole images.

    Returns
    -------
    dict
        Per sigma the chosen factor and PSNRs, and the PSNRs after the rescaling.
    """
    if not images:
        raise ValueError("tune_strength: expected at least one validation image")
    if list(sigmas) != sorted(set(sigmas)) or min(sigmas) <= 0:
        raise ValueError(f"tune_strength: expected increasing positive sigmas, got {sigmas}")
    dtype = reg.strength.values.dtype
    val = [(img if crop is None else centre_crop(img, crop)).to(dtype) for img in images]

    def mean_psnr(factor: float, s: float) -> float:
        out = []
        for i, x in enumerate(val):
            g = torch.Generator().manual_seed(seed * 1000 + int(s) * 100 + i)
            y = x[None] + (s / 255) * torch.randn(x[None].shape, generator=g, dtype=dtype)
            xh, _ = reg.solve(y, factor, s / 255, tol=tol, max_iter=max_iter)
            out.append(float(psnr(xh.clamp(0, 1), x[None])[0]))
        return float(np.mean(out))

    found = {}
    for s in sigmas:
        rho = max(0.0, -reg.curvature_bounds(s / 255)[0])
        scores = {c: mean_psnr(c, s) for c in grid if c * rho < 1.0}
        if not scores:
            raise ValueError(f"tune_strength: no factor of {grid} keeps the problem strongly "
                             f"convex at sigma {s} (weak convexity {rho:.3g})")
        best = max(scores, key=scores.get)
        found[str(s)] = {"factor": best, "psnr": round(scores[best], 3),
                         "psnr_factor_1": round(scores[1.0], 3) if 1.0 in scores else None}
    ls = np.log(np.asarray(sigmas, dtype=float) / 255.0)
    lc = np.log([found[str(s)]["factor"] for s in sigmas])
    lam = reg.strength
    nodes = lam.log_min + lam.spacing * np.arange(lam.num_nodes)
    lam.values.add_(torch.tensor(np.interp(nodes, ls, lc), dtype=lam.values.dtype))
    after = {str(s): round(mean_psnr(1.0, s), 3) for s in sigmas}
    return {"per_sigma": found, "psnr_after": after, "crop": crop,
            "images": len(val), "grid": list(grid), "log_lambda_shift_max": float(
                max(abs(v) for v in lc)) if len(lc) else 0.0}
