r"""Certified nonexpansive denoisers: image-to-image 1-Lipschitz ResNets."""

from __future__ import annotations

import torch

from lipinverse.nn import certify
from lipinverse.nn.resnet import ResNetModel

__all__ = ["LipschitzDenoiser"]


class LipschitzDenoiser(ResNetModel):
    r"""A certified nonexpansive denoiser :math:`N = P\circ F_L\circ\dots\circ F_1\circ A`.

    Parameters
    ----------
    in_channels : int, default 1
        Image channels (input and output).
    width : int, default 32
        Hidden channels.
    depth : int, default 8
        Number of gradient-step blocks.
    kernel_size : int, default 3
    hidden : int, optional
        Channels of each block's inner map (default ``width``).
    activation : {"spline", "relu"}, default "spline"
        Learnable linear splines with slopes in [0, 1], or ReLU.
    padding : {"zero", "circular"}, default "zero"
    step : float in (0, 1], default 1.0
        Step fraction of the blocks.
    norm : {"bound", "estimate"}, default "bound"
        Step sizes from the certified norm bounds, or (faster training) from power
        estimates; see :class:`~lipinverse.nn.GradientStepBlock`.

    Notes
    -----
    A :class:`~lipinverse.nn.LipschitzResNet` (image to image): norm-constrained lifting
    and projection and gradient-step blocks :math:`F_i = I - h_iW_i^\top\sigma_i(W_i\cdot
    + b_i)`, each nonexpansive, so :math:`\mathrm{Lip}(N)\le 1`; ``lipschitz_bound()``
    is :func:`~lipinverse.nn.certify` of the network (a certified upper bound, computed
    from the current weights).  ``averagedness`` is ``None``: use
    :func:`~lipinverse.denoisers.averaged` for an averaged (e.g. firmly nonexpansive)
    denoiser.  Not noise-conditioned: ``sigma`` is accepted and ignored.

    Shape
    -----
    ``(B, in_channels, H, W)`` to the same shape. A grey denoiser (``in_channels = 1``)
    also takes colour ``(B, C, H, W)``: it denoises each channel of the orthonormal
    opponent transform :math:`Q` (:mod:`lipinverse.regularizers.colour`),
    :math:`D_{col}(x) = Q^\top (D((Qx)_j))_j`. Certificates are unchanged:
    :math:`\mathrm{Lip}(D_{col}) = \mathrm{Lip}(D)` since :math:`Q` is orthogonal and the
    channels are separate, and an averaged :math:`D` gives an averaged :math:`D_{col}` with
    the same constant.
    """

    averagedness = None

    def __init__(self, in_channels: int = 1, width: int = 32, depth: int = 8,
                 kernel_size: int = 3, hidden: int | None = None, activation: str = "spline",
                 padding: str = "zero", step: float = 1.0, norm: str = "bound") -> None:
        super().__init__()
        self.build_network(locals(), scalar=False)

    def forward(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LipschitzDenoiser.forward: expected a torch.Tensor, got {type(x)}")
        if not x.is_floating_point():
            raise TypeError(f"LipschitzDenoiser.forward: expected a real floating-point tensor, "
                            f"got dtype {x.dtype}")
        if x.dim() != 4 or (x.shape[1] != self.in_channels and self.in_channels != 1):
            raise ValueError(f"LipschitzDenoiser.forward: expected input of shape "
                             f"(B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:  # colour through a grey denoiser
            from ..regularizers.colour import fold, unfold

            return unfold(self.network(fold(x)), x.shape[1])
        return self.network(x)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified Lipschitz bound (``certify`` of the network, at most 1)."""
        return certify(self.network)
