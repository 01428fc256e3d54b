r"""Shared pieces of the BSD68 benchmarks: data, seeded noise, PSNR, tuning, result tables."""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from lipinverse.allocator import reuse_buffers  # noqa: E402  (after the sys.path line)

# the benchmarks run as the `lipinverse` command does: freed tensor buffers reused (peers
# timed in the same process get the same allocator)
reuse_buffers()
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"

# Published BSD68 grayscale denoising PSNRs (dB) at sigma = 5, 15, 25 (x255).
PUBLISHED = {
    "CRR-NN (Goujon et al. 2023)": {"5": 36.96, "15": 30.55, "25": 28.10},
    "WCRR-NN (Goujon et al. 2024)": {"5": 37.65, "15": 31.21, "25": 28.68},
    "BM3D": {"5": None, "15": 31.07, "25": 28.57},
    "DnCNN (Zhang et al. 2017)": {"5": None, "15": 31.73, "25": 29.23},
}


def require_data(folder: Path) -> Path:
    """Exit with a clear message when the benchmark images are absent."""
    if not folder.is_dir():
        sys.exit(f"benchmark skipped: image folder {folder} not found (see "
                 f"../shared/data/README.md); pass --data DIR")
    return folder


def load_images(folder: Path, limit: int | None = None, step: int = 1,
                crop: int | None = None, dtype=torch.float64) -> list[tuple[str, torch.Tensor]]:
    """``[(name, (1, 1, H, W) tensor in [0, 1])]``: every ``step``-th PNG, centre-cropped."""
    from lipinverse.training import load_images as read_folder
    from lipinverse.training.tuning import centre_crop

    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".png")
    ims = [im[None] for im in read_folder(folder, dtype=dtype)]
    pairs = list(zip(files, ims, strict=True))[::step]
    if limit is not None:
        pairs = pairs[:limit]
    if crop is not None:
        pairs = [(n, centre_crop(x, crop)) for n, x in pairs]
    return pairs


def add_noise(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """``x + sigma * n`` with ``n`` standard normal from a seeded CPU generator."""
    g = torch.Generator().manual_seed(int(seed))
    return x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR (dB, peak 1) of the reconstruction clipped to [0, 1] (as published tables do)."""
    from lipinverse.metrics import psnr as per_sample

    # one number over the whole batch
    return float(per_sample(x.clamp(0, 1).reshape(1, -1), ref.reshape(1, -1))[0])


def tune(run, grid, problems) -> tuple[float, float]:
    """Best parameter of ``grid`` by mean PSNR of ``run(y, param, extra) -> x`` on ``problems``.

    ``problems`` is a list of ``(x, y, extra)`` built from the validation set only.
    """
    best = (-math.inf, None)
    for p in grid:
        val = float(np.mean([psnr(run(y, p, e), x) for x, y, e in problems]))
        best = max(best, (val, p), key=lambda t: t[0])
    return best[1], best[0]


class Record:
    """Per-method accumulator of PSNR, time per image and iterations."""

    def __init__(self):
        self.rows: dict[str, dict[str, list]] = {}

    def add(self, method: str, key: str, psnr_db: float, seconds: float,
            iterations: float | None = None):
        r = self.rows.setdefault(method, {}).setdefault(key, [])
        r.append((psnr_db, seconds, iterations))

    def summary(self) -> dict:
        out = {}
        for m, d in self.rows.items():
            out[m] = {}
            for k, rows in d.items():
                p, t, it = zip(*rows, strict=True)
                its = [i for i in it if i is not None]
                out[m][k] = {"psnr": round(float(np.mean(p)), 3),
                             "time_s": round(float(np.mean(t)), 3),
                             "iterations": round(float(np.mean(its)), 1) if its else None,
                             "n": len(rows)}
        return out


def machine() -> str:
    import os

    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores shared with "
            f"other jobs, torch {torch.__version__}, threads {torch.get_num_threads()}")


def merge(name: str, payload: dict, same: tuple[str, ...]) -> dict:
    """Add the methods of ``payload`` to the saved results of ``name`` (same setup only)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return payload
    old = json.loads(path.read_text())
    for key in same:
        if old.get(key) != payload.get(key):
            raise ValueError(f"merge: saved {name}.json has {key}={old.get(key)!r}, this run "
                             f"{payload.get(key)!r}; rerun all methods instead of --merge")
    out = dict(payload)
    out["results"] = old["results"] | payload["results"]
    out["methods"] = old["methods"] | payload["methods"]
    return out


def rewrite(name: str, markdown):
    """Regenerate ``results/name.md`` from ``results/name.json``."""
    text = markdown(json.loads((RESULTS / f"{name}.json").read_text()))
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def write(name: str, payload: dict, markdown):
    """Write ``results/name.json`` and ``results/name.md`` (``markdown(payload)``)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = payload | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "machine": machine()}
    from lipinverse._atomic import atomic_write_bytes

    text = markdown(payload)  # before any write: a failing table leaves both files intact
    atomic_write_bytes(RESULTS / f"{name}.json", (json.dumps(payload, indent=2) + "\n").encode())
    atomic_write_bytes(RESULTS / f"{name}.md", text.encode())
    print(text)


def save(name: str, payload: dict, markdown, merge_on: tuple[str, ...] | None = None) -> None:
    """:func:`write` ``payload``, first merged (:func:`merge`) into the saved results of the
    same setup if ``merge_on`` names the setup keys; under a file lock, so that benchmark
    processes run side by side with ``--merge`` never lose each other's rows."""
    import fcntl

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if merge_on:
            payload = merge(name, payload, merge_on)
        write(name, payload, markdown)


def fmt(v, nd=2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"
