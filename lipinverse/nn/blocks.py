r"""Gradient-step (explicit Euler) residual blocks with certified Lipschitz bounds."""

from __future__ import annotations

import torch
from torch import nn

from .activations import activation_derivative_bounds, activation_slope_bounds
from .linear import LinearMap
from .norms import round_down_f32

__all__ = ["GradientStepBlock"]


class GradientStepBlock(nn.Module):
    r"""One gradient step on :math:`\Phi(x) = \sum\Psi(Wx+b) + \tfrac c2\|x-a\|^2`.

    Parameters
    ----------
    linear : LinearMap
        The map :math:`W` (dense or convolutional); may be shared between blocks.
    activation : torch.nn.Module
        Elementwise :math:`\sigma = \Psi'` with known slope bounds ``(lo, hi)`` (see
        :func:`~lipinverse.nn.activations.activation_slope_bounds`); may be shared.
    bias : bool, default True
        Learnable bias :math:`b` (one per output channel of ``linear``).
    step : float in (0, 1], default 1.0
        Fraction of the largest admissible step :math:`2/M`.
    fidelity_weight : float >= 0, default 0.0
        The weight :math:`c` of the anchor term.
    norm : {"bound", "estimate"}, default "bound"
        Where :math:`\beta` in the step size comes from.  ``"bound"``: the certified
        ``linear.norm_bound()`` (recomputed whenever the weights change; on a CPU this
        costs about one SVD per frequency of a ``N x N`` grid).  ``"estimate"``: the cheap
        ``linear.norm_estimate()`` (persistent power iteration, refined by one iteration
        in every training-mode forward) times ``1 + estimate_margin``; fast for
        training, and :meth:`lipschitz_bound` still uses the certified norm with the
        step actually used, so the certificate stays sound (it may then exceed 1).
    estimate_margin : float >= 0, default 1e-3
        Safety factor on the estimate (``norm="estimate"`` only).

    Notes
    -----
    .. math::

        F(x) = x - h\bigl(W^\top\sigma(Wx+b) + c\,(x - a)\bigr),
        \qquad h = \mathrm{step}\cdot\frac{2}{M},\quad
        M = c + \max(hi,0)\,\beta^2,

    with :math:`\beta \ge \|W\|` the certified bound ``linear.norm_bound()`` and
    :math:`a` the anchor (0 if not given).  :math:`F = I - h\nabla\Phi` and, where it
    exists, :math:`\nabla^2\Phi = W^\top D W + cI` with :math:`D` diagonal in
    :math:`[lo, hi]`, so its eigenvalues lie in :math:`[m, M]`,
    :math:`m = c + \min(lo,0)\beta^2`.  Hence (mean-value theorem for the Lipschitz map
    :math:`F`)

    .. math:: \mathrm{Lip}(F) \le \max(|1 - hm|,\ |1 - hM|),

    which is :math:`\le 1` whenever :math:`m \ge 0` (convex :math:`\Phi`).  The value of
    :math:`h` is rounded down to the float32 grid and that exact number is used both
    in the forward pass and in :meth:`lipschitz_bound`.

    With ``activation = ScaledActivation(spline, lam)``, ``fidelity_weight=1`` and
    ``anchor=y`` this is a step of size :math:`h` on
    :math:`\tfrac12\|x-y\|^2 + \lambda\sum\Psi(Wx)`.

    Shape
    -----
    ``x``: ``(B, C_in, ...)`` as accepted by ``linear``; ``anchor`` broadcastable to it.
    """

    def __init__(
        self,
        linear: LinearMap,
        activation: nn.Module,
        bias: bool = True,
        step: float = 1.0,
        fidelity_weight: float = 0.0,
        norm: str = "bound",
        estimate_margin: float = 1e-3,
    ) -> None:
        super().__init__()
        if not isinstance(linear, LinearMap):
            raise TypeError(
                f"GradientStepBlock: expected linear a LinearMap, got {type(linear).__name__}"
            )
        if not isinstance(activation, nn.Module):
            raise TypeError(
                "GradientStepBlock: expected activation an nn.Module, got "
                f"{type(activation).__name__}"
            )
        activation_slope_bounds(activation)  # TypeError for unknown / non-elementwise ones
        step = float(step)
        if not 0.0 < step <= 1.0:
            raise ValueError(f"GradientStepBlock: expected step in (0, 1], got {step}")
        c = float(fidelity_weight)
        if not c >= 0.0:
            raise ValueError(f"GradientStepBlock: expected fidelity_weight >= 0, got {c}")
        if norm not in ("bound", "estimate"):
            raise ValueError(
                f"GradientStepBlock: expected norm 'bound' or 'estimate', got {norm!r}"
            )
        if not float(estimate_margin) >= 0.0:
            raise ValueError(
                f"GradientStepBlock: expected estimate_margin >= 0, got {estimate_margin}"
            )
        self.norm = norm
        self.estimate_margin = float(estimate_margin)
        self.linear = linear
        self.activation = activation
        self.step = step
        self.fidelity_weight = c
        self.bias = nn.Parameter(torch.zeros(linear.out_channels)) if bias else None
        self.register_buffer("frozen_step", None)

    @property
    def in_channels(self) -> int:
        return self.linear.in_channels

    @property
    def out_channels(self) -> int:
        return self.linear.in_channels

    # ------------------------------------------------------------------ step size
    def _curvature(self, beta2) -> tuple:
        lo, hi = activation_slope_bounds(self.activation)
        hi = hi.clamp(min=0.0) if isinstance(hi, torch.Tensor) else max(float(hi), 0.0)
        return self.fidelity_weight + hi * beta2

    def unrolled_step(self, refine: bool = False) -> torch.Tensor:
        r"""The step :math:`h = \mathrm{step}\cdot 2/M` used in the forward pass (0-d
        float64, differentiable); the same name as the ridge's
        :meth:`~lipinverse.regularizers.ConvexRidge.unrolled_step` (``step`` is the fraction
        of the largest certified step, ``unrolled_step`` the step itself).

        Computed from the certified ``linear.norm_bound()`` (``norm="bound"``) or from
        ``(1 + estimate_margin) * linear.norm_estimate(n_iter)`` (``norm="estimate"``),
        with ``n_iter = 1`` if ``refine`` (training-mode forward) else 0, so that after a
        forward pass the step reported here is the one that pass used.
        """
        if self.frozen_step is not None:
            return self.frozen_step
        if self.norm == "bound":
            beta = self.linear.norm_bound()
        else:
            beta = self.linear.norm_estimate(n_iter=int(refine)) * (1.0 + self.estimate_margin)
        big_m = self._curvature(beta * beta)
        if not isinstance(big_m, torch.Tensor):
            big_m = torch.as_tensor(big_m, dtype=torch.float64)
        big_m = big_m.to(torch.float64).clamp(min=1e-12)
        return round_down_f32(self.step * 2.0 / big_m)

    # ------------------------------------------------------------------ evaluation
    def forward(self, x: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        r"""Apply :math:`F` (see class Notes); ``anchor=None`` means :math:`a = 0`."""
        return self.apply_step(x, self.unrolled_step(refine=self.training), anchor)

    def gradient(self, x: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\nabla\Phi(x) = W^\top\sigma(Wx+b) + c(x-a)`."""
        z = self.linear(x)
        if self.bias is not None:
            z = z + self.bias.to(x.dtype).view([1, -1] + [1] * (z.dim() - 2))
        size = tuple(x.shape[2:]) if x.dim() > 2 else None
        g = self.linear.transpose(self.activation(z), input_size=size)
        if self.fidelity_weight > 0.0:
            g = g + self.fidelity_weight * (x if anchor is None else x - anchor)
        return g

    def apply_step(self, x: torch.Tensor, h: torch.Tensor,
                   anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Forward with a precomputed step ``h = self.unrolled_step()`` (for shared weights)."""
        return x - h.to(x.dtype) * self.gradient(x, anchor)

    @torch.no_grad()
    def freeze_step(self) -> GradientStepBlock:
        """Store the current step size as the buffer ``frozen_step`` (used from now on)."""
        self.frozen_step = None
        self.frozen_step = self.unrolled_step().detach().clone()
        return self

    def unfreeze_step(self) -> GradientStepBlock:
        """Recompute the step size from the weights again."""
        self.frozen_step = None
        return self

    @torch.no_grad()
    def refine_estimate(self, n_iter: int = 1) -> None:
        """One more power iteration of the norm estimate (``norm="estimate"``)."""
        self.linear.norm_estimate(n_iter=n_iter)

    def potential(self, x: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        r"""Per-sample :math:`\Phi(x) = \sum\Psi(Wx+b) + \tfrac c2\|x-a\|^2`.

        Needs an activation with ``integrate`` (e.g. :class:`LipschitzSpline`).
        """
        if not hasattr(self.activation, "integrate"):
            raise TypeError(
                "GradientStepBlock.potential: the activation "
                f"{type(self.activation).__name__} has no `integrate`"
            )
        z = self.linear(x)
        if self.bias is not None:
            z = z + self.bias.to(x.dtype).view([1, -1] + [1] * (z.dim() - 2))
        val = self.activation.integrate(z).flatten(1).sum(1)
        if self.fidelity_weight > 0.0:
            d = x if anchor is None else x - anchor
            val = val + 0.5 * self.fidelity_weight * d.flatten(1).pow(2).sum(1)
        return val

    # ------------------------------------------------------------------ certificates
    @torch.no_grad()
    def curvature_bounds(self) -> tuple[float, float]:
        r"""Certified :math:`(m, M)` bounding the eigenvalues of :math:`\nabla^2\Phi`.

        Uses the current activation's derivative bounds (tighter than its slope bounds).
        """
        beta = float(self.linear.norm_bound())
        lo, hi = activation_derivative_bounds(self.activation)
        c = self.fidelity_weight
        return c + min(lo, 0.0) * beta * beta, c + max(hi, 0.0) * beta * beta

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        r"""Certified Lipschitz constant :math:`\max(|1-hm|, |1-hM|)` of the block."""
        h = float(self.unrolled_step())
        m, big_m = self.curvature_bounds()
        return max(abs(1.0 - h * m), abs(1.0 - h * big_m))

    def extra_repr(self) -> str:
        return f"step={self.step}, fidelity_weight={self.fidelity_weight}, norm={self.norm!r}"
