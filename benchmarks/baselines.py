r"""Baselines the benchmarks compare the certified priors with.

* :class:`DnCNN`: an *unconstrained* noise-conditioned residual CNN (conv + ReLU), trained by
  ``benchmarks/train_dncnn.py`` (the library's Trainer) on the same train400 patches as the
  certified priors. Nothing bounds its Lipschitz constant, so plug-and-play iterations with it
  carry no convergence certificate: it measures the price of the guarantee.
* :func:`pnp_hqs`: half-quadratic-splitting plug-and-play with any denoiser (no guarantee).
* :func:`wiener` and :func:`richardson_lucy`: scikit-image's classical deconvolutions, wrapped
  for ``(H, W)`` numpy images blurred with a *circular* boundary.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["DnCNN", "load_dncnn", "pnp_hqs", "wiener", "richardson_lucy"]

WEIGHTS = Path(__file__).resolve().parent / "weights"


class DnCNN(nn.Module):
    r"""Noise-conditioned residual denoiser without any Lipschitz constraint.

    .. math::

        D(y, \sigma) = y - f_\theta([y, \sigma \mathbf 1]),

    with :math:`f_\theta` a stack of ``depth`` 3x3 convolutions (``width`` channels, ReLU in
    between, zero padding). The noise level enters as a constant second input channel
    (FFDNet-style), so one network covers :math:`\sigma \in [0, 30]/255`.

    Parameters
    ----------
    depth : int
        Number of convolutions (at least 2).
    width : int
        Hidden channels.

    Shape
    -----
    ``(B, 1, H, W) -> (B, 1, H, W)``; ``sigma`` a float or a ``(B,)`` tensor.
    """

    def __init__(self, depth: int = 8, width: int = 24):
        super().__init__()
        if int(depth) < 2 or int(width) < 1:
            raise ValueError(f"DnCNN: expected depth >= 2 and width >= 1, got depth={depth}, "
                             f"width={width}")
        self.depth, self.width = int(depth), int(width)
        layers: list[nn.Module] = [nn.Conv2d(2, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, sigma) -> torch.Tensor:
        if y.dim() != 4 or y.shape[1] != 1:
            raise ValueError(f"DnCNN.forward: expected input of shape (B, 1, H, W), "
                             f"got {tuple(y.shape)}")
        s = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
        s = s.reshape(-1, 1, 1, 1).expand(y.shape[0], 1, *y.shape[-2:])
        return y - self.body(torch.cat([y, s], dim=1))

    def config(self) -> dict:
        return {"model": "dncnn", "depth": self.depth, "width": self.width}


def load_dncnn(path: str | Path | None = None, device=None) -> DnCNN:
    """Load the trained baseline (``benchmarks/weights/dncnn.{safetensors,json}``)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS / "dncnn"
    cfg = json.loads(path.with_suffix(".json").read_text())
    model = DnCNN(cfg["depth"], cfg["width"])
    model.load_state_dict(load_file(str(path.with_suffix(".safetensors"))))
    return model.to(device).eval() if device is not None else model.eval()


@torch.no_grad()
def pnp_hqs(A, y: torch.Tensor, denoiser, noise: float, lam: float, *, n_iter: int = 16,
            sigma_start: float = 50 / 255):
    r"""Plug-and-play half-quadratic splitting with an arbitrary denoiser (no guarantee).

    .. math::

        x_{k} = (A^\top A + \rho_k I)^{-1}(A^\top y + \rho_k z_{k-1}), \qquad
        z_k = D(x_k, \sigma_k), \qquad \rho_k = \lambda\,\sigma_n^2 / \sigma_k^2,

    with :math:`\sigma_k` decreasing geometrically from ``sigma_start`` to the noise level
    :math:`\sigma_n` over ``n_iter`` iterations (the usual DPIR-style schedule). ``D`` is an
    unconstrained network, so nothing certifies convergence: the schedule, not a tolerance,
    ends the iteration.

    Returns
    -------
    z : tensor
    iterations : int
    """
    Aty = A.adjoint(y)
    sig = torch.logspace(math.log10(sigma_start), math.log10(max(noise, 1e-3)), n_iter,
                         dtype=torch.float64).tolist()
    z = A.gram_solve(Aty, lam * noise ** 2 / sig[0] ** 2)
    for s in sig:
        r = lam * noise ** 2 / s ** 2
        x = A.gram_solve(Aty + r * z, r)
        z = denoiser(x, s)
    return z, n_iter


def wiener(y: np.ndarray, kernel: np.ndarray, balance: float) -> np.ndarray:
    """scikit-image Wiener-Hunt deconvolution (FFT, hence circular boundary; Laplacian prior)."""
    from skimage import restoration

    return restoration.wiener(y, kernel, balance, clip=False)


def richardson_lucy(y: np.ndarray, kernel: np.ndarray, num_iter: int) -> np.ndarray:
    """scikit-image Richardson-Lucy on the periodically extended image, cropped back.

    scikit-image convolves with zero boundaries; extending ``y`` periodically by the kernel size
    makes its model agree with the circular blur inside the crop.
    """
    from skimage import restoration

    r = max(kernel.shape)
    yp = np.pad(np.clip(y, 0.0, None), r, mode="wrap")
    xp = restoration.richardson_lucy(yp, kernel, num_iter=num_iter, clip=False)
    return xp[r:-r, r:-r]


def timed(fn, *args, **kwargs):
    """``(result, seconds)``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
