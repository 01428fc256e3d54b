r"""Training objectives: denoising losses for denoisers and ridge regularisers, adversarial
loss for scalar regularisers.

Every objective implements

- ``loss(model, clean, noisy, sigma) -> (loss, metrics)``: a scalar tensor to
  back-propagate (the mean over the given samples, plus penalties) and a dict of floats;
- ``predict(model, noisy, sigma) -> tensor``: the estimate used for validation PSNR
  (no gradient), or ``None`` if the objective has none.

The :class:`~lipinverse.training.Trainer` draws the noise levels ``sigma`` (shape
``(B,)``) and ``noisy = clean + sigma * n`` itself, so the objectives are deterministic.
"""

from __future__ import annotations

import torch

from operators.linalg import conjugate_gradient

__all__ = [
    "DenoisingLoss",
    "TStepDenoisingLoss",
    "DEQDenoisingLoss",
    "AdversarialLoss",
]


def _pixel_loss(name: str, kind: str):
    if kind == "mse":
        return lambda a, b: (a - b).pow(2).flatten(1).mean(1)
    if kind == "l1":
        return lambda a, b: (a - b).abs().flatten(1).mean(1)
    raise ValueError(f"{name}: expected loss 'mse' or 'l1', got {kind!r}")


def _penalty(model, tv2_weight: float):
    if tv2_weight and hasattr(model, "tv2"):
        return tv2_weight * model.tv2()
    return None


def _finish(per_sample: torch.Tensor, model, tv2_weight: float, extra=None):
    loss = per_sample.mean()
    metrics = {"data_loss": float(loss.detach())}
    pen = _penalty(model, tv2_weight)
    if pen is not None:
        metrics["tv2"] = float(pen.detach())
        loss = loss + pen
    if extra:
        metrics.update(extra)
    return loss, metrics


class DenoisingLoss:
    r"""Pixel loss of an image-to-image denoiser: :math:`\ell(D(y, \sigma), x)`.

    Parameters
    ----------
    loss : {"mse", "l1"}
    tv2_weight : float
        Weight of the spline penalty ``model.tv2()`` (if the model has one).
    conditioned : bool
        Pass ``sigma`` to the model (``D(y, sigma)``); otherwise ``D(y)``.
    """

    def __init__(self, loss: str = "mse", tv2_weight: float = 0.0,
                 conditioned: bool = False) -> None:
        self._loss = _pixel_loss("DenoisingLoss", loss)
        self.tv2_weight, self.conditioned = float(tv2_weight), bool(conditioned)

    def _apply(self, model, noisy, sigma):
        return model(noisy, sigma) if self.conditioned else model(noisy)

    def loss(self, model, clean, noisy, sigma):
        return _finish(self._loss(self._apply(model, noisy, sigma), clean), model,
                       self.tv2_weight)

    @torch.no_grad()
    def predict(self, model, noisy, sigma):
        return self._apply(model, noisy, sigma)


class TStepDenoisingLoss:
    r"""Denoising loss of the t-step gradient denoiser of a ridge regulariser.

    :math:`x_{k+1} = x_k - h(x_k - y + \nabla R_\sigma(x_k))`, :math:`x_0 = y`, with
    ``model.gradient_steps(y, sigma, t, step)`` (back-propagation through all steps),
    loss :math:`\ell(x_t, x)` plus ``tv2_weight * model.tv2()``.  Validation uses the
    converged :meth:`~lipinverse.regularizers.ConvexRidge.denoise` if ``validate_exact``.
    """

    def __init__(self, t: int = 10, step: float = 0.5, loss: str = "mse",
                 tv2_weight: float = 0.0, validate_exact: bool = True,
                 val_tol: float = 1e-4, val_max_iter: int = 500) -> None:
        if int(t) < 1:
            raise ValueError(f"TStepDenoisingLoss: expected t >= 1, got {t}")
        self.t, self.step = int(t), float(step)
        self._loss = _pixel_loss("TStepDenoisingLoss", loss)
        self.tv2_weight, self.validate_exact = float(tv2_weight), bool(validate_exact)
        self.val_tol, self.val_max_iter = float(val_tol), int(val_max_iter)

    def loss(self, model, clean, noisy, sigma):
        est = model.gradient_steps(noisy, sigma, self.t, self.step)
        return _finish(self._loss(est, clean), model, self.tv2_weight)

    @torch.no_grad()
    def predict(self, model, noisy, sigma):
        if self.validate_exact:
            return model.solve(noisy, 1.0, sigma, tol=self.val_tol, max_iter=self.val_max_iter)[0]
        return model.gradient_steps(noisy, sigma, self.t, self.step)


class DEQDenoisingLoss:
    r"""Deep-equilibrium denoising loss of a ridge regulariser (fixed point, implicit backward).

    Parameters
    ----------
    backward : {"implicit", "jfb"}
        ``"implicit"``: exact gradient through the minimiser by the implicit function
        theorem (conjugate gradients on the Hessian); ``"jfb"``: Jacobian-free
        backpropagation through one gradient step at the fixed point.
    tol, max_iter :
        Of the forward solve :meth:`~lipinverse.regularizers.ConvexRidge.solve`
        (certified relative distance to the minimiser).
    solver : {"anderson", "fista", "lbfgs"}
        Method of the forward solve (``method`` of ``solve``); all meet the same
        certified ``tol``, Anderson with about half of FISTA's gradients.
    cg_tol, cg_max_iter :
        Of the backward linear solve (``"implicit"``).
    loss : {"mse", "l1"}
    tv2_weight : float

    Notes
    -----
    The forward pass computes, without gradient, :math:`x^* = \arg\min_x \tfrac12\|x-y\|^2
    + R_\theta(x)`, i.e. :math:`x^* - y + \nabla R_\theta(x^*) = 0`.  Differentiating,

    .. math::

        \frac{\partial \ell}{\partial\theta} = -v^\top \partial_\theta \nabla R_\theta(x^*),
        \qquad (I + \nabla^2 R_\theta(x^*))\, v = \nabla_x \ell(x^*),

    so back-propagating the surrogate :math:`-\langle v, \nabla R_\theta(x^*)\rangle`
    (``v``, ``x*`` detached) gives the exact gradient; the reported loss value is
    :math:`\ell(x^*)`.  ``"jfb"`` back-propagates :math:`\ell(x^* - h(x^* - y +
    \nabla R_\theta(x^*)))` instead (Fung et al., 2022).
    """

    def __init__(self, backward: str = "implicit", tol: float = 1e-4, max_iter: int = 300,
                 cg_tol: float = 1e-4, cg_max_iter: int = 100, loss: str = "mse",
                 tv2_weight: float = 0.0, solver: str = "anderson") -> None:
        if backward not in ("implicit", "jfb"):
            raise ValueError(f"DEQDenoisingLoss: expected backward 'implicit' or 'jfb', "
                             f"got {backward!r}")
        if solver not in ("anderson", "fista", "lbfgs"):
            raise ValueError(f"DEQDenoisingLoss: expected solver 'anderson', 'fista' or "
                             f"'lbfgs', got {solver!r}")
        self.backward, self.solver = backward, solver
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.cg_tol, self.cg_max_iter = float(cg_tol), int(cg_max_iter)
        self._loss = _pixel_loss("DEQDenoisingLoss", loss)
        self.tv2_weight = float(tv2_weight)

    def loss(self, model, clean, noisy, sigma):
        x_star, info = model.solve(noisy, 1.0, sigma, tol=self.tol, max_iter=self.max_iter,
                                   method=self.solver)
        sc = model.scalings(sigma, noisy.shape[0], noisy.dtype, noisy.device)
        extra = {"fixed_point_iterations": float(info.iterations.float().mean())}
        if self.backward == "jfb":
            h = model.unrolled_step(sc, 0.5).to(noisy.dtype).reshape(-1, 1, 1, 1)
            est = x_star - h * (x_star - noisy + model.grad_scaled(x_star, sc))
            return _finish(self._loss(est, clean), model, self.tv2_weight, extra)
        leaf = x_star.detach().requires_grad_(True)
        with torch.enable_grad():
            per_sample = self._loss(leaf, clean)
            (g,) = torch.autograd.grad(per_sample.mean(), leaf)
        with torch.no_grad():
            sc0 = model.scalings(sigma, noisy.shape[0], noisy.dtype, noisy.device)
            hess, prec = model.hessian_at(x_star, sc0, preconditioner=True)
            v, its = conjugate_gradient(lambda u, idx: u + hess(u, idx), g, tol=self.cg_tol,
                                        max_iter=self.cg_max_iter, batched=True,
                                        precondition=prec)
        extra["cg_iterations"] = float(its)
        surrogate = -(v * model.grad_scaled(x_star, sc)).sum()
        value = per_sample.detach().mean()
        data = surrogate + (value - surrogate).detach()
        loss, metrics = _finish(data.reshape(1), model, self.tv2_weight, extra)
        return loss, metrics

    @torch.no_grad()
    def predict(self, model, noisy, sigma):
        return model.solve(noisy, 1.0, sigma, tol=self.tol, max_iter=self.max_iter,
                           method=self.solver)[0]


class AdversarialLoss:
    r"""Wasserstein-type adversarial loss of a scalar 1-Lipschitz regulariser.

    :math:`\mathbb E[R(x_{clean})] - \mathbb E[R(x_{degraded})]`: minimising it makes
    :math:`R` small on clean images and large on degraded ones.  For a 1-Lipschitz
    :math:`R` its negative is the Kantorovich–Rubinstein estimate of the Wasserstein-1
    distance between the two distributions, so no gradient penalty is needed.

    Parameters
    ----------
    degrade : callable, optional
        ``degrade(clean, noisy, sigma) -> degraded`` (e.g. a quick reconstruction with
        artefacts); default the noisy images themselves.
    """

    def __init__(self, degrade=None) -> None:
        if degrade is not None and not callable(degrade):
            raise TypeError(f"AdversarialLoss: expected degrade callable, got {type(degrade)}")
        self.degrade = degrade

    def loss(self, model, clean, noisy, sigma):
        bad = noisy if self.degrade is None else self.degrade(clean, noisy, sigma)
        gap = model.value(clean).mean() - model.value(bad.detach()).mean()
        return gap, {"wasserstein_estimate": float(-gap.detach())}

    def predict(self, model, noisy, sigma):
        return None
