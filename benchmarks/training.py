r"""Training throughput: patch-updates per second of one exact-minimiser (DEQ) training step.

One step = forward solve to a certified relative tolerance 1e-3, conjugate gradients on
:math:`I + \nabla^2 R(x^*)` to 1e-3, the implicit gradient, on a batch of 128 patches 40x40
from train400 with :math:`\sigma \sim U[0, 30]/255` per patch. Timed side by side, in one
process and interleaved, with the step as it stood at commit 5893d31
(``benchmarks/training_5893d31.py``, a frozen copy), on the same batch and weights:

- ``old``: the 5893d31 step (FISTA, a Hessian product that recomputes everything);
- ``new``: ``DEQDenoisingLoss`` now (Anderson forward solve, cached Hessian curvatures);
- ``new+compile``: the same with ``ConvexRidge.compile_potentials()`` (fused potentials);
- ``new+compile+lbfgs``: the same with the L-BFGS forward solve (``solver = "lbfgs"``:
  the Fourier metric :math:`I + \tau` the prior's mean-curvature circulant, from
  :math:`P^{-1}y`), to the same certified tolerance.

Models: a fresh 60-channel ``ConvexRidge`` (1-4-8-60, the published size; untrained, so
well conditioned: few iterations), the shipped ``crr`` and ``wcrr``, and any ``--checkpoint``
(e.g. the training run's). The rows also give the loss and gradient differences between
old and new: same objective, same tolerance.

Usage: ``python benchmarks/training.py [--threads 2] [--repeats 3] [--checkpoint PATH ...]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import training_5893d31 as frozen
from common import DATA, fmt, require_data, save  # noqa: I001  (benchmarks/ on sys.path)


def batch(n=128, patch=40, seed=1):
    from lipinverse.training import PatchDataset

    data = PatchDataset(require_data(DATA / "train400"), patch_size=patch, seed=0,
                        max_patches=20000)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:n]
    x = data.batch(idx, generator=g).float()
    s = (torch.rand(n, generator=g) * 30 / 255).clamp_min(1e-3)
    return x, x + s.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g), s


def models(checkpoints):
    from lipinverse import pretrained
    from lipinverse.regularizers import ConvexRidge
    from lipinverse.training import load_checkpoint

    torch.manual_seed(0)
    out = {"fresh ConvexRidge 1-4-8-60": lambda: ConvexRidge(channels=(1, 4, 8, 60))}
    for name in ("crr", "wcrr"):
        out[f"shipped {name}"] = lambda name=name: pretrained.load(name)
    for path in checkpoints:
        out[f"checkpoint {path}"] = lambda path=path: load_checkpoint(path)
    return out


def step(kind, reg, x, y, s):
    from lipinverse.training import DEQDenoisingLoss

    reg.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    if kind == "old":
        loss, m = frozen.deq_loss(reg, x, y, s)
    else:
        obj = DEQDenoisingLoss(tol=1e-3, max_iter=500, cg_tol=1e-3, cg_max_iter=200,
                               tv2_weight=1e-5,
                               solver="lbfgs" if kind.endswith("lbfgs") else "anderson")
        loss, m = obj.loss(reg, x, y, s)
    loss.backward()
    dt = time.perf_counter() - t0
    grads = torch.cat([p.grad.flatten() for p in reg.parameters() if p.grad is not None])
    return dt, float(loss.detach()), grads, m


def run(args):
    torch.set_num_threads(args.threads)
    x, y, s = batch()
    results = {}
    for name, make in models(args.checkpoint).items():
        base = make()
        regs = {"old": copy.deepcopy(base), "new": copy.deepcopy(base),
                "new+compile": copy.deepcopy(base).compile_potentials(),
                "new+compile+lbfgs": copy.deepcopy(base).compile_potentials()}
        for r in regs.values():
            r.train()
            for p in r.parameters():
                p.requires_grad_(True)
        times = {k: [] for k in regs}
        info = {}
        for k in ("new+compile", "new+compile+lbfgs"):  # compile outside the timings
            step(k, regs[k], x, y, s)
        for _ in range(args.repeats):
            for k, r in regs.items():
                dt, loss, grads, m = step(k, r, x, y, s)
                times[k].append(dt)
                info[k] = (loss, grads, m)
        ref_loss, ref_grad, _ = info["old"]
        row = {}
        for k in regs:
            loss, grads, m = info[k]
            med = statistics.median(times[k])
            row[k] = {"seconds": round(med, 3), "patches_per_s": round(x.shape[0] / med, 2),
                      "forward_iterations": round(m["fixed_point_iterations"], 1),
                      "cg_iterations": m["cg_iterations"],
                      "loss_rel_diff": float(abs(loss - ref_loss) / abs(ref_loss)),
                      "grad_rel_diff": float((grads - ref_grad).norm() / ref_grad.norm())}
        for k in ("new", "new+compile", "new+compile+lbfgs"):
            row[k]["speedup"] = round(row["old"]["seconds"] / row[k]["seconds"], 2)
        results[name] = row
        print(name, row, flush=True)
    return {"setup": {"batch": 128, "patch": 40, "sigma_max_x255": 30, "tol": 1e-3,
                      "cg_tol": 1e-3, "threads": args.threads, "repeats": args.repeats},
            "results": results}


def markdown(p) -> str:
    su = p["setup"]
    lines = [f"# Training throughput: one exact-minimiser step ({su['batch']} patches "
             f"{su['patch']}x{su['patch']}, sigma ~ U[0, {su['sigma_max_x255']}]/255, "
             f"tol {su['tol']}, {su['threads']} threads)", "",
             f"{p['date']}, {p['machine']}. Median of {su['repeats']} interleaved steps. "
             "`old` = the frozen step of commit 5893d31; `new` = Anderson forward solve + "
             "cached Hessian; `+compile` = fused potentials (torch.compile); `+lbfgs` = the "
             "L-BFGS forward solve in the Fourier metric (forward its: L-BFGS iterations, "
             "each one gradient or more). Loss / gradient "
             "differences are relative to `old` (same objective, same certified tolerance).",
             "", "| model | step | s / step | patches / s | speed-up | forward its | CG its "
             "| loss diff | grad diff |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in p["results"].items():
        for k, r in row.items():
            lines.append(f"| {name} | {k} | {r['seconds']:.2f} | {r['patches_per_s']:.1f} | "
                         f"{fmt(r.get('speedup'))} | {r['forward_iterations']} | "
                         f"{r['cg_iterations']:.0f} | {r['loss_rel_diff']:.1e} | "
                         f"{r['grad_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="also time this ridge checkpoint (stem path)")
    save("training", run(ap.parse_args(argv)), markdown)


if __name__ == "__main__":
    sys.exit(main())
