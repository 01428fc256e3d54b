r"""Learnable positive functions of the noise level, used to condition regularisers on σ."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SigmaFunction", "as_sigma"]


def as_sigma(name: str, sigma, batch: int, dtype, device) -> torch.Tensor:
    r"""Validate a noise level and return it as a ``(batch,)`` tensor.

    Parameters
    ----------
    name : str
        Name of the calling function, for error messages.
    sigma : float or torch.Tensor
        A scalar, or a tensor of shape ``()`` , ``(1,)`` or ``(batch,)``; finite, ``>= 0``.
    batch : int
    dtype, device :
        Of the returned tensor.

    Raises
    ------
    TypeError, ValueError
        For a non-numeric, negative, non-finite or wrongly shaped ``sigma``.
    """
    if isinstance(sigma, torch.Tensor):
        s = sigma.detach().to(dtype=dtype, device=device).reshape(-1)
        if s.numel() == 1:
            s = s.expand(batch)
        elif s.numel() != batch:
            raise ValueError(
                f"{name}: expected sigma a scalar or a tensor of shape ({batch},), "
                f"got shape {tuple(sigma.shape)}"
            )
    else:
        try:
            v = float(sigma)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: expected sigma a float or a tensor, got {sigma!r}") from err
        # built in float64 and cast: a value too large for ``dtype`` becomes inf (refused
        # below) instead of torch's opaque overflow error
        s = torch.full((batch,), v, dtype=torch.float64, device=device).to(dtype)
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"{name}: expected finite sigma >= 0, got {s.tolist()}")
    return s


class SigmaFunction(nn.Module):
    r"""A learnable positive function :math:`f(\sigma) = \exp(g(\log\sigma))`.

    Parameters
    ----------
    sigma_min, sigma_max : float
        End nodes of the grid (``0 < sigma_min < sigma_max``); outside them ``f`` is
        constant (so ``f(0) = f(sigma_min)``).
    num_nodes : int
        Number of grid nodes (uniform in :math:`\log\sigma`); ``1`` gives a constant.
    power : float
        Initialisation :math:`f(\sigma) = \mathrm{scale}\cdot(\sigma/\sigma_{ref})^{p}`
        with :math:`\sigma_{ref} = \sqrt{\sigma_{min}\sigma_{max}}`.
    scale : float > 0

    Notes
    -----
    :math:`g` is the piecewise-linear interpolant of learnable values :math:`v_k` at the
    nodes :math:`\ell_k = \log\sigma_{min} + k\,\Delta`; it is continuous and
    :math:`f > 0` by construction.
    """

    def __init__(self, sigma_min: float, sigma_max: float, num_nodes: int = 8,
                 power: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        if not (0.0 < sigma_min < sigma_max and math.isfinite(sigma_max)):
            raise ValueError(
                f"SigmaFunction: expected 0 < sigma_min < sigma_max, got {(sigma_min, sigma_max)}"
            )
        if not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"SigmaFunction: expected num_nodes a positive int, got {num_nodes!r}")
        if not scale > 0:
            raise ValueError(f"SigmaFunction: expected scale > 0, got {scale!r}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.num_nodes = num_nodes
        lo, hi = math.log(sigma_min), math.log(sigma_max)
        self.log_min = lo
        self.spacing = (hi - lo) / max(num_nodes - 1, 1)
        nodes = torch.linspace(lo, hi, num_nodes, dtype=torch.float64)
        ref = 0.5 * (lo + hi)
        init = math.log(scale) + power * (nodes - ref)
        self.values = nn.Parameter(init.to(torch.get_default_dtype()))

    def log(self, sigma: torch.Tensor) -> torch.Tensor:
        r""":math:`g(\log\sigma)`, elementwise (``sigma`` ≥ 0; 0 maps to the first node)."""
        v = self.values.to(sigma.dtype)
        if self.num_nodes == 1:
            return v.expand_as(sigma)
        t = ((torch.log(sigma) - self.log_min) / self.spacing).clamp(0.0, self.num_nodes - 1)
        i = torch.floor(t).clamp(max=self.num_nodes - 2).long()
        f = t - i.to(t.dtype)
        return v[i] * (1.0 - f) + v[i + 1] * f

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log(sigma))

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, num_nodes={self.num_nodes}"
