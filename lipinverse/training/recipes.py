r"""Recipes: a training run in stages, described by a TOML file, that survives interruptions.

A recipe names a model (a registered class and its keyword arguments), the patches and
noise levels, a list of **stages** (each an objective and a :class:`TrainConfig`), and
the tuning of :math:`\lambda(\sigma)` on validation images at the end. The shipped priors'
recipes are in ``lipinverse/pretrained/recipes/`` (``available_recipes()``); a user's own
TOML file works the same way.

:func:`run_recipe` keeps everything in one run folder::

    run.json               the recipe, the data folders, progress, sessions, core-seconds
    stage1-tstep/last.*    full training state of stage 1 (weights, Adam, step, RNG)
    stage1-tstep/history.csv
    stage2-deq/...
    final.safetensors/json the tuned model, with its certificates in the metadata

and :func:`resume_run` continues it, bit for bit, from the last save of the current stage.
Stage :math:`k+1` starts from the final weights of stage :math:`k` with a fresh optimiser.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from .checkpoint import _atomic_write, load_checkpoint, registered_models, save_checkpoint
from .config import TrainConfig, seed_everything
from .lock import run_lock
from .objectives import DEQDenoisingLoss, TStepDenoisingLoss
from .patches import PatchDataset, load_images
from .trainer import Trainer
from .tuning import tune_strength  # noqa: F401

__all__ = ["load_recipe", "available_recipes", "run_recipe", "resume_run"]

RECIPES = Path(__file__).resolve().parents[1] / "pretrained" / "recipes"
_STAGE_KEYS = {"name", "objective", "t", "step", "tol", "max_iter", "cg_tol", "cg_max_iter",
               "solver", "tv2"}
_CONFIG_KEYS = {f for f in TrainConfig.__dataclass_fields__} - {
    "train_images", "val_images", "checkpoint_dir", "progress", "device", "minutes", "seed",
    "patch_size", "patch_stride", "sigma_range", "compile", "augment"}


def available_recipes() -> list[str]:
    """Names of the recipes shipped in ``lipinverse/pretrained/recipes``."""
    return sorted(p.stem for p in RECIPES.glob("*.toml"))


def _toml(text: str, where: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"recipe {where}: not valid TOML ({err})") from err


def load_recipe(name_or_path) -> dict:
    """A recipe as a dict, from a shipped name (``"wcrr"``) or a TOML file; validated."""
    p = Path(str(name_or_path))
    if p.suffix != ".toml":
        if str(name_or_path) not in available_recipes():
            raise ValueError(f"recipe: expected a shipped recipe {available_recipes()} or a "
                             f".toml file, got {str(name_or_path)!r}")
        p = RECIPES / f"{name_or_path}.toml"
    if not p.is_file():
        raise FileNotFoundError(f"recipe: no such file '{p}'")
    recipe = _toml(p.read_text(), str(p))
    check_recipe(recipe, str(p))
    return recipe


def check_recipe(recipe: dict, where: str = "recipe") -> None:
    """Raise ``ValueError`` naming the field when ``recipe`` is malformed."""
    model = recipe.get("model")
    if not isinstance(model, dict) or "class" not in model:
        raise ValueError(f"{where}: expected a [model] table with a 'class'")
    if model["class"] not in registered_models():
        raise ValueError(f"{where}: unknown model class {model['class']!r}; known: "
                         f"{sorted(registered_models())}")
    stages = recipe.get("stage")
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"{where}: expected at least one [[stage]]")
    for i, st in enumerate(stages, 1):
        if not isinstance(st, dict) or st.get("objective") not in ("tstep", "deq"):
            raise ValueError(f"{where}: stage {i}: expected objective 'tstep' or 'deq', "
                             f"got {st.get('objective') if isinstance(st, dict) else st!r}")
        unknown = set(st) - _STAGE_KEYS - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"{where}: stage {i}: unknown keys {sorted(unknown)}")
        if "lr_factors" in st and not isinstance(st["lr_factors"], dict):
            raise ValueError(f"{where}: stage {i}: expected lr_factors a table of "
                             f"prefix = factor, got {st['lr_factors']!r}")
        try:  # the objective and TrainConfig validate their values now, not hours later
            _objective(st)
            _stage_config(recipe, st, None, False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: stage {i}: {err}") from err


def _stage_dir(i: int, stage: dict) -> str:
    return f"stage{i}-{stage.get('name', stage['objective'])}"


def _objective(stage: dict):
    tv2 = float(stage.get("tv2", 0.0))
    if stage["objective"] == "tstep":
        return TStepDenoisingLoss(t=int(stage.get("t", 10)), step=float(stage.get("step", 0.5)),
                                  tv2_weight=tv2)
    return DEQDenoisingLoss(tol=float(stage.get("tol", 1e-3)),
                            max_iter=int(stage.get("max_iter", 500)),
                            cg_tol=float(stage.get("cg_tol", 1e-3)),
                            cg_max_iter=int(stage.get("cg_max_iter", 200)),
                            solver=stage.get("solver", "anderson"), tv2_weight=tv2)


def _stage_config(recipe: dict, stage: dict, out, progress: bool, device=None,
                  minutes=None) -> TrainConfig:
    data = recipe.get("data", {})
    kw = {k: v for k, v in stage.items() if k in _CONFIG_KEYS}
    if "lr_factors" in kw:  # in the recipe's order: the first matching prefix wins
        kw["lr_factors"] = tuple(kw["lr_factors"].items())
    return TrainConfig(
        **kw, seed=int(recipe.get("seed", 0)), patch_size=int(data.get("patch_size", 40)),
        patch_stride=data.get("patch_stride"),
        sigma_range=(0.0, float(data.get("sigma_max", 30.0)) / 255),
        compile=bool(recipe.get("compile", False)), augment=bool(data.get("augment", True)),
        checkpoint_dir=None if out is None else str(out), progress=progress,
        device=device, minutes=minutes)


def _save_run(out: Path, run: dict) -> None:
    _atomic_write(out / "run.json", (json.dumps(run, indent=2) + "\n").encode())


def run_recipe(recipe, images, out, *, val=None, minutes=None, device=None,
               progress=False, log=print) -> dict:
    """Start a run of ``recipe`` (a name, a TOML path or a dict) in the new folder ``out``;
    then as :func:`resume_run`. Returns the run record."""
    if not isinstance(recipe, dict):
        recipe = load_recipe(recipe)
    else:
        check_recipe(recipe)
    out = Path(out)
    if (out / "run.json").exists():
        raise ValueError(f"--out: '{out}' already holds a run; continue it with "
                         f"--resume {out}")
    with run_lock(out):  # one writer: a second run on the same folder fails here
        return _start_run(recipe, images, out, val, minutes, device, progress, log)


def _start_run(recipe, images, out, val, minutes, device, progress, log) -> dict:
    if (out / "run.json").exists():
        raise ValueError(f"--out: '{out}' already holds a run; continue it with "
                         f"--resume {out}")
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"--images: no such folder: '{images}'")
    if val is not None and not Path(val).is_dir():
        raise FileNotFoundError(f"--val: no such folder: '{val}'")
    out.mkdir(parents=True, exist_ok=True)
    run = {"format": "lipinverse-run/1", "recipe": recipe, "images": str(images.resolve()),
           "val": None if val is None else str(Path(val).resolve()), "stage": 1,
           "sessions": [], "core_seconds": 0.0, "done": False}
    _save_run(out, run)
    return resume_run(out, minutes=minutes, device=device, progress=progress, log=log)


def resume_run(out, *, minutes=None, device=None, progress=False, log=print) -> dict:
    """Continue the run in ``out`` for at most ``minutes`` (wall time), then save and stop.

    Each stage resumes from its ``last`` checkpoint (bit for bit), or starts from the
    previous stage's final weights. After the last stage, :math:`\\lambda(\\sigma)` is
    tuned on the validation folder (if any) and ``final`` is written.
    """
    with run_lock(out):
        return _resume_run(out, minutes=minutes, device=device, progress=progress, log=log)


def _resume_run(out, *, minutes=None, device=None, progress=False, log=print) -> dict:
    out = Path(out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("recipes run in one process (use the Trainer directly, or "
                         "'lipinverse train --images ...' without --recipe, under torchrun)")
    try:
        run = json.loads((out / "run.json").read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--resume: no run.json in '{out}' (not a run folder written "
                                f"by 'lipinverse train --recipe')") from err
    recipe = run["recipe"]
    check_recipe(recipe, str(out / "run.json"))
    if run.get("done"):
        log(f"run {out} is complete: {out / 'final.json'}")
        return run
    start = time.perf_counter()
    threads = torch.get_num_threads()
    session = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "threads": threads, "device": str(device or "cpu"), "steps": 0}
    run["sessions"].append(session)
    left = None if minutes is None else float(minutes)
    data = None
    stages = recipe["stage"]
    try:
        while run["stage"] <= len(stages):
            i = run["stage"]
            stage = stages[i - 1]
            sdir = out / _stage_dir(i, stage)
            remaining = None if left is None else left - (time.perf_counter() - start) / 60
            if remaining is not None and remaining <= 0:
                break
            if data is None:
                d = recipe.get("data", {})
                data = PatchDataset(run["images"], patch_size=int(d.get("patch_size", 40)),
                                    stride=d.get("patch_stride"),
                                    augment=bool(d.get("augment", True)),
                                    seed=int(recipe.get("seed", 0)),
                                    max_patches=d.get("max_patches"))
            cfg = _stage_config(recipe, stage, sdir, progress, device, remaining)
            cfg = TrainConfig(**(cfg.to_dict() | {"val_images": run["val"]}))
            model = _stage_model(recipe, run, out, i)
            trainer = Trainer(model, _objective(stage), cfg, train_data=data)
            if (sdir / "last.json").is_file():
                trainer.resume(sdir / "last")
            before = trainer.step
            log(f"stage {i}/{len(stages)} ({stage['objective']}): step {trainer.step} of "
                f"{trainer.total_steps}, {threads} thread(s)")
            try:
                trainer.fit()
            finally:
                session["steps"] += trainer.step - before
            last = trainer.history[-1] if trainer.history else {}
            log(f"stage {i}: step {trainer.step}/{trainer.total_steps}, val psnr "
                f"{last.get('val_psnr', float('nan')):.3f}, saved {sdir / 'last'}")
            if not trainer.finished:
                break
            save_checkpoint(trainer.model, sdir / "final",
                            metadata={"stage": i, "step": trainer.step})
            run["stage"] = i + 1
            _save_run(out, run)
        if run["stage"] > len(stages):
            so_far = run.get("core_seconds", 0.0) + (time.perf_counter() - start) * threads
            _finish(recipe, run, out, log, so_far)
    finally:
        wall = time.perf_counter() - start
        session["wall_s"] = round(wall, 1)
        run["core_seconds"] = run.get("core_seconds", 0.0) + wall * threads
        _save_run(out, run)
    return run


def _stage_model(recipe: dict, run: dict, out: Path, i: int):
    """The model a stage starts from: for stage 1 a fresh (seeded) model of the recipe, or
    the recipe's ``init`` checkpoint (a convex ridge converts to a weakly convex one by
    ``WeakConvexRidge.from_convex``); for a later stage the previous stage's final weights."""
    if i > 1:
        prev = recipe["stage"][i - 2]
        return load_checkpoint(out / _stage_dir(i - 1, prev) / "final")
    seed_everything(int(recipe.get("seed", 0)))
    m = recipe["model"]
    cls = registered_models()[m["class"]]
    init = recipe.get("init")
    if not init:
        return cls(**{k: v for k, v in m.items() if k != "class"})
    start = load_checkpoint(init)
    if type(start) is cls:
        return start
    if cls.__name__ == "WeakConvexRidge" and type(start).__name__ == "ConvexRidge":
        return cls.from_convex(start)
    raise ValueError(f"recipe init '{init}': holds a {type(start).__name__}, expected a "
                     f"{cls.__name__}" + (" (or a ConvexRidge)"
                                           if cls.__name__ == "WeakConvexRidge" else ""))


def _finish(recipe: dict, run: dict, out: Path, log, core_seconds: float) -> None:
    stages = recipe["stage"]
    model = load_checkpoint(out / _stage_dir(len(stages), stages[-1]) / "final")
    meta = {"recipe": recipe.get("name"),
            "core_hours_training": round(core_seconds / 3600, 3)}
    tune = recipe.get("tune")
    if tune and run.get("val"):
        t0 = time.perf_counter()
        meta["tuning"] = tune_strength(
            model, load_images(run["val"]), sigmas=tuple(tune.get("sigmas", (5, 15, 25))),
            grid=tuple(tune.get("grid", (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0))),
            crop=tune.get("crop", 96))
        meta["tuning"]["wall_s"] = round(time.perf_counter() - t0, 1)
        log(f"tuned lambda(sigma) on {run['val']}: {meta['tuning']['psnr_after']}")
    if hasattr(model, "curvature_bounds"):
        meta["certificates"] = {str(s): {"curvature_bounds": model.curvature_bounds(s / 255)}
                                for s in (5, 15, 25)}
    save_checkpoint(model, out / "final", metadata=meta)
    run["done"] = True
    log(f"wrote {out / 'final.safetensors'}, {out / 'final.json'}")


def core_hours(out) -> float:
    """Core-hours a run folder has had (wall time x threads, summed over sessions)."""
    run = json.loads((Path(out) / "run.json").read_text())
    return run.get("core_seconds", 0.0) / 3600
