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
    regularizer : ConvexRidge, WeakConvexRidge or dict
        A ridge regulariser, or a convex one's ``config()`` (to rebuild it from a
        checkpoint).
    t : int, default 20
        Number of blocks.
    sigma : float, default 15/255
        Noise level used when a call gives none.
    step : float in (0, 1], default 0.5
        The step as a fraction of :math:`2/(1 + M_\sigma)` (``0.5``: :math:`h_\sigma =
        1/(1 + M_\sigma)`, the case of the certificate 1).

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

    This is the library's one unrolled ridge denoiser.
    """

    averagedness = None

    def __init__(self, regularizer, t: int = 20, sigma: float = 15.0 / 255,
                 step: float = 0.5) -> None:
        super().__init__()
        from lipinverse.regularizers import ConvexRidge

        name = type(self).__name__
        if isinstance(regularizer, dict):
            regularizer = ConvexRidge(**regularizer)
        if not isinstance(regularizer, ConvexRidge):
            raise TypeError(f"{name}: expected a ConvexRidge or WeakConvexRidge, got "
                            f"{type(regularizer).__name__}")
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1:
            raise ValueError(f"{name}: expected an int t >= 1, got {t!r}")
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or not 0 < step <= 1:
            raise ValueError(f"{name}: expected a step in (0, 1], got {step!r}")
        self.regularizer = regularizer
        self.t = int(t)
        self.sigma = float(sigma)
        self.step = float(step)

    def config(self) -> dict:
        """Constructor keyword arguments (JSON-serialisable), for checkpoints."""
        out = {"regularizer": self.regularizer.config(), "t": self.t, "sigma": self.sigma}
        return out if self.step == 0.5 else {**out, "step": self.step}

    def forward(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        s = self.sigma if sigma is None else sigma
        return self.regularizer.gradient_steps(y, s, self.t, step=self.step)

    @torch.no_grad()
    def lipschitz_bound(self, sigma=None) -> float:
        """Certified Lipschitz bound: 1 at every noise level for a convex ridge with
        ``step <= 0.5``; otherwise computed at ``sigma`` (default ``self.sigma``), see
        Notes."""
        R = self.regularizer
        if R.concave_part is None and self.step <= 0.5:
            return 1.0
        s = self.sigma if sigma is None else float(sigma)
        h = float(R.unrolled_step(R.scalings(s, 1, torch.float64), self.step))
        lo, hi = R.curvature_bounds(s)
        q = max(abs(1.0 - h * (1.0 + lo)), abs(1.0 - h * (1.0 + hi)))
        return q ** self.t + h * sum(q ** k for k in range(self.t))

    def extra_repr(self) -> str:
        return f"t={self.t}, sigma={self.sigma:.4g}, step={self.step:g}"
