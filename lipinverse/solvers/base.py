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
    guarantee : str
        The theorem whose conditions the certificates satisfy, or a string starting with
        ``"none:"`` saying which condition fails.
    scheme : str
        ``"prox"``, ``"grad"`` or ``"pnp"`` (see the solver's docstring).
    step_size : float or None
        The step used (the last one, with backtracking).
    """

    x: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    history: History
    guarantee: str
    scheme: str
    step_size: float | None = None


def _batch_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def check_int(name: str, value, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int {what}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected {what} >= {minimum}, got {value}")
    return value


def check_float(name: str, value, what: str, *, positive: bool = False,
                allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float {what}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name}: expected a finite {what} {bound}, got {value}")
    return float(value)


class IterativeSolver:
    """Base class: the iteration loop shared by :class:`PGD` and :class:`ADMM`."""

    #: set by subclasses
    guarantee: str = "none: not set"
    scheme: str = ""

    def __init__(self, fidelity, *, strict: bool = False):
        name = type(self).__name__
        if not callable(getattr(fidelity, "grad", None)):
            raise TypeError(f"{name}: expected a fidelity with grad(x) (e.g. L2Fidelity), "
                            f"got {type(fidelity).__name__}")
        if not isinstance(strict, bool):
            raise TypeError(f"{name}: expected strict to be a bool, got {type(strict).__name__}")
        self.fidelity = fidelity
        self.strict = strict

    # ------------------------------------------------------------- hooks
    def _init_state(self, x0: torch.Tensor) -> dict:
        """Abstract hook: the iteration's state from the start ``x0`` (each solver defines it)."""
        raise NotImplementedError

    def _step(self, state: dict, k: int, active: torch.Tensor):
        """Abstract hook: one iteration on the ``active`` samples (each solver defines it)."""
        raise NotImplementedError

    def _objective(self, state: dict) -> torch.Tensor | None:
        return None

    def _raise_divergence(self, name, k, bad, res, grown):
        nonfinite = bad & ~torch.isfinite(res)
        if bool(nonfinite.any()):
            raise DivergenceError(f"{name}: NaN or Inf in the iterate of sample(s) "
                                  f"{nonfinite.nonzero().flatten().tolist()} at iteration {k}")
        if bool((bad & grown).any()):
            which = (bad & grown).nonzero().flatten().tolist()
            why = f"the iterate's norm grew by more than {GROWTH_FACTOR:g}"
        else:
            which = bad.nonzero().flatten().tolist()
            why = f"the relative change grew by more than {DIVERGENCE_FACTOR:g} over its minimum"
        raise DivergenceError(f"{name}: diverged in sample(s) {which} at iteration {k}: {why}; "
                              "check the step size and the prior's certificates")

    def _current_step_size(self) -> float | None:
        return None

    def _output(self, state: dict) -> torch.Tensor:
        return state["x"]

    # ------------------------------------------------------------ checks
    def _finish_guarantee(self) -> None:
        if self.strict and self.guarantee.startswith("none:"):
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
            over its running minimum (and above the square root of the machine epsilon), or
            an iterate whose norm grows by ``GROWTH_FACTOR`` over the larger of
            :math:`\|x_0\|, \|x_1\|`.
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
        # per-sample bookkeeping, written for few small tensor ops per iteration (their
        # Python dispatch, not the arithmetic, is what a solver loop adds to its parts)
        active = torch.ones(b, dtype=torch.bool, device=dev)
        all_active = True
        done_at = torch.zeros(b, dtype=torch.long, device=dev)  # iteration of convergence
        floor = 100 * torch.finfo(dtype).eps
        jump_floor = max(DIVERGENCE_FACTOR * floor, math.sqrt(torch.finfo(dtype).eps))
        tiny = torch.finfo(dtype).tiny
        # a residual above thr_jump (or NaN) is divergence; finfo.max (not inf) so that an
        # infinite residual is caught from the first iteration on
        thr_jump = torch.full((b,), torch.finfo(dtype).max, dtype=dtype, device=dev)
        min_res = torch.full((b,), math.inf, dtype=dtype, device=dev)
        norm_old = _batch_norm(x0)
        norm_div = norm_old.clamp_min(tiny)
        thr_grow = None
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
                res = change / norm_div  # NaN / Inf in the iterate makes its residual so
                if not all_active:
                    res = torch.where(active, res, torch.zeros_like(res))
                if thr_grow is None:
                    thr_grow = GROWTH_FACTOR * torch.maximum(norm_old, norm_new).clamp_min(floor)
                bad = ~((res <= thr_jump) & (norm_new <= thr_grow))
                if not all_active:
                    bad = bad & active
                if bool(bad.any()):
                    self._raise_divergence(name, k + 1, bad, res, ~(norm_new <= thr_grow))
                min_res = torch.minimum(min_res, res) if all_active else torch.where(
                    active, torch.minimum(min_res, res), min_res)
                thr_jump = (DIVERGENCE_FACTOR * min_res).clamp_min_(jump_floor)
                if all_active:
                    state, norm_new_kept = new_state, norm_new
                else:  # freeze the samples that had converged before this step
                    state = {key: _masked(active, new, state.get(key))
                             for key, new in new_state.items()}
                    norm_new_kept = torch.where(active, norm_new, norm_old)
                norm_old = norm_new_kept
                norm_div = norm_new_kept.clamp_min(tiny)
                k_run = k + 1
                newly = res <= tol if all_active else active & (res <= tol)
                if bool(newly.any()):
                    done_at = torch.where(newly, torch.full_like(done_at, k_run), done_at)
                    active = active & ~newly
                    all_active = False
                obj = self._objective(state) if track_objective else None
                if obj is not None and not bool(torch.isfinite(obj).all()):
                    bad = (~torch.isfinite(obj)).nonzero().flatten().tolist()
                    raise DivergenceError(f"{name}: the objective is NaN or Inf in sample(s) "
                                          f"{bad} at iteration {k + 1}")
                residuals.append(res.detach())
                if obj is not None:
                    objectives.append(obj.detach())
                times.append(time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(residual=f"{res.max().item():.2e}",
                                    active=int(active.sum()))
                if callback is not None:
                    info = IterationInfo(k + 1, self._output(state), res, obj, ~active,
                                         self._current_step_size())
                    if callback(info) is True:
                        break
                if not all_active and not bool(active.any()):
                    break
        finally:
            if bar is not None:
                bar.close()
        iterations = torch.where(active, torch.full_like(done_at, k_run), done_at)
        history = History(
            relative_change=(torch.stack(residuals).cpu() if residuals
                             else torch.zeros(0, b, dtype=x0.dtype)),
            objective=torch.stack(objectives).cpu() if objectives else None,
            time=torch.tensor(times, dtype=torch.float64),
        )
        return SolverResult(x=self._output(state), iterations=iterations.cpu(),
                            converged=(~active).cpu(), history=history,
                            guarantee=self.guarantee, scheme=self.scheme,
                            step_size=self._current_step_size())


def _masked(active: torch.Tensor, new, old):
    """Keep ``old`` where a sample is inactive (frozen); per-sample tensors only."""
    if old is None or not isinstance(new, torch.Tensor) or new.dim() == 0:
        return new
    mask = active.view((-1,) + (1,) * (new.dim() - 1))
    return torch.where(mask, new, old)
