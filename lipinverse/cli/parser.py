"""The argument parser of the ``lipinverse`` command (every subcommand and flag)."""

from __future__ import annotations

import argparse

from .. import __version__
from .errors import EXIT_USER_ERROR

#: The ``--solver`` choices; ``auto`` is L-BFGS for a smooth (ridge) prior, else ``pgd``
#: (:func:`lipinverse.cli.priors.resolve_solver`).
SOLVERS = ("auto", "pgd", "admm", "lbfgs")

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in the house format (``lipinverse: error: ...``)."""

    def error(self, message):  # noqa: D401 - argparse API
        where = self.prog.partition(" ")[2]
        self.exit(EXIT_USER_ERROR, f"lipinverse: error: {where + ': ' if where else ''}"
                                   f"{message} (see '{self.prog} --help')\n")


def _seed(text: str) -> int:
    """An argparse type: an integer seed in [0, 2**63) (what torch generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**63), got {text}")
    return value


def noise_level(text: str) -> float:
    """An argparse type: a noise standard deviation on [0, 1] images, written as a fraction
    of the range (``0.098``), in /255 units (``25/255``), or as a bare number >= 1, read in
    /255 units (``25`` means 25/255: a standard deviation of the whole range or more is no
    noise level). Returns the value in [0, 1] units."""
    num, slash, den = text.partition("/")
    try:
        value = float(num) / (float(den) if slash else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a noise level such as 0.098, 25/255 or 25, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite noise level >= 0, got {text!r}")
    return value / 255.0 if not slash and value >= 1 else value


NOISE_UNITS = ("on [0, 1] images: 0.098, 25/255 or 25 (a bare number >= 1 is in /255 "
               "units)")


def _fmt(description: str):
    return {"description": description, "formatter_class": argparse.RawDescriptionHelpFormatter}


def _add_common_solve(p: argparse.ArgumentParser, *, default_prior: str) -> None:
    p.add_argument("--prior", default=default_prior, metavar="NAME",
                   help="regulariser / denoiser: 'tv' (total variation), a shipped prior "
                        "listed by 'lipinverse models' (e.g. 'crr', 'wcrr'), or a checkpoint "
                        f"folder written by 'lipinverse train'; default: {default_prior}")
    p.add_argument("--lam", type=float, default=None, metavar="L",
                   help="regularisation strength lambda in min 1/2||Ax-y||^2 + lambda R(x) "
                        "(default: chosen from the noise level for each prior)")
    p.add_argument("--max-iter", type=int, default=300, metavar="N",
                   help="maximal number of solver iterations (default: 300)")
    p.add_argument("--tol", type=float, default=1e-4, metavar="T",
                   help="stop when the relative change ||x_k+1 - x_k|| / ||x_k|| < T "
                        "(default: 1e-4)")


def _add_common_io(p: argparse.ArgumentParser, *, out_default: str | None) -> None:
    p.add_argument("--out", "-o", default=out_default, metavar="OUT.png", required=out_default
                   is None, help="where to write the reconstruction (8-bit PNG, clipped to "
                                 "[0, 1] for display)" + (f"; default: {out_default}"
                                                          if out_default else ""))
    p.add_argument("--figure", default=None, metavar="F.png",
                   help="also write a figure: ground truth, observation, reconstruction and "
                        "the convergence curve")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="work on the central NxN crop of IMAGE (after a downscale for "
                        "images more than twice as large); default: the whole image")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="'cpu' (default), 'cuda' or 'cuda:K'; CUDA must be available")
    p.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help="seed of the simulated noise (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


IMAGE_HELP = ("input image file (PNG, JPEG, TIFF, ...; values in [0, 1], colour kept unless "
              "--gray) or 'skimage:NAME' for an image that scikit-image ships, e.g. "
              "skimage:camera")


def _add_gray(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gray", action="store_true",
                   help="work on the luminance of a colour image (default: keep colour; the "
                        "learned priors act on the opponent channels, certificates unchanged)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lipinverse`` command (all subcommands)."""
    from ..io import KERNEL_SPECS

    parser = _Parser(
        prog="lipinverse",
        **_fmt("Imaging inverse problems with certified 1-Lipschitz learned priors inside "
               "convergent solvers.\n\nExamples:\n"
               "  lipinverse deblur skimage:camera --kernel gaussian:2.0 --noise 0.01 "
               "--out x.png\n"
               "  lipinverse denoise photo.png --sigma 25 --prior wcrr --out clean.png\n"
               "  lipinverse models"),
    )
    parser.add_argument("--version", action="version", version=f"lipinverse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # ---------------------------------------------------------------- deblur
    p = sub.add_parser(
        "deblur", help="blur + noise an image, then deblur it with a convergent solver",
        **_fmt("Simulate y = k * x + noise (circular convolution, Gaussian noise of standard "
               "deviation --noise in [0, 1] image units, seeded) and reconstruct x by "
               "min_x 1/2||k*x - y||^2 + lambda R(x) with the chosen prior and solver.\n"
               "Prints the PSNR of the observation and of the reconstruction, the iterations, "
               "the time and the convergence guarantee of the solver.\n"
               "With --observed, IMAGE is taken as an already blurred measurement (no "
               "simulation, no PSNR), by default with an unknown boundary (--boundary "
               "valid)."))
    p.add_argument("image", metavar="IMAGE", help=IMAGE_HELP)
    p.add_argument("--kernel", default="gaussian:2.0", metavar="SPEC",
                   help="blur kernel: " + " | ".join(KERNEL_SPECS) + " (default: gaussian:2.0)")
    p.add_argument("--noise", type=noise_level, default=0.01, metavar="SIGMA",
                   help=f"noise standard deviation {NOISE_UNITS} (default: 0.01, i.e. "
                        "2.55/255)")
    p.add_argument("--solver", choices=SOLVERS, default="auto",
                   help="auto (default): lbfgs for the ridge priors (crr, wcrr, ridge "
                        "checkpoints), else pgd; pgd: proximal "
                        "gradient / gradient scheme / PnP-FBS; admm: ADMM / PnP-ADMM; lbfgs: "
                        "safeguarded L-BFGS (smooth priors)")
    p.add_argument("--observed", action="store_true",
                   help="IMAGE is already the blurred, noisy measurement: skip the simulation")
    p.add_argument("--boundary", choices=("circular", "valid", "reflect"), default=None,
                   help="boundary model of the blur: 'valid' reconstructs on a domain larger "
                        "by the kernel and crops (no assumption; right for real photos), "
                        "'circular' a periodic image, 'reflect' a mirrored one (slower); "
                        "default: valid with --observed, else circular")
    _add_gray(p)
    _add_common_solve(p, default_prior="crr")
    _add_common_io(p, out_default=None)

    # -------------------------------------------------------------------- ct
    p = sub.add_parser(
        "ct", help="simulate CT of an image (parallel or fan beam) and reconstruct it",
        **_fmt("Simulate a sinogram y = R x + noise (Radon transform with --angles "
               "equispaced angles, parallel or --geometry fan, scaled to norm 1; Gaussian "
               "noise of standard deviation --noise relative to max|R x|) and reconstruct x "
               "by min 1/2||Rx - y||^2 + lambda R(x), starting from filtered "
               "back-projection. IMAGE is cropped to a square."))
    p.add_argument("image", metavar="IMAGE", help=IMAGE_HELP)
    p.add_argument("--angles", type=int, default=60, metavar="N",
                   help="number of projection angles (default: 60)")
    p.add_argument("--noise", type=float, default=0.01, metavar="SIGMA",
                   help="noise standard deviation as a fraction of the sinogram's maximum "
                        "|R x|, >= 0 (default: 0.01, i.e. 1 %%)")
    p.add_argument("--solver", choices=SOLVERS, default="auto",
                   help="auto (default: lbfgs for the ridge priors, else pgd), pgd, admm or "
                        "lbfgs")
    p.add_argument("--geometry", choices=("parallel", "fan"), default="parallel",
                   help="parallel beam over [0, pi) (default) or fan beam (flat detector, "
                        "source at twice the image size) over [0, 2 pi)")
    _add_common_solve(p, default_prior="crr")
    _add_common_io(p, out_default=None)

    # --------------------------------------------------------------- denoise
    p = sub.add_parser(
        "denoise", help="add Gaussian noise to an image and denoise it",
        **_fmt("Simulate y = x + noise with noise standard deviation --sigma (25/255, "
               "0.098 or 25 all mean 25/255 on [0, 1] images), then denoise: "
               "'crr' / 'wcrr' solve argmin 1/2||x - y||^2 + R_sigma(x) with their own tuned "
               "strength, 'lipdenoiser' applies the certified nonexpansive denoiser, 'tv' "
               "solves the ROF problem. With --observed, IMAGE is already noisy."))
    p.add_argument("image", metavar="IMAGE", help=IMAGE_HELP)
    p.add_argument("--sigma", type=noise_level, default=25 / 255, metavar="S",
                   help=f"noise standard deviation {NOISE_UNITS} (default: 25/255)")
    p.add_argument("--observed", action="store_true",
                   help="IMAGE is already noisy with level --sigma: skip the simulation")
    p.add_argument("--prior", default="wcrr", metavar="NAME",
                   help="'tv', a shipped prior ('lipinverse models') or a checkpoint folder "
                        "written by 'lipinverse train'; default: wcrr")
    p.add_argument("--lam", type=float, default=None, metavar="L",
                   help="TV only: strength lambda of the ROF problem (default: from --sigma)")
    _add_gray(p)
    _add_common_io(p, out_default=None)

    # ----------------------------------------------------------------- train
    p = sub.add_parser(
        "train", help="train a prior on the patches of a folder of images",
        **_fmt("Train a convex ridge regulariser (crr), a weakly convex one (wcrr) or a "
               "nonexpansive ResNet denoiser (lipresnet) on patches of the images in --images "
               "(every PNG / JPEG / TIFF / BMP file in the folder), with Gaussian noise of "
               "levels drawn in [0, --sigma-max]. Writes safetensors + JSON checkpoints to "
               "--out; 'lipinverse certify' prints their certificates. For several processes "
               "or GPUs, launch with torchrun, e.g. torchrun --nproc_per_node=4 -m "
               "lipinverse.cli train ...\n\n"
               "With --recipe (a shipped prior's name, e.g. 'wcrr', or a TOML file) the run "
               "follows the recipe's stages (t-step, then exact minimiser) and keeps its full "
               "state in --out, saved every few minutes; --minutes bounds the wall time of "
               "this call, and 'lipinverse train --resume DIR --minutes N' continues it bit "
               "for bit:\n\n"
               "  lipinverse train --recipe wcrr --images ../shared/data/train400 \\\n"
               "      --val ../shared/data/set12 --out runs/wcrr --minutes 60\n"
               "  lipinverse train --resume runs/wcrr --minutes 60"))
    p.add_argument("--images", metavar="DIR", help="folder of training images (required "
                   "unless --resume continues a recipe run)")
    p.add_argument("--recipe", metavar="NAME|FILE.toml", default=None,
                   help="train by a recipe: a shipped one ('crr', 'wcrr') or a TOML file")
    p.add_argument("--val", metavar="DIR", default=None,
                   help="--recipe: validation images (monitoring and the final tuning of "
                        "lambda(sigma))")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="wall-time budget of this call: save the full state and stop after "
                        "M minutes (default: until the run ends)")
    p.add_argument("--model", choices=("crr", "wcrr", "lipresnet"), default="crr",
                   help="what to train (default: crr)")
    p.add_argument("--epochs", type=int, default=10, metavar="N",
                   help="passes over the patches (default: 10)")
    p.add_argument("--out", "-o", default=None, metavar="CHECKPOINT_DIR",
                   help="folder for the checkpoints (created if needed)")
    p.add_argument("--patch-size", type=int, default=40, metavar="P",
                   help="side of the square training patches (default: 40)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B",
                   help="patches per optimisation step (default: 64)")
    p.add_argument("--lr", type=float, default=1e-3, metavar="LR",
                   help="Adam learning rate (default: 1e-3)")
    p.add_argument("--sigma-max", type=noise_level, default=30 / 255, metavar="S",
                   help=f"largest training noise level {NOISE_UNITS} (default: 30/255)")
    p.add_argument("--max-patches", type=int, default=None, metavar="N",
                   help="use at most N patches (quick runs); default: all")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="'cpu' (default), 'cuda' or 'cuda:K'")
    p.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help="seed of patch sampling, noise and initialisation (default: 0)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue a recipe run folder (--resume RUN_DIR), or, without a "
                        "value, the last checkpoint in --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    # --------------------------------------------------------------- certify
    p = sub.add_parser(
        "certify", help="print the certified Lipschitz bounds of a saved model",
        **_fmt("Load a checkpoint written by 'lipinverse train' (a folder or its .safetensors "
               "file; loading never executes code) or a shipped prior's name, and print its "
               "certificates: the Lipschitz bound of a denoiser (with its averagedness) or "
               "the Lipschitz constant of a regulariser's gradient, and its convexity."))
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint folder, .safetensors file, or a shipped prior's name")
    p.add_argument("--device", default="cpu", metavar="DEV", help="'cpu' (default) or 'cuda'")

    # ---------------------------------------------------------------- models
    p = sub.add_parser(
        "models", help="list the shipped priors and their certificates",
        **_fmt("List the priors that ship with the package (usable as --prior NAME) with "
               "their parameter counts and certificates; 'tv' is always available."))
    return parser
