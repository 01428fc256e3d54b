r"""1-Lipschitz ResNets built from gradient-step blocks and norm-constrained maps."""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import GradientStepBlock
from .linear import Constrained, ConvMap, DenseMap, LinearMap
from .splines import LipschitzSpline

__all__ = ["LipschitzResNet", "UnrolledNetwork", "SpatialPool", "model_resnet", "ResNetModel"]


class SpatialPool(nn.Module):
    r"""Normalised sum over all non-batch dimensions: :math:`z \mapsto \sum_p z_p/\sqrt{n}`.

    Notes
    -----
    This is :math:`\langle z, \mathbf 1/\sqrt n\rangle` with a unit vector, so it has
    norm exactly 1 for every input size; output shape ``(B,)``.
    """

    lipschitz = 1.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        return flat.sum(1) / math.sqrt(flat.shape[1])


class LipschitzResNet(nn.Module):
    r"""Nonexpansive ResNet :math:`P\circ F_L\circ\dots\circ F_1\circ A` (or scalar variant).

    Parameters
    ----------
    in_channels, out_channels : int, default 1
        Channels of the input/output images (features, for ``dense=True``).
    width : int, default 32
        Hidden width (channels of every block).
    depth : int, default 4
        Number of :class:`GradientStepBlock` s (each with its own weights).
    kernel_size : int, default 3
        Kernel size of every convolution (ignored for ``dense=True``).
    hidden : int, optional
        Output channels of each block's map :math:`W_i` (default ``width``).
    dense : bool, default False
        Dense maps on ``(B, in_channels)`` vectors instead of convolutions.
    output : {"image", "scalar"}, default "image"
        ``"scalar"``: :math:`R(x) = w^\top F_L(\dots F_1(Ax))` with :math:`\|w\|\le 1`,
        implemented as a constrained map to one channel followed by :class:`SpatialPool`
        (convolutional) or directly (dense); output shape ``(B,)``.
    activation : {"spline", "relu"} or callable, default "spline"
        ``"spline"``: a :class:`LipschitzSpline` with slopes in [0, 1] per block;
        a callable ``f(channels) -> nn.Module`` builds any elementwise activation.
    padding : {"zero", "circular"}, default "zero"
    step : float in (0, 1], default 1.0
        Step fraction of every block.
    norm : {"bound", "estimate"}, default "bound"
        Step-size source of every block (see :class:`GradientStepBlock`).

    Notes
    -----
    The lifting :math:`A` and projection :math:`P` are :class:`Constrained` maps
    (:math:`\|A\|, \|P\|\le 1`), so by the composition rule

    .. math:: \mathrm{Lip}(N) \le \|P\|\prod_i \mathrm{Lip}(F_i)\,\|A\| \le 1.

    :meth:`lipschitz_bound` returns that product of certificates.

    Examples
    --------
    >>> net = LipschitzResNet(in_channels=1, out_channels=1)
    >>> net(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 32,
        depth: int = 4,
        kernel_size: int = 3,
        hidden: int | None = None,
        dense: bool = False,
        output: str = "image",
        activation="spline",
        padding: str = "zero",
        step: float = 1.0,
        norm: str = "bound",
    ) -> None:
        super().__init__()
        name = "LipschitzResNet"
        if output not in ("image", "scalar"):
            raise ValueError(f"{name}: expected output 'image' or 'scalar', got {output!r}")
        if output == "scalar" and out_channels != 1:
            raise ValueError(f"{name}: output='scalar' needs out_channels=1, got {out_channels}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"{name}: expected depth a non-negative int, got {depth!r}")
        if activation == "spline":
            def make_act(c):
                return LipschitzSpline(c, slope_bounds=(0.0, 1.0), init="relu")
        elif activation == "relu":
            def make_act(c):
                return nn.ReLU()
        elif callable(activation):
            make_act = activation
        else:
            raise ValueError(
                f"{name}: expected activation 'spline', 'relu' or a callable, got {activation!r}"
            )
        hidden = width if hidden is None else hidden

        def make_map(c_in, c_out):
            if dense:
                return DenseMap(c_in, c_out)
            return ConvMap(c_in, c_out, kernel_size, padding=padding)

        self.output = output
        self.dense = dense
        self.lift = Constrained(make_map(in_channels, width))
        self.blocks = nn.ModuleList(
            GradientStepBlock(make_map(width, hidden), make_act(hidden), step=step, norm=norm)
            for _ in range(depth)
        )
        self.project = Constrained(make_map(width, out_channels))
        self.pool = SpatialPool() if output == "scalar" else None

    @classmethod
    def unrolled(cls, block: GradientStepBlock, depth: int, lift: LinearMap | None = None,
                 project: LinearMap | None = None) -> UnrolledNetwork:
        """Shared-weight network applying ``block`` ``depth`` times (:class:`UnrolledNetwork`)."""
        return UnrolledNetwork(block, depth, lift=lift, project=project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"LipschitzResNet.forward: expected a real floating-point tensor, "
                            f"got {got}")
        z = self.lift(x)
        for block in self.blocks:
            z = block(z)
        z = self.project(z)
        if self.pool is not None:
            z = self.pool(z)
        return z

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified Lipschitz constant: product of the parts' certificates (``<= 1``)."""
        bound = float(self.lift.norm_bound()) * float(self.project.norm_bound())
        for block in self.blocks:
            bound *= block.lipschitz_bound()
        return bound


class UnrolledNetwork(nn.Module):
    r"""A gradient-step block applied ``depth`` times with shared weights.

    Parameters
    ----------
    block : GradientStepBlock
        The shared block (e.g. one step of a ridge-regulariser denoiser).
    depth : int
        Number of applications :math:`t`.
    lift, project : LinearMap, optional
        Maps applied before / after (their certified norm bounds enter the certificate).

    Notes
    -----
    ``forward(x, anchor=None)`` computes the step :math:`h` once and applies
    :math:`F = I - h\nabla\Phi(\cdot\,; \mathrm{anchor})` ``depth`` times, so
    :math:`\mathrm{Lip} \le \|P\|\,\mathrm{Lip}(F)^t\,\|A\|`.
    """

    def __init__(self, block: GradientStepBlock, depth: int, lift: LinearMap | None = None,
                 project: LinearMap | None = None) -> None:
        super().__init__()
        if not isinstance(block, GradientStepBlock):
            raise TypeError(
                f"UnrolledNetwork: expected a GradientStepBlock, got {type(block).__name__}"
            )
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"UnrolledNetwork: expected depth a non-negative int, got {depth!r}")
        for label, m in (("lift", lift), ("project", project)):
            if m is not None and not isinstance(m, LinearMap):
                raise TypeError(
                    f"UnrolledNetwork: expected {label} a LinearMap or None, got {type(m).__name__}"
                )
        self.block, self.depth, self.lift, self.project = block, depth, lift, project

    def forward(self, x: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        z = self.lift(x) if self.lift is not None else x
        if self.depth:
            h = self.block.unrolled_step(refine=self.training)
            for _ in range(self.depth):
                z = self.block.apply_step(z, h, anchor)
        return self.project(z) if self.project is not None else z

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        r"""Certified :math:`\|P\|\,\mathrm{Lip}(F)^{t}\,\|A\|`."""
        bound = self.block.lipschitz_bound() ** self.depth
        for m in (self.lift, self.project):
            if m is not None:
                bound *= float(m.norm_bound())
        return bound


#: The constructor arguments of a model built on :func:`model_resnet`.
MODEL_RESNET_KEYS = ("in_channels", "width", "depth", "kernel_size", "hidden", "activation",
                     "padding", "step", "norm")


def model_resnet(owner: str, config: dict, *, scalar: bool) -> LipschitzResNet:
    """The :class:`LipschitzResNet` of a model from its constructor ``config``
    (``in_channels, width, depth, kernel_size, hidden, activation, padding, step, norm``):
    image to image (``scalar=False``, a denoiser) or image to one value per sample
    (``scalar=True``, a regulariser). ``owner`` names the model in errors."""
    if config["activation"] not in ("spline", "relu"):
        raise ValueError(f"{owner}: expected activation 'spline' or 'relu', got "
                         f"{config['activation']!r}")
    c = config["in_channels"]
    kw = {k: config[k] for k in MODEL_RESNET_KEYS[1:]}
    if scalar:
        return LipschitzResNet(c, 1, output="scalar", **kw)
    return LipschitzResNet(c, c, **kw)


class ResNetModel(nn.Module):
    """Base of the models that wrap one :func:`model_resnet` (their constructor arguments
    are :data:`MODEL_RESNET_KEYS`): the network and the checkpoint ``config``."""

    def build_network(self, args: dict, *, scalar: bool) -> None:
        """Keep the constructor arguments of ``args`` (the constructor's ``locals()``) and
        build ``self.network``."""
        self._kwargs = {k: args[k] for k in MODEL_RESNET_KEYS}
        self.in_channels = self._kwargs["in_channels"]
        self.network = model_resnet(type(self).__name__, self._kwargs, scalar=scalar)

    def config(self) -> dict:
        """Constructor keyword arguments (for checkpoints)."""
        return dict(self._kwargs)

    def tv2(self) -> torch.Tensor:
        """Second-order total variation of the spline activations (training penalty)."""
        parts = [m.tv2() for m in self.network.modules()
                 if hasattr(m, "tv2") and hasattr(m, "coefficients")]
        if not parts:
            p = next(self.parameters())
            return torch.zeros((), dtype=p.dtype, device=p.device)
        return torch.stack(parts).sum()
