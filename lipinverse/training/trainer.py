r"""The training loop: one frozen configuration, seeded data, validation, checkpoints,
resume, and data-parallel training with ``torch.distributed`` (launch with ``torchrun``)."""

from __future__ import annotations

import base64
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..metrics import psnr
from .checkpoint import (
    is_complete,
    load_checkpoint,
    load_optimizer_state,
    previous_paths,
    save_checkpoint,
    write_history_csv,
)
from .config import TrainConfig, project_constraints, step_seed
from .patches import PatchDataset, load_images
from .tuning import centre_crop

__all__ = ["Trainer"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Objective(nn.Module):
    """``objective.loss(model, ...)`` as a module, so that DistributedDataParallel (which
    hooks the module's forward) wraps the whole training loss."""

    def __init__(self, model: nn.Module, objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, clean, noisy, sigma):
        return self.objective.loss(self.model, clean, noisy, sigma)


class Trainer:
    r"""Train a model with an objective (see :mod:`lipinverse.training.objectives`).

    Parameters
    ----------
    model : nn.Module
        A model with ``config()`` (for checkpoints).  Build it after
        :func:`seed_everything` for reproducible initial weights.
    objective :
        An objective with ``loss(model, clean, noisy, sigma)`` and ``predict``.
    config : TrainConfig
    train_data : PatchDataset or tensor ``(N, C, p, p)``, optional
        Default: ``PatchDataset(config.train_images, config.patch_size, ...)``.
    val_data : tensor ``(N, C, H, W)`` or list of ``(C, H, W)`` tensors, optional
        Default: the images of ``config.val_images``, if given.

    Notes
    -----
    **Data.** Epoch :math:`e` visits a permutation of the patches drawn from a generator
    seeded by ``(seed, e)``; global step :math:`k` takes its slice of it, and draws the
    augmentation, the noise levels :math:`\sigma_b \sim U(\sigma_{min}, \sigma_{max})`
    and the noise from a generator seeded by ``(seed, k)``.  The data therefore depend
    only on the seed and the step: not on the number of processes, nor on where a run
    was interrupted.

    **Checkpoints and resume.** ``last`` holds the full state: weights, Adam state,
    step, history, the partial sums of the current epoch and torch's global RNG state.
    It is written atomically at the end of every ``checkpoint_every`` epochs, every
    ``save_every_minutes`` and when the ``minutes`` budget stops :meth:`fit`;
    :meth:`resume` then continues bit for bit (same machine, threads and settings).
    ``history.csv`` beside it has one line per epoch.

    **Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is
    initialised (``nccl`` on CUDA, else ``gloo``) unless it already is, and the loss
    is wrapped in :class:`torch.nn.parallel.DistributedDataParallel` (rank 0's weights
    broadcast; gradients all-reduced in buckets during the backward pass).  Rank
    :math:`r` of :math:`P` takes samples :math:`r, r+P, \dots` of each global batch;
    DDP averages the equal-sized local gradients, so the update is that of one process
    on the whole batch (up to floating-point summation order).  Only rank 0 writes
    checkpoints and shows progress.
    """

    def __init__(self, model: nn.Module, objective, config: TrainConfig, train_data=None,
                 val_data=None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Trainer: expected model an nn.Module, got {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer: expected config a TrainConfig, got {type(config).__name__}")
        if not callable(getattr(objective, "loss", None)):
            raise TypeError(f"Trainer: expected an objective with a `loss` method, "
                            f"got {type(objective).__name__}")
        self.config, self.objective = config, objective
        self._init_distributed()
        self.rank, self.world = _world()
        if config.batch_size % self.world:
            raise ValueError(f"Trainer: batch_size {config.batch_size} is not divisible by the "
                             f"number of processes {self.world}")
        self.device = self._pick_device(model)
        self.model = model.to(self.device)
        if config.compile:
            if not callable(getattr(self.model, "compile_potentials", None)):
                raise ValueError(f"Trainer: compile=True needs a model with "
                                 f"compile_potentials(), got {type(model).__name__}")
            self.model.compile_potentials()
        self._loss = _Objective(self.model, objective)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._loss = DistributedDataParallel(self._loss, device_ids=ids,
                                                 find_unused_parameters=True)
        if train_data is None:
            if config.train_images is None:
                raise ValueError("Trainer: give train_data or TrainConfig.train_images")
            train_data = PatchDataset(config.train_images, config.patch_size,
                                      config.patch_stride, augment=config.augment,
                                      seed=config.seed)
        elif isinstance(train_data, torch.Tensor):
            train_data = PatchDataset(train_data, patch_size=train_data.shape[-1],
                                      augment=config.augment, seed=config.seed)
        if not isinstance(train_data, PatchDataset):
            raise TypeError(f"Trainer: expected train_data a PatchDataset or a tensor, "
                            f"got {type(train_data).__name__}")
        if len(train_data) < config.batch_size:
            raise ValueError(f"Trainer: {len(train_data)} patches, fewer than batch_size "
                             f"{config.batch_size}")
        self.train_data = train_data
        if val_data is None and config.val_images is not None:
            val_data = load_images(config.val_images, limit=config.val_limit)
        if isinstance(val_data, torch.Tensor):
            val_data = list(val_data)
        if val_data and config.val_crop is not None:
            val_data = [centre_crop(img, config.val_crop) for img in val_data]
        self.val_data = val_data
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.epoch, self.step = 0, 0
        self.history: list[dict] = []
        self.best_psnr = -math.inf
        self.train_seconds = 0.0
        self._sums: dict[str, float] = {}
        self._epoch_seconds = 0.0
        self._perm: tuple[int, torch.Tensor] | None = None
        self._updating = False
        self.interrupted_save: Path | None = None

    # ------------------------------------------------------------------ setup
    def _param_groups(self) -> list[dict]:
        groups: dict[float, list] = {}
        renamed = getattr(self.model, "renamed", {})  # prefixes under a former module name
        factors = [(renamed.get(prefix, prefix), f) for prefix, f in self.config.lr_factors]
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            factor = next((f for prefix, f in factors if name.startswith(prefix)), 1.0)
            groups.setdefault(factor, []).append(p)
        return [{"params": ps, "lr": self.config.lr * f, "lr_factor": f}
                for f, ps in groups.items()]

    @staticmethod
    def _init_distributed() -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() \
                and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)

    def _pick_device(self, model: nn.Module) -> torch.device:
        if self.config.device is not None:
            want = "a torch device such as 'cpu' or 'cuda:0'"
            if not isinstance(self.config.device, str):
                raise TypeError(f"Trainer: expected TrainConfig.device {want}, "
                                f"got {self.config.device!r}")
            try:
                dev = torch.device(self.config.device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"Trainer: expected TrainConfig.device {want}, "
                                 f"got {self.config.device!r}") from err
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"Trainer: expected an available device, got "
                                 f"{self.config.device!r} but CUDA is not available")
            return dev
        if self.world > 1 and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.train_data) // self.config.batch_size
        cap = self.config.steps_per_epoch
        return n if cap is None else min(n, cap)

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def _lr(self, step: int) -> float:
        c = self.config
        if c.lr_schedule == "constant":
            return c.lr
        total = max(self.total_steps, 1)
        return 0.5 * c.lr * (1.0 + math.cos(math.pi * min(step, total) / total))

    def _dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None)
        return p.dtype if p is not None else torch.get_default_dtype()

    # ------------------------------------------------------------------ data
    def _draw(self, g: torch.Generator, clean: torch.Tensor):
        lo, hi = self.config.sigma_range
        sigma = lo + (hi - lo) * torch.rand(clean.shape[0], generator=g, dtype=torch.float64)
        noise = torch.randn(clean.shape, generator=g, dtype=torch.float64)
        noisy = clean.double() + sigma.view(-1, 1, 1, 1) * noise
        return sigma, noisy

    def _local(self, t: torch.Tensor) -> torch.Tensor:
        return t[self.rank::self.world]

    def batch_at(self, step: int):
        """``(clean, noisy, sigma)`` of global step ``step`` (whole batch, float64 noise)."""
        c = self.config
        epoch, i = divmod(int(step), self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(c.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.train_data), generator=g))
        idx = self._perm[1][i * c.batch_size:(i + 1) * c.batch_size]
        g = torch.Generator().manual_seed(step_seed(c.seed, step))
        clean = self.train_data.batch(idx, generator=g)
        sigma, noisy = self._draw(g, clean)
        return clean, noisy, sigma

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict:
        """One optimiser step on the batch of ``self.step``; returns its metrics (also added
        to the current epoch's sums)."""
        c = self.config
        self.model.train()
        dtype = self._dtype()
        clean, noisy, sigma = (self._local(t).to(self.device, dtype)
                               for t in self.batch_at(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step) * group.get("lr_factor", 1.0)
        self.optimizer.zero_grad(set_to_none=False)
        loss, metrics = self._loss(clean, noisy, sigma)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Trainer: non-finite loss {float(loss.detach())} at "
                                     f"step {self.step}")
        loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        metrics = {"loss": float(loss.detach()), **metrics}
        self._updating = True  # weights, sums and step change together: no save in between
        self.optimizer.step()
        project_constraints(self.model)
        self._check_weights()
        self._accumulate(metrics)
        self.step += 1
        self._updating = False
        return metrics

    def train_epoch(self) -> dict:
        """Run the rest of the current epoch; returns its mean training metrics."""
        spe = self.steps_per_epoch
        end = (self.step // spe + 1) * spe
        bar = None
        if self.config.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=spe, initial=self.step % spe, leave=False,
                       desc=f"epoch {self.epoch + 1}/{self.config.epochs}")
        while self.step < end:
            self._timed_step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{self._sums.get('loss', 0.0) / self._sums['_n']:.3e}")
        if bar is not None:
            bar.close()
        return self._epoch_means()

    def _timed_step(self) -> dict:
        t0 = time.perf_counter()
        metrics = self.train_step()
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        self._epoch_seconds += dt
        return metrics

    def _accumulate(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._sums["_n"] = self._sums.get("_n", 0.0) + 1

    def _epoch_means(self) -> dict:
        n = max(self._sums.get("_n", 0.0), 1.0)
        return {f"train_{k}": v / n for k, v in self._sums.items() if k != "_n"}

    def _check_weights(self) -> None:
        """Stop (``FloatingPointError``) as soon as an update makes a weight NaN / Inf, so that
        a diverging run never goes on, or writes a checkpoint, with garbage weights."""
        params = [p.detach() for p in self.model.parameters()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            bad = [n for n, p in self.model.named_parameters()
                   if not bool(torch.isfinite(p).all())]
            raise FloatingPointError(f"Trainer: non-finite weights {bad[:3]} after step "
                                     f"{self.step} (lr {self._lr(self.step):g}); lower lr or set "
                                     "grad_clip")

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss and PSNR at ``config.val_sigma`` on the validation images."""
        if not self.val_data:
            return {}
        c = self.config
        self.model.eval()
        g = torch.Generator().manual_seed(c.seed + 7919)
        dtype = self._dtype()
        psnrs, losses = [], []
        for img in self.val_data:
            clean = img[None].to(torch.float64)
            noise = torch.randn(clean.shape, generator=g, dtype=torch.float64)
            noisy = clean + c.val_sigma * noise
            sigma = torch.full((1,), c.val_sigma, dtype=torch.float64)
            clean, noisy, sigma = (t.to(self.device, dtype) for t in (clean, noisy, sigma))
            est = self.objective.predict(self.model, noisy, sigma)
            if est is not None:
                psnrs.append(float(psnr(est.clamp(0, 1), clean)))
                losses.append(float((est - clean).pow(2).mean()))
            else:
                with torch.enable_grad():
                    loss, _ = self.objective.loss(self.model, clean, noisy, sigma)
                losses.append(float(loss))
        out = {"val_loss": sum(losses) / len(losses)}
        if psnrs:
            out["val_psnr"] = sum(psnrs) / len(psnrs)
        return out

    def fit(self) -> list[dict]:
        """Train until ``config.epochs`` (or the ``minutes`` budget); returns the history.

        Sets :attr:`finished` (all epochs done) and :attr:`stopped_early` (the budget
        stopped it; ``last`` was saved if there is a ``checkpoint_dir``). The checkpoint
        folder is locked for the duration (:func:`~lipinverse.training.lock.run_lock`): a
        second trainer on the same folder fails at once, naming the first.
        """
        c = self.config
        if c.checkpoint_dir is None or self.rank != 0:
            return self._fit()
        from .lock import run_lock

        with run_lock(c.checkpoint_dir):
            return self._fit()

    def _fit(self) -> list[dict]:
        c = self.config
        start = last_save = time.perf_counter()
        self.stopped_early = False
        if not self.history and self.step == 0:
            self.history.append({"epoch": 0, **self.validate()})
        spe = self.steps_per_epoch
        try:
            self._fit_loop(start, last_save, spe)
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM turned into it by the CLI): keep the work done so far
            if c.checkpoint_dir is not None and self.rank == 0 and not self._updating:
                self.save(Path(c.checkpoint_dir) / "last")
                self.interrupted_save = Path(c.checkpoint_dir) / "last"
            raise
        if self.stopped_early and c.checkpoint_dir is not None and self.rank == 0:
            self.save(Path(c.checkpoint_dir) / "last")
        return self.history

    def _fit_loop(self, start: float, last_save: float, spe: int) -> None:
        c = self.config
        bar = None
        if self.step > 0 and self.step % spe == 0 and self._sums:
            # stopped (e.g. Ctrl-C) after an epoch's last step but before its record
            self._end_epoch()
        while self.step < self.total_steps:
            if self._budget_spent(start):
                self.stopped_early = True
                break
            if bar is None and c.progress and self.rank == 0:
                from tqdm.auto import tqdm

                bar = tqdm(total=spe, initial=self.step % spe, leave=False,
                           desc=f"epoch {self.epoch + 1}/{c.epochs}")
            self._timed_step()
            if bar is not None:
                bar.update(1)
            if self.step % spe == 0:
                if bar is not None:
                    bar.close()
                    bar = None
                self._end_epoch()
                last_save = time.perf_counter()
            elif (c.checkpoint_dir is not None and self.rank == 0
                  and time.perf_counter() - last_save >= 60.0 * c.save_every_minutes):
                self.save(Path(c.checkpoint_dir) / "last")
                last_save = time.perf_counter()
        if bar is not None:
            bar.close()

    def _budget_spent(self, start: float) -> bool:
        """Whether the ``minutes`` budget is spent; under DDP rank 0's clock decides for all
        (a rank that stopped alone would leave the others waiting in the all-reduce)."""
        c = self.config
        spent = c.minutes is not None and time.perf_counter() - start >= 60.0 * c.minutes
        if self.world > 1:
            flag = torch.tensor([1.0 if spent else 0.0], device=self.device)
            dist.broadcast(flag, src=0)
            spent = bool(flag.item() > 0)
        return spent

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def _end_epoch(self) -> None:
        c = self.config
        self.epoch = self.step // self.steps_per_epoch
        record = {"epoch": self.epoch, "step": self.step, "seconds": self._epoch_seconds,
                  **self._epoch_means(), **self.validate()}
        self.history.append(record)
        self._sums, self._epoch_seconds = {}, 0.0
        if c.checkpoint_dir is None or self.rank != 0:
            return
        if self.epoch % c.checkpoint_every == 0 or self.epoch == c.epochs:
            self.save(Path(c.checkpoint_dir) / "last")
        if record.get("val_psnr", -math.inf) > self.best_psnr:
            self.best_psnr = record["val_psnr"]
            self.save(Path(c.checkpoint_dir) / "best", with_optimizer=False)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path, with_optimizer: bool = True) -> Path:
        """Write a checkpoint: model, optimiser, config, step, history, the current epoch's
        partial sums and torch's RNG state (the full state :meth:`resume` needs); and
        ``history.csv`` beside it."""
        meta = {"train_config": self.config.to_dict(), "epoch": self.epoch, "step": self.step,
                "history": self.history, "best_psnr": self.best_psnr,
                "train_seconds": self.train_seconds, "threads": torch.get_num_threads(),
                "epoch_sums": self._sums, "epoch_seconds": self._epoch_seconds,
                "rng_state": base64.b64encode(
                    torch.get_rng_state().numpy().tobytes()).decode("ascii")}
        out = save_checkpoint(self.model, path,
                              optimizer=self.optimizer if with_optimizer else None,
                              metadata=meta)
        write_history_csv(self.history, Path(path).parent / "history.csv")
        return out

    def resume(self, path) -> Trainer:
        """Restore the full state from a checkpoint written by :meth:`save`.

        If the checkpoint is incomplete (a save interrupted between its file
        replacements: hashes do not match) and the previous generation ``<stem>.prev``
        kept by :func:`save_checkpoint` is complete, resume from that one, with a warning.
        """
        try:
            return self._resume_from(path)
        except ValueError as err:
            _, prev_json, _ = previous_paths(path)
            # only an incomplete save falls back; a wrong model class is the user's error
            if is_complete(path) or not (prev_json.is_file() and is_complete(prev_json)):
                raise
            import warnings

            warnings.warn(f"Trainer.resume: {err}; resuming from the previous complete "
                          f"checkpoint {prev_json}", RuntimeWarning, stacklevel=2)
            return self._resume_from(prev_json)

    def _resume_from(self, path) -> Trainer:
        model, info = load_checkpoint(path, return_metadata=True)
        if type(model) is not type(self.model):
            raise ValueError(f"Trainer.resume: checkpoint holds a {type(model).__name__}, "
                             f"training a {type(self.model).__name__}")
        self.model.load_state_dict(model.state_dict())
        load_optimizer_state(self.optimizer, path)
        meta = info.get("metadata", {})
        self.epoch, self.step = int(meta.get("epoch", 0)), int(meta.get("step", 0))
        self.history = list(meta.get("history", []))
        self.best_psnr = float(meta.get("best_psnr", -math.inf))
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        self._sums = {k: float(v) for k, v in meta.get("epoch_sums", {}).items()}
        self._epoch_seconds = float(meta.get("epoch_seconds", 0.0))
        if "rng_state" in meta:
            raw = base64.b64decode(meta["rng_state"])
            torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        return self
