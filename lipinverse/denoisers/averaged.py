r"""Averaged denoisers: relaxations :math:`(1-\alpha)I + \alpha N` of nonexpansive maps."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

__all__ = ["AveragedDenoiser", "averaged", "denoiser_lipschitz_bound"]


def denoiser_lipschitz_bound(N) -> float:
    """The certified Lipschitz bound of a denoiser (``N.lipschitz_bound()``), as a float.

    Raises
    ------
    TypeError
        If ``N`` has no ``lipschitz_bound``.
    """
    fn = getattr(N, "lipschitz_bound", None)
    if not callable(fn):
        raise TypeError(f"expected a denoiser with a certified `lipschitz_bound()`, "
                        f"got {type(N).__name__}")
    return float(fn())


class AveragedDenoiser(nn.Module):
    r"""The relaxation :math:`D = (1-\alpha)I + \alpha N` of a denoiser :math:`N`.

    Parameters
    ----------
    denoiser : callable
        :math:`N`, called as ``N(x, sigma)``, with a certified ``lipschitz_bound()``.
    alpha : float in (0, 1]

    Notes
    -----
    If :math:`N` is nonexpansive (``lipschitz_bound() <= 1``), :math:`D` is
    :math:`\alpha`-averaged, hence firmly nonexpansive for :math:`\alpha = 1/2`;
    ``averagedness`` reports :math:`\alpha` in that case and ``None`` otherwise.
    In every case :math:`\mathrm{Lip}(D) \le (1-\alpha) + \alpha\,\mathrm{Lip}(N)`.
    """

    def __init__(self, denoiser, alpha: float = 0.5) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(
                f"averaged: expected a callable denoiser, got {type(denoiser).__name__}")
        denoiser_lipschitz_bound(denoiser)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            raise TypeError(f"averaged: expected a float alpha in (0, 1], got {alpha!r}")
        alpha = float(alpha)
        if not (math.isfinite(alpha) and 0.0 < alpha <= 1.0):
            raise ValueError(f"averaged: expected alpha in (0, 1], got {alpha}")
        self.denoiser, self.alpha = denoiser, alpha

    def forward(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        # N(x) when no noise level is given: networks without a sigma argument (e.g. a
        # LipschitzResNet) are nonexpansive maps too
        out = self.denoiser(x) if sigma is None else self.denoiser(x, sigma)
        return (1.0 - self.alpha) * x + self.alpha * out

    def lipschitz_bound(self) -> float:
        """Certified :math:`(1-\\alpha) + \\alpha\\,\\mathrm{Lip}(N)`."""
        return (1.0 - self.alpha) + self.alpha * denoiser_lipschitz_bound(self.denoiser)

    @property
    def averagedness(self) -> float | None:
        r""":math:`\alpha` if :math:`N` is certified nonexpansive, else ``None``.

        (An :math:`\alpha`-relaxation of a :math:`\beta`-averaged map is
        :math:`\alpha\beta`-averaged; that refinement is used when ``N`` reports one.)
        """
        if denoiser_lipschitz_bound(self.denoiser) > 1.0:
            return None
        inner = getattr(self.denoiser, "averagedness", None)
        return self.alpha * (1.0 if inner is None else float(inner))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def averaged(N, alpha: float = 0.5) -> AveragedDenoiser:
    r"""The :math:`\alpha`-averaged denoiser :math:`(1-\alpha)I + \alpha N` (see
    :class:`AveragedDenoiser`); firmly nonexpansive at :math:`\alpha = 1/2` when
    :math:`N` is nonexpansive."""
    return AveragedDenoiser(N, alpha)
