r"""Certified upper bounds, empirical lower bounds and export of 1-Lipschitz models."""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import nn

from .activations import GroupSort, ScaledActivation, activation_slope_bounds
from .blocks import GradientStepBlock
from .linear import Constrained, LinearMap
from .norms import FP_MARGIN
from .resnet import LipschitzResNet, SpatialPool, UnrolledNetwork
from .splines import LipschitzSpline

__all__ = ["certify", "empirical_lipschitz", "export"]

_ELEMENTWISE = (nn.ReLU, nn.Identity, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.LeakyReLU)


@torch.no_grad()
def certify(model: nn.Module) -> float:
    r"""Certified upper bound of the Lipschitz constant (Euclidean norms) of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Built from the parts of :mod:`lipinverse.nn`: :class:`GradientStepBlock`,
        :class:`LipschitzResNet`, :class:`UnrolledNetwork`, any :class:`LinearMap`
        (its certified ``norm_bound()``), :class:`LipschitzSpline`,
        :class:`ScaledActivation`, :class:`GroupSort`, :class:`SpatialPool`, the
        elementwise torch activations with known slopes, ``nn.Linear`` (exact
        spectral norm), and ``nn.Sequential`` compositions of these.

    Returns
    -------
    float
        For a composition, the product of the parts' certificates.

    Raises
    ------
    TypeError
        For any module whose Lipschitz constant cannot be certified (nothing is guessed).

    Notes
    -----
    :math:`\mathrm{Lip}(f_L\circ\dots\circ f_1) \le \prod_i \mathrm{Lip}(f_i)`.
    """
    if isinstance(model, (GradientStepBlock, LipschitzResNet, UnrolledNetwork)):
        return float(model.lipschitz_bound())
    if isinstance(model, LinearMap):
        return float(model.norm_bound())
    if isinstance(model, (LipschitzSpline, ScaledActivation, GroupSort, SpatialPool)):
        return float(model.lipschitz)
    if isinstance(model, nn.Sequential):
        bound = 1.0
        for child in model:
            bound *= certify(child)
        return bound
    if isinstance(model, nn.Linear):
        w = model.weight.detach().to(torch.float64)
        return float(torch.linalg.matrix_norm(w, 2)) * (1.0 + FP_MARGIN)
    if isinstance(model, _ELEMENTWISE):
        lo, hi = activation_slope_bounds(model)
        return max(abs(float(lo)), abs(float(hi)))
    raise TypeError(
        f"certify: cannot certify a {type(model).__name__}; expected a module built from "
        "lipinverse.nn parts (GradientStepBlock, LipschitzResNet, UnrolledNetwork, LinearMap, "
        "LipschitzSpline, GroupSort, ...) or an nn.Sequential of them"
    )


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1) if t.dim() > 1 else t.abs()


def _ratio(f, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _per_sample_norm(f(a) - f(b)) / _per_sample_norm(a - b).clamp_min(1e-300)


def empirical_lipschitz(
    model: nn.Module,
    x: torch.Tensor,
    n_iter: int = 30,
    adversarial_steps: int = 30,
    lr: float = 1e-2,
    fd_step: float = 1e-4,
    seed: int = 0,
) -> float:
    r"""A *lower* bound of the Lipschitz constant of ``model`` near the samples ``x``.

    Parameters
    ----------
    model : torch.nn.Module or callable
        Maps a batch ``(B, ...)`` to ``(B, ...)`` or ``(B,)``, samples independently
        (a callable such as ``lambda x: net(x, anchor=y)`` is used as is).
    x : torch.Tensor
        Starting points (batch).
    n_iter : int, default 30
        Power iterations on :math:`J^\top J` at each sample (``torch.func.jvp``/``vjp``).
    adversarial_steps : int, default 30
        Adam steps on pairs :math:`(a, b)` maximising
        :math:`\|f(a) - f(b)\|/\|a-b\|`, started from :math:`(x, x + \epsilon v)` with
        :math:`v` the power-iteration direction.
    lr : float, default 1e-2
        Adam learning rate relative to the scale of ``x``.
    fd_step : float, default 1e-4
        Relative size :math:`\epsilon` of the initial pair separation.
    seed : int, default 0

    Returns
    -------
    float
        The largest difference quotient :math:`\|f(a)-f(b)\|/\|a-b\|` found (each one
        is a genuine lower bound; Jacobian norms are only used to choose directions).

    Notes
    -----
    The model is evaluated in eval mode with its parameters temporarily frozen
    (restored on exit), so that training-mode side effects (e.g. refining a power
    iteration) do not change the function between evaluations.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError(f"empirical_lipschitz: expected a batch tensor x, got {type(x)}")
    is_module = isinstance(model, nn.Module)
    if not is_module and not callable(model):
        raise TypeError(f"empirical_lipschitz: expected a module or callable, got {type(model)}")
    was_training = model.training if is_module else False
    flags = [(p, p.requires_grad) for p in model.parameters()] if is_module else []
    gen = torch.Generator(device=x.device).manual_seed(seed)
    try:
        if is_module:
            model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        x = x.detach()
        scale = float(_per_sample_norm(x).mean()) / math.sqrt(max(x[0].numel(), 1)) or 1.0

        def per_sample_unit(v):
            n = _per_sample_norm(v).clamp_min(1e-300)
            return v / n.view([-1] + [1] * (v.dim() - 1))

        v = per_sample_unit(torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device))
        for _ in range(n_iter):
            with warnings.catch_warnings():
                # torch's forward-mode AD loads decompositions with the deprecated jit.script
                warnings.filterwarnings("ignore", message=".*jit.script.*", category=FutureWarning)
                _, jv = torch.func.jvp(model, (x,), (v,))
            _, vjp_fn = torch.func.vjp(model, x)
            (w,) = vjp_fn(jv)
            if float(w.abs().max()) == 0.0:
                break
            v = per_sample_unit(w)
        eps = fd_step * max(scale, 1e-8) * math.sqrt(max(x[0].numel(), 1))
        with torch.no_grad():
            best = float(_ratio(model, x + eps * v, x).max())
        if adversarial_steps > 0:
            a = x.clone().requires_grad_(True)
            b = (x + eps * v).clone().requires_grad_(True)
            opt = torch.optim.Adam([a, b], lr=lr * max(scale, 1e-8))
            for _ in range(adversarial_steps):
                r = _ratio(model, a, b)
                best = max(best, float(r.detach().max()))
                opt.zero_grad()
                (-torch.log(r.clamp_min(1e-300)).sum()).backward()
                opt.step()
            with torch.no_grad():
                best = max(best, float(_ratio(model, a, b).max()))
        return best
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        if is_module:
            model.train(was_training)


@torch.no_grad()
def export(model: nn.Module) -> nn.Module:
    r"""A frozen copy of ``model`` for inference, with identical outputs.

    Splines are frozen (cached coefficient tables), step sizes of
    :class:`GradientStepBlock` and scales of :class:`Constrained` maps are stored as
    buffers, every parameter becomes a buffer (``parameters()`` is empty), and the
    copy is in eval mode.  :func:`certify` still applies, computing from the buffers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export: expected an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    modules = list(out.modules())
    for m in modules:
        if isinstance(m, LipschitzSpline):
            m.freeze()
    for m in modules:
        if isinstance(m, GradientStepBlock):
            m.freeze_step()
        elif isinstance(m, Constrained):
            m.freeze_scale()
    for m in modules:
        for name, p in list(m._parameters.items()):
            del m._parameters[name]
            if p is not None:
                m.register_buffer(name, p.detach().clone())
            else:
                setattr(m, name, None)
    return out
