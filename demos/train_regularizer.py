r"""Train a small convex ridge regulariser on your images, then deblur with it.

The regulariser (:class:`lipinverse.regularizers.ConvexRidge`, CRR-NN style) is

.. math:: R_\sigma(x) = \frac{\lambda(\sigma)}{\mu(\sigma)}\sum_{c,p}\psi_c(\mu(\sigma)(Wx)_{c,p}),

learned filters :math:`W` (certified :math:`\|W\|\le1`) and learned convex potentials
:math:`\psi_c` (initialised as Huber functions), trained on image patches as a
multi-noise denoiser: the minimiser of :math:`\tfrac12\|x-y\|^2 + R_\sigma(x)`, with
:math:`\sigma` drawn per patch, must recover the clean patch
(:class:`lipinverse.training.DEQDenoisingLoss`, fixed point without gradient, then
Jacobian-free backpropagation through one gradient step).  The trained prior then deblurs a
held-out image by accelerated gradient descent on

.. math:: \tfrac12\|k * x - y\|^2 + R_{\sigma'}(x),

a convex problem with a certified step size, next to total variation (FISTA).  The
strengths (:math:`\lambda` for TV; the conditioning level :math:`\sigma'` and a weight
for the ridge) are picked from small grids by PSNR on the test image (an oracle, for
both).  The prior is small and briefly trained: on the cartoon-like ``camera`` image TV
stays ahead (see the measured figures in the returned dict); longer training on more
data (``lipinverse/pretrained``) is what beats it.

Default training data: images that scikit-image ships (``astronaut``, ``coffee``,
``chelsea``, ``rocket``, ``clock``, ``coins``, converted to grayscale); test image:
``camera``.  ``--images DIR`` trains on your own folder instead (e.g.
``../shared/data/train400``).  Runs in a few minutes on a laptop CPU::

    python demos/train_regularizer.py                 # built-in images
    python demos/train_regularizer.py --images DIR    # your own images
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lipinverse import metrics
from lipinverse.allocator import reuse_buffers

TRAIN_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "clock", "coins")
TEST_IMAGE = "camera"


def builtin_gray(name: str) -> torch.Tensor:
    """A scikit-image sample image as a ``(1, H, W)`` float tensor in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    img = img_as_float(getattr(skimage.data, name)())
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    return torch.from_numpy(np.asarray(img, dtype=np.float32))[None]


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    size = min(size, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


def psnr(x: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR of the reconstruction clipped to [0, 1], over the whole batch."""
    return float(metrics.psnr(x.clamp(0, 1).reshape(1, -1), truth.reshape(1, -1))[0])


def train(images=None, *, epochs: int = 4, steps_per_epoch: int = 75, batch_size: int = 16,
          patch_size: int = 40, seed: int = 0, checkpoint_dir: str | None = None,
          progress: bool = True):
    """Train a small :class:`ConvexRidge`; returns ``(model, history, seconds)``."""
    from lipinverse.regularizers import ConvexRidge
    from lipinverse.training import (
        DEQDenoisingLoss,
        PatchDataset,
        TrainConfig,
        Trainer,
        seed_everything,
    )

    if images is None:
        source = [builtin_gray(n) for n in TRAIN_IMAGES]
        scales = (0.5,)
    else:
        source, scales = str(images), (1.0,)
    data = PatchDataset(source, patch_size=patch_size, stride=patch_size // 2, scales=scales,
                        seed=seed)
    val = [center_crop(builtin_gray(TRAIN_IMAGES[0]), 96)]
    seed_everything(seed)
    model = ConvexRidge(channels=(1, 4, 16), kernel_size=5, num_knots=21, spline_init="clip")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-2, lr_schedule="cosine",
                         steps_per_epoch=steps_per_epoch, sigma_range=(1 / 255, 30 / 255),
                         val_sigma=15 / 255, seed=seed, checkpoint_dir=checkpoint_dir,
                         progress=progress)
    objective = DEQDenoisingLoss(backward="jfb", tol=1e-3, max_iter=100, tv2_weight=1e-4)
    t0 = time.perf_counter()
    history = Trainer(model, objective, config, train_data=data, val_data=val).fit()
    return model.eval().requires_grad_(False), history, time.perf_counter() - t0


def deblur(model, *, size: int = 128, noise: float = 0.01, blur: float = 1.5,
           max_iter: int = 500, seed: int = 0, grid=(0.5, 1.0, 2.0, 4.0),
           ridge_weights=(0.3, 1.0)) -> dict:
    """Deblur the test image with TV and with ``model``; returns PSNRs and details."""
    from lipinverse.functionals import L2Fidelity
    from lipinverse.regularizers import TV
    from lipinverse.solvers import PGD
    from operators import Blur
    from operators.kernels import gaussian

    truth = center_crop(builtin_gray(TEST_IMAGE), 2 * size)
    truth = torch.nn.functional.avg_pool2d(truth[None], 2)  # downscale by 2
    A = Blur(gaussian(blur), padding="circular")
    g = torch.Generator().manual_seed(seed)
    y = A(truth) + noise * torch.randn(truth.shape, generator=g)
    f = L2Fidelity(A, y)
    out = {"observation": {"psnr": psnr(y, truth)}}
    best = None
    for c in grid:  # TV strength lam = c * 5 * noise^2 (the deblur demo's rule, scaled)
        res = PGD(f, TV(), lam=c * 5.0 * noise ** 2, accelerate=True).solve(
            max_iter=max_iter, tol=1e-5, track_objective=False)
        p = psnr(res.x, truth)
        if best is None or p > best[0]:
            best = (p, c, res)
    out["TV"] = {"psnr": best[0], "factor": best[1], "guarantee": str(best[2].guarantee)}
    best = None
    with torch.no_grad():
        for c in grid[:3]:  # ridge prior at the conditioning level sigma' = c * noise
            for w in ridge_weights:  # and weight w: 1/2||Ax - y||^2 + w R_sigma'(x)
                prior = model.at_sigma(c * noise)
                res = PGD(f, prior, lam=w, scheme="grad", accelerate=True).solve(
                    max_iter=max_iter, tol=1e-5, track_objective=False)
                p = psnr(res.x, truth)
                if best is None or p > best[0]:
                    best = (p, (c, w), res)
    out["learned ridge"] = {"psnr": best[0], "factor": best[1], "guarantee": str(best[2].guarantee),
                            "grad_lipschitz": model.at_sigma(best[1][0] * noise).grad_lipschitz,
                            "iterations": int(best[2].iterations.max())}
    return out


def main(images=None, epochs: int = 4, steps_per_epoch: int = 75, max_iter: int = 500,
         size: int = 128, out: str | None = None, seed: int = 0, progress: bool = True,
         batch_size: int = 16, patch_size: int = 40) -> dict:
    """Train, deblur, print a table; returns the figures (for tests and scripts).

    Parameters
    ----------
    images : str, optional
        Folder of training images; default: scikit-image's sample images.
    epochs, steps_per_epoch, batch_size, patch_size :
        Training length and batch (see :class:`lipinverse.training.TrainConfig`).
    max_iter : int
        Iteration cap of the deblurring solvers.
    size : int
        Side of the test image.
    out : str, optional
        Folder for the checkpoint (``last`` / ``best``); nothing is written if ``None``.
    """
    model, history, seconds = train(images, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                    batch_size=batch_size, patch_size=patch_size, seed=seed,
                                    checkpoint_dir=out, progress=progress)
    results = deblur(model, size=size, max_iter=max_iter, seed=seed)
    print(f"\ntrained {type(model).__name__} in {seconds:.1f} s; validation PSNR at "
          f"sigma=15/255: {history[0].get('val_psnr', float('nan')):.2f} -> "
          f"{history[-1].get('val_psnr', float('nan')):.2f} dB")
    print(f"deblurring {TEST_IMAGE} ({size}x{size}), gaussian blur 1.5, noise 0.01:")
    for name, r in results.items():
        extra = f"  (strength factor {r['factor']})" if "factor" in r else ""
        print(f"  {name:<14} {r['psnr']:6.2f} dB{extra}")
    print(f"  guarantee [learned ridge]: {' '.join(results['learned ridge']['guarantee'].split())}")
    return {"train_seconds": seconds, "history": history, **results}


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default=None, help="folder of training images (default: "
                   "scikit-image's sample images)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=75)
    p.add_argument("--max-iter", type=int, default=500, help="deblurring iteration cap")
    p.add_argument("--size", type=int, default=128, help="side of the test image")
    p.add_argument("--out", default=None, help="folder for the checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    a = _parse()
    reuse_buffers()  # freed tensor buffers reused: about 2x faster on the CPU
    main(a.images, a.epochs, a.steps_per_epoch, a.max_iter, a.size, a.out, a.seed,
         not a.no_progress)
