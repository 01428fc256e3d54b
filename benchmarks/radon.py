r"""Speed, memory and adjointness of the Radon transform against scikit-image and deepinv.

Parallel beam, a 256x256 image, 180 angles over [0, pi), 363 detector bins, float32:
forward and adjoint (back-projection), for one image and for a batch of 16, with 1 and 2
torch threads, for

* ``operators.Radon`` with ``backend="matrix"`` (sparse CSR, int32 indices) and
  ``backend="matrix_free"``;
* scikit-image ``radon`` and ``iradon(filter_name=None)`` (its unfiltered back-projection,
  rescaled by :math:`2 n_\theta / \pi`, which is *not* the adjoint of ``radon``; numpy,
  single-threaded, so measured once);
* deepinv ``Tomography(normalize=False)``, whose default adjoint is the exact one computed
  by autograd through ``grid_sample``;
* ASTRA's CPU projector when ``astra`` is importable.

It also records the time and memory of building the matrices, and for every method the
relative dot-test error :math:`|\langle Ax, y\rangle - \langle x, A^\top y\rangle| /
(\|Ax\|\|y\|)` on random float32 pairs. Results go to ``benchmarks/results/radon.json`` and
``benchmarks/results/radon.md``.

Run (about three minutes on two busy cores)::

    .venv/bin/python benchmarks/radon.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from operators import Radon
from operators.phantoms import shepp_logan

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mib() -> float:
    """Current resident set size of this process (MiB), from /proc when available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, arg, *, min_total: float = 1.0, max_repeat: int = 5) -> float:
    """Median wall time (s) of ``fn(arg)`` after one warm-up call."""
    fn(arg)
    times = []
    while len(times) < max_repeat and (not times or sum(times) < min_total):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _dot_error(forward, adjoint, x, y) -> float:
    ax, aty = forward(x), adjoint(y)
    lhs = float((ax.double() * y.double()).sum())
    rhs = float((x.double() * aty.double()).sum())
    return abs(lhs - rhs) / (float(ax.double().norm()) * float(y.double().norm()))


class _Skimage:
    """scikit-image on a (B, 1, n, n) tensor, one image at a time (angles in degrees)."""

    def __init__(self, theta_deg, n):
        from skimage.transform import iradon, radon

        self.radon, self.iradon, self.theta, self.n = radon, iradon, theta_deg, n

    def forward(self, x):
        out = [self.radon(img[0].numpy(), theta=self.theta, circle=False).T for img in x]
        return torch.from_numpy(np.stack(out))[:, None]

    def adjoint(self, y):
        # iradon scales the back-projection by pi / (2 n_angles); undo it to compare with A^T
        scale = 2 * len(self.theta) / math.pi
        out = [self.iradon(s[0].numpy().T, theta=self.theta, filter_name=None, circle=False,
                           output_size=self.n) * scale for s in y]
        return torch.from_numpy(np.stack(out))[:, None].float()


def _astra(theta, n, detector_size):
    """ASTRA's CPU 'linear' parallel projector, or None when astra is missing."""
    try:
        import astra
    except ImportError:
        return None
    vol = astra.create_vol_geom(n, n)
    proj = astra.create_proj_geom("parallel", 1.0, detector_size, np.asarray(theta))
    pid = astra.create_projector("linear", proj, vol)

    def forward(x):
        out = [astra.create_sino(img[0].numpy(), pid)[1] for img in x]
        return torch.from_numpy(np.stack(out))[:, None].float()

    def adjoint(y):
        out = [astra.create_backprojection(s[0].numpy(), pid)[1] for s in y]
        return torch.from_numpy(np.stack(out))[:, None].float()

    return forward, adjoint


def main(n: int = 256, n_angles: int = 180, batch: int = 16, threads=(1, 2),
         out_dir: Path | str = RESULTS, write: bool = True) -> dict:
    """Run every measurement and write ``radon.json`` / ``radon.md`` to ``out_dir``."""
    torch.manual_seed(0)
    theta = torch.arange(n_angles, dtype=torch.float64) * math.pi / n_angles
    theta_deg = np.rad2deg(theta.numpy())
    g = torch.Generator().manual_seed(0)
    x1 = shepp_logan(n, dtype=torch.float32)
    xb = torch.rand(batch, 1, n, n, generator=g)
    report: dict = {
        "config": {"image": [n, n], "n_angles": n_angles, "batch": batch,
                   "dtype": "float32", "threads": list(threads)},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average_at_start": os.getloadavg()},
        "timings": [], "build": {}, "adjointness": {}, "agreement": {},
    }

    # ---- our operator: build the matrices once, record time and memory
    torch.set_num_threads(threads[0])
    rss0 = _rss_mib()
    A = Radon(n, theta)
    D = A.detector_size
    t0 = time.perf_counter()
    S, St = A.matrices(torch.float32)
    build_s = time.perf_counter() - t0
    nbytes = sum(t.numel() * t.element_size() for m in (S, St)
                 for t in (m.crow_indices(), m.col_indices(), m.values()))
    report["build"] = {"seconds": build_s, "threads": threads[0], "nnz": int(S._nnz()),
                       "matrix_bytes_A_and_At": nbytes,
                       "estimate_bytes_float64": A.matrix_bytes,
                       "rss_before_mib": rss0, "rss_after_mib": _rss_mib(),
                       "peak_rss_after_build_mib": _peak_rss_mib()}
    report["config"]["detector_size"] = D
    F = Radon(n, theta, backend="matrix_free")
    yb = A(xb)
    y1 = A(x1)

    sk = _Skimage(theta_deg, n)
    methods = {"ours_matrix": (A.forward, A.adjoint),
               "ours_matrix_free": (F.forward, F.adjoint)}
    try:
        import deepinv

        dtomo = deepinv.physics.Tomography(angles=torch.from_numpy(theta_deg).float(),
                                           img_width=n, circle=False, normalize=False)
        # deepinv's sinograms are (B, C, D, n_angles): transposed to ours for comparisons
        methods["deepinv_tomography"] = (
            lambda x: dtomo.A(x).transpose(-1, -2),
            lambda y: dtomo.A_adjoint(y.transpose(-1, -2).contiguous()))
    except ImportError:
        report["agreement"]["deepinv"] = "not installed"
    astra_ops = _astra(theta.numpy(), n, D)
    if astra_ops is not None:
        methods["astra_cpu_linear"] = astra_ops
    else:
        report["agreement"]["astra"] = "not importable"

    # ---- accuracy: dot tests and agreement with scikit-image's radon
    gx = torch.Generator().manual_seed(1)
    xr = torch.randn(1, 1, n, n, generator=gx)
    for name, (fw, adj) in list(methods.items()) + [("skimage_radon_iradon_nofilter",
                                                     (sk.forward, sk.adjoint))]:
        yr = torch.randn(fw(xr).shape, generator=gx)
        report["adjointness"][name] = {"random": _dot_error(fw, adj, xr, yr),
                                       "phantom": _dot_error(fw, adj, x1, fw(x1))}
    ref = sk.forward(x1.double())
    for name, (fw, _) in methods.items():
        ours = fw(x1).double()
        if ours.shape == ref.shape:
            report["agreement"][f"{name}_vs_skimage_rel_l2"] = float((ours - ref).norm()
                                                                     / ref.norm())

    # ---- timings
    def record(method, nthreads, op, b, seconds):
        report["timings"].append({"method": method, "threads": nthreads, "op": op,
                                  "batch": b, "seconds": seconds,
                                  "ms_per_image": 1e3 * seconds / b})

    for nthreads in threads:
        torch.set_num_threads(nthreads)
        for name, (fw, adj) in methods.items():
            slow = name != "ours_matrix"
            for b, x, y in ((1, x1, y1), (batch, xb, yb)):
                kw = {"max_repeat": 1} if slow and b > 1 else {}
                record(name, nthreads, "forward", b, _time(fw, x, **kw))
                record(name, nthreads, "adjoint", b, _time(adj, y, **kw))
    # scikit-image is numpy, single-threaded: one measurement
    for b, x, y in ((1, x1, y1), (batch, xb, yb)):
        kw = {"max_repeat": 1} if b > 1 else {}
        record("skimage", 1, "forward", b, _time(sk.forward, x, **kw))
        record("skimage", 1, "adjoint", b, _time(sk.adjoint, y, **kw))
    report["peak_rss_mib"] = _peak_rss_mib()
    report["machine"]["load_average_at_end"] = os.getloadavg()

    # ---- summary
    def pick(method, op, b, nthreads):
        for r in report["timings"]:
            if (r["method"], r["op"], r["batch"], r["threads"]) == (method, op, b, nthreads):
                return r["seconds"]
        return None

    summary = {}
    for nthreads in threads:
        for op in ("forward", "adjoint"):
            ours = pick("ours_matrix", op, batch, nthreads)
            dv = pick("deepinv_tomography", op, batch, nthreads)
            if ours and dv:
                summary[f"speedup_vs_deepinv_{op}_batch{batch}_threads{nthreads}"] = dv / ours
            summary[f"ours_ms_per_image_{op}_batch{batch}_threads{nthreads}"] = \
                1e3 * ours / batch
    report["summary"] = summary
    if write:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "radon.json").write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / "radon.md").write_text(_markdown(report))
    return report


def _markdown(rep: dict) -> str:
    c, b = rep["config"], rep["build"]
    lines = [
        "# Radon transform benchmark",
        "",
        f"Parallel beam, {c['image'][0]}x{c['image'][1]} image, {c['n_angles']} angles, "
        f"{c['detector_size']} bins, float32, {rep['machine']['cpu_count']} CPU cores "
        f"shared with other jobs (load average {rep['machine']['load_average_at_start'][0]:.1f}"
        f" at the start, {rep['machine']['load_average_at_end'][0]:.1f} at the end: "
        "timings are noisy). Written by `benchmarks/radon.py`.",
        "",
        "## Time (ms per call; per image in brackets)",
        "",
        "| method | threads | forward, 1 | adjoint, 1 | forward, batch | adjoint, batch |",
        "|---|---|---|---|---|---|",
    ]
    rows: dict = {}
    for r in rep["timings"]:
        key = (r["method"], r["threads"])
        rows.setdefault(key, {})[(r["op"], r["batch"])] = r
    for (method, nt), d in rows.items():
        cells = []
        for op, bb in (("forward", 1), ("adjoint", 1), ("forward", c["batch"]),
                       ("adjoint", c["batch"])):
            r = d.get((op, bb))
            cells.append("-" if r is None else
                         f"{1e3 * r['seconds']:.1f}" + ("" if bb == 1 else
                                                        f" ({r['ms_per_image']:.1f})"))
        lines.append(f"| {method} | {nt} | " + " | ".join(cells) + " |")
    lines += ["", f"Batch = {c['batch']} images. scikit-image: `radon` and "
              "`iradon(filter_name=None)` (not the adjoint), looped over the batch.", "",
              "## Summary", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in rep["summary"].items()]
    lines += ["", "## Matrix build (backend='matrix')", "",
              f"- time: {b['seconds']:.2f} s ({b['threads']} thread), nnz {b['nnz']:,}",
              f"- A and A^T (CSR, int32 indices, float32 values): "
              f"{b['matrix_bytes_A_and_At'] / 2**20:.0f} MiB "
              f"(float64 upper estimate used for the budget: "
              f"{b['estimate_bytes_float64'] / 2**20:.0f} MiB)",
              f"- RSS before / after build: {b['rss_before_mib']:.0f} / "
              f"{b['rss_after_mib']:.0f} MiB; peak RSS after build "
              f"{b['peak_rss_after_build_mib']:.0f} MiB; peak RSS of the whole run "
              f"{rep['peak_rss_mib']:.0f} MiB", "",
              "## Adjointness (relative dot-test error, float32)", "",
              "| method | random pair | phantom pair |", "|---|---|---|"]
    for k, v in rep["adjointness"].items():
        lines.append(f"| {k} | {v['random']:.2e} | {v['phantom']:.2e} |")
    lines += ["", "## Agreement", ""]
    for k, v in rep["agreement"].items():
        lines.append(f"- {k}: {v if isinstance(v, str) else f'{v:.4g}'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--angles", type=int, default=180)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rep = main(args.size, args.angles, args.batch)
    print(_markdown(rep))
