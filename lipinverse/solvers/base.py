r"""What every iterative solver shares: the result, the history, stopping and divergence.

A solver subclasses :class:`IterativeSolver` and implements three hooks:

* ``_init_state(x0) -> dict`` of per-sample tensors (batch first; ``"x"`` is the iterate);
* ``_step(state, k, active) -> (new_state, change)`` (``active``: the samples not yet
  frozen), where ``change`` ``(B,)`` is the norm of the step's residual (e.g.
  :math:`\|x_{k+1} - x_k\|`); divided by :math:`\|x_k\|` it is the relative residual that
  the stopping test compares with ``tol``;
* ``_objective(state) -> (B,) tensor or None``.

:meth:`IterativeSolver.solve` runs the loop: it freezes the samples that have converged
(their state is no longer updated), records the history, calls the callback, shows an
optional tqdm bar and stops with :class:`DivergenceError` on NaN / Inf or a diverging
iteration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from operators.validation import check_float, check_int

from .guarantee import Guarantee, fails

__all__ = ["DivergenceError", "History", "IterationInfo", "SolverResult", "IterativeSolver",
           "DIVERGENCE_FACTOR", "GROWTH_FACTOR"]

#: The relative change exceeding its running minimum by this factor means divergence.
DIVERGENCE_FACTOR = 1e3
#: The iterate's norm exceeding the larger of its first two norms by this factor means
#: divergence.
GROWTH_FACTOR = 1e6


class DivergenceError(RuntimeError):
    """An iteration produced NaN / Inf or diverged; the message names sample and iteration."""


@dataclass(frozen=True)
class History:
    r"""Per-iteration records of a solve (no images).

    Attributes
    ----------
    relative_change : tensor ``(K, B)``
        :math:`\|x_{k+1} - x_k\| / \|x_k\|` per sample (the solver's residual; 0 once a
        sample is frozen).
    objective : tensor ``(K, B)`` or None
        The objective at :math:`x_{k+1}` where the solver knows it.
    time : tensor ``(K,)``
        Seconds elapsed since the start of the solve, after each iteration.
    """

    relative_change: torch.Tensor
    objective: torch.Tensor | None
    time: torch.Tensor

    def __len__(self) -> int:
        return int(self.time.shape[0])


@dataclass(frozen=True)
class IterationInfo:
    """What a callback receives after each iteration (``x`` is the live iterate: don't
    modify it in place)."""

    iteration: int
    x: torch.Tensor
    relative_change: torch.Tensor
    objective: torch.Tensor | None
    converged: torch.Tensor
    step_size: float | None


@dataclass(frozen=True)
class SolverResult:
    r"""The result of :meth:`IterativeSolver.solve`.

    Attributes
    ----------
    x : tensor ``(B, C, H, W)``
        The reconstruction.
    iterations : tensor ``(B,)`` of int
        Per sample, the number of iterations after which it converged (and was frozen), or
        the total number of iterations run if it did not.
    converged : tensor ``(B,)`` of bool
        Whether the residual reached ``tol``.
    history : History
    guarantee : Guarantee
        The theorem whose conditions the certificates satisfy, with those conditions, its
        rate and reference; ``str(guarantee)`` is the sentence, starting with ``"none: "``
        when no theorem applies.
    guaranteed : bool
        Whether a theorem applies (``guarantee.holds``).
    scheme : str
        ``"prox"``, ``"grad"`` or ``"pnp"`` (see the solver's docstring).
    step_size : float or None
        The step used (the last one, with backtracking).
    """

    x: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    history: History
    guarantee: Guarantee
    scheme: str
    step_size: float | None = None

    @property
    def guaranteed(self) -> bool:
        """Whether a convergence theorem applies to this solve."""
        return self.guarantee.holds


def _batch_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


class IterativeSolver:
    """Base class: the iteration loop shared by :class:`PGD` and :class:`ADMM`."""

    #: set by subclasses
    guarantee: Guarantee = fails("not set")
    scheme: str = ""
    #: a descent method (every step decreases F by a certified amount): its residual may
    #: jump after a short step without meaning divergence, so only NaN / Inf and the
    #: growth of the iterate count as divergence
    descent: bool = False

    def __init__(self, fidelity, *, strict: bool = False):
        name = type(self).__name__
        if not callable(getattr(fidelity, "grad", None)):
            raise TypeError(f"{name}: expected a fidelity with grad(x) (e.g. L2Fidelity), "
                            f"got {type(fidelity).__name__}")
        if not isinstance(strict, bool):
            raise TypeError(f"{name}: expected strict to be a bool, got {type(strict).__name__}")
        self.fidelity = fidelity
        self.strict = strict

    def _set_prior(self, prior, lam, sigma, scheme, refuse: dict | None = None) -> None:
        """Validate and store ``prior``, its ``scheme``, ``lam`` and ``sigma`` (shared by the
        solvers: a denoiser takes ``sigma`` and no ``lam``, a functional the reverse).
        ``refuse`` maps a scheme this solver cannot run to the reason (a ``TypeError``),
        checked before ``lam`` and ``sigma``."""
        from . import certificates as cert

        name = type(self).__name__
        self.prior = prior
        self.scheme = cert.classify_prior(name, prior, scheme,
                                          smooth=refuse is None or "grad" not in refuse)
        if refuse and self.scheme in refuse:
            raise TypeError(f"{name}: {refuse[self.scheme]}")
        self.sigma = check_float(name, sigma, "sigma", allow_none=True)
        if self.scheme == "pnp":
            if lam is not None:
                raise ValueError(f"{name}: lam has no role with a denoiser (its strength is "
                                 f"set by the denoiser, e.g. sigma); expected lam=None, got {lam}")
            self.lam = None
            return
        if lam is None:
            raise ValueError(f"{name}: expected a regularisation weight lam >= 0 for the "
                             f"{self.scheme!r} scheme, got None")
        self.lam = check_float(name, lam, "lam")
        if sigma is not None:
            raise ValueError(f"{name}: sigma is for denoisers; the prior "
                             f"{type(prior).__name__} is a functional (use lam)")

    # ------------------------------------------------------------- hooks
    def _init_state(self, x0: torch.Tensor) -> dict:
        """Abstract hook: the iteration's state from the start ``x0`` (each solver defines it)."""
        raise NotImplementedError

    def _step(self, state: dict, k: int, active: torch.Tensor):
        """Abstract hook: one iteration on the ``active`` samples (each solver defines it)."""
        raise NotImplementedError

    def _objective(self, state: dict) -> torch.Tensor | None:
        return None

    def _raise_divergence(self, name, k, res, bad, grown):
        """Raise for the samples ``bad`` (indices; ``grown[j]``: the norm test failed)."""
        nonfinite = [i for i in bad if not math.isfinite(res[i])]
        if nonfinite:
            raise DivergenceError(f"{name}: NaN or Inf in the iterate of sample(s) "
                                  f"{nonfinite} at iteration {k}")
        if any(grown):
            which = [i for i, g in zip(bad, grown, strict=True) if g]
            why = f"the iterate's norm grew by more than {GROWTH_FACTOR:g}"
        else:
            which = list(bad)
            why = f"the relative change grew by more than {DIVERGENCE_FACTOR:g} over its minimum"
        raise DivergenceError(f"{name}: diverged in sample(s) {which} at iteration {k}: {why}; "
                              "check the step size and the prior's certificates")

    def _current_step_size(self) -> float | None:
        return None

    def _output(self, state: dict) -> torch.Tensor:
        return state["x"]

    # ------------------------------------------------------------ checks
    def _finish_guarantee(self) -> None:
        if self.strict and not self.guarantee.holds:
            raise ValueError(f"{type(self).__name__} (strict=True): no convergence guarantee "
                             f"holds; {self.guarantee}")

    def _reference(self) -> torch.Tensor | None:
        """A tensor with the shape, dtype and device of the unknown (``A^T y``)."""
        return getattr(self.fidelity, "Aty", None)

    def _check_x0(self, x0) -> torch.Tensor:
        name = f"{type(self).__name__}.solve"
        ref = self._reference()
        if x0 is None:
            if ref is None:
                raise ValueError(f"{name}: expected x0 (the fidelity has no A^T y to start from)")
            return ref.detach().clone()
        if not isinstance(x0, torch.Tensor):
            raise TypeError(f"{name}: expected x0 as a torch.Tensor, got {type(x0).__name__}")
        if ref is not None:
            if x0.shape != ref.shape:
                raise ValueError(f"{name}: expected x0 of shape {tuple(ref.shape)}, "
                                 f"got {tuple(x0.shape)}")
            if x0.dtype != ref.dtype:
                raise TypeError(f"{name}: expected x0 of dtype {ref.dtype}, got {x0.dtype}")
            if x0.device != ref.device:
                raise ValueError(f"{name}: expected x0 on device {ref.device}, got {x0.device}")
        elif x0.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name}: expected x0 of dtype float32 or float64, got {x0.dtype}")
        bad = ~torch.isfinite(x0.flatten(1)).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"{name}: x0 has NaN or Inf entries in sample(s) "
                             f"{bad.nonzero().flatten().tolist()}")
        return x0.detach().clone()

    # -------------------------------------------------------------- loop
    @torch.no_grad()
    def solve(self, x0: torch.Tensor | None = None, max_iter: int = 500, tol: float = 1e-6,
              callback: Callable[[IterationInfo], bool | None] | None = None,
              progress: bool = False, track_objective: bool = True) -> SolverResult:
        r"""Run the iteration from ``x0`` until every sample converges or ``max_iter``.

        The loop runs under ``torch.no_grad()``: no autograd graph grows across iterations
        even when the prior's parameters require grad (priors that need autograd for their
        own gradient, such as a scalar ResNet regulariser, enable it locally).

        Parameters
        ----------
        x0 : tensor ``(B, C, H, W)``, optional
            Starting point; default :math:`A^\top y`.
        max_iter : int
            Iteration cap.
        tol : float
            A sample has converged (and is frozen) once its residual (relative change, see
            the solver) is at most ``tol``. ``tol = 0`` runs ``max_iter`` iterations.
        callback : callable, optional
            Called as ``callback(info)`` with an :class:`IterationInfo` after every
            iteration; returning ``True`` stops the solve.
        progress : bool
            Show a tqdm progress bar.
        track_objective : bool
            Record the objective (where known) in the history; costs one evaluation per
            iteration.

        Returns
        -------
        SolverResult

        Raises
        ------
        DivergenceError
            On NaN / Inf in the iterate, a residual that grows by ``DIVERGENCE_FACTOR``
            over its running minimum (and above the square root of the machine epsilon;
            not for a ``descent`` solver such as LBFGS, whose steps decrease F by a
            certified amount), or an iterate whose norm grows by ``GROWTH_FACTOR`` over the
            larger of :math:`\|x_0\|, \|x_1\|`.
        """
        name = f"{type(self).__name__}.solve"
        max_iter = check_int(name, max_iter, "max_iter")
        tol = check_float(name, tol, "tol")
        if callback is not None and not callable(callback):
            raise TypeError(f"{name}: expected a callable callback, got {type(callback).__name__}")
        self._finish_guarantee()
        x0 = self._check_x0(x0)
        # an iterative prox (TV) keeps a warm start between calls: forget it, so that the
        # same solve gives the same bits twice
        reset = getattr(getattr(self, "prior", None), "reset_warm_start", None)
        if callable(reset):
            reset()
        state = self._init_state(x0)
        b = x0.shape[0]
        dev = x0.device
        dtype = x0.dtype
        # Per-sample bookkeeping runs on the host: one (2, B) transfer per iteration
        # (the change and the new norm) replaces a dozen tiny tensor ops, whose dispatch,
        # not their arithmetic, is what a solver loop adds to the cost of its parts.
        bk = _Bookkeeping(dtype, _batch_norm(x0).tolist(), jump_test=not self.descent)
        active = torch.ones(b, dtype=torch.bool, device=dev)
        residuals, objectives, times = [], [], []
        k_run = 0
        t0 = time.perf_counter()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_iter, desc=type(self).__name__, leave=False)
        try:
            for k in range(max_iter):
                new_state, change = self._step(state, k, active)
                norm_new = _batch_norm(new_state["x"])
                changes, norms = torch.stack((change, norm_new.to(change.dtype))).tolist()
                res, bad, grown = bk.update(changes, norms)
                if bad:
                    self._raise_divergence(name, k + 1, res, bad, grown)
                if bk.all_active:
                    state = new_state
                else:  # freeze the samples that had converged before this step
                    state = {key: _masked(active, new, state.get(key))
                             for key, new in new_state.items()}
                k_run = k + 1
                if bk.converge(res, tol, k_run):
                    active = torch.tensor(bk.active, dtype=torch.bool, device=dev)
                obj = self._objective(state) if track_objective else None
                if obj is not None and not bool(torch.isfinite(obj).all()):
                    nonfinite = (~torch.isfinite(obj)).nonzero().flatten().tolist()
                    raise DivergenceError(f"{name}: the objective is NaN or Inf in sample(s) "
                                          f"{nonfinite} at iteration {k + 1}")
                residuals.append(res)
                if obj is not None:
                    objectives.append(obj.detach())
                times.append(time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(residual=f"{max(res):.2e}", active=sum(bk.active))
                if callback is not None:
                    info = IterationInfo(k + 1, self._output(state),
                                         torch.tensor(res, dtype=dtype, device=dev), obj,
                                         ~active, self._current_step_size())
                    if callback(info) is True:
                        break
                if not any(bk.active):
                    break
        finally:
            if bar is not None:
                bar.close()
        iterations = torch.tensor([k_run if a else d for a, d in zip(bk.active, bk.done_at,
                                                                     strict=True)])
        history = History(
            relative_change=(torch.tensor(residuals, dtype=dtype) if residuals
                             else torch.zeros(0, b, dtype=dtype)),
            objective=torch.stack(objectives).cpu() if objectives else None,
            time=torch.tensor(times, dtype=torch.float64),
        )
        return SolverResult(x=self._output(state), iterations=iterations,
                            converged=~torch.tensor(bk.active, dtype=torch.bool), history=history,
                            guarantee=self.guarantee, scheme=self.scheme,
                            step_size=self._current_step_size())


class _Bookkeeping:
    r"""Per-sample stopping and divergence state of a solve, in host floats.

    A sample's residual is :math:`r_k = \|\Delta_k\| / \|x_k\|`; it diverges when
    :math:`r_k` exceeds ``DIVERGENCE_FACTOR`` times its running minimum (and the floor
    :math:`\max(10^3\cdot 100\,\epsilon, \sqrt\epsilon)`), is NaN, or when
    :math:`\|x_{k+1}\|` exceeds ``GROWTH_FACTOR`` times the larger of the first two norms.
    """

    def __init__(self, dtype: torch.dtype, norms0: list[float], jump_test: bool = True) -> None:
        fi = torch.finfo(dtype)
        self.jump_test = jump_test
        self.floor = 100 * fi.eps
        self.jump_floor = max(DIVERGENCE_FACTOR * self.floor, math.sqrt(fi.eps))
        self.tiny = fi.tiny
        b = len(norms0)
        self.active = [True] * b
        self.all_active = True
        self.done_at = [0] * b
        # finfo.max (not inf), so that an infinite residual counts as divergence at once
        self.thr_jump = [fi.max] * b
        self.min_res = [math.inf] * b
        self.norm_old = list(norms0)
        self.thr_grow = None

    def update(self, changes: list[float], norms: list[float]):
        """Residuals of this step (0 for frozen samples), the diverging samples and, for
        each of them, whether the norm test failed."""
        if self.thr_grow is None:
            self.thr_grow = [GROWTH_FACTOR * max(a, b, self.floor)
                             for a, b in zip(self.norm_old, norms, strict=True)]
        res, bad, grown = [], [], []
        for i, (c, n) in enumerate(zip(changes, norms, strict=True)):
            if not self.active[i]:
                res.append(0.0)
                continue
            r = c / max(self.norm_old[i], self.tiny)
            res.append(r)
            small = n <= self.thr_grow[i]
            if not (r <= self.thr_jump[i] and small):  # NaN fails both tests
                bad.append(i)
                grown.append(not small)
                continue
            if r < self.min_res[i]:
                self.min_res[i] = r
            if self.jump_test:
                self.thr_jump[i] = max(DIVERGENCE_FACTOR * self.min_res[i], self.jump_floor)
            self.norm_old[i] = n
        return res, bad, grown

    def converge(self, res: list[float], tol: float, k: int) -> bool:
        """Freeze the samples whose residual is at most ``tol``; whether any was."""
        changed = False
        for i, r in enumerate(res):
            if self.active[i] and r <= tol:
                self.active[i], self.done_at[i] = False, k
                changed = True
        if changed:
            self.all_active = False
        return changed


def _masked(active: torch.Tensor, new, old):
    """Keep ``old`` where a sample is inactive (frozen); per-sample tensors only."""
    if old is None or not isinstance(new, torch.Tensor) or new.dim() == 0:
        return new
    mask = active.view((-1,) + (1,) * (new.dim() - 1))
    return torch.where(mask, new, old)
