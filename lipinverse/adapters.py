r"""Adapters to deepinv: our denoisers as ``deepinv.models.Denoiser``, our regularisers as
``deepinv.optim.Prior``.

deepinv is imported lazily, inside these functions, so ``import lipinverse`` stays light.
"""

from __future__ import annotations

import torch

__all__ = ["to_deepinv_denoiser", "to_deepinv_prior"]


def to_deepinv_denoiser(denoiser):
    r"""Wrap a denoiser ``D(x, sigma=None)`` as a ``deepinv.models.Denoiser``.

    The wrapper's ``forward(x, sigma)`` calls ``D(x, sigma)``; ``lipschitz_bound()`` and
    ``averagedness`` are passed through, so the certificates travel with it (e.g. into
    ``deepinv.optim.PnP``).

    Raises
    ------
    TypeError
        If ``denoiser`` is not callable.
    """
    import deepinv

    if not callable(denoiser):
        raise TypeError(f"to_deepinv_denoiser: expected a callable denoiser, "
                        f"got {type(denoiser).__name__}")

    class LipinverseDenoiser(deepinv.models.Denoiser):
        """A lipinverse denoiser seen by deepinv."""

        def __init__(self):
            super().__init__()
            self.denoiser = denoiser

        def forward(self, x, sigma=None, **kwargs):
            return self.denoiser(x, sigma)

        def lipschitz_bound(self) -> float:
            fn = getattr(self.denoiser, "lipschitz_bound", None)
            if fn is None:
                raise AttributeError("the wrapped denoiser has no certified lipschitz_bound()")
            return float(fn())

        @property
        def averagedness(self):
            return getattr(self.denoiser, "averagedness", None)

    return LipinverseDenoiser()


def to_deepinv_prior(regularizer, *, use_g_param: bool = True, tol: float = 1e-4,
                     max_iter: int = 1000):
    r"""Wrap a lipinverse regulariser as a ``deepinv.optim.Prior``.

    Parameters
    ----------
    regularizer :
        A functional with ``grad(x)`` and/or ``prox(x, tau)`` and per-sample values
        (``value`` or ``__call__``); a noise-conditioned ridge regulariser
        (:class:`~lipinverse.regularizers.ConvexRidge`) takes deepinv's ``g_param`` as
        its noise level σ.
    use_g_param : bool, default True
        For noise-conditioned regularisers: read σ from deepinv's ``g_param`` (the
        positional argument after ``x``); ``False`` keeps the regulariser's own
        ``sigma``.
    tol, max_iter :
        Inner-solver settings of a ridge prox.

    Notes
    -----
    deepinv calls ``prior.prox(x, g_param, gamma=lambda * stepsize)``, i.e.
    :math:`\operatorname{prox}_{\gamma R}`, ``prior.grad(x, g_param)`` and
    ``prior.fn(x, g_param)``.  A regulariser without ``prox`` raises
    ``NotImplementedError`` from ``prox`` instead of deepinv's silent 50-step inner
    gradient descent.
    """
    import deepinv

    has_sigma = hasattr(regularizer, "at_sigma")
    if not (callable(getattr(regularizer, "grad", None))
            or callable(getattr(regularizer, "prox", None))):
        raise TypeError(f"to_deepinv_prior: expected a regulariser with grad or prox, "
                        f"got {type(regularizer).__name__}")

    def at(args, kwargs):
        sigma = kwargs.get("sigma", args[0] if args else None)
        if has_sigma and use_g_param and sigma is not None:
            if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
                sigma = float(sigma)
            return regularizer.at_sigma(float(sigma))
        return regularizer

    class LipinversePrior(deepinv.optim.Prior):
        """A lipinverse regulariser seen by deepinv."""

        def __init__(self):
            super().__init__()
            self.regularizer = regularizer
            self.explicit_prior = callable(getattr(regularizer, "value", None)) or callable(
                regularizer)

        def fn(self, x, *args, **kwargs):
            r = at(args, kwargs)
            return r.value(x) if hasattr(r, "value") else r(x)

        def grad(self, x, *args, **kwargs):
            r = at(args, kwargs)
            if not callable(getattr(r, "grad", None)):
                raise NotImplementedError(f"{type(regularizer).__name__} has no grad")
            return r.grad(x)

        def prox(self, x, *args, gamma: float = 1.0, **kwargs):
            r = at(args, kwargs)
            if not callable(getattr(r, "prox", None)):
                raise NotImplementedError(
                    f"{type(regularizer).__name__} has no prox; use a gradient-based "
                    "deepinv iteration (e.g. GD, or PGD with g_first=True)")
            if has_sigma:
                return r.prox(x, gamma, tol=tol, max_iter=max_iter)
            return r.prox(x, gamma)

    return LipinversePrior()
