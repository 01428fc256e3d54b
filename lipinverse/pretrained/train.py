r"""Train the shipped priors (and the unconstrained DnCNN baseline) on train400 patches.

Run from the repository root, one model per call; the exact commands, wall times and results
are recorded in ``lipinverse/pretrained/MODEL_CARD.md``::

    OMP_NUM_THREADS=1 python -m lipinverse.pretrained.train --model crr --minutes 20
    OMP_NUM_THREADS=1 python -m lipinverse.pretrained.train --model dncnn --minutes 20

Data: training patches come only from ``--train`` (default ``../shared/data/train400``);
per-noise-level strengths are tuned only on ``--val`` (default ``../shared/data/set12``).
BSD68 is never read here.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data"
MODELS = ("crr", "wcrr", "lipdenoiser", "lipresnet", "dncnn")


# --------------------------------------------------------------------------- data
def load_folder(folder: str | Path, dtype=torch.float32) -> list[torch.Tensor]:
    """Every PNG of ``folder`` as a ``(1, 1, H, W)`` tensor in [0, 1] (grayscale)."""
    from skimage import io

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"load_folder: expected PNG images in {folder}, found none")
    out = []
    for p in files:
        im = io.imread(p)
        if im.ndim == 3:
            im = im[..., :3].mean(-1)
        out.append(torch.from_numpy(np.asarray(im, dtype=np.float64) / 255.0)
                   .to(dtype)[None, None])
    return out


class RandomPatches:
    r"""Uniformly drawn ``p x p`` patches with random flips and 90-degree rotations (seeded).

    Draws with replacement from a fixed list of images; one call returns a batch
    ``(B, 1, p, p)``.
    """

    def __init__(self, images: list[torch.Tensor], patch: int, seed: int = 0):
        self.images, self.patch = images, int(patch)
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, batch: int) -> torch.Tensor:
        p, g = self.patch, self.g
        idx = torch.randint(len(self.images), (batch,), generator=g).tolist()
        out = []
        for i in idx:
            im = self.images[i]
            h, w = im.shape[-2:]
            r = int(torch.randint(h - p + 1, (1,), generator=g))
            c = int(torch.randint(w - p + 1, (1,), generator=g))
            x = im[..., r:r + p, c:c + p]
            k = int(torch.randint(4, (1,), generator=g))
            x = torch.rot90(x, k, dims=(-2, -1))
            if bool(torch.randint(2, (1,), generator=g)):
                x = x.flip(-1)
            out.append(x)
        return torch.cat(out)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB for images in [0, 1] (no clipping of ``x``)."""
    mse = float((x - ref).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)


def cosine_lr(opt, lr0: float, frac: float):
    """Cosine decay of every group's learning rate (its ``base``, else ``lr0``) to 0."""
    for group in opt.param_groups:
        group["lr"] = group.get("base", lr0) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def save(model_state: dict, config: dict, path: Path):
    """``path.safetensors`` (tensors) and ``path.json`` (config): loading never runs code."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()},
              str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- dncnn
def train_dncnn(args) -> dict:
    """MSE denoising of the unconstrained baseline, sigma ~ U[0, sigma_max]/255 per patch."""
    import sys

    sys.path.insert(0, str(REPO))
    from benchmarks.baselines import DnCNN

    torch.manual_seed(args.seed)
    model = DnCNN(args.depth, args.width)
    sampler = RandomPatches(load_folder(args.train), args.patch, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed + 1)
    t0, step, losses = time.perf_counter(), 0, []
    while step < args.steps and time.perf_counter() - t0 < 60 * args.minutes:
        frac = max(step / args.steps, (time.perf_counter() - t0) / (60 * args.minutes))
        cosine_lr(opt, args.lr, frac)
        x = sampler(args.batch)
        s = torch.rand(args.batch, generator=g) * args.sigma_max / 255
        y = x + s.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g)
        loss = (model(y, s) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {np.mean(losses[-100:]):.3e} "
                  f"t {time.perf_counter() - t0:.0f}s", flush=True)
    wall = time.perf_counter() - t0
    model.eval()
    val = validate(lambda y, s: model(y, s), args)
    cfg = model.config() | {"steps": step, "batch": args.batch, "patch": args.patch,
                            "sigma_max": args.sigma_max, "wall_s": round(wall, 1),
                            "set12_psnr": val,
                            "params": sum(p.numel() for p in model.parameters())}
    save(model.state_dict(), cfg, REPO / "benchmarks" / "weights" / "dncnn")
    return cfg


@torch.no_grad()
def validate(denoise, args, sigmas=(5, 15, 25)) -> dict:
    """Mean PSNR on the validation folder (set12) at the given sigmas (x255), seeded noise."""
    images = load_folder(args.val)
    res = {}
    for s in sigmas:
        vals = [psnr(denoise(noisy(x, s / 255, int(1000 * s) + i), s / 255), x)
                for i, x in enumerate(images)]
        res[str(s)] = round(float(np.mean(vals)), 3)
    return res


# --------------------------------------------------------------------------- ridge
def build_ridge(args):
    from lipinverse.regularizers import ConvexRidge, WeakConvexRidge

    cls = ConvexRidge if args.model == "crr" else WeakConvexRidge
    return cls(channels=tuple(args.channels), kernel_size=args.kernel_size,
               num_knots=args.num_knots)


def ridge_objective(args):
    r"""The training objective of ``--objective``: the t-step loss or the exact (DEQ) loss.

    ``"tstep"``: :math:`\|D_t(y, \sigma) - x\|^2` with :math:`D_t` ``t`` gradient steps on
    :math:`\tfrac12\|x - y\|^2 + R_\sigma(x)` from :math:`x_0 = y` (CRR-NN training).
    ``"deq"``: :math:`\|x^*(y, \sigma) - x\|^2` at the minimiser :math:`x^*` itself, with the
    exact gradient by implicit differentiation
    (:class:`~lipinverse.training.DEQDenoisingLoss`), i.e. the loss of the denoiser that is
    actually used at test time.
    """
    from lipinverse.training import DEQDenoisingLoss, TStepDenoisingLoss

    if args.objective == "tstep":
        return TStepDenoisingLoss(t=args.t, step=args.step, tv2_weight=args.tv2)
    return DEQDenoisingLoss(tol=args.deq_tol, max_iter=500, cg_tol=args.deq_tol,
                            cg_max_iter=200, tv2_weight=args.tv2)


def initial_ridge(args):
    """A fresh ridge regulariser, or the ``--init`` checkpoint (fine-tuning) with its record.

    ``--model wcrr`` may start from a convex (``crr``) checkpoint: the weakly convex ridge
    is then :meth:`WeakConvexRidge.from_convex
    <lipinverse.regularizers.WeakConvexRidge.from_convex>` of it, and the record says so.
    """
    if not args.init:
        return build_ridge(args), None
    from lipinverse.regularizers import ConvexRidge, WeakConvexRidge
    from lipinverse.training import load_checkpoint

    reg, info = load_checkpoint(args.init, return_metadata=True)
    record = {"checkpoint": str(Path(args.init).name),
              "training": info["metadata"].get("training")}
    if args.model == "wcrr" and type(reg) is ConvexRidge:
        reg = WeakConvexRidge.from_convex(reg)
        record["from_convex"] = "WeakConvexRidge.from_convex (defaults)"
    want = ConvexRidge if args.model == "crr" else WeakConvexRidge
    if type(reg) is not want:
        raise ValueError(f"train: --init {args.init} holds a {type(reg).__name__}, expected a "
                         f"{want.__name__} for --model {args.model}")
    return reg, record


def train_ridge(args) -> dict:
    r"""Multi-noise denoising training of a ridge regulariser (CRR-NN / WCRR-NN training).

    Each patch gets its own :math:`\sigma \sim U[0, \sigma_{max}]`; the loss is that of
    :func:`ridge_objective` plus ``tv2`` times the splines' second-order total variation.
    Training starts from scratch or, with ``--init``, from a saved checkpoint (fine-tuning).
    After training, the strength :math:`\lambda(\sigma)` is rescaled per noise level on the
    validation set (see :func:`tune_ridge`), at the exact minimiser.
    """
    from lipinverse.training import project_constraints

    torch.manual_seed(args.seed)
    reg, init = initial_ridge(args)
    objective = ridge_objective(args)
    sampler = RandomPatches(load_folder(args.train), args.patch, args.seed)
    # the noise-level functions and splines may get their own (larger) learning rate
    fast = [p for n, p in reg.named_parameters() if not n.startswith("W.")]
    slow = [p for n, p in reg.named_parameters() if n.startswith("W.")]
    opt = torch.optim.Adam([{"params": slow, "lr": args.lr, "base": args.lr},
                            {"params": fast, "lr": args.lr * args.lr_factor,
                             "base": args.lr * args.lr_factor}])
    g = torch.Generator().manual_seed(args.seed + 1)
    out = Path(args.out) / args.model if args.out else HERE / args.model
    t0, step, losses = time.perf_counter(), 0, []
    while step < args.steps and time.perf_counter() - t0 < 60 * args.minutes:
        frac = max(step / args.steps, (time.perf_counter() - t0) / (60 * args.minutes))
        cosine_lr(opt, args.lr, frac)
        x = sampler(args.batch)
        s = torch.rand(args.batch, generator=g) * args.sigma_max / 255
        y = x + s.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g)
        loss, metrics = objective.loss(reg, x, y, s.clamp_min(1e-3))
        opt.zero_grad()
        loss.backward()
        opt.step()
        project_constraints(reg)
        losses.append(metrics["data_loss"])
        step += 1
        if step % 20 == 0:
            print(f"step {step} loss {np.mean(losses[-20:]):.3e} "
                  f"t {time.perf_counter() - t0:.0f}s", flush=True)
        if step % 200 == 0:
            save_ridge(reg, args, {"steps": step, "partial": True}, out)
    wall = time.perf_counter() - t0
    info = {"steps": step, "train_wall_s": round(wall, 1),
            "final_loss": float(np.mean(losses[-50:])) if losses else None}
    if init is not None:
        info["init"] = init
    save_ridge(reg, args, info, out)
    t1 = time.perf_counter()
    info["set12_tuning"] = tune_ridge(reg, args)
    info["tune_wall_s"] = round(time.perf_counter() - t1, 1)
    return save_ridge(reg, args, info, out)


def save_ridge(reg, args, info: dict, path: Path) -> dict:
    """Checkpoint (``lipinverse.training.save_checkpoint``) with the training record."""
    from lipinverse.training import save_checkpoint

    meta = {"name": args.model, "params": sum(p.numel() for p in reg.parameters()),
            "training": {"data": "train400", "patch": args.patch, "batch": args.batch,
                         "sigma_max_x255": args.sigma_max, "t_steps": args.t, "step": args.step,
                         "lr": args.lr,
                         "tv2": args.tv2, "seed": args.seed, "minutes": args.minutes,
                         "lr_factor": args.lr_factor,
                         "objective": ("TStepDenoisingLoss (mse)" if args.objective == "tstep"
                                       else f"DEQDenoisingLoss (mse, implicit, tol "
                                            f"{args.deq_tol})"),
                         "spline_update": "projected (raw coefficients projected after "
                                          "every Adam step)"} | info}
    save_checkpoint(reg, path, metadata=meta)
    return meta


def tune_only(args) -> dict:
    """Re-run :func:`tune_ridge` on the saved (untuned) checkpoint of ``args.model``."""
    from lipinverse.training import load_checkpoint

    path = Path(args.out) / args.model if args.out else HERE / args.model
    reg, info = load_checkpoint(path, return_metadata=True)
    meta = info["metadata"]
    if "set12_tuning" in meta["training"]:
        raise ValueError(f"tune_only: {path}.json is already tuned; retrain to tune again")
    t1 = time.perf_counter()
    meta["training"]["set12_tuning"] = tune_ridge(reg, args)
    meta["training"]["tune_wall_s"] = round(time.perf_counter() - t1, 1)
    from lipinverse.training import save_checkpoint

    save_checkpoint(reg, path, metadata=meta)
    return meta


@torch.no_grad()
def tune_ridge(reg, args, sigmas=(5, 15, 25), grid=(0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)) -> dict:
    r"""Rescale :math:`\lambda(\sigma)` so that the exact denoiser is best on set12 crops.

    For each ``sigma`` the factor :math:`c` of ``grid`` maximising the mean PSNR of
    :math:`\arg\min_x \tfrac12\|x-y\|^2 + c R_\sigma(x)` on the validation crops is
    found; :math:`\log c` is interpolated linearly in :math:`\log\sigma` (constant outside)
    and added to the nodes of :math:`\log\lambda`. Only the validation folder is read.
    For a weakly convex ridge only factors with :math:`c\rho_\sigma < 1` are tried (the
    denoising objective must stay strongly convex).
    """
    val = torch.cat([_crop(x, args.val_crop) for x in load_folder(args.val)])
    found = {}
    for s in sigmas:
        y = val + (s / 255) * torch.randn(val.shape, generator=torch.Generator().manual_seed(s))
        scores = {}
        rho = max(0.0, -reg.curvature_bounds(s / 255)[0])
        for c in (c for c in grid if c * rho < 1.0):
            xh, _ = reg.solve(y, c, s / 255, tol=1e-4, max_iter=500)
            scores[c] = float(np.mean([psnr(xh[i].clamp(0, 1), val[i])
                                       for i in range(len(val))]))
        best = max(scores, key=scores.get)
        found[str(s)] = {"factor": best, "psnr": round(scores[best], 3),
                         "psnr_factor_1": round(scores[1.0], 3)}
    ls = np.log(np.array(sigmas) / 255.0)
    lc = np.log([found[str(s)]["factor"] for s in sigmas])
    lam = reg.lam
    nodes = lam.log_min + lam.spacing * np.arange(lam.num_nodes)
    shift = torch.tensor(np.interp(nodes, ls, lc), dtype=lam.values.dtype)
    lam.values.add_(shift)
    check = {}
    for s in sigmas:
        y = val + (s / 255) * torch.randn(val.shape, generator=torch.Generator().manual_seed(s))
        xh, _ = reg.solve(y, 1.0, s / 255, tol=1e-4, max_iter=500)
        check[str(s)] = round(float(np.mean([psnr(xh[i].clamp(0, 1), val[i])
                                             for i in range(len(val))])), 3)
    return {"per_sigma": found, "psnr_after": check, "crop": args.val_crop}


def _crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    r, c = (h - size) // 2, (w - size) // 2
    return x[..., r:r + size, c:c + size]


# --------------------------------------------------------------------------- lipdenoiser
def build_lipdenoiser(args) -> dict:
    r"""The shipped ``lipdenoiser``: the certified 1-Lipschitz unrolled ResNet of a trained
    convex ridge regulariser (:class:`~lipinverse.denoisers.RidgeResNetDenoiser`, ``--blocks``
    gradient-step blocks sharing the ``--ridge`` checkpoint's weights); no further training,
    validated on set12 at sigma = 5, 15, 25."""
    from lipinverse.denoisers import RidgeResNetDenoiser
    from lipinverse.training import load_checkpoint, save_checkpoint

    reg, info = load_checkpoint(args.ridge, return_metadata=True)
    model = RidgeResNetDenoiser(reg, t=args.blocks)
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        val = validate(lambda y, s: model(y, s), args)
    out = Path(args.out) / "lipdenoiser" if args.out else HERE / "lipdenoiser"
    meta = {"name": "lipdenoiser", "params": sum(p.numel() for p in model.parameters()),
            "training": {"data": "train400", "derived_from": str(Path(args.ridge).name),
                         "ridge_training": info["metadata"].get("training"),
                         "blocks": args.blocks, "set12_psnr": val,
                         "validate_wall_s": round(time.perf_counter() - t0, 1),
                         "lipschitz_bound": model.lipschitz_bound()}}
    save_checkpoint(model, out, metadata=meta)
    return meta


def _freeze(model, frozen: bool):
    """Freeze (or release) the certified step sizes and scales of every block."""
    from lipinverse.nn import Constrained, GradientStepBlock

    for mod in model.modules():
        if isinstance(mod, GradientStepBlock):
            mod.unfreeze_step()
            if frozen:
                mod.freeze_step()
        elif isinstance(mod, Constrained):
            mod.unfreeze_scale()
            if frozen:
                mod.freeze_scale()


def train_lipresnet(args) -> dict:
    r"""MSE denoising at one noise level of a certified nonexpansive ``LipschitzDenoiser``.

    Computing the certified norm bounds of every block at every step is the bulk of the
    cost on a CPU, so the step sizes and scales are frozen and recomputed from the current
    weights every ``--refresh`` steps; they are released (recomputed from the final
    weights) before saving, so the shipped certificate is that of the saved weights.
    """
    from lipinverse.denoisers import LipschitzDenoiser
    from lipinverse.training import DenoisingLoss, save_checkpoint

    torch.manual_seed(args.seed)
    model = LipschitzDenoiser(width=args.width, depth=args.depth, kernel_size=3)
    with torch.no_grad():
        # start near the identity: lifting and projection pass the image through channel 0
        # (a centred delta), the other channels get small random filters
        for w in (model.network.lift.linear.weight, model.network.project.linear.weight):
            w.mul_(0.1)
            w[0, 0].zero_()
            w[0, 0, 1, 1] = 1.0
    objective = DenoisingLoss(tv2_weight=args.tv2)
    sampler = RandomPatches(load_folder(args.train), args.patch, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed + 1)
    sigma = args.sigma / 255
    t0, step, losses = time.perf_counter(), 0, []
    while step < args.steps and time.perf_counter() - t0 < 60 * args.minutes:
        if step % args.refresh == 0:
            _freeze(model, True)
        frac = max(step / args.steps, (time.perf_counter() - t0) / (60 * args.minutes))
        cosine_lr(opt, args.lr, frac)
        x = sampler(args.batch)
        y = x + sigma * torch.randn(x.shape, generator=g)
        loss, metrics = objective.loss(model, x, y, torch.full((args.batch,), sigma))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["data_loss"])
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {np.mean(losses[-10:]):.3e} "
                  f"t {time.perf_counter() - t0:.0f}s", flush=True)
    wall = time.perf_counter() - t0
    _freeze(model, False)
    model.eval()
    out = Path(args.out) / "lipresnet" if args.out else HERE / "lipresnet"
    save_checkpoint(model, out, metadata={"partial": True})
    val = validate(lambda y, s: model(y), args, sigmas=(args.sigma,))
    meta = {"name": "lipresnet", "params": sum(p.numel() for p in model.parameters()),
            "training": {"data": "train400", "patch": args.patch, "batch": args.batch,
                         "sigma_x255": args.sigma, "lr": args.lr, "tv2": args.tv2,
                         "refresh": args.refresh, "seed": args.seed, "minutes": args.minutes,
                         "objective": "DenoisingLoss (mse)", "steps": step,
                         "train_wall_s": round(wall, 1), "set12_psnr": val,
                         "lipschitz_bound": float(model.lipschitz_bound())}}
    save_checkpoint(model, out, metadata=meta)
    return meta


# --------------------------------------------------------------------------- main
def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m lipinverse.pretrained.train",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--train", default=str(DATA / "train400"))
    p.add_argument("--val", default=str(DATA / "set12"))
    p.add_argument("--patch", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--minutes", type=float, default=20.0, help="wall-time budget")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sigma-max", type=float, default=30.0, help="max noise level (x255)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--channels", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--kernel-size", type=int, default=5)
    p.add_argument("--num-knots", type=int, default=21)
    p.add_argument("--t", type=int, default=10, help="gradient steps of the t-step loss")
    p.add_argument("--step", type=float, default=0.5,
                   help="ridge: t-step step size as a fraction of the certified 2/L (< 1)")
    p.add_argument("--tv2", type=float, default=1e-5, help="spline TV2 penalty weight")
    p.add_argument("--val-crop", type=int, default=96, help="centre crop of set12 for tuning")
    p.add_argument("--sigma", type=float, default=15.0, help="lipresnet noise level (x255)")
    p.add_argument("--refresh", type=int, default=20,
                   help="lipresnet: recompute the certified steps every N steps")
    p.add_argument("--ridge", default=str(HERE / "crr"),
                   help="lipdenoiser: the convex ridge checkpoint it is built from")
    p.add_argument("--blocks", type=int, default=20, help="lipdenoiser: gradient-step blocks")
    p.add_argument("--lr-factor", type=float, default=1.0,
                   help="ridge: learning-rate multiplier of the splines and noise functions")
    p.add_argument("--objective", choices=("tstep", "deq"), default="tstep",
                   help="ridge: t-step loss, or the loss at the exact minimiser (implicit grad)")
    p.add_argument("--deq-tol", type=float, default=1e-3,
                   help="ridge, deq: relative tolerance of the forward and backward solves")
    p.add_argument("--init", default=None,
                   help="ridge: start from this checkpoint (path without suffix) instead")
    p.add_argument("--out", default=None, help="output folder (default: this package)")
    p.add_argument("--tune-only", action="store_true",
                   help="only tune lambda(sigma) of the saved, untuned crr/wcrr checkpoint")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    fn = {"dncnn": train_dncnn, "crr": train_ridge, "wcrr": train_ridge,
          "lipdenoiser": build_lipdenoiser, "lipresnet": train_lipresnet}[args.model]
    if args.tune_only:
        fn = tune_only
    cfg = fn(args)
    print(json.dumps(cfg, indent=2))


if __name__ == "__main__":
    main()
