r"""Checkpoints that can never execute code: safetensors weights + a JSON description.

A checkpoint with stem ``path`` is two (or three) files written atomically (temporary
file, then :func:`os.replace`):

- ``path.safetensors``: the model's ``state_dict``;
- ``path.json``: format version, model class name and constructor keyword arguments,
  the SHA-256 of the weights file, and free metadata (training configuration,
  optimiser step, epoch, metrics);
- ``path.optim.safetensors`` (optional): the optimiser's tensors, its scalar
  hyper-parameters going into the JSON file.

:func:`load_checkpoint` rebuilds the model from a registry of known classes (never by
unpickling), checks the hash, the keys and the shapes, and raises ``ValueError`` with a
clear message for a missing, truncated, tampered or mismatching file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..nn.renames import rename_state_keys

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "load_optimizer_state",
    "register_model",
    "registered_models",
    "checkpoint_paths",
    "checkpoint_in_folder",
    "previous_paths",
    "is_complete",
]

FORMAT = "lipinverse-checkpoint/1"
_REGISTRY: dict[str, type] = {}


def register_model(cls: type) -> type:
    """Register a model class for :func:`load_checkpoint` (usable as a decorator).

    The class must provide ``config() -> dict`` returning its constructor keyword
    arguments (JSON-serialisable).
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_model: expected an nn.Module subclass, got {cls!r}")
    if not callable(getattr(cls, "config", None)):
        raise TypeError(f"register_model: {cls.__name__} has no `config()` method")
    _REGISTRY[cls.__name__] = cls
    return cls


def _builtin_models() -> None:
    from lipinverse import denoisers, regularizers

    for mod in (regularizers, denoisers):
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, nn.Module) and callable(
                    getattr(obj, "config", None)):
                _REGISTRY.setdefault(obj.__name__, obj)


def registered_models() -> dict[str, type]:
    """Name -> class of every model :func:`load_checkpoint` can rebuild."""
    _builtin_models()
    return dict(_REGISTRY)


def checkpoint_in_folder(folder) -> Path:
    """The checkpoint a folder stands for: ``final`` (a finished recipe run), else ``best``,
    else ``last``; in a recipe run folder not finished yet, those of its latest stage.

    Raises ``FileNotFoundError`` naming the folder when it holds none.
    """
    folder = Path(folder)
    def number(d: Path) -> int:
        digits = "".join(ch for ch in d.name[5:].split("-")[0] if ch.isdigit())
        return int(digits) if digits else -1

    dirs = [folder] + sorted((d for d in folder.glob("stage*") if d.is_dir()), key=number,
                             reverse=True)
    for d in dirs:
        for stem in ("final", "best", "last"):
            if (d / f"{stem}.json").is_file():
                return d / stem
    raise FileNotFoundError(f"no checkpoint (final.json, best.json or last.json) in the "
                            f"folder '{folder}'")


def checkpoint_paths(path) -> tuple[Path, Path, Path]:
    """``(weights, json, optimiser)`` paths of the checkpoint with stem ``path``.

    ``path`` may be the stem, either file name (``.safetensors`` / ``.json``), or a
    folder (:func:`checkpoint_in_folder`).
    """
    p = Path(path)
    if p.is_dir():
        p = checkpoint_in_folder(p)
    name = p.name
    for suffix in (".optim.safetensors", ".safetensors", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = p.with_name(name)
    return (stem.with_name(name + ".safetensors"), stem.with_name(name + ".json"),
            stem.with_name(name + ".optim.safetensors"))


def _atomic_write(path: Path, data: bytes) -> None:
    from .._atomic import atomic_write_bytes

    atomic_write_bytes(path, data)


def previous_paths(path) -> tuple[Path, Path, Path]:
    """``(weights, json, optimiser)`` of the previous generation ``<stem>.prev`` that
    :func:`save_checkpoint` keeps when it overwrites a complete checkpoint."""
    w_path, _, _ = checkpoint_paths(path)
    stem = w_path.name[: -len(".safetensors")]
    return checkpoint_paths(w_path.with_name(stem + ".prev"))


def is_complete(path) -> bool:
    """Whether the checkpoint's JSON file parses and its tensor files match its hashes."""
    w_path, j_path, o_path = checkpoint_paths(path)
    try:
        info = json.loads(j_path.read_text())
        if hashlib.sha256(w_path.read_bytes()).hexdigest() != info["weights_sha256"]:
            return False
        if "optimizer" in info:
            return hashlib.sha256(o_path.read_bytes()).hexdigest() == info["optimizer"]["sha256"]
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _keep_previous(paths: tuple[Path, Path, Path]) -> None:
    """Hard-link (or copy) a complete current checkpoint to ``<stem>.prev.*`` before its
    files are replaced one by one: a crash between two replacements then leaves the
    previous generation complete (:meth:`Trainer.resume` falls back to it)."""
    w_path, j_path, o_path = paths
    if not j_path.is_file() or not is_complete(w_path):
        return  # nothing complete to keep (an interrupted save): keep the older .prev
    prev = previous_paths(w_path)
    for src, dst in zip((o_path, w_path, j_path), (prev[2], prev[0], prev[1]), strict=True):
        if not src.is_file():
            if dst.exists():
                dst.unlink()
            continue
        tmp = dst.with_name("." + dst.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # file systems without hard links
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata=None) -> bytes:
    from safetensors.torch import save

    plain = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    return save(plain, metadata=metadata)


def _json_safe(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        if isinstance(obj, dict):
            return {str(k): _json_safe(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [_json_safe(v) for v in obj]
        if isinstance(obj, torch.Tensor) and obj.numel() == 1:
            return obj.item()
        return repr(obj)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, val in state.items():
            if isinstance(val, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": _json_safe(sd["param_groups"]), "scalars": scalars}


def save_checkpoint(model: nn.Module, path, *, optimizer=None, metadata: dict | None = None
                    ) -> Path:
    r"""Write ``model`` (and optionally ``optimizer``) as a checkpoint with stem ``path``.

    Parameters
    ----------
    model : nn.Module
        A model with ``config()`` (its constructor kwargs); its class should be
        registered (:func:`register_model`) to be loadable.
    path : str or Path
        Stem (or ``.safetensors`` / ``.json`` name) of the checkpoint.
    optimizer : torch.optim.Optimizer, optional
        Saved to ``path.optim.safetensors`` for :meth:`Trainer.resume`.
    metadata : dict, optional
        JSON-serialisable extra information (non-serialisable values are ``repr``-ed).

    Returns
    -------
    Path
        The JSON file.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_checkpoint: expected an nn.Module, got {type(model).__name__}")
    if not callable(getattr(model, "config", None)):
        raise TypeError(f"save_checkpoint: {type(model).__name__} has no `config()` method")
    if Path(path).is_dir():
        raise ValueError(f"save_checkpoint: expected a checkpoint stem such as "
                         f"'{Path(path) / 'last'}', got the folder '{path}'")
    w_path, j_path, o_path = checkpoint_paths(path)
    weights = _tensor_bytes(model.state_dict())
    info = {
        "format": FORMAT,
        "model_class": type(model).__name__,
        "model_config": _json_safe(model.config()),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "metadata": _json_safe(metadata or {}),
    }
    opt_bytes = None
    if optimizer is not None:
        tensors, rest = _optimizer_tensors(optimizer)
        opt_bytes = _tensor_bytes(tensors)
        info["optimizer"] = {"class": type(optimizer).__name__,
                             "sha256": hashlib.sha256(opt_bytes).hexdigest(), **rest}
    # each file is replaced atomically, but not the three together: keep the current
    # complete checkpoint as <stem>.prev first (see _keep_previous)
    _keep_previous((w_path, j_path, o_path))
    if opt_bytes is not None:
        _atomic_write(o_path, opt_bytes)
    _atomic_write(w_path, weights)
    _atomic_write(j_path, json.dumps(info, indent=2, sort_keys=True).encode())
    return j_path


def read_checkpoint_metadata(path) -> dict:
    """The parsed JSON file of a checkpoint (raises ``ValueError`` if unreadable)."""
    _, j_path, _ = checkpoint_paths(path)
    if not j_path.is_file():
        raise ValueError(f"load_checkpoint: no checkpoint description at {j_path}")
    try:
        info = json.loads(j_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"load_checkpoint: {j_path} is not valid JSON ({err})") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"load_checkpoint: {j_path} is not a {FORMAT} file")
    for key in ("model_class", "model_config", "weights_sha256"):
        if key not in info:
            raise ValueError(f"load_checkpoint: {j_path} lacks the field {key!r}")
    return info


def _read_tensors(path: Path, sha256: str, what: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    if not path.is_file():
        raise ValueError(f"load_checkpoint: missing {what} file {path}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"load_checkpoint: {path} does not match the SHA-256 recorded in its "
                         "JSON file (truncated, tampered with, or from another checkpoint)")
    try:
        return load(data)
    except Exception as err:  # safetensors raises its own error type
        raise ValueError(
            f"load_checkpoint: {path} is not a valid safetensors file ({err})") from err


def load_checkpoint(path, *, map_location=None, return_metadata: bool = False):
    r"""Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or Path
        Stem or either file of the checkpoint.
    map_location : str or torch.device, optional
        Device of the returned model (default CPU).
    return_metadata : bool
        Also return the JSON description.

    Returns
    -------
    model (in eval mode), or ``(model, info)``.

    Raises
    ------
    ValueError
        Unknown class, missing or truncated file, hash mismatch (tampered weights), or
        keys / shapes that do not match the model the JSON configuration builds.
    """
    w_path, j_path, _ = checkpoint_paths(path)
    info = read_checkpoint_metadata(path)
    registry = registered_models()
    cls_name = info["model_class"]
    if cls_name not in registry:
        raise ValueError(f"load_checkpoint: unknown model class {cls_name!r} in {j_path}; "
                         f"known: {sorted(registry)} (use register_model)")
    config = info["model_config"]
    if not isinstance(config, dict):
        raise ValueError(f"load_checkpoint: model_config in {j_path} must be a dict")
    state = _read_tensors(w_path, info["weights_sha256"], "weights")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(
        torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"load_checkpoint: {w_path} holds NaN or Inf in {bad[:5]}"
                         f"{' ...' if len(bad) > 5 else ''}: refusing weights that no "
                         "certificate could vouch for")
    # the configuration is checked against the file's tensors on the meta device first
    # (no memory), so that a configuration far beyond the file builds nothing large
    try:
        with torch.device("meta"):
            meta_model = registry[cls_name](**config)
            state = current_names(meta_model, state)
            expected = meta_model.state_dict()
    except (TypeError, ValueError) as err:
        raise ValueError(f"load_checkpoint: cannot build {cls_name}(**{config}) ({err})") from err
    except (RuntimeError, NotImplementedError):
        expected = None  # a constructor that computes on its tensors: checked after the build
    if expected is not None:
        _check_state(w_path, cls_name, state, expected)
    try:
        model = registry[cls_name](**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"load_checkpoint: cannot build {cls_name}(**{config}) ({err})") from err
    state = current_names(model, state)
    expected = model.state_dict()
    _check_state(w_path, cls_name, state, expected)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    model.load_state_dict(state)
    if map_location is not None:
        model = model.to(map_location)
    model.eval()
    return (model, info) if return_metadata else model


def current_names(model: torch.nn.Module, state: dict) -> dict:
    """A copy of ``state`` with the keys saved under a former submodule name renamed: every
    submodule may declare ``renamed = {"old.": "new."}`` (e.g.
    :attr:`~lipinverse.regularizers.ConvexRidge.renamed`); see
    :func:`~lipinverse.nn.renames.rename_state_keys`."""
    out = dict(state)
    for where, module in model.named_modules():
        rename_state_keys(out, f"{where}." if where else "", getattr(module, "renamed", {}))
    return out


def _check_state(w_path, cls_name: str, state: dict, expected: dict) -> None:
    """Keys and shapes of the file's tensors against the model's (``ValueError``)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"load_checkpoint: {w_path} does not match {cls_name}: missing keys "
                         f"{missing}, unexpected keys {unexpected}")
    for key, val in state.items():
        if tuple(val.shape) != tuple(expected[key].shape):
            raise ValueError(f"load_checkpoint: {w_path}: {key} has shape {tuple(val.shape)}, "
                             f"{cls_name} expects {tuple(expected[key].shape)}")


def load_optimizer_state(optimizer: torch.optim.Optimizer, path) -> None:
    """Restore ``optimizer`` from the ``.optim.safetensors`` file of a checkpoint."""
    info = read_checkpoint_metadata(path)
    if "optimizer" not in info:
        raise ValueError(f"load_optimizer_state: checkpoint {path} has no optimiser state")
    meta = info["optimizer"]
    if meta.get("class") != type(optimizer).__name__:
        raise ValueError(f"load_optimizer_state: checkpoint holds a {meta.get('class')} state, "
                         f"got a {type(optimizer).__name__}")
    _, _, o_path = checkpoint_paths(path)
    tensors = _read_tensors(o_path, meta["sha256"], "optimiser")
    state: dict = {}
    for key, val in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = val
    for key, val in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    groups = meta["param_groups"]
    current = optimizer.state_dict()["param_groups"]
    if len(groups) != len(current) or any(
            len(g["params"]) != len(c["params"]) for g, c in zip(groups, current, strict=True)):
        raise ValueError("load_optimizer_state: parameter groups do not match the optimiser")
    for g in groups:
        for k, v in g.items():
            if isinstance(v, list) and k != "params":
                g[k] = tuple(v)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def write_history_csv(history: list[dict], path) -> None:
    """The per-epoch history as CSV (one row per epoch, every metric a column), atomically."""
    keys: list[str] = []
    for rec in history:
        keys += [k for k in rec if k not in keys]
    lines = [",".join(keys)]
    for rec in history:
        lines.append(",".join("" if rec.get(k) is None else f"{rec[k]}" for k in keys))
    _atomic_write(Path(path), ("\n".join(lines) + "\n").encode())
