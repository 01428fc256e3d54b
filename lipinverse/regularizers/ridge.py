r"""Learned ridge regularisers: convex (CRR-NN style) and weakly convex (WCRR-NN style).

A ridge regulariser sums learned one-dimensional potentials of learned filter responses,

.. math:: R_\sigma(x) = \frac{\lambda(\sigma)}{\mu(\sigma)} \sum_{c}\sum_p
          \psi_c\bigl(\mu(\sigma)(Wx)_{c,p}\bigr)
          - \frac{\kappa(\sigma)}{\nu(\sigma)} \sum_{c\in C_2}\sum_p
          \phi_c\bigl(\nu(\sigma)(Wx)_{c,p}\bigr),

with :math:`W` a composition of convolutions normalised by its certified norm bound
(:math:`\|W\|\le 1`), :math:`\psi_c'` a learnable spline with slopes in :math:`[0, 1]`
(the convex part, every channel) and, only for :class:`WeakConvexRidge`, a subtracted
concave part on the channels :math:`C_2`: :math:`\phi_c` even and convex, with
:math:`\phi_c'' \in [0, 1]` and :math:`\phi_c'` constant beyond a range (see
:class:`~lipinverse.regularizers.potentials.EvenPotential`).  The noise level
:math:`\sigma` sets the strengths :math:`\lambda, \kappa` and the input scalings
:math:`\mu, \nu` through learnable positive functions, and :math:`\kappa\nu \le
\rho_{max} < 1` by construction: the curvature of a channel of :math:`C_2` lies in
:math:`[-\kappa\nu, \lambda\mu]`, so the concave part can bend a potential that the
convex part makes as steep as it needs (a redescending :math:`\psi'`), while the weak
convexity stays below 1.
"""

from __future__ import annotations

import math
import warnings

import torch

from lipinverse.nn import ConvMap, LipschitzSpline, MultiConv
from lipinverse.nn.norms import round_down_f32
from lipinverse.nn.renames import rename_state_keys
from operators.validation import check_positive

from ._sigma import SigmaFunction, as_sigma
from .colour import fold, repeat_per_channel, unfold
from .potentials import EvenPotential
from .ridge_calculus import RidgeCalculus
from .ridge_parts import (
    NormalizedChain,
    RidgeActivation,
    RidgeAtSigma,
    RidgeScalings,
    SolveInfo,
    bounded_below,
    concave_strength,
    curvature_interval,
)
from .ridge_solve import solve_ridge

__all__ = ["ConvexRidge", "DENOISE_TOL"]

#: Default certified relative accuracy of :meth:`ConvexRidge.denoise`.
DENOISE_TOL = 1e-3



class ConvexRidge(RidgeCalculus):
    r"""Convex ridge regulariser (CRR-NN style), conditioned on the noise level.

    Parameters
    ----------
    channels : tuple of int, default (1, 8, 32)
        Channels of the convolution chain :math:`W` (first = image channels).
    kernel_size : int, default 5
        Size of every convolution kernel (odd); zero padding.
    num_knots : int, default 21
        Knots of each spline.
    knot_range : float, default 1.0
        Splines are defined on the grid ``[-knot_range, knot_range]`` (linear outside).
    sigma_range : (float, float), default (1/255, 64/255)
        Grid of the learnable functions :math:`\lambda(\sigma), \mu(\sigma)` (constant
        outside it).
    num_sigma_nodes : int, default 8
    sigma : float, default 15/255
        Noise level used by :meth:`value`, :meth:`grad`, :meth:`prox` and the
        certificates when no ``sigma`` is passed (the solver-facing operating point;
        change it, or use :meth:`at_sigma`).
    spline_init : str, default "identity"
        Initial activation: ``"clip"`` (:math:`\psi' = ` clamp to half the knot range, a
        Huber potential) or an ``init`` of :class:`~lipinverse.nn.LipschitzSpline`.
    noise_response : float > 0, optional
        Initialise :math:`\mu(\sigma)` so that the filter responses of noise alone,
        :math:`\mu\,sWn` with :math:`n \sim \mathcal N(0, \sigma^2 I)`, have median
        magnitude ``noise_response`` on the splines' grid (and :math:`\lambda` by the
        inverse factor). Default ``None``: :math:`\mu = 1/\sigma`, with which the
        responses of a 60-channel chain sit within 0.02 of the origin, where the potentials
        are quadratic and only :math:`\lambda\mu` has a gradient (the ``wcrr`` recipe run
        of 2026-12 stayed there for 6,000 steps). Only the start of training depends on it.

    Notes
    -----
    With :math:`s = 1/\beta(W)` rounded down (:math:`\beta \ge \|W\|` the certified
    bound of :class:`~lipinverse.nn.MultiConv`) the filters used are :math:`sW`,
    :math:`\|sW\|\le1`.  Then

    .. math::

        \nabla R_\sigma(x) = \lambda\, (sW)^\top \psi'\bigl(\mu\, sWx\bigr),\qquad
        0 \preceq \nabla^2 R_\sigma \preceq \lambda\mu\,\max\psi''\; I,

    so ``grad_lipschitz`` :math:`= \lambda(\sigma)\mu(\sigma)\max_c\max\psi_c''` (a
    certified bound), ``convex = True`` and ``weak_convexity = 0``.  :meth:`denoise`
    returns :math:`\arg\min_x \tfrac12\|x-y\|^2 + R_\sigma(x)`, the proximal operator
    of :math:`R_\sigma`, which is firmly nonexpansive.  Initialisation:
    :math:`\lambda \propto \sigma^2`, :math:`\mu \propto 1/\sigma`.

    References
    ----------
    A. Goujon, S. Neumayer, P. Bohra, S. Ducotterd, M. Unser, "A neural-network-based
    convex regularizer for inverse problems", IEEE TCI 2023.
    """

    convex_part_bounds = (0.0, 1.0)

    #: Former names of submodules: ``strength`` (the function :math:`\lambda(\sigma)`) was
    #: ``lam`` until 2026-12-04, the word the solvers use for a float weight. State dicts
    #: (shipped weights, checkpoints) and ``lr_factors`` prefixes with the old name load.
    renamed = {"lam.": "strength."}

    def __init__(
        self,
        channels: tuple[int, ...] = (1, 8, 32),
        kernel_size: int = 5,
        num_knots: int = 21,
        knot_range: float = 1.0,
        sigma_range: tuple[float, float] = (1.0 / 255, 64.0 / 255),
        num_sigma_nodes: int = 8,
        sigma: float = 15.0 / 255,
        spline_init: str = "identity",
        noise_response: float | None = None,
        *,
        _nonconvex_channels: int = 0,
        _rho_max: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(
                f"{name}: expected at least two positive channel counts, got {channels}")
        if not 0 <= _nonconvex_channels < channels[-1]:
            raise ValueError(f"{name}: expected nonconvex_channels in [0, {channels[-1]}), "
                             f"got {_nonconvex_channels}")
        lo_s, hi_s = (float(v) for v in sigma_range)
        self._kwargs = dict(channels=list(channels), kernel_size=int(kernel_size),
                            num_knots=int(num_knots), knot_range=float(knot_range),
                            sigma_range=[lo_s, hi_s], num_sigma_nodes=int(num_sigma_nodes),
                            sigma=float(sigma), spline_init=spline_init)
        if noise_response is not None:
            self._kwargs["noise_response"] = check_positive(name, noise_response,
                                                            "noise_response")
        self.channels = channels
        convs = [ConvMap(a, b, kernel_size, padding="zero")
                 for a, b in zip(channels[:-1], channels[1:], strict=True)]
        self.W = NormalizedChain(MultiConv(convs))
        c2 = int(_nonconvex_channels)
        c1 = channels[-1]  # the convex part covers every channel
        self.num_convex_only = c1 - c2
        clip = spline_init == "clip"
        self.convex_spline = LipschitzSpline(c1, num_knots, knot_range, self.convex_part_bounds,
                                             init="identity" if clip else spline_init)
        if clip:  # psi' = clamp(t, -r/2, r/2): a Huber potential, TV-like for large responses
            with torch.no_grad():
                knots = self.convex_spline.knots()
                self.convex_spline.coefficients.copy_(
                    knots.clamp(-0.5 * knot_range, 0.5 * knot_range).expand(c1, -1))
        ref = (lo_s * hi_s) ** 0.5
        self.strength = SigmaFunction(lo_s, hi_s, num_sigma_nodes, power=2.0, scale=0.01)
        self.mu = SigmaFunction(lo_s, hi_s, num_sigma_nodes, power=-1.0, scale=1.0 / ref)
        if c2:
            if not 0.0 < _rho_max < 1.0:
                raise ValueError(f"{name}: expected rho_max in (0, 1), got {_rho_max}")
            self.concave_part = EvenPotential(c2, num_knots, knot_range, slope_bounds=(0.0, 1.0))
            self.kappa_nu = SigmaFunction(lo_s, hi_s, num_sigma_nodes, power=0.0, scale=1.0)
            self.nu = SigmaFunction(lo_s, hi_s, num_sigma_nodes, power=-1.0, scale=1.0 / ref)
        else:
            self.concave_part = None
        self.rho_max = float(_rho_max)
        if noise_response is not None:
            self._calibrate(float(noise_response))
        self.sigma = float(sigma)

    @torch.no_grad()
    def _calibrate(self, target: float) -> None:
        r"""Scale :math:`\mu(\sigma)` (and :math:`\nu(\sigma)`) so that the median of
        :math:`|\mu\, sWn|` over Gaussian noise :math:`n` of standard deviation
        :math:`\sigma` is ``target`` at every :math:`\sigma`, and :math:`\lambda(\sigma)` by
        the inverse factor (the curvature :math:`\lambda\mu` is unchanged)."""
        if self.strength.values.is_meta:  # a shape-only build (checkpoint check): no values
            return
        g = torch.Generator().manual_seed(0)
        n = torch.randn((1, self.channels[0], 64, 64), generator=g,
                        dtype=self.strength.values.dtype)
        m0 = float((self.W.linear(n) * self.W.scale()).abs().median())
        # mu(sigma) = 1 / sigma at init (power -1, scale 1 / sigma_ref): times target / m0
        shift = math.log(target / max(m0, 1e-30))
        self.mu.values.add_(shift)
        self.strength.values.sub_(shift)
        if self.concave_part is not None:
            self.nu.values.add_(shift)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rename_state_keys(state_dict, prefix, self.renamed)  # weights saved under former names
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict:
        """Constructor keyword arguments (JSON-serialisable), for checkpoints."""
        return dict(self._kwargs)

    # ------------------------------------------------------------------ scalings
    def scalings(self, sigma=None, batch: int = 1, dtype=None, device=None) -> RidgeScalings:
        r"""Filter scale :math:`s` and per-sample :math:`\lambda,\mu(,\kappa,\nu)` at ``sigma``."""
        p = self.strength.values
        dtype = p.dtype if dtype is None else dtype
        device = p.device if device is None else device
        sig = as_sigma(f"{type(self).__name__}.scalings", self.sigma if sigma is None else sigma,
                       batch, dtype, device)
        shape = (-1, 1, 1, 1)
        s = self.W.scale()
        lam, mu = self.strength(sig).reshape(shape), self.mu(sig).reshape(shape)
        kappa = nu = None
        if self.concave_part is not None:
            nu = self.nu(sig).reshape(shape)
            kappa = self.rho_max * torch.sigmoid(self.kappa_nu.log(sig)).reshape(shape) / nu
            kappa = concave_strength(self.convex_spline, self.concave_part, lam, kappa,
                                     self.num_convex_only)
        return RidgeScalings(s, lam, mu, kappa, nu)

    def _check_x(self, name: str, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.{name}: expected a torch.Tensor, got {type(x)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}.{name}: expected a real floating-point "
                            f"tensor, got dtype {x.dtype}")
        c0 = self.channels[0]
        if x.dim() != 4 or not (x.shape[1] == c0 or (c0 == 1 and x.shape[1] >= 1)):
            want = "(B, C, H, W) (grey C = 1, or colour)" if c0 == 1 else f"(B, {c0}, H, W)"
            raise ValueError(f"{type(self).__name__}.{name}: expected input of shape "
                             f"{want}, got {tuple(x.shape)}")

    def _per_channel(self, name: str, value, batch: int, k: int, device):
        """A per-sample ``tau`` / ``sigma`` (float or ``(B,)``) for the ``k`` folded colour
        channels of each sample (validated with the colour batch size)."""
        if value is None:
            return None
        v = as_sigma(name, value, batch, torch.float64, device)
        return repeat_per_channel(v, k)

    # ------------------------------------------------------------------ functional API
    def _colour(self, x: torch.Tensor) -> int:
        """Number of colour channels to fold (1: the model's own input)."""
        return x.shape[1] if self.channels[0] == 1 and x.shape[1] > 1 else 1

    def _on_grey(self, name: str, x: torch.Tensor, sigma, fn):
        """``(fn(z, scalings), k)``: ``z`` is ``x`` checked, or its ``k`` colour channels
        folded into the batch with ``sigma`` repeated per channel."""
        self._check_x(name, x)
        k = self._colour(x)
        if k > 1:
            sigma = self._per_channel(f"{type(self).__name__}.{name}", sigma, x.shape[0], k,
                                      x.device)
            x = fold(x)
        return fn(x, self.scalings(sigma, x.shape[0], x.dtype, x.device)), k

    def value(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        r"""Per-sample :math:`R_\sigma(x)`, shape ``(B,)`` (colour: see
        :mod:`~lipinverse.regularizers.colour`)."""
        v, k = self._on_grey("value", x, sigma, self._value)
        return v.reshape(x.shape[0], k).sum(1)

    def forward(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """Same as :meth:`value` (so ``R(x)`` gives per-sample values)."""
        return self.value(x, sigma)

    def grad(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        r""":math:`\nabla R_\sigma(x)` (see class Notes)."""
        return self._grad_value("grad", x, sigma)[0]

    def grad_value(self, x: torch.Tensor, sigma=None):
        r"""``(grad(x, sigma), v)`` with ``v(rows=None)`` :meth:`value` at ``x`` (of the
        samples ``rows``) computed from the filter responses of the gradient
        (:meth:`grad_value_scaled`): for line searches
        (:func:`lipinverse.functionals.grad_value`)."""
        return self._grad_value("grad_value", x, sigma)

    def _grad_value(self, name: str, x: torch.Tensor, sigma):
        (g, v), k = self._on_grey(name, x, sigma, self.grad_value_scaled)
        if k == 1:
            return g, v

        def value(rows=None):  # the k folded channels of sample b are rows b k + j
            if rows is None:
                return v().reshape(x.shape[0], k).sum(1)
            sub = (rows[:, None] * k + torch.arange(k, device=rows.device)).flatten()
            return v(sub).reshape(-1, k).sum(1)

        return unfold(g, k), value

    @torch.no_grad()
    def curvature_symbol(self, x: torch.Tensor, sigma=None, grid=None) -> torch.Tensor:
        r""":meth:`curvature_symbol_scaled` at ``sigma``, ``(B, gh, gw // 2 + 1)``; colour
        images: the mean over the folded channels. For preconditioners only."""
        sym, k = self._on_grey("curvature_symbol", x, sigma,
                               lambda z, sc: self.curvature_symbol_scaled(z, sc, grid))
        return sym.reshape(x.shape[0], k, *sym.shape[1:]).mean(1)

    def tv2(self) -> torch.Tensor:
        """Second-order total variation of all splines (training penalty)."""
        out = self.convex_spline.tv2()
        return out if self.concave_part is None else out + self.concave_part.tv2()

    # ------------------------------------------------------------------ certificates
    @torch.no_grad()
    def curvature_bounds(self, sigma=None) -> tuple[float, float]:
        r"""Certified :math:`(m, M)` with :math:`m I \preceq \nabla^2 R_\sigma \preceq M I`.

        :math:`m \le 0 \le M`; computed in float64 from the current spline slopes.
        """
        sc = self.scalings(sigma, 1, torch.float64)
        b2 = (0.0, 0.0) if self.concave_part is None else self.concave_part.derivative_bounds()
        lo, hi = curvature_interval(sc, self.convex_spline.derivative_bounds(), b2)
        # sW has norm <= 1: the interval of D bounds the one of (sW)^T D (sW)
        return float(lo), float(hi)

    @property
    def grad_lipschitz(self) -> float:
        r"""Certified Lipschitz constant of :math:`\nabla R_\sigma` at ``self.sigma``."""
        lo, hi = self.curvature_bounds()
        return max(-lo, hi)

    @property
    def weak_convexity(self) -> float:
        r"""Certified :math:`\rho \ge 0` with :math:`R_\sigma + \tfrac\rho2\|\cdot\|^2` convex."""
        return max(0.0, -self.curvature_bounds()[0])

    @property
    def convex(self) -> bool:
        """Whether :math:`R_\\sigma` is certified convex (``weak_convexity == 0``)."""
        return self.weak_convexity == 0.0

    def bounded_below(self, sigma=None) -> bool:
        r"""Whether :math:`R_\sigma` is certified bounded below at ``sigma`` (default
        ``self.sigma``): a sufficient test, see
        :func:`~lipinverse.regularizers.ridge_parts.bounded_below`."""
        return bounded_below(self, sigma)

    @torch.no_grad()
    def curvature_along(self, d: torch.Tensor, sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Certified per-sample ``(lo, hi)`` with :math:`lo \le d^\top\nabla^2 R_\sigma(x)
        d \le hi` at every :math:`x` (:meth:`curvature_along_scaled`; colour: the sum over
        the folded channels). For slope-certified line searches."""
        (lo, hi), k = self._on_grey("curvature_along", d, sigma, self.curvature_along_scaled)
        return lo.reshape(d.shape[0], k).sum(1), hi.reshape(d.shape[0], k).sum(1)

    #: Largest noise level of the training data, when known (the shipped priors set it):
    #: :meth:`at_sigma` warns beyond it, where the learned lambda(sigma) extrapolates.
    trained_sigma_max: float | None = None

    def at_sigma(self, sigma: float) -> RidgeAtSigma:
        """A view of this regulariser at a fixed noise level (shares the weights).

        Warns (``UserWarning``) when ``sigma`` exceeds :attr:`trained_sigma_max`: the prior
        then runs outside the noise levels it was trained for (e.g. CT on a raw Radon
        transform; use ``Radon(..., normalize=True)``)."""
        top = self.trained_sigma_max
        if top is not None and isinstance(sigma, (int, float)) and sigma > top * (1 + 1e-9):
            warnings.warn(
                f"{type(self).__name__}.at_sigma: sigma = {sigma:.4g} is above the trained "
                f"range [0, {top:.4g}] ({top * 255:.0f}/255): the prior extrapolates and may "
                f"lose several dB; scale the problem so that the noise is on the image scale "
                f"(for CT: Radon(..., normalize=True))", UserWarning, stacklevel=2)
        return RidgeAtSigma(self, sigma)

    # ------------------------------------------------------------------ inner solver
    def solve(self, y: torch.Tensor, tau=1.0, sigma=None, *, tol: float = 1e-4,
              max_iter: int = 1000, x0: torch.Tensor | None = None,
              method: str = "fista") -> tuple[torch.Tensor, SolveInfo]:
        r"""Solve :math:`\min_x \tfrac12\|x-y\|^2 + \tau R_\sigma(x)` (no gradient tracking).

        Parameters
        ----------
        y : tensor ``(B, C, H, W)``
        tau : float or tensor ``(B,)``, > 0
        sigma : float or tensor ``(B,)``, optional (default ``self.sigma``)
        tol : float
            Stop a sample once the *certified* distance to the minimiser,
            :math:`\|\nabla F(z)\|/m`, is at most ``tol * ||y||`` (relative accuracy).
        max_iter : int
        x0 : tensor, optional
            Starting point (default ``y``; ``"lbfgs"``: :math:`P^{-1}y`, :math:`P = I + \tau`
            :meth:`curvature_symbol` at :math:`y`). The test certifies whatever the start.
        method : {"fista", "anderson", "lbfgs"}
            :func:`~lipinverse.regularizers.ridge_solve.fista` (a convergence rate),
            :func:`~lipinverse.regularizers.ridge_solve.anderson` (about half the
            gradients on trained priors, no rate; the training default) or
            :func:`~lipinverse.regularizers.ridge_solve.lbfgs` (Armijo steps certified
            from the slopes; fewer gradients again; the default of :meth:`prox` and
            :meth:`denoise`). All stop on the same certified test, so ``tol`` means the
            same for all.

        Returns
        -------
        x : tensor, info : SolveInfo

        Raises
        ------
        ValueError
            If :math:`F` is not strongly convex (:math:`\tau\rho \ge 1`).

        Notes
        -----
        FISTA with step :math:`1/L`, :math:`L = 1 + \tau M`, on the
        :math:`m`-strongly convex :math:`F` (:math:`m = 1 - \tau\rho`), with the
        gradient restart of O'Donoghue & Candès (2015).  Samples stop individually (so
        results do not depend on the batch).  Returns the gradient step taken from the
        first point meeting the tolerance, which is no farther from the minimiser.
        """
        return solve_ridge(self, y, tau, sigma, tol=tol, max_iter=max_iter, x0=x0,
                           method=method)

    def prox(self, x: torch.Tensor, tau=1.0, sigma=None, *, tol: float = 1e-4,
             max_iter: int = 1000, x0: torch.Tensor | None = None,
             method: str = "lbfgs") -> torch.Tensor:
        r""":math:`\operatorname{prox}_{\tau R_\sigma}(x)` by :meth:`solve`, from ``x0`` (a
        warm start, e.g. the previous prox in a splitting method; default ``x``). The
        accuracy ``tol`` is certified whatever the start.

        The default method is L-BFGS (see :meth:`solve`; it needs fewer gradients than
        Anderson acceleration, which needed 148-210 gradients per solve as the z-step of
        :class:`~lipinverse.solvers.ADMM` with the shipped ``crr`` on 128x128 deblurring,
        where FISTA needed 612), with the same certified accuracy.

        Warns (``RuntimeWarning``) when a sample does not reach ``tol`` in ``max_iter``.
        """
        out, info = self.solve(x, tau, sigma, tol=tol, max_iter=max_iter, x0=x0,
                               method=method)
        if not bool(info.converged.all()):
            rel = info.error_bound / x.flatten(1).norm(dim=1).clamp_min(1e-12).to(torch.float64)
            warnings.warn(
                f"{type(self).__name__}.prox: inner solver did not reach tol={tol} in "
                f"{max_iter} iterations for {int((~info.converged).sum())} sample(s) "
                f"(largest certified relative error "
                f"{float(rel.max()):.2e})",
                RuntimeWarning, stacklevel=2)
        return out

    def denoise(self, y: torch.Tensor, sigma, *, tol: float = DENOISE_TOL,
                max_iter: int = 1000, method: str = "lbfgs") -> torch.Tensor:
        r""":math:`\arg\min_x \tfrac12\|x-y\|^2 + R_\sigma(x)` (no gradient tracking), to the
        certified relative accuracy ``tol`` (:meth:`solve`).

        The default, L-BFGS to ``DENOISE_TOL = 1e-3``, is what the PSNR needs: on the
        256x256 camera at sigma = 25/255 the shipped ``wcrr`` lands within 0.001 dB of the
        minimiser (to 1e-6) in 40 L-BFGS iterations, where Anderson acceleration took 69
        gradients and FISTA to 1e-4 took 196. The bound :math:`\|x - x^*\| \le
        \mathrm{tol}\,\|y\|` is certified whichever the method."""
        return self.prox(y, 1.0, sigma, tol=tol, max_iter=max_iter, method=method)

    # ------------------------------------------------------------------ unrolled denoiser
    def unrolled_step(self, sc: RidgeScalings, step: float = 0.5) -> torch.Tensor:
        r"""Per-sample step :math:`h = \mathrm{step}\cdot 2/(1 + M_c)` of the unrolled
        denoiser, :math:`M_c` from the spline *constraint* intervals (as in
        :class:`~lipinverse.nn.GradientStepBlock`), rounded down to float32."""
        b2 = (0.0, 0.0) if self.concave_part is None else self.concave_part.slope_bounds
        _, hi = curvature_interval(sc, self.convex_spline.slope_bounds, b2)
        return round_down_f32(step * 2.0 / (1.0 + hi.to(torch.float64)))

    def gradient_steps(self, y: torch.Tensor, sigma, t: int, step: float = 0.5) -> torch.Tensor:
        r""":math:`t` gradient steps :math:`x \leftarrow x - h(x - y + \nabla R_\sigma(x))`
        from :math:`x_0 = y` (differentiable; the training forward of the t-step loss).
        Colour: the same steps on each opponent channel (separable, see :meth:`grad`)."""
        def steps(z, sc):
            h = self.unrolled_step(sc, step).to(z.dtype).reshape(-1, 1, 1, 1)
            x = z
            for _ in range(int(t)):
                x = x - h * (x - z + self.grad_scaled(x, sc))
            return x

        x, k = self._on_grey("gradient_steps", y, sigma, steps)
        return x if k == 1 else unfold(x, k)

    def activation_at(self, sigma: float) -> RidgeActivation:
        """The :class:`RidgeActivation` at a scalar noise level."""
        return RidgeActivation(self.convex_spline, self.concave_part,
                               self.scalings(sigma, 1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, sigma={self.sigma:.4g}"
