r"""``lipinverse train``: glue between the command line and :mod:`lipinverse.training`.

What each ``--model`` trains, and with which objective:

* ``crr``: :class:`~lipinverse.regularizers.ConvexRidge` with the t-step denoising loss
  (:class:`~lipinverse.training.TStepDenoisingLoss`, ``t = 10`` gradient steps on
  :math:`\tfrac12\|x - y\|^2 + R_\sigma(x)`), the CRR-NN training;
* ``wcrr``: the same with :class:`~lipinverse.regularizers.WeakConvexRidge`;
* ``lipresnet``: a free-form certified nonexpansive
  :class:`~lipinverse.denoisers.LipschitzDenoiser` with the denoising MSE
  (:class:`~lipinverse.training.DenoisingLoss`). (The shipped ``lipdenoiser`` is a different
  network, the unrolled :class:`~lipinverse.denoisers.RidgeResNetDenoiser` of ``crr``, so the
  name is not reused here.)

Training noise levels are drawn per patch in ``[0, sigma_max]`` ([0, 1] units; the flag
accepts ``30/255``).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import signal
import sys
from pathlib import Path

import torch

from .priors import certificate_lines

__all__ = ["train", "train_recipe", "build_model"]

#: Smoothing of the splines (weight of their second-order total variation) for ridge models.
TV2_WEIGHT = 1e-4
#: Gradient steps of the t-step training of ridge regularisers.
T_STEPS = 10


def build_model(kind: str):
    """A fresh model and its training objective for ``--model kind``."""
    from .. import training
    from ..denoisers import LipschitzDenoiser
    from ..regularizers import ConvexRidge, WeakConvexRidge

    if kind in ("crr", "wcrr"):
        cls = ConvexRidge if kind == "crr" else WeakConvexRidge
        return cls(), training.TStepDenoisingLoss(t=T_STEPS, step=0.5, tv2_weight=TV2_WEIGHT)
    if kind == "lipresnet":
        model = LipschitzDenoiser()
        try:
            conditioned = "sigma" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            conditioned = False
        return model, training.DenoisingLoss(conditioned=conditioned)
    raise ValueError(f"--model: expected crr, wcrr or lipresnet, got {kind!r}")


def train(args, device: torch.device) -> None:
    """Train ``args.model`` on patches of ``args.images``; checkpoints go to ``args.out``."""
    from .. import training

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a folder for the checkpoints, got the file '{out}'")
    last = out / "last"
    if args.resume and not (out / "last.json").is_file():
        raise FileNotFoundError(f"--resume: no checkpoint '{out / 'last.json'}' to resume from")
    training.seed_everything(args.seed)
    model, objective = build_model(args.model)
    data = training.PatchDataset(args.images, patch_size=args.patch_size, seed=args.seed,
                                 max_patches=args.max_patches)
    batch = min(args.batch_size, len(data))
    progress = not args.quiet and sys.stderr.isatty()
    # under torchrun with CUDA each process takes cuda:LOCAL_RANK (the Trainer's default)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    dev = None if distributed and device.type == "cuda" else str(device)
    config = training.TrainConfig(
        epochs=args.epochs, batch_size=batch, lr=args.lr, patch_size=args.patch_size,
        sigma_range=(0.0, args.sigma_max), seed=args.seed, checkpoint_dir=str(out),
        progress=progress, device=dev, minutes=args.minutes, val_images=args.val)
    out.mkdir(parents=True, exist_ok=True)
    trainer = training.Trainer(model, objective, config, train_data=data)
    if args.resume:
        trainer.resume(last)
    rank = getattr(trainer, "rank", 0)
    if rank == 0:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training {type(model).__name__} ({n_params} parameters) on {len(data)} "
              f"patches {args.patch_size}x{args.patch_size} from {args.images}, batch {batch}, "
              f"{args.epochs} epoch(s) on {device}")
    try:
        history = trainer.fit()
    except KeyboardInterrupt:
        if trainer.interrupted_save is not None:
            print(f"interrupted: saved the last complete step to {trainer.interrupted_save}; "
                  f"continue with the same command and --resume", file=sys.stderr)
        raise
    if rank != 0:
        return
    for rec in history:
        if rec.get("epoch", 0) == 0:
            continue
        parts = [f"epoch {rec['epoch']}"]
        for key in ("train_loss", "val_loss", "val_psnr", "seconds"):
            val = rec.get(key)
            if isinstance(val, (int, float)) and math.isfinite(val):
                parts.append(f"{key.replace('_', ' ')} {val:.4g}")
        print(", ".join(parts))
    print(f"wrote           {last}.safetensors, {last}.json")
    for line in certificate_lines(trainer.model):
        print(line)


def train_recipe(args, device: torch.device) -> None:
    """``--recipe`` / ``--resume RUN_DIR``: a staged, resumable run (see
    :mod:`lipinverse.training.recipes`)."""
    from lipinverse.training import recipes

    progress = not args.quiet and sys.stderr.isatty()
    dev = None if device.type == "cpu" else str(device)
    out = Path(args.resume if isinstance(args.resume, str) else args.out)
    try:
        if isinstance(args.resume, str):
            print(f"resuming {out} ({recipes.core_hours(out):.2f} core-hours so far)")
            run = recipes.resume_run(out, minutes=args.minutes, device=dev, progress=progress)
        else:
            run = recipes.run_recipe(args.recipe, args.images, out, val=args.val,
                                     minutes=args.minutes, device=dev, progress=progress)
    except KeyboardInterrupt:
        print(f"interrupted: the state of the run is saved in {out} (last saves of the "
              f"current stage); continue with: lipinverse train --resume {out} --minutes N",
              file=sys.stderr)
        raise
    hours = run["core_seconds"] / 3600
    if run.get("done"):
        print(f"run complete ({hours:.2f} core-hours): {out / 'final.json'}")
        from lipinverse.training import load_checkpoint

        for line in certificate_lines(load_checkpoint(out / "final")):
            print(line)
    else:
        print(f"stopped at stage {run['stage']} ({hours:.2f} core-hours so far); continue "
              f"with: lipinverse train --resume {out} --minutes N")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (``kill``, a batch scheduler) stops like Ctrl-C: the
    Trainer saves the last complete step and the command says how to resume."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
