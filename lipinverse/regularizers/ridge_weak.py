r"""The weakly convex ridge regulariser (WCRR-NN style): :class:`ConvexRidge` minus a
learned concave part on some channels (see :mod:`lipinverse.regularizers.ridge`)."""

from __future__ import annotations

import math

import torch

from operators.validation import check_positive

from .ridge import ConvexRidge

__all__ = ["WeakConvexRidge"]


class WeakConvexRidge(ConvexRidge):
    r"""Weakly convex ridge regulariser (WCRR-NN style), conditioned on the noise level.

    Parameters
    ----------
    channels, kernel_size, num_knots, knot_range, sigma_range, num_sigma_nodes, sigma,
    spline_init, noise_response :
        As for :class:`ConvexRidge` (in that order, or by keyword).
    nonconvex_channels : int, default half of ``channels[-1]`` (keyword only)
        Number of filter channels :math:`C_2` (the last ones) that carry the subtracted
        concave part.
    rho_max : float in (0, 1), default 0.9 (keyword only)
        Cap on the weak convexity: :math:`\kappa(\sigma)\nu(\sigma) =
        \rho_{max}\,\mathrm{sigmoid}(a(\sigma))`.
    nu_ratio : float > 0, optional (keyword only)
        Initial :math:`\nu(\sigma) = \nu_{ratio}\,\mu(\sigma)` (the start of
        :meth:`from_convex`, which uses 1/32); default :math:`\nu = \mu`. With
        :math:`\nu = \mu` the concave part acts on responses up to the convex part's
        scale, most of them beyond its knot range, where it is linear: trained from scratch
        so (run ``wcrr2``, 0.73 M patch-updates) it ended with :math:`\nu/\mu = 0.24`, 45 %
        of the responses in its range and 0.3 % of the convex part's curvature, and the
        model's validation followed the convex ridge's (within 0.023 dB after the t-step
        stage, 0.008 on average); started at 1/32 from a trained convex ridge (run
        ``wcrr3``) it ended at :math:`\nu/\mu = 0.005`, 95 % and 2.4 %, and gained 0.43 dB
        (``benchmarks/limits.py``). A smaller :math:`\nu` means a larger :math:`\kappa`
        for the same :math:`\kappa\nu`: on channels whose convex part ends flat
        (``spline_init="clip"``) the cap :math:`\kappa_c` then applies and can switch the
        concave part nearly off (check ``weak_convexity`` after building).

    Notes
    -----
    Every channel has the convex potential :math:`\frac\lambda\mu\psi_c(\mu\,\cdot)` of
    :class:`ConvexRidge`; the channels :math:`C_2` also have the subtracted
    :math:`\frac\kappa\nu\phi_c(\nu\,\cdot)`, with :math:`\phi_c` an
    :class:`~lipinverse.regularizers.potentials.EvenPotential` with slopes in
    :math:`[0, 1]`: even, convex, :math:`\phi_c'' \in [0, 1]`, quadratic near 0 and
    linear beyond its range.  With :math:`\|sW\|\le1`

    .. math:: \min(0, -\kappa\nu)\, I \preceq \nabla^2 R_\sigma \preceq \lambda\mu\, I,

    i.e. ``weak_convexity`` :math:`\rho \le \kappa\nu \le \rho_{max} < 1`: the denoising
    objective :math:`\tfrac12\|x-y\|^2 + R_\sigma(x)` is :math:`(1-\rho)`-strongly
    convex for every σ, its minimiser is unique and :meth:`denoise` converges.  The
    certificates use the current slopes (tighter than the constraints).

    Why a *difference*: in WCRR-NN the potential of a channel is steep near 0 and then
    bends down (a redescending :math:`\psi'`, which spares large filter responses,
    i.e. edges).  The steep part needs a curvature :math:`\lambda\mu` of tens while the
    bend must stay above :math:`-\rho_{max}`; a single potential whose curvature is
    capped by :math:`\rho_{max}` in *both* directions cannot be steep, and then
    contributes almost nothing (the previous form of this class learned
    :math:`\kappa\nu\phi''\approx 0.2` against :math:`\lambda\mu \approx 16`-:math:`49`).
    Here the convex part supplies the steepness and the concave part the bend.

    Bounded below: the concave part grows linearly beyond its range.  Where the convex
    part of a channel ends flat (a constant :math:`\psi_c'`, TV-like), the strength of
    that channel is capped, :math:`\kappa_c = \min(\kappa, \lambda P_c/f_c(r))` (see
    :func:`~lipinverse.regularizers.ridge_parts.concave_strength`), so that the concave
    part never outgrows it: :math:`R_\sigma` is bounded below whenever its convex part
    is, which keeps problems with a non-injective forward operator well posed.
    :meth:`~ConvexRidge.bounded_below` certifies it.  ``kappa`` of :meth:`scalings` is
    this per-channel :math:`\kappa_c`.

    References
    ----------
    A. Goujon, S. Neumayer, M. Unser, "Learning weakly convex regularizers for convergent
    image-reconstruction algorithms", SIAM J. Imaging Sci. 2024.
    """

    def __init__(self, channels: tuple[int, ...] = (1, 8, 32), *args,
                 nonconvex_channels: int | None = None, rho_max: float = 0.9,
                 nu_ratio: float | None = None, **kwargs) -> None:
        # the other arguments are ConvexRidge's (kernel_size, num_knots, ...), passed on
        c2 = channels[-1] // 2 if nonconvex_channels is None else int(nonconvex_channels)
        if c2 < 1:
            raise ValueError(f"WeakConvexRidge: expected nonconvex_channels >= 1, got {c2}")
        if nu_ratio is not None:
            nu_ratio = check_positive("WeakConvexRidge", nu_ratio, "nu_ratio")
        super().__init__(channels, *args, _nonconvex_channels=c2, _rho_max=rho_max, **kwargs)
        self._kwargs.update(nonconvex_channels=c2, rho_max=float(rho_max))
        if nu_ratio is not None:
            self._kwargs["nu_ratio"] = nu_ratio
            if not self.nu.values.is_meta:  # a shape-only build (checkpoint check): no values
                self._start_nu(nu_ratio)

    @torch.no_grad()
    def _start_nu(self, ratio: float) -> None:
        r""":math:`\nu(\sigma) = \text{ratio}\,\mu(\sigma)` at every node (log values)."""
        self.nu.values.copy_(self.mu.values + math.log(ratio))

    @classmethod
    def from_convex(cls, convex: ConvexRidge, nonconvex_channels: int | None = None,
                    rho_max: float = 0.9, nu_ratio: float = 1.0 / 32) -> WeakConvexRidge:
        r"""A weakly convex ridge that starts from a trained :class:`ConvexRidge`.

        It shares nothing with ``convex`` (a deep copy of its filters, splines and
        :math:`\lambda, \mu`).  The concave part starts at its default (slope 0.5,
        :math:`\kappa\nu = \rho_{max}/2`), so the curvature of each channel of
        :math:`C_2` is lowered by :math:`\rho_{max}/4` near 0, and
        :math:`\nu(\sigma) = \nu_{ratio}\,\mu(\sigma)`: the concave part acts on
        responses up to :math:`1/\nu` (its knot range :math:`r = 1`), i.e. up to
        :math:`\mu z = 1/\nu_{ratio}`.  Used to fine-tune a WCRR from a CRR.
        """
        if type(convex) is not ConvexRidge:
            raise TypeError(f"{cls.__name__}.from_convex: expected a ConvexRidge, "
                            f"got {type(convex).__name__}")
        nu_ratio = check_positive(f"{cls.__name__}.from_convex", nu_ratio, "nu_ratio")
        reg = cls(**convex.config(), nonconvex_channels=nonconvex_channels, rho_max=rho_max)
        reg = reg.to(convex.strength.values.device)
        missing, unexpected = reg.load_state_dict(convex.state_dict(), strict=False)
        new = ("concave_part.", "kappa_nu.", "nu.")
        if unexpected or any(not k.startswith(new) for k in missing):
            raise RuntimeError(f"{cls.__name__}.from_convex: state mismatch "
                               f"(missing {missing}, unexpected {unexpected})")
        reg._start_nu(nu_ratio)  # mu is the convex ridge's now
        return reg
