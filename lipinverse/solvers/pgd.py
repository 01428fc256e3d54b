r"""Proximal gradient (PGD / FISTA), plug-and-play forward-backward, gradient descent."""

from __future__ import annotations

import torch

from operators.validation import check_float

from ..functionals import L2Fidelity
from . import certificates as cert
from .base import DivergenceError, IterativeSolver
from .guarantee import uncertified

__all__ = ["PGD"]

#: Backtracking halves the step at most this many times per iteration.
MAX_HALVINGS = 60


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1))


class PGD(IterativeSolver):
    r"""Forward-backward splitting for :math:`\min_x f(x) + \lambda g(x)`, and its relatives.

    Parameters
    ----------
    fidelity : L2Fidelity or any smooth functional
        :math:`f`, with ``grad(x)``, ``grad_lipschitz`` (:math:`L_f`, certified, or ``None``),
        ``convex``; ``__call__`` (values) for the objective and backtracking.
    prior
        One of (dispatch in this order unless ``scheme`` is given):

        * a **denoiser** ``D(x, sigma=None)`` with ``lipschitz_bound()`` and
          ``averagedness``: scheme ``"pnp"``, :math:`x \leftarrow (1-\theta)x +
          \theta D(x - \tau\nabla f(x))`;
        * a functional with ``prox(x, tau)`` (:math:`\operatorname{prox}_{\tau g}`): scheme
          ``"prox"``, :math:`x \leftarrow \operatorname{prox}_{\tau\lambda g}(x -
          \tau\nabla f(x))`;
        * a smooth functional with ``grad(x)``, ``grad_lipschitz`` (:math:`L_R` or ``None``),
          ``convex`` and ``weak_convexity``: scheme ``"grad"``, :math:`x \leftarrow x -
          \tau(\nabla f(x) + \lambda\nabla R(x))` (the reconstruction scheme of the learned
          ridge and Lipschitz-ResNet regularisers).
    lam : float >= 0
        Regularisation weight :math:`\lambda` (schemes ``"prox"`` and ``"grad"``). With a
        denoiser the regularisation strength is the denoiser's (e.g. ``sigma``), so ``lam``
        must be left ``None``.
    step_size : float, optional
        :math:`\tau`. Default, from the certificates: :math:`1/L_f` (prox, pnp) or
        :math:`1/(L_f + \lambda L_R)` (grad). A given step is checked against them and the
        ``guarantee`` says whether the theorem still applies.
    accelerate : bool
        FISTA / Nesterov momentum with adaptive (gradient) restart: a sample's momentum is
        reset when :math:`\langle y_k - x_{k+1}, x_{k+1} - x_k\rangle > 0`. On a
        nonconvex objective (grad scheme, :math:`f` or :math:`R` not certified convex) the
        momentum step is kept only when it decreases :math:`F` enough (monotone APG, see
        Notes), so that the guarantee of gradient descent still holds.
    backtracking : bool
        Shrink the step (halving) until the sufficient-decrease condition
        :math:`f(x^+) \le f(y) + \langle\nabla f(y), x^+ - y\rangle + \|x^+ - y\|^2/(2\tau)`
        holds (prox scheme; for the grad scheme the same test on :math:`F = f + \lambda R`,
        i.e. Armijo with constant 1/2). Switched on automatically when no Lipschitz constant
        is certified and no ``step_size`` is given. The step is shared by the batch (the
        smallest needed) and never grows, as FISTA requires.
    relaxation : float, optional
        :math:`\theta` of the Krasnoselskii-Mann relaxation (pnp only). Default: 1/2 when
        :math:`D\circ(I - \tau\nabla f)` is certified nonexpansive but not averaged (then
        the relaxed map is 1/2-averaged); 1 otherwise (averaged map, or no certificate).
    sigma : float, optional
        Passed to the denoiser as ``D(x, sigma=sigma)`` (pnp only).
    scheme : {"prox", "grad", "pnp"}, optional
        Force a scheme (e.g. ``"grad"`` for a prior that has both ``prox`` and ``grad``).
    preconditioner : {"fourier"}, optional
        Gradient steps in the metric :math:`P = A^\top A + cI`, :math:`c = \lambda L_R/2`:
        :math:`x \leftarrow y - \tau P^{-1}\nabla F(y)`, :math:`P^{-1}` by the operator's
        closed-form :meth:`~operators.Operator.gram_solve` (FFT for a circular blur). For
        the grad scheme on :math:`F = \tfrac12\|Ax - y\|^2 + \lambda R` (an
        ``L2Fidelity``) with certified :math:`L_f` and :math:`L_R`, convex (FISTA) or not
        (monotone APG, the sufficient-decrease test in the norm of :math:`P`); the step is
        :math:`1/L_P` (see Notes). Fewer iterations for the ridge priors on deblurring,
        where the prior's curvature is comparable with :math:`\|A\|^2`: ``crr`` on 2
        BSD68 crops (128x128) x Levin kernels 0, 3, 6 x noise 2.55 and 7.65/255, 715
        against 900 iterations in all to reach 0.02 dB of the minimiser's PSNR (per
        problem 1.0x to 2.5x; largest gains at the low noise), 3437 against 4270 to
        tolerance 1e-5; on the Levin kernel 1 problem of ``benchmarks/time_to_psnr.py``
        ``crr`` 57 -> 44 and ``wcrr`` 66 -> 59 iterations to tolerance 1e-3.
    strict : bool
        Raise ``ValueError`` at construction when no convergence guarantee holds.

    Attributes
    ----------
    guarantee : Guarantee
        The theorem whose conditions the certificates satisfy (``str()`` gives the
        sentence), or why none applies (``guarantee.holds`` is False and the sentence
        starts with ``"none: "``).
    step_size : float or None
        The step (``None`` until a backtracking solve has chosen one).

    Notes
    -----
    Convergence conditions (stated in ``guarantee`` with the numbers; :math:`F = f+\lambda g`):

    * prox, convex :math:`g`: :math:`\tau < 2/L_f` (PGD) or :math:`\tau \le 1/L_f` (FISTA)
      (Combettes & Wajs 2005; Beck & Teboulle 2009);
    * prox, :math:`\rho`-weakly convex :math:`g`: :math:`\tau < 1/L_f`,
      :math:`\tau\lambda\rho < 1` (Attouch, Bolte & Svaiter 2013);
    * grad: :math:`\tau < 2/(L_f + \lambda L_R)`; convex :math:`R` gives a minimiser,
      otherwise :math:`\nabla F(x_k) \to 0`;
    * grad, nonconvex, ``accelerate=True``: monotone accelerated gradient (Li & Lin 2015,
      Alg. 1 with its sufficient-descent monitor). From the extrapolated point
      :math:`y_k = x_k + \tfrac{t_{k-1}}{t_k}(z_k - x_k) + \tfrac{t_{k-1}-1}{t_k}(x_k -
      x_{k-1})` it tries :math:`z_{k+1} = y_k - \tau\nabla F(y_k)` and keeps it when
      :math:`F(z_{k+1}) \le F(x_k) - \delta\|z_{k+1} - y_k\|^2`
      (:math:`\delta = 10^{-2}/\tau`); otherwise it also takes the gradient step
      :math:`v_{k+1} = x_k - \tau\nabla F(x_k)` and keeps the better of the two. Either
      way :math:`F(x_{k+1}) \le F(x_k) - c\,\|\nabla F(p_k)\|^2` with :math:`p_k = y_k`
      or :math:`x_k` and :math:`c > 0` for :math:`\tau < 2/L`, and
      :math:`\|\nabla F(x_{k+1})\| \le (1 + L\tau)\|\nabla F(y_k)\|`; so when
      :math:`F` is bounded below, :math:`\min_{j \le k+1}\|\nabla F(x_j)\|^2 \le
      C\,(F(x_0) - \inf F)/k`, the rate of gradient descent, at most two gradients per
      iteration. The momentum restarts (:math:`t = 1`, :math:`z = x_{k-1} = x_k`) on the
      gradient test above or when :math:`z_{k+1}` is refused; the argument does not depend
      on :math:`y_k`, so restarts keep it;
    * pnp: :math:`D` :math:`\alpha`-averaged with :math:`\alpha < 1` and :math:`\tau <
      2/L_f` makes :math:`T = D(I - \tau\nabla f)` averaged (Combettes & Yamada 2015),
      and the Krasnoselskii-Mann iteration converges to a fixed point when one exists;
      :math:`D` merely nonexpansive needs :math:`\theta \in (0, 1)` and
      :math:`\tau \le 2/L_f`.

    * ``preconditioner="fourier"``: the same methods applied to :math:`u \mapsto
      F(P^{-1/2}u)`, which is :math:`L_P`-smooth: with :math:`A^\top A - \lambda L_R I
      \preceq \nabla^2 F \preceq A^\top A + \lambda L_R I` and the eigenvalues
      :math:`a \in [0, L_f]` of :math:`A^\top A`, the eigenvalues of
      :math:`P^{-1/2}\nabla^2 F P^{-1/2}` lie in :math:`[-\lambda L_R/c,\ L_P]`,
      :math:`L_P = \max_a (a + \lambda L_R)/(a + c) = \max(\lambda L_R/c,\
      (L_f + \lambda L_R)/(L_f + c))` (the ratio is monotone in :math:`a`); so the
      theorems above hold with :math:`L_P` in place of :math:`L` (a change of variables:
      gradients become :math:`P^{-1}\nabla F`, squared step lengths
      :math:`\|d\|_P^2 = \|Ad\|^2 + c\|d\|^2`).

    The residual is the relative change :math:`\|x_{k+1} - x_k\| / \|x_k\|` (for pnp the
    scaled fixed-point residual :math:`\theta\|Tx_k - x_k\|/\|x_k\|`).

    Examples
    --------
    >>> import torch
    >>> from operators import Blur, kernels
    >>> from lipinverse.functionals import L2Fidelity
    >>> from lipinverse.regularizers import Tikhonov
    >>> A = Blur(kernels.gaussian(1.0))
    >>> y = A(torch.rand(1, 1, 16, 16, dtype=torch.float64))
    >>> res = PGD(L2Fidelity(A, y), Tikhonov(), lam=0.1, accelerate=True).solve(tol=1e-8)
    >>> bool(res.converged.all()), res.guarantee.theorem
    (True, True)
    """

    def __init__(self, fidelity, prior, lam: float | None = None, *,
                 step_size: float | None = None, accelerate: bool = False,
                 backtracking: bool = False, relaxation: float | None = None,
                 sigma: float | None = None, scheme: str | None = None, strict: bool = False,
                 preconditioner: str | None = None):
        super().__init__(fidelity, strict=strict)
        name = type(self).__name__
        for flag, val in (("accelerate", accelerate), ("backtracking", backtracking)):
            if not isinstance(val, bool):
                raise TypeError(f"{name}: expected {flag} to be a bool, got {type(val).__name__}")
        self._set_prior(prior, lam, sigma, scheme)
        self.accelerate = accelerate
        if relaxation is not None and (self.scheme != "pnp" or accelerate):
            raise ValueError(f"{name}: relaxation is for the plug-and-play scheme without "
                             "acceleration")
        self.lf = cert.read_grad_lipschitz(name, fidelity, "fidelity")
        self.convex_f = getattr(fidelity, "convex", False) is True
        step_size = check_float(name, step_size, "step_size", positive=True, allow_none=True)

        lr = None
        if self.scheme == "grad":
            lr = cert.read_grad_lipschitz(name, prior, "prior")
            big_l = None if (self.lf is None or lr is None) else self.lf + self.lam * lr
        else:
            big_l = self.lf
        self.lr = lr
        self._metric = None   # c of the metric P = A^T A + c I (preconditioner="fourier")
        if preconditioner is not None:
            big_l = self._fourier_metric(preconditioner, fidelity, step_size, backtracking)
        if step_size is None and (big_l is None or big_l == 0):
            if self.scheme == "pnp":
                raise ValueError(f"{name}: cannot choose a step size: the fidelity has no "
                                 "certified grad_lipschitz; pass step_size")
            backtracking = True
        if backtracking:
            if self.scheme == "pnp":
                raise ValueError(f"{name}: backtracking needs an objective; a denoiser has none")
            if not callable(fidelity):
                raise TypeError(f"{name}: backtracking needs fidelity values (fidelity(x))")
            if self.scheme == "grad" and not callable(prior):
                raise TypeError(f"{name}: backtracking needs prior values (prior(x)) for the "
                                "grad scheme")
        self.backtracking = backtracking
        if step_size is not None:
            self.step_size = step_size
        elif big_l:
            self.step_size = 1.0 / big_l
        else:
            self.step_size = None  # set from the first iterate by backtracking
        self._step0 = self.step_size
        self._fused_step = (not backtracking and self.scheme != "grad"
                            and callable(getattr(fidelity, "grad_step", None)))

        self._convex = False  # certified convex f + lam g (set below for prox / grad)
        if self.scheme == "pnp":
            lip_d, alpha_d = cert.denoiser_certificates(name, prior)
            self.lip_d, self.alpha_d = lip_d, alpha_d
            tau = self.step_size
            averaged = (alpha_d is not None and alpha_d < 1 and self.lf is not None
                        and tau < 2 / self.lf)
            if relaxation is None:
                # relax only where it buys the theorem: a certified nonexpansive, not
                # averaged composition (an uncertified denoiser runs plain PnP)
                nonexpansive = lip_d is not None and lip_d <= 1
                relaxation = 0.5 if (nonexpansive and not averaged and not accelerate) else 1.0
            self.relaxation = check_float(name, relaxation, "relaxation", positive=True)
            self.guarantee = cert.pnp_fbs_guarantee(
                lf=self.lf, convex_f=self.convex_f, lip_d=lip_d, alpha_d=alpha_d, tau=tau,
                theta=self.relaxation, accelerate=accelerate)
        else:
            self.relaxation = None
            convex_g, rho = cert.prior_convexity(prior)
            self._convex = self.convex_f and convex_g
            common = dict(convex_f=self.convex_f, convex_g=convex_g, rho=rho, lam=self.lam,
                          tau=self.step_size, accelerate=accelerate, backtracking=backtracking)
            if self.scheme == "prox":
                self.guarantee = cert.pgd_prox_guarantee(lf=self.lf, **common)
            elif self._metric is not None:
                self.guarantee = cert.pgd_metric_guarantee(
                    lf=self.lf, lr=lr, lam=self.lam, c=self._metric, tau=self.step_size,
                    accelerate=accelerate, convex=self._convex)
            else:
                self.guarantee = cert.pgd_grad_guarantee(lf=self.lf, lr=lr, **common)
        if self.guarantee.holds and not backtracking:
            self.guarantee = uncertified(L_f=self.lf, L_R=lr) or self.guarantee
        self.guarantee = self.guarantee.with_note(cert.inexact_prox_note(prior))
        self._finish_guarantee()
        # monotone APG where FISTA has no theorem: a nonconvex smooth objective
        self._monotone = bool(accelerate and self.scheme == "grad" and not backtracking
                              and not self._convex)
        if self._monotone and not (callable(fidelity) and callable(prior)):
            raise TypeError(f"{name}: accelerate=True on a nonconvex objective needs the "
                            "values fidelity(x) and prior(x) (the monotone step compares F)")

    # ------------------------------------------------------------ pieces
    def _fourier_metric(self, kind, fidelity, step_size, backtracking) -> float:
        """Checks of ``preconditioner``; sets ``self._metric`` (c) and returns L_P."""
        name = type(self).__name__
        if kind != "fourier":
            raise ValueError(f"{name}: expected preconditioner None or 'fourier', got {kind!r}")
        why = None
        if self.scheme != "grad":
            why = f"the grad scheme (a smooth prior), got scheme {self.scheme!r}"
        elif step_size is not None or backtracking:
            why = "its own step 1/L_P: leave step_size and backtracking unset"
        elif not isinstance(fidelity, L2Fidelity):
            why = f"an L2Fidelity (f = 1/2 ||Ax - y||^2), got {type(fidelity).__name__}"
        elif self.lf is None or self.lr is None:
            why = "certified grad_lipschitz of the fidelity and of the prior"
        if why is None:
            lam_lr = float(self.lam) * float(self.lr)
            c = lam_lr / 2 if lam_lr > 0 else 1e-3 * float(self.lf)
            if fidelity.A._gram_solve(fidelity.Aty[:1], c) is None:
                why = (f"an operator with a closed-form gram_solve (e.g. a circular Blur), "
                       f"got {type(fidelity.A).__name__}")
        if why is not None:
            raise ValueError(f"{name}: preconditioner='fourier' needs {why}")
        self._metric = c
        lf = float(self.lf)
        return max(lam_lr / c, (lf + lam_lr) / (lf + c))

    def _denoise(self, v):
        return self.prior(v) if self.sigma is None else self.prior(v, sigma=self.sigma)

    def _total_grad(self, x):
        g = self.fidelity.grad(x)
        if self.scheme == "grad" and self.lam:
            g = g + self.lam * self.prior.grad(x)
        return g

    def _direction(self, x):
        """The gradient of F at ``x``, in the metric P when preconditioned (P^-1 grad F)."""
        g = self._total_grad(x)
        return g if self._metric is None else self._precondition(g)

    def _precondition(self, g):
        """:math:`P^{-1} g`, :math:`P = A^\top A + cI` (the operator's closed-form solve)."""
        return self.fidelity.A.gram_solve(g, self._metric)

    def _sq_norm(self, d):
        """Squared norm of the steps: ||d||^2, or ||d||_P^2 = ||A d||^2 + c ||d||^2."""
        if self._metric is None:
            return _dot(d, d)
        ad = self.fidelity.A(d)
        return _dot(ad, ad) + self._metric * _dot(d, d)

    def _smooth_value(self, x):
        """The part of the objective the backtracking test majorises."""
        v = self.fidelity(x)
        if self.scheme == "grad" and self.lam:
            v = v + self.lam * self.prior(x)
        return v

    def _map(self, y, g, tau):
        """One forward-backward map from ``y`` with gradient ``g`` and step ``tau``."""
        return self._backward(torch.add(y, g, alpha=-tau), tau)  # y - tau g, one pass

    def _backward(self, v, tau):
        """The backward step at ``v``: the prox, the denoiser, or nothing (grad scheme)."""
        if self.scheme == "prox":
            return self.prior.prox(v, tau * self.lam)
        if self.scheme == "grad":
            return v
        return self._denoise(v)

    def _initial_step(self, y, g) -> float:
        r"""Backtracking start without a certificate: the inverse local curvature
        :math:`\|d\| / \|\nabla F(y + d) - \nabla F(y)\|` along :math:`d = -\nabla F(y)`
        (an over-estimate of :math:`1/L`; backtracking then only shrinks it)."""
        d = -g
        diff = self._total_grad(y + d) - g
        dn, gn = d.flatten(1).norm(dim=1), diff.flatten(1).norm(dim=1)
        ok = gn > 0
        if not bool(ok.any()):
            return 1.0  # F is affine along -grad F for every sample: any step is a descent
        return float((dn[ok] / gn[ok]).min())

    def _backtrack(self, y, g, active):
        if self.step_size is None:
            self.step_size = self._initial_step(y, g)
        fy = self._smooth_value(y)
        # round-off allowance of the test: summing n terms loses about sqrt(n) ulps
        slack = 10 * torch.finfo(y.dtype).eps * y[0].numel() ** 0.5
        for _ in range(MAX_HALVINGS):
            tau = self.step_size
            xp = self._map(y, g, tau)
            d = xp - y
            bound = fy + _dot(g, d) + _dot(d, d) / (2 * tau)
            ok = self._smooth_value(xp) <= bound + slack * (fy.abs() + bound.abs())
            if bool((ok | ~active).all()):
                return xp
            self.step_size = tau / 2
        raise DivergenceError(f"{type(self).__name__}.solve: backtracking halved the step "
                              f"{MAX_HALVINGS} times without sufficient decrease (step "
                              f"{self.step_size:.3g}); the objective may be unbounded or NaN")

    def _forward_backward(self, y, active):
        if self._fused_step:  # y - tau grad f(y) in one pass of the fidelity
            out = self._backward(self.fidelity.grad_step(y, self.step_size), self.step_size)
        else:
            g = self._total_grad(y)
            if self.backtracking:
                return self._backtrack(y, g, active)
            if self._metric is not None:  # grad F(y) kept for the restart in P's product
                self._grad_y = g
                g = self._precondition(g)
            out = self._map(y, g, self.step_size)
        if self.scheme == "pnp" and self.relaxation != 1.0:
            out = torch.lerp(y, out, self.relaxation)  # (1 - theta) y + theta out
        return out

    # ------------------------------------------------------------- hooks
    def _init_state(self, x0):
        self.step_size = self._step0  # backtracking only shrinks within one solve
        state = {"x": x0}
        if self._monotone:  # Li & Lin 2015: z_1 = x_1 = x_0, t_1 = 1, t_0 = 0
            one = torch.ones(x0.shape[0], dtype=x0.dtype, device=x0.device)
            return {"x": x0, "x_prev": x0, "z": x0, "t": one, "t_prev": torch.zeros_like(one),
                    "F": self._smooth_value(x0)}
        if self.accelerate:
            state["y"] = x0
            state["t"] = torch.ones(x0.shape[0], dtype=x0.dtype, device=x0.device)
        return state

    def _step(self, state, k, active):
        x = state["x"]
        if self._monotone:
            return self._monotone_step(state, active)
        if not self.accelerate:
            x_new = self._forward_backward(x, active)
            return {"x": x_new}, _norm(x_new - x)
        y, t = state["y"], state["t"]
        x_new = self._forward_backward(y, active)
        # gradient restart: <y - x_new, x_new - x> > 0 in the metric of the steps (P's inner
        # product: tau <grad F(y), x_new - x>)
        restart = (_dot(self._grad_y, x_new - x) if self._metric is not None
                   else _dot(y - x_new, x_new - x)) > 0
        t = torch.where(restart, torch.ones_like(t), t)
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        y_new = x_new + _bcast((t - 1.0) / t_new, x_new) * (x_new - x)
        return {"x": x_new, "y": y_new, "t": t_new}, _norm(x_new - x)

    def _monotone_step(self, state, active):
        """One iteration of monotone APG (see the class Notes)."""
        x, t, tp = state["x"], state["t"], state["t_prev"]
        tau = self.step_size
        y = (x + _bcast(tp / t, x) * (state["z"] - x)
             + _bcast((tp - 1.0) / t, x) * (x - state["x_prev"]))
        z = self._map(y, self._direction(y), tau)
        fz = self._smooth_value(z)
        keep = fz <= state["F"] - (1e-2 / tau) * self._sq_norm(z - y)
        x_new, f_new = z, fz
        if not bool((keep | ~active).all()):
            v = self._map(x, self._direction(x), tau)
            fv = self._smooth_value(v)
            use_v = ~keep & (fv < fz)
            x_new = torch.where(_bcast(use_v, x), v, z)
            f_new = torch.where(use_v, fv, fz)
        # adaptive restart (O'Donoghue & Candes 2015), also where the monitor refused z:
        # the extrapolation does not enter the descent argument, so any restart is allowed
        restart = ~keep | (_dot(y - x_new, x_new - x) > 0)
        r = _bcast(restart, x)
        t_next = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        state = {"x": x_new, "x_prev": torch.where(r, x_new, x), "z": torch.where(r, x_new, z),
                 "t": torch.where(restart, torch.ones_like(t), t_next),
                 "t_prev": torch.where(restart, torch.zeros_like(t), t), "F": f_new}
        return state, _norm(x_new - x)

    def _objective(self, state):
        if self.scheme == "pnp" or not callable(self.fidelity) or not callable(self.prior):
            return None
        if self._monotone:  # the step computed F(x) already: no second evaluation
            return state["F"]
        x = state["x"]
        return self.fidelity(x) + self.lam * self.prior(x)

    def _current_step_size(self):
        return self.step_size

    def __repr__(self) -> str:
        step = "None" if self.step_size is None else f"{self.step_size:.4g}"
        return (f"PGD(scheme={self.scheme!r}, lam={self.lam}, step_size={step}, "
                f"accelerate={self.accelerate}, backtracking={self.backtracking})")
