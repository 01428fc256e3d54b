r"""Implementations of the ``lipinverse`` subcommands (argument parsing is in :mod:`.cli`).

Each ``run_<command>(args)`` validates its arguments, raises ``ValueError`` /
``FileNotFoundError`` for user errors (turned into one line by :func:`lipinverse.cli.main`)
and prints its results on stdout.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from operators.validation import check_float

from ..io import (
    center_crop,
    parse_kernel,
    read_image,
    save_figure,
    to_tensor,
    write_image,
)
from ..metrics import image_metrics
from . import priors

__all__ = ["run_deblur", "run_ct", "run_denoise", "run_train", "run_certify", "run_models",
           "resolve_device"]


# ----------------------------------------------------------------------- helpers
def resolve_device(spec: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:K`` as a device, checking that CUDA is available."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device: expected 'cpu', 'cuda' or 'cuda:K', got {spec!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA was requested but is not available "
                             "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA "
                             "device(s) visible")
    elif dev.type != "cpu":
        raise ValueError(f"--device: expected 'cpu', 'cuda' or 'cuda:K', got {spec!r}")
    return dev


def _check_solve_args(args) -> None:
    if args.max_iter < 1:
        raise ValueError(f"--max-iter: expected an integer >= 1, got {args.max_iter}")
    if not math.isfinite(args.tol) or args.tol <= 0:
        raise ValueError(f"--tol: expected a finite value > 0, got {args.tol}")
    if args.lam is not None:
        check_float("--lam", args.lam, "value")


#: Output formats accepted for --out / --figure (checked before any work is done).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _check_outputs(args) -> None:
    """Fail before the solve, not after it, on an output path that cannot be written."""
    for opt, path, suffixes in (("--out", args.out, IMAGE_SUFFIXES),
                                ("--figure", getattr(args, "figure", None), FIGURE_SUFFIXES)):
        if path is None:
            continue
        p = Path(path)
        if p.is_dir():
            raise ValueError(f"{opt}: expected a file name, got the folder '{path}'")
        if p.suffix.lower() not in suffixes:
            raise ValueError(f"{opt}: expected a file name ending in {', '.join(suffixes)}, "
                             f"got '{path}'")
        from .._atomic import check_writable

        check_writable(p, opt)


def _progress(args) -> bool:
    """Progress bars only for a person watching (stderr is a terminal) and without -q."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _load_input(args, gray: bool | None = None):
    """The input image: colour unless ``--gray`` (or ``gray``) asks for its luminance."""
    gray = getattr(args, "gray", True) if gray is None else gray
    img = read_image(args.image, gray=gray)
    if args.size is not None:
        img = center_crop(img, args.size)
    if img.ndim == 3:
        print(f"input           colour {img.shape[1]}x{img.shape[0]} (RGB; --gray for "
              "luminance)")
    return img


def _check_memory(x: torch.Tensor, prior, what: str, extra: int = 0) -> None:
    """Refuse, in one line, a solve whose estimated peak memory exceeds what is available."""
    from .._resources import check_fits, estimate_solve_bytes

    n = x.shape[-1] * x.shape[-2] * (x.shape[0] if x.dim() == 4 else 1)
    check_fits(estimate_solve_bytes(n, x.shape[-3], prior, x.element_size(), extra), what)


def _metrics_line(label: str, x, ref) -> str:
    p, s = image_metrics(x, ref)
    return f"{label:<15} PSNR {p:6.2f} dB   SSIM {s:.4f}"


def _noise(shape, sigma: float, seed: int, like: torch.Tensor) -> torch.Tensor:
    """Seeded Gaussian noise drawn on the CPU (the same on every device)."""
    g = torch.Generator().manual_seed(int(seed))
    return (sigma * torch.randn(shape, generator=g, dtype=torch.float64)).to(like.device,
                                                                                like.dtype)


def _report(result, seconds: float, ref=None, label="reconstruction", x=None) -> None:
    if ref is not None:
        print(_metrics_line(label, x if x is not None else result.x, ref))
    conv = result.converged
    if isinstance(conv, torch.Tensor):
        conv = bool(conv.all())
    iters = result.iterations
    iters = int(iters.max()) if isinstance(iters, torch.Tensor) else int(iters)
    print(f"iterations      {iters} ({'converged' if conv else 'max_iter reached'}), "
          f"{seconds:.2f} s")
    print(f"guarantee       {priors.guarantee_text(result)}")


def _write_outputs(args, x_hat, panels, results) -> None:
    write_image(args.out, x_hat)
    print(f"wrote           {args.out}")
    if getattr(args, "figure", None):
        save_figure(args.figure, panels, curves=results)
        print(f"wrote           {args.figure}")


# ------------------------------------------------------------------------ deblur
def run_deblur(args) -> None:
    """``lipinverse deblur``: deblur an observed image, or simulate a blurred noisy one and
    deblur it.

    ``--boundary valid`` (the default with ``--observed``) reconstructs on a domain larger
    than the photo by the kernel size less one and crops (:class:`operators.Blur`'s
    ``valid`` model: no boundary assumption); ``circular`` assumes a periodic image;
    ``reflect`` a mirrored one.
    """
    from operators import Blur

    _check_solve_args(args)
    _check_outputs(args)
    sigma = check_float("--noise", args.noise, "value")
    device = resolve_device(args.device)
    kernel = parse_kernel(args.kernel)
    boundary = args.boundary or ("valid" if args.observed else "circular")
    img = _load_input(args)
    priors.solver_class(args.solver)  # fail before any work if the solver is missing
    prior = priors.load_prior(args.prior, device)
    args.solver = priors.resolve_solver(args.solver, args.prior, prior)  # auto: named
    x = to_tensor(img, device=device)
    _check_memory(x, prior, f"deblur of a {img.shape[1]}x{img.shape[0]} image")
    A = Blur(kernel, padding=boundary).to(device=device, dtype=x.dtype)
    if args.observed:
        truth, y = None, x
    else:
        truth = x
        clean = A(x)
        y = clean + _noise(clean.shape, sigma, args.seed, x)
        if boundary != "valid":
            print(_metrics_line("observation", y, truth))
    t0 = time.perf_counter()
    result = priors.reconstruct(A, y, args.prior, prior, solver=args.solver, lam=args.lam,
                                sigma=sigma, max_iter=args.max_iter, tol=args.tol,
                                progress=_progress(args), x0=A.extend(y))
    seconds = time.perf_counter() - t0
    # the image under the observation (valid: the crop of the extended reconstruction; a
    # simulated valid observation saw the input image through the crop too)
    x_hat = A.crop(result.x) if args.observed else result.x
    ref = A.crop(truth) if truth is not None and boundary == "valid" else truth
    if truth is not None and boundary == "valid":
        print(_metrics_line("observation", y, ref))
    _report(result, seconds, ref, label=f"{args.prior} ({args.solver})",
            x=A.crop(result.x) if truth is not None else None)
    panels = ([("ground truth", truth)] if truth is not None else []) + [
        ("observation", y), (f"{args.prior} ({args.solver})", x_hat)]
    _write_outputs(args, x_hat, panels, {args.prior: result})


# ---------------------------------------------------------------------------- ct
def run_ct(args) -> None:
    r"""``lipinverse ct``: simulate a sinogram (parallel or fan beam) and reconstruct.

    The operator is normalised, ``Radon(..., normalize=True)`` (the raw transform over its
    certified norm), as in ``demos/tomography.py``, so that the noise level the priors see
    and their default strengths (:func:`lipinverse.pretrained.ct_prior`, TV's
    :math:`10\sigma^2`) mean the same as in deblurring; the noise is given relative to the
    sinogram's maximum.
    """
    _check_solve_args(args)
    _check_outputs(args)
    sigma = check_float("--noise", args.noise, "value")
    if args.angles < 1:
        raise ValueError(f"--angles: expected an integer >= 1, got {args.angles}")
    device = resolve_device(args.device)
    img = read_image(args.image, gray=True)  # attenuation maps are scalar
    from operators import Radon
    priors.solver_class(args.solver)
    prior = priors.load_prior(args.prior, device)
    args.solver = priors.resolve_solver(args.solver, args.prior, prior)  # auto: named
    if args.size is not None:
        img = center_crop(img, args.size)
    elif img.shape[0] != img.shape[1]:
        img = center_crop(img, min(img.shape))
    n = img.shape[0]
    x = to_tensor(img, device=device)
    A = Radon(n, args.angles, geometry=args.geometry, normalize=True).to(device=device,
                                                                          dtype=x.dtype)
    sinogram = args.angles * A.detector_size * x.element_size()
    _check_memory(x, prior, f"CT of a {n}x{n} image at {args.angles} angles",
                  extra=(A.matrix_bytes if A.backend == "matrix" else 0) + 20 * sinogram)
    clean = A(x)
    noise_abs = sigma * float(clean.abs().max())
    y = clean + _noise(clean.shape, noise_abs, args.seed, clean)
    x_fbp = A.fbp(y)
    print(_metrics_line("FBP", x_fbp, x))
    lam = args.lam
    if lam is None and hasattr(prior, "at_sigma"):
        from ..pretrained import ct_weight

        lam = ct_weight(prior)   # the model's own CT weight, or CT_LAM
    t0 = time.perf_counter()
    result = priors.reconstruct(A, y, args.prior, prior, solver=args.solver, lam=lam,
                                sigma=noise_abs, max_iter=args.max_iter, tol=args.tol,
                                progress=_progress(args), x0=x_fbp)
    seconds = time.perf_counter() - t0
    _report(result, seconds, x, label=f"{args.prior} ({args.solver})")
    panels = [("ground truth", x), ("FBP", x_fbp), (f"{args.prior} ({args.solver})", result.x)]
    _write_outputs(args, result.x, panels, {args.prior: result})


# ----------------------------------------------------------------------- denoise
def run_denoise(args) -> None:
    """``lipinverse denoise``: add noise of level --sigma ([0, 1] units) and denoise."""
    sigma = check_float("--sigma", args.sigma, "value")
    _check_outputs(args)
    if args.lam is not None:
        check_float("--lam", args.lam, "value")
        if args.prior != "tv":
            raise ValueError(f"--lam: only for --prior tv; the prior {args.prior!r} uses its "
                             "own tuned strength for the noise level")
    device = resolve_device(args.device)
    img = _load_input(args)
    prior = priors.load_prior(args.prior, device)
    x = to_tensor(img, device=device)
    _check_memory(x, prior, f"denoise of a {img.shape[1]}x{img.shape[0]} image")
    if args.observed:
        truth, y = None, x
    else:
        truth = x
        y = x + _noise(x.shape, sigma, args.seed, x)
        print(_metrics_line("noisy", y, truth))
    t0 = time.perf_counter()
    x_hat, note = priors.denoise(args.prior, prior, y, sigma, lam=args.lam)
    seconds = time.perf_counter() - t0
    if truth is not None:
        print(_metrics_line(args.prior, x_hat, truth))
    print(f"time            {seconds:.2f} s")
    print(f"certificate     {note}")
    panels = ([("ground truth", truth)] if truth is not None else []) + [
        ("noisy", y), (args.prior, x_hat)]
    _write_outputs(args, x_hat, panels, {})


# ------------------------------------------------------------------------- train
def run_train(args) -> None:
    """``lipinverse train``: train a prior on patches of a folder of images."""
    from .train import sigterm_as_interrupt, train, train_recipe

    with sigterm_as_interrupt():
        _run_train(args, train, train_recipe)


def _run_train(args, train, train_recipe) -> None:

    run_dir = args.resume if isinstance(args.resume, str) else None
    if args.recipe is not None or run_dir is not None:
        if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
            raise ValueError(f"--minutes: expected a finite value > 0, got {args.minutes}")
        if run_dir is None and (args.images is None or args.out is None):
            raise ValueError("--recipe: expected --images DIR and --out RUN_DIR")
        if run_dir is not None and (args.recipe is not None or args.images is not None
                                    or args.out is not None or args.val is not None):
            raise ValueError("--resume RUN_DIR continues a run with its own recipe and data: "
                             "drop --recipe, --images, --out and --val")
        if run_dir is not None and not (Path(run_dir) / "run.json").is_file():
            raise FileNotFoundError(
                f"--resume: '{run_dir}' is not a recipe run folder (no run.json); a checkpoint "
                f"folder of 'lipinverse train --images ... --out DIR' resumes with that command "
                f"and a bare --resume")
        train_recipe(args, resolve_device(args.device))
        return
    if args.images is None or args.out is None:
        raise ValueError("expected --images DIR and --out CHECKPOINT_DIR (or --recipe, or "
                         "--resume RUN_DIR)")
    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ValueError(f"--minutes: expected a finite value > 0, got {args.minutes}")
    folder = Path(args.images)
    if not folder.exists():
        raise FileNotFoundError(f"--images: no such folder: '{folder}'")
    if not folder.is_dir():
        raise ValueError(f"--images: expected a folder of images, got the file '{folder}'")
    for name in ("epochs", "patch_size", "batch_size", "max_patches"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= 1, "
                             f"got {getattr(args, name)}")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise ValueError(f"--lr: expected a finite value > 0, got {args.lr}")
    check_float("--sigma-max", args.sigma_max, "value")
    device = resolve_device(args.device)
    train(args, device)


# ----------------------------------------------------------------------- certify
def run_certify(args) -> None:
    """``lipinverse certify``: print the certificates of a checkpoint or a shipped prior."""
    device = resolve_device(args.device)
    model, source = priors.load_model(args.checkpoint, device)
    print(f"model           {type(model).__name__} from {source}")
    for line in priors.certificate_lines(model):
        print(line)


# ------------------------------------------------------------------------ models
def run_models(args) -> None:
    """``lipinverse models``: list the shipped priors with their certificates."""
    names = priors.shipped_names()
    print(f"{'name':<12} {'kind':<26} {'params':>8}  certificate")
    print(f"{'tv':<12} {'total variation':<26} {0:>8}  convex; prox certified by duality gap")
    if names is None:
        print("(no pretrained priors in this installation: lipinverse.pretrained is missing)")
        return
    for name in names:
        model = priors.load_prior(name, torch.device("cpu"))
        params = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") \
            else 0
        print(f"{name:<12} {type(model).__name__:<26} {params:>8}  "
              f"{'; '.join(priors.certificate_lines(model, short=True))}")
