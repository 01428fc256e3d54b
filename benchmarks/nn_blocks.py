r"""Cost and tightness of the certified 1-Lipschitz blocks of ``lipinverse.nn``.

1. Forward+backward time of a 64-channel 3x3 :class:`GradientStepBlock`
   :math:`x - h W^\top\sigma(Wx+b)` against a plain residual block
   :math:`x + \mathrm{conv}(\mathrm{relu}(\mathrm{conv}(x)))` (same FLOPs in the convolutions),
   on a batch ``(8, 64, 64, 64)`` in float32, with 1 and 2 CPU threads.  Step sizes come
   either from the certified bound (recomputed every step: one SVD per frequency of the
   symbol grid) or from the persistent power-iteration estimate (``norm="estimate"``;
   the certificate still uses the certified bound).  Goal: ratio <= 1.3.
2. Tightness ``certify(model) / empirical_lipschitz(model, x)`` of a briefly trained
   :class:`LipschitzResNet` denoiser (train400 patches, sigma = 25/255, evaluated on set12
   crops).  Goal: <= 1.05.

Usage: ``python benchmarks/nn_blocks.py [--quick]``; writes ``results/nn_blocks.json`` and
``results/nn_blocks.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, fmt, machine  # noqa: E402

from lipinverse.nn import (  # noqa: E402
    ConvMap,
    GradientStepBlock,
    LipschitzResNet,
    LipschitzSpline,
    certify,
    empirical_lipschitz,
)


class PlainResidual(torch.nn.Module):
    """``x + conv2(relu(conv1(x)))``: the unconstrained reference block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


def _time_fwd_bwd(block, x, reps: int) -> float:
    times = []
    for i in range(reps + 1):
        xx = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        block(xx).square().mean().backward()
        dt = time.perf_counter() - t0
        block.zero_grad(set_to_none=True)
        if i:  # first run is a warm-up
            times.append(dt)
    return statistics.median(times)


def timing(batch: int, reps: int, threads_list) -> list[dict]:
    c, size = 64, 64
    torch.manual_seed(0)
    x = torch.randn(batch, c, size, size)
    makers = {
        "plain residual (reference)": lambda: PlainResidual(c),
        "GradientStepBlock relu, norm=estimate": lambda: GradientStepBlock(
            ConvMap(c, c, 3), torch.nn.ReLU(), norm="estimate"),
        "GradientStepBlock spline, norm=estimate": lambda: GradientStepBlock(
            ConvMap(c, c, 3), LipschitzSpline(c), norm="estimate"),
        "GradientStepBlock relu, norm=bound": lambda: GradientStepBlock(
            ConvMap(c, c, 3), torch.nn.ReLU(), norm="bound"),
    }
    rows = []
    old = torch.get_num_threads()
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            ref = None
            for name, make in makers.items():
                sec = _time_fwd_bwd(make(), x, reps)
                ref = sec if ref is None else ref
                rows.append({"block": name, "threads": threads, "seconds": sec,
                             "ratio": sec / ref})
    finally:
        torch.set_num_threads(old)
    return rows


def _patches(folder: Path, n_images: int, patch: int, per_image: int, seed: int):
    import skimage.io

    files = sorted(folder.glob("*.png"))[:n_images]
    rng = np.random.default_rng(seed)
    out = []
    for f in files:
        im = skimage.io.imread(f).astype(np.float32) / 255.0
        if im.ndim == 3:
            im = im[..., 0]
        for _ in range(per_image):
            r = rng.integers(0, im.shape[0] - patch + 1)
            c = rng.integers(0, im.shape[1] - patch + 1)
            out.append(im[r:r + patch, c:c + patch])
    return torch.from_numpy(np.stack(out))[:, None]


def _fallback_patches(patch: int, count: int, seed: int):
    from skimage import data

    im = torch.from_numpy(data.camera().astype(np.float32) / 255.0)
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, im.shape[0] - patch, (count,), generator=g)
    c = torch.randint(0, im.shape[1] - patch, (count,), generator=g)
    return torch.stack([im[i:i + patch, j:j + patch] for i, j in zip(r, c, strict=True)])[:, None]


def tightness(steps: int, width: int, depth: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sigma = 25 / 255
    if (DATA / "train400").is_dir() and (DATA / "set12").is_dir():
        train = _patches(DATA / "train400", 40, 40, 16, seed=0)
        test = _patches(DATA / "set12", 4, 64, 1, seed=1)
        source = "train400 patches 40x40 / set12 crops 64x64"
    else:
        train, test = _fallback_patches(40, 640, 0), _fallback_patches(64, 4, 1)
        source = "skimage camera patches (../shared/data absent)"
    net = LipschitzResNet(width=width, depth=depth, norm="estimate")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, train.shape[0], (16,), generator=g)
        clean = train[idx]
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        loss = (net(noisy) - clean).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        noisy = test + sigma * torch.randn(test.shape, generator=g)
        den = net(noisy)
        psnr_in = float(-10 * torch.log10((noisy - test).square().mean()))
        psnr_out = float(-10 * torch.log10((den - test).square().mean()))
    t0 = time.perf_counter()
    cert = certify(net)
    cert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    emp = empirical_lipschitz(net, noisy, n_iter=100, adversarial_steps=100)
    emp_s = time.perf_counter() - t0
    return {"data": source, "width": width, "depth": depth, "train_steps": steps,
            "train_seconds": train_s, "psnr_noisy": psnr_in, "psnr_denoised": psnr_out,
            "certify": cert, "certify_seconds": cert_s, "empirical_lipschitz": emp,
            "empirical_seconds": emp_s, "tightness": cert / emp}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller batch and shorter training")
    args = p.parse_args(argv)
    batch, reps, steps = (4, 2, 150) if args.quick else (8, 3, 300)
    rows = timing(batch, reps, threads_list=(1, 2))
    tight = tightness(steps, width=16, depth=4)
    lines = [
        "# lipinverse.nn blocks: cost and certificate tightness",
        "",
        f"Forward+backward of one 64-channel 3x3 block on a ({batch}, 64, 64, 64) float32 "
        f"batch, median of {reps} runs (ratio against the plain residual block at the same "
        "thread count; goal <= 1.3).",
        "",
        "| block | threads | seconds | ratio |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {r['block']} | {r['threads']} | {fmt(r['seconds'], 3)} | {fmt(r['ratio'])} |"
              for r in rows]
    lines += [
        "",
        f"Tightness on a briefly trained LipschitzResNet denoiser (width {tight['width']}, "
        f"depth {tight['depth']}, {tight['train_steps']} Adam steps, sigma 25/255, "
        f"{tight['data']}; goal certify / empirical <= 1.05):",
        "",
        "| certify (upper) | empirical_lipschitz (lower) | ratio | PSNR noisy -> denoised |",
        "| --- | --- | --- | --- |",
        f"| {fmt(tight['certify'], 6)} | {fmt(tight['empirical_lipschitz'], 6)} | "
        f"{fmt(tight['tightness'], 4)} | {fmt(tight['psnr_noisy'])} -> "
        f"{fmt(tight['psnr_denoised'])} dB |",
        "",
    ]
    payload = {"timing": rows, "tightness": tight, "batch": batch, "reps": reps,
               "quick": args.quick}
    payload |= {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine()}
    lines.append(f"Machine: {payload['machine']}; {payload['date']}.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "nn_blocks.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "nn_blocks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return payload


if __name__ == "__main__":
    main()
