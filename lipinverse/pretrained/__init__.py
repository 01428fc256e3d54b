r"""Small pretrained priors shipped inside the package (safetensors weights + JSON config).

``crr``
    convex ridge regulariser (:class:`~lipinverse.regularizers.ConvexRidge`), multi-noise
    :math:`\sigma \in [0, 30]/255`;
``wcrr``
    weakly convex ridge regulariser (:class:`~lipinverse.regularizers.WeakConvexRidge`),
    multi-noise;
``lipdenoiser``
    certified nonexpansive (1-Lipschitz) ResNet denoiser for plug-and-play, conditioned on
    the noise level (:class:`~lipinverse.denoisers.RidgeResNetDenoiser`: 20 unrolled
    gradient-step blocks that share the weights of a t-step-trained convex ridge).

Training data, commands, wall times and results: ``MODEL_CARD.md`` next to this file. The
shipped weights are small (about 7,300 parameters) and had about 100 minutes of CPU
training each: ``crr`` is 0.3-0.45 dB above TV on BSD68 denoising, and 0.15-0.3 dB below
the published CRR-NN.

Examples
--------
>>> from lipinverse import pretrained
>>> names = pretrained.available()          # doctest: +SKIP
>>> R = pretrained.load("crr")              # doctest: +SKIP
>>> x = R.denoise(y, 15 / 255)              # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["load", "load_if_available", "available", "certificate", "deblur_prior",
           "deblur_factor", "ct_prior", "ct_weight", "config",
           "REGISTRY"]

HERE = Path(__file__).resolve().parent

#: name -> (module, class) of the model the weights belong to.
REGISTRY: dict[str, tuple[str, str]] = {
    "crr": ("lipinverse.regularizers", "ConvexRidge"),
    "wcrr": ("lipinverse.regularizers", "WeakConvexRidge"),
    "lipdenoiser": ("lipinverse.denoisers", "RidgeResNetDenoiser"),
}


def _files(name: str) -> tuple[Path, Path]:
    return HERE / f"{name}.safetensors", HERE / f"{name}.json"


def available() -> list[str]:
    """Names of the priors whose weights ship with this installation (sorted)."""
    return sorted(n for n in REGISTRY if all(p.is_file() for p in _files(n)))


def _check_name(fn: str, name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"pretrained.{fn}: expected a model name (str), got "
                        f"{type(name).__name__}")
    if name not in available():
        raise ValueError(f"pretrained.{fn}: unknown model {name!r}; available: "
                         f"{', '.join(available()) or '(none shipped)'}")
    return name


def config(name: str) -> dict:
    """The JSON record of a shipped model: class, constructor config, training, tuning."""
    from lipinverse.training import read_checkpoint_metadata

    _check_name("config", name)
    return read_checkpoint_metadata(_files(name)[1])


#: Largest noise level of the shipped ridge priors' training data (sigma ~ U[0, 30]/255).
TRAINED_SIGMA_MAX = 30.0 / 255


def load(name: str, device=None) -> torch.nn.Module:
    r"""Load a shipped prior, in eval mode, on ``device`` (default CPU).

    Parameters
    ----------
    name : str
        One of :func:`available`.
    device : torch.device or str, optional

    Returns
    -------
    torch.nn.Module
        ``crr`` / ``wcrr``: a ridge regulariser with ``value``, ``grad``, ``prox``,
        ``denoise(y, sigma)`` (its own tuned strength at noise level ``sigma`` in [0, 1]
        units) and certificates. ``lipdenoiser``: a denoiser ``D(y, sigma)`` with
        ``lipschitz_bound()`` and ``averagedness``. Parameters do not require gradients.

    Raises
    ------
    ValueError
        Unknown name (the message lists the available ones); weights whose hash, keys or
        shapes do not match the recorded architecture; a file of another model class.

    Notes
    -----
    Rebuilt by :func:`lipinverse.training.load_checkpoint`: the architecture from the JSON
    config, the weights by safetensors (never executes code), the SHA-256 checked.
    """
    from lipinverse.training import load_checkpoint

    _check_name("load", name)
    path = _files(name)[1]
    expected = REGISTRY[name][1]
    record = config(name)
    recorded = record["model_class"]
    if recorded != expected:
        raise ValueError(f"pretrained.load: {path.name} records class {recorded!r}, "
                         f"expected {expected!r}")
    model = load_checkpoint(path, map_location=device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(model, "trained_sigma_max"):
        model.trained_sigma_max = TRAINED_SIGMA_MAX  # at_sigma warns beyond it
    points = (record.get("metadata") or {}).get("deblur_factors")
    if points is not None:  # this model's own tuned deblurring factors (deblur_prior)
        model.deblur_factors = tuple((float(n), float(f)) for n, f in points)
    ct_lam = (record.get("metadata") or {}).get("ct_lam")
    if ct_lam is not None:  # this model's own tuned CT weight (ct_prior)
        model.ct_lam = float(ct_lam)
    return model


@torch.no_grad()
def load_if_available(name: str = "crr", device="cpu"):
    """``(model, None)`` for a shipped prior, or ``(None, reason)`` when it cannot be loaded
    (for demos and scripts that go on without it)."""
    try:
        model = load(name)
    except (ImportError, AttributeError, ValueError, KeyError, FileNotFoundError) as err:
        return None, f"{type(err).__name__}: {err}"
    return model.to(device).eval(), None


def certificate(name: str, sigmas=(5 / 255, 15 / 255, 25 / 255)) -> dict:
    r"""Certified facts of a shipped model, as recorded by its own certificate methods.

    Ridge regularisers: ``convex``, and per noise level the certified curvature interval
    :math:`[m, M]` of :math:`\nabla^2 R_\sigma` (``grad_lipschitz = max(-m, M)``,
    ``weak_convexity = max(0, -m)``) and ``bounded_below``. Denoisers: ``lipschitz_bound``
    and ``averagedness``.
    """
    model = load(name)
    if hasattr(model, "curvature_bounds"):
        out = {"class": type(model).__name__, "per_sigma": {}}
        for s in sigmas:
            lo, hi = model.curvature_bounds(s)
            out["per_sigma"][f"{255 * s:g}"] = {
                "grad_lipschitz": max(-lo, hi), "weak_convexity": max(0.0, -lo),
                "convex": lo >= 0.0, "denoising_strongly_convex": 1.0 + lo > 0.0,
                "bounded_below": model.bounded_below(s)}
        out["convex"] = all(v["convex"] for v in out["per_sigma"].values())
        return out
    return {"class": type(model).__name__, "lipschitz_bound": float(model.lipschitz_bound()),
            "averagedness": getattr(model, "averagedness", None)}


#: Deblurring operating points of the shipped ridge priors: ``(noise, factor)`` pairs tuned
#: on a set12 crop by ``benchmarks/deblur_bsd68.py`` (grid 0.35 / 0.5 / 0.7 / 1).
DEBLUR_FACTORS = ((2.55 / 255, 0.5), (7.65 / 255, 0.35))


def deblur_factor(noise: float, points=DEBLUR_FACTORS) -> float:
    r"""The tuned factor of ``points`` (two ``(noise, factor)`` pairs, by default
    :data:`DEBLUR_FACTORS`; a shipped model may record its own, ``metadata.deblur_factors``),
    interpolated linearly in :math:`\log(\text{noise})` between the tuned noise levels and
    constant outside them."""
    noise = float(noise)
    if not noise >= 0:
        raise ValueError(f"deblur_factor: expected a noise level >= 0, got {noise}")
    (n0, f0), (n1, f1) = points
    if noise <= n0:
        return f0
    w = min(max((math.log(noise) - math.log(n0)) / (math.log(n1) - math.log(n0)), 0.0), 1.0)
    return f0 + w * (f1 - f0)


def deblur_prior(model, noise: float, factor: float | None = None):
    r"""A shipped regulariser as a fixed functional for :math:`\tfrac12\|Ax-y\|^2 + R(x)`.

    Returns ``(prior, lam)`` with ``prior = model.at_sigma(factor * noise)`` (the ridge
    regulariser at the conditioning level ``factor * noise``, ``noise`` the measurement
    noise standard deviation in [0, 1] units) and ``lam = 1``: an inverse problem with blur
    may need a prior of another strength than denoising at the same noise level, which
    ``factor`` sets. By default it is :func:`deblur_factor` ``(noise)``: 0.5 at 2.55/255 and
    0.35 at 7.65/255, as tuned for the shipped ``crr``, or the model's own factors where it
    records them (the shipped ``wcrr``: 0.7 and 0.5, tuned on a set12 crop,
    ``benchmarks/deblur_bsd68.py``). For a denoiser,
    ``(model, 1.0)``.
    """
    if hasattr(model, "at_sigma"):
        c = (deblur_factor(noise, getattr(model, "deblur_factors", DEBLUR_FACTORS))
             if factor is None else float(factor))
        return model.at_sigma(c * float(noise)), 1.0
    return model, 1.0


#: Weight of a shipped ridge prior in CT (normalised operator, ``Radon(normalize=True)``),
#: at its deblurring conditioning level, where the model records none (:func:`ct_weight`).
#: Tuned on set12 crops (128x128, 60 angles, 1 %
#: noise, crr, 300 iterations): lam = 0.1 / 0.3 / 1 / 3 gave 22.21 / 23.72 / 23.74 / 21.83
#: dB on 01.png and 23.75 / 27.42 / 31.15 / 30.24 dB on 02.png. The Shepp-Logan phantom
#: (TV's own model) prefers a weaker prior (34.65 dB at 0.3, 33.78 at 1): natural images,
#: closer to what users scan, set the default.
CT_LAM = 1.0


def ct_weight(model) -> float:
    r"""The weight of a shipped prior in CT (normalised operator): the model's own
    ``metadata.ct_lam`` where it records one (tuned on set12 crops by
    ``benchmarks/tune_ct.py``; the shipped ``wcrr``: 0.5), else :data:`CT_LAM`; 1 for a
    denoiser."""
    return getattr(model, "ct_lam", CT_LAM) if hasattr(model, "at_sigma") else 1.0


def ct_prior(model, noise: float):
    r"""A shipped regulariser for CT with a *normalised* operator (``Radon(normalize=True)``;
    ``noise`` the sinogram noise level on that scale): ``(model.at_sigma(c * noise),``
    :func:`ct_weight` ``(model))`` with ``c`` from :func:`deblur_factor`: the strength of
    ``demos/tomography.py``; ``lipinverse ct`` takes the same weight (:func:`ct_weight`) and
    the same conditioning level (through :func:`deblur_prior`)."""
    prior, _ = deblur_prior(model, noise)
    return prior, ct_weight(model)

