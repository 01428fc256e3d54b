r"""Priors and solvers for the ``lipinverse`` command: names, defaults, certificates.

Maps a ``--prior`` name to an object (``tv`` → :class:`lipinverse.regularizers.TV`, a
shipped name → :func:`lipinverse.pretrained.load`), chooses its convergent solver and its
default strength from the noise level, and turns certificates into text.
"""

from __future__ import annotations

import math

import torch

from .parser import SOLVERS

__all__ = ["load_prior", "shipped_names", "reconstruct", "denoise",
           "guarantee_text", "certificate_lines", "load_model", "solver_class", "make_solver",
           "resolve_solver",
           "tv_lam",
           "TV_LAM_PER_SIGMA2"]

#: Default TV strength for deblurring, ``lam = TV_LAM_PER_SIGMA2 * sigma**2`` (sigma in
#: [0, 1] units; the MAP scaling), checked on set12 with Gaussian blur at sigma = 0.01, 0.03.
TV_LAM_PER_SIGMA2 = 5.0
#: Default ROF (TV denoising) strength, ``lam = TV_DENOISE_PER_SIGMA * sigma``; checked on
#: 128x128 crops of set12 at sigma = 5/255 and 25/255 (best at 0.44 and 0.7 sigma).
TV_DENOISE_PER_SIGMA = 0.6


def tv_lam(sigma: float) -> float:
    r"""Default TV strength for :math:`\tfrac12\|Ax-y\|^2 + \lambda\,\mathrm{TV}(x)` at noise
    level ``sigma`` (standard deviation, [0, 1] units): :math:`\lambda = c\,\sigma^2` with
    ``c = TV_LAM_PER_SIGMA2`` (the scaling of the MAP estimate with a TV prior), floored at
    1e-6 for noiseless data."""
    return max(TV_LAM_PER_SIGMA2 * float(sigma) ** 2, 1e-6)


def shipped_names() -> list[str]:
    """Names of the shipped pretrained priors."""
    from .. import pretrained

    return list(pretrained.available())


def load_prior(name: str, device: torch.device):
    """The prior called ``name`` on ``device``: ``tv``, a shipped name, or a checkpoint
    written by ``lipinverse train`` (its folder, stem or either file).

    Raises
    ------
    ValueError
        If the name is unknown (the message lists the valid names).
    """
    from pathlib import Path

    if name == "tv":
        from ..regularizers import TV

        return TV()
    names = shipped_names()
    if name in names:
        from .. import pretrained

        model = pretrained.load(name)
        if isinstance(model, torch.nn.Module):
            model = model.to(device)
            model.eval()
        return model
    p = Path(name)
    if p.is_dir() or p.is_file() or p.with_name(p.name + ".json").is_file():
        return load_model(name, device)[0]
    valid = ["tv"] + names
    raise ValueError(f"--prior: unknown prior {name!r}; expected one of {', '.join(valid)} "
                     "or a checkpoint folder written by 'lipinverse train' (see 'lipinverse "
                     "models')")


def _is_denoiser(prior) -> bool:
    return callable(prior) and callable(getattr(prior, "lipschitz_bound", None)) and not \
        callable(getattr(prior, "grad", None))


def solver_class(solver: str):
    """``PGD``, ``ADMM`` or ``LBFGS`` from :mod:`lipinverse.solvers` (``auto``: ``PGD``; see
    :func:`resolve_solver`)."""
    cls = {"auto": "PGD", "pgd": "PGD", "admm": "ADMM", "lbfgs": "LBFGS"}.get(solver)
    if cls is None:
        raise ValueError(f"--solver: expected one of {', '.join(SOLVERS)}, got {solver!r}")
    from .. import solvers

    return getattr(solvers, cls)


def resolve_solver(solver: str, name: str, prior) -> str:
    """The solver ``--solver`` names for ``prior``: ``auto`` is ``lbfgs`` for a smooth ridge
    prior (fewer passes to the same minimiser, see ``benchmarks/time_to_psnr.py``) and
    ``pgd`` for TV and the denoisers; ``lbfgs`` with those is an error. (For a convex
    ridge with a circular blur, :func:`make_solver` runs ``auto`` / ``lbfgs`` as FISTA in
    the Fourier metric, measured faster there.)"""
    solver_class(solver)
    smooth = name != "tv" and not _is_denoiser(prior) and hasattr(prior, "at_sigma")
    if solver == "auto":
        return "lbfgs" if smooth else "pgd"
    if solver == "lbfgs" and not smooth:
        raise ValueError(f"--solver lbfgs: needs a ridge prior (crr, wcrr or a ridge "
                         f"checkpoint); {name!r} is not one (use pgd or admm)")
    return solver


def make_solver(A, y, name: str, prior, *, solver: str = "auto", lam: float | None = None,
                sigma: float = 0.01):
    r"""The convergent solver of ``prior`` for :math:`y = Ax + \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)`.

    * ``tv``: FISTA (``pgd``) or ADMM on :math:`\tfrac12\|Ax-y\|^2 + \lambda\,\mathrm{TV}`,
      :math:`\lambda` = :func:`tv_lam` by default;
    * a ridge regulariser (``crr``, ``wcrr``): taken at its deblurring operating point
      (:func:`lipinverse.pretrained.deblur_prior`); ``lbfgs`` (the default, ``auto``) runs
      the safeguarded :class:`~lipinverse.solvers.LBFGS` on
      :math:`\tfrac12\|Ax-y\|^2 + \lambda R`, preconditioned by the Fourier metric
      where the operator is shift-invariant (blurs, CT): on a 256x256 BSD68 crop with
      Levin kernel 1 and ``crr``, 1 thread, 10 iterations (0.92 s) to within 0.02 dB of the
      minimiser against 44 (1.86 s) for FISTA in the Fourier metric; ``pgd`` runs the
      gradient scheme on
      :math:`\tfrac12\|Ax-y\|^2 + \lambda R`, accelerated: FISTA when :math:`R` is
      certified convex, monotone APG (Li & Lin 2015) when it is weakly convex, both with a
      theorem (see :class:`~lipinverse.solvers.PGD`); a convex prior with a circular blur
      runs in the Fourier metric ``preconditioner="fourier"`` (fewer iterations);
      ``admm`` uses the regulariser's prox;
    * a denoiser (``lipdenoiser``): PnP-FBS (``pgd``, Krasnoselskii-Mann relaxed when the
      denoiser is only nonexpansive) or PnP-ADMM with the firmly nonexpansive
      :math:`(I + D)/2` (``admm``).
    """
    from ..functionals import L2Fidelity

    solver = resolve_solver(solver, name, prior)
    Solver = solver_class(solver)
    f = L2Fidelity(A, y)
    if name == "tv":
        lam = tv_lam(sigma) if lam is None else lam
        return Solver(f, prior, lam=lam, **({"accelerate": True} if solver == "pgd" else {}))
    if _is_denoiser(prior):
        if lam is not None:
            raise ValueError(f"--lam: the denoiser {name!r} sets its own strength from the "
                             "noise level; leave --lam out")
        if solver == "admm":
            from ..denoisers import averaged
            prior = averaged(prior, 0.5)
        return Solver(f, prior, sigma=max(float(sigma), 1e-3))
    from ..pretrained import deblur_prior

    fixed, default_lam = deblur_prior(prior, sigma)
    lam = default_lam if lam is None else lam
    if solver == "admm":
        return Solver(f, fixed, lam=lam)
    if solver == "lbfgs":
        return Solver(f, fixed, lam=lam)
    kw = dict(lam=lam, scheme="grad", accelerate=True)
    try:  # the certified Fourier metric where it applies: a convex prior, a circular blur
        return Solver(f, fixed, preconditioner="fourier", **kw)
    except ValueError:
        return Solver(f, fixed, **kw)


def reconstruct(A, y, name: str, prior, *, solver: str = "auto", lam: float | None = None,
                sigma: float = 0.01, max_iter: int = 300, tol: float = 1e-5,
                progress: bool = True, x0=None):
    """Build :func:`make_solver` and run it; returns the solver's result."""
    s = make_solver(A, y, name, prior, solver=solver, lam=lam, sigma=sigma)
    with torch.no_grad():
        return s.solve(x0=x0, max_iter=max_iter, tol=tol, progress=progress,
                       track_objective=False)


def denoise(name: str, prior, y: torch.Tensor, sigma: float, *, lam: float | None = None):
    """Denoise ``y`` (noise level ``sigma`` in [0, 1] units): returns (image, certificate)."""
    with torch.no_grad():
        if name == "tv":
            lam = max(TV_DENOISE_PER_SIGMA * sigma, 1e-6) if lam is None else lam
            x = prior.prox(y, lam)
            gap = getattr(prior, "last_gap", None)
            gap = "" if gap is None else f", duality gap {_fmt(gap)}"
            return x, (f"TV prox (ROF, lam = {lam:.4g}): convex, firmly nonexpansive; solved to "
                       f"a certified accuracy{gap}")
        if hasattr(prior, "denoise"):
            return prior.denoise(y, sigma), "; ".join(certificate_lines(prior, short=True))
        return prior(y, sigma=sigma), "; ".join(certificate_lines(prior, short=True))


def guarantee_text(result) -> str:
    """The solver's convergence statement as one line."""
    g = getattr(result, "guarantee", None)
    if g is None:
        return "none reported"
    return " ".join(str(g).split())


def _fmt(v) -> str:
    if isinstance(v, torch.Tensor):
        v = float(v.max())
    if isinstance(v, float):
        v += 0.0  # no "-0"
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def _certificates(model) -> list[tuple[str, str]]:
    """(label, value) pairs of the certificates a model exposes."""
    pairs = []
    if callable(getattr(model, "lipschitz_bound", None)):
        pairs.append(("Lipschitz bound", _fmt(model.lipschitz_bound())))
        alpha = getattr(model, "averagedness", None)
        pairs.append(("averagedness", _fmt(alpha) if alpha is not None else "unknown"))
    if callable(getattr(model, "curvature_bounds", None)):
        # noise-conditioned ridge regulariser: curvature interval [m, M] of its Hessian
        for s255 in (5, 15, 25):
            lo, hi = model.curvature_bounds(s255 / 255)
            lo, hi = float(lo), float(hi)
            below = ("bounded below" if model.bounded_below(s255 / 255)
                     else "NOT certified bounded below")
            pairs.append((f"sigma={s255}/255", f"grad Lipschitz {_fmt(max(-lo, hi))}, "
                                                f"weak convexity {_fmt(max(0.0, -lo))}, {below}"))
    elif hasattr(model, "grad_lipschitz"):
        gl = model.grad_lipschitz
        pairs.append(("grad Lipschitz", _fmt(gl() if callable(gl) else gl)))
    if hasattr(model, "convex"):
        cv = model.convex
        pairs.append(("convex", str(bool(cv() if callable(cv) else cv))))
    if not pairs:
        pairs.append(("certificate", "none exposed"))
    return pairs


def certificate_lines(model, *, short: bool = False) -> list[str]:
    """Human-readable certificates of a regulariser or denoiser (one per line, or, with
    ``short``, compact items for one-line listings)."""
    if short:
        return _certificate_summary(model)
    return [f"{k:<15} {v}" for k, v in _certificates(model)]


def _certificate_summary(model) -> list[str]:
    if callable(getattr(model, "curvature_bounds", None)):
        levels = (5, 15, 25)
        bounds = [tuple(float(b) for b in model.curvature_bounds(s / 255)) for s in levels]
        rho = max(max(0.0, -lo) for lo, _ in bounds)
        out = ["convex" if rho == 0 else f"weakly convex (rho <= {_fmt(rho)})"]
        out.append("L(grad R) at sigma " + "/".join(map(str, levels)) + "/255: "
                   + " / ".join(f"{max(-lo, hi):.3g}" for lo, hi in bounds))
        return out
    return [f"{k} {v}" for k, v in _certificates(model)]


def load_model(spec: str, device: torch.device):
    """A model from a checkpoint or a shipped prior's name: ``(model, source)``.

    ``spec`` is a shipped name, a checkpoint stem (``DIR/last``), either of its files
    (``.safetensors`` / ``.json``), or a checkpoint folder (its ``final``, ``best`` or
    ``last`` checkpoint: :func:`lipinverse.training.checkpoint.checkpoint_in_folder`).
    """
    from pathlib import Path

    from lipinverse.training.checkpoint import checkpoint_in_folder

    names = shipped_names()
    p = Path(spec)
    if p.is_dir():
        try:
            p = checkpoint_in_folder(p)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"certify: {err}") from err
    elif not p.exists():
        stem_json = p.with_name(p.name + ".json")
        if stem_json.is_file():
            p = stem_json
        elif spec in names:
            return load_prior(spec, device), f"shipped prior '{spec}'"
        else:
            raise FileNotFoundError(f"certify: no such checkpoint: '{spec}'"
                                    + (f" (shipped priors: {', '.join(names)})" if names
                                       else ""))
    from ..training import load_checkpoint
    model = load_checkpoint(p, map_location=device)
    if isinstance(model, tuple):
        model = model[0]
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model, f"'{p}'"
