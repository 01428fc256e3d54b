r"""The unrolled gradient denoiser of a convex ridge regulariser: a certified 1-Lipschitz
ResNet, conditioned on the noise level."""

from __future__ import annotations

import numbers

import torch
from torch import nn

__all__ = ["RidgeResNetDenoiser"]


class RidgeResNetDenoiser(nn.Module):
    r"""A ResNet of :math:`t` shared gradient-step blocks of a convex ridge regulariser.

    .. math::

        D(y, \sigma) = x_t,\qquad x_0 = y,\qquad
        x_{k+1} = x_k - h_\sigma\bigl(x_k - y + \nabla R_\sigma(x_k)\bigr),\qquad
        h_\sigma = \frac{1}{1 + M_\sigma},

    with :math:`M_\sigma = \lambda(\sigma)\mu(\sigma)` the bound of
    :math:`\nabla^2 R_\sigma` that the spline constraints guarantee (rounded down to float32),
    i.e. ``regularizer.gradient_steps(y, sigma, t, step=0.5)``. Each step is a residual
    block :math:`x \mapsto x - h\,(sW)^\top a_\sigma(sWx) - h(x - y)`; the blocks share the
    regulariser's weights, so the network has as many parameters as the regulariser.

    Parameters
    ----------
    regularizer : ConvexRidge or dict
        A convex ridge regulariser (not a :class:`WeakConvexRidge`), or its ``config()``
        (to rebuild one from a checkpoint).
    t : int, default 20
        Number of blocks.
    sigma : float, default 15/255
        Noise level used when a call gives none.

    Notes
    -----
    **Certificate** (every :math:`\sigma`, every :math:`t`). With
    :math:`0 \preceq \nabla^2 R_\sigma \preceq M_\sigma I` (convex :math:`R_\sigma`, almost
    everywhere), the Jacobian of a block in :math:`x`, :math:`(1-h)I - h\nabla^2R_\sigma`,
    has its spectrum in :math:`[1 - h(1+M_\sigma), 1-h] = [0, 1-h]`, so a block is
    :math:`(1-h)`-Lipschitz in :math:`x` and :math:`h`-Lipschitz in :math:`y`. By induction
    :math:`\mathrm{Lip}(y\mapsto x_t) \le (1-h)^t + h\sum_{k<t}(1-h)^k = 1`: ``D`` is
    nonexpansive, ``lipschitz_bound() = 1``. It is not certified averaged
    (``averagedness = None``), so PnP forward-backward runs it with Krasnoselskii-Mann
    relaxation. As :math:`t\to\infty`, :math:`x_t \to \operatorname{prox}_{R_\sigma}(y)`.

    :meth:`ConvexRidge.unrolled_denoiser
    <lipinverse.regularizers.ConvexRidge.unrolled_denoiser>` builds the same steps at one
    fixed σ from :class:`~lipinverse.nn.GradientStepBlock` s, for any ridge regulariser and
    step, with a certificate computed at that σ; this class is the σ-conditioned convex
    case, whose certificate (1) holds for every σ, as PnP needs.
    """

    averagedness = None

    def __init__(self, regularizer, t: int = 20, sigma: float = 15.0 / 255) -> None:
        super().__init__()
        from lipinverse.regularizers import ConvexRidge

        name = type(self).__name__
        if isinstance(regularizer, dict):
            regularizer = ConvexRidge(**regularizer)
        if not isinstance(regularizer, ConvexRidge) or regularizer.concave_part is not None:
            raise TypeError(f"{name}: expected a ConvexRidge (convex, so that the unrolled "
                            f"network is certified nonexpansive), got "
                            f"{type(regularizer).__name__}")
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1:
            raise ValueError(f"{name}: expected an int t >= 1, got {t!r}")
        self.regularizer = regularizer
        self.t = int(t)
        self.sigma = float(sigma)

    def config(self) -> dict:
        """Constructor keyword arguments (JSON-serialisable), for checkpoints."""
        return {"regularizer": self.regularizer.config(), "t": self.t, "sigma": self.sigma}

    def forward(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        s = self.sigma if sigma is None else sigma
        return self.regularizer.gradient_steps(y, s, self.t, step=0.5)

    def lipschitz_bound(self) -> float:
        """1: certified for every noise level (see Notes)."""
        return 1.0

    def extra_repr(self) -> str:
        return f"t={self.t}, sigma={self.sigma:.4g}"
