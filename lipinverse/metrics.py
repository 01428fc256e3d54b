r"""Image quality metrics, written once: PSNR (torch, per sample) and PSNR/SSIM of images
(scikit-image's, with ``channel_axis`` for colour)."""

from __future__ import annotations

import torch

from .io import channels_last

__all__ = ["psnr", "image_metrics"]


def psnr(estimate: torch.Tensor, clean: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    r"""Per-sample PSNR in dB, :math:`10\log_{10}(r^2/\mathrm{MSE})`, shape ``(B,)``.

    The MSE is over every pixel and channel of a sample, floored at 1e-20 (200 dB for
    ``r = 1``): an exact recovery gives a finite number.
    """
    if estimate.shape != clean.shape:
        raise ValueError(f"psnr: expected tensors of the same shape, got {tuple(estimate.shape)} "
                         f"and {tuple(clean.shape)}")
    mse = (estimate - clean.to(estimate)).flatten(1).pow(2).mean(1).clamp_min(1e-20)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def image_metrics(x, truth) -> tuple[float, float]:
    """``(PSNR, SSIM)`` of ``x`` against ``truth`` (arrays or tensors in [0, 1], data range 1).

    Colour images (tensors ``(1, C, H, W)``, arrays ``(H, W, C)``) are compared over all
    channels, SSIM as the mean over channels (scikit-image's ``channel_axis``). SSIM uses
    the 7x7 window, or the largest odd window that fits a smaller image (NaN below 3x3).
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = channels_last(x), channels_last(truth)
    if a.shape != b.shape:
        raise ValueError(f"image_metrics: expected images of the same shape, got {a.shape} "
                         f"and {b.shape}")
    side = min(a.shape[:2])
    if side < 3:  # no SSIM window fits
        return peak_signal_noise_ratio(b, a, data_range=1.0), float("nan")
    return (peak_signal_noise_ratio(b, a, data_range=1.0),
            structural_similarity(b, a, data_range=1.0, win_size=min(7, side - 1 + side % 2),
                                  channel_axis=-1 if a.ndim == 3 else None))


