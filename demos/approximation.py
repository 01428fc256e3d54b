r"""Approximating scalar 1-Lipschitz functions in 2-D with certified 1-Lipschitz ResNets.

The model (``lipinverse.nn.LipschitzResNet(dense=True, output="scalar")``) is

.. math::

    R(x) = w^\top F_L(\cdots F_1(Ax)) + c, \qquad
    F_i(z) = z - h_i W_i^\top\sigma_i(W_i z + b_i),\quad h_i = 2/\beta(W_i)^2,

with :math:`\|A\|, \|w\| \le 1` (certified), :math:`\sigma_i` learnable linear splines with
slopes in :math:`[0, 1]`, and a free constant :math:`c`; ``certify`` proves
:math:`\mathrm{Lip}(R) \le 1` for every parameter value.  Two targets on :math:`[-1, 1]^2`:

* a piecewise-affine 1-Lipschitz function
  :math:`f_1(x) = \max\{\min(0.6x_1 + 0.8x_2,\ 0.3 - |x_1|),\ 0.6x_1 - 0.8x_2 - 0.5\}`;
* the distance to a set (a circle of radius 0.5 and the point (0.7, -0.7)),
  :math:`f_2(x) = \min(|\,\|x\| - 0.5\,|,\ \|x - p\|)`.

Both are fitted at fixed width with growing depth; the figure shows the error against
depth.  Then, following the exact-representation statement of Murari, Furuya and
Schönlieb (2025) for piecewise-affine 1-Lipschitz functions, weights are set by hand so
that the network *is* :math:`|x_1|`, :math:`\max(u, v)` for two affine functions with unit
gradients, and :math:`|\,|x_1| - 0.5\,|` (two blocks); the maximal error on a grid is at
the level of float64 rounding, while ``certify`` still returns :math:`1 + O(10^{-10})`
(the certificate's safety margin for floating-point rounding).

Usage::

    python demos/approximation.py                  # about 30 s on a laptop CPU
    python demos/approximation.py --depths 1 2 4 8 16 --steps 800 --out approx.png
"""

from __future__ import annotations

import argparse
import time

import torch

from lipinverse.nn import LipschitzResNet, certify


def target_piecewise_affine(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\max\{\min(0.6x_1+0.8x_2,\ 0.3-|x_1|),\ 0.6x_1-0.8x_2-0.5\}` (1-Lipschitz)."""
    x1, x2 = x[:, 0], x[:, 1]
    inner = torch.minimum(0.6 * x1 + 0.8 * x2, 0.3 - x1.abs())
    return torch.maximum(inner, 0.6 * x1 - 0.8 * x2 - 0.5)


def target_distance(x: torch.Tensor) -> torch.Tensor:
    r"""Distance to the union of the circle :math:`\|x\|=0.5` and the point (0.7, -0.7)."""
    p = torch.tensor([0.7, -0.7], dtype=x.dtype)
    return torch.minimum((x.norm(dim=1) - 0.5).abs(), (x - p).norm(dim=1))


TARGETS = {"piecewise affine": target_piecewise_affine, "distance to a set": target_distance}


class Fitted(torch.nn.Module):
    """A scalar 1-Lipschitz ResNet plus a free additive constant."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.net = LipschitzResNet(in_channels=2, width=width, depth=depth, dense=True,
                                   output="scalar")
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.offset


def grid(n: int = 101) -> torch.Tensor:
    t = torch.linspace(-1.0, 1.0, n)
    g1, g2 = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([g1.reshape(-1), g2.reshape(-1)], dim=1)


def fit(target, width: int, depth: int, steps: int, batch: int = 256, lr: float = 3e-2,
        seed: int = 0) -> dict:
    """Fit ``target`` by Adam on uniform samples; returns errors on a grid and the bound."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Fitted(width, depth)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    for _ in range(steps):
        x = 2 * torch.rand(batch, 2, generator=gen) - 1
        loss = (model(x) - target(x)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        xg = grid()
        err = model(xg) - target(xg)
    return {"rmse": float(err.pow(2).mean().sqrt()), "max_error": float(err.abs().max()),
            "certified_lipschitz": certify(model.net)}


# ----------------------------------------------------------------------------- exact weights
def _set_identity_spline(spline, fn) -> None:
    """Set every channel's knot values to ``fn(knots)`` (a piecewise-linear function whose
    kinks lie on knots is then reproduced exactly)."""
    with torch.no_grad():
        spline.coefficients.copy_(fn(spline.knots()).expand_as(spline.coefficients))


def _freeze_exact(net, steps) -> None:
    """Use the exact steps ``h_i`` of the construction and unit scales for the isometric
    lifting/projection (their certified bounds are 1 + 1e-10 because of the rounding margin)."""
    for block, h in zip(net.blocks, steps, strict=True):
        block.frozen_step = torch.tensor(h, dtype=torch.float64)
    for m in (net.lift, net.project):
        m.frozen_scale = torch.tensor(1.0, dtype=torch.float64)


def exact_abs() -> LipschitzResNet:
    r""":math:`|x_1|`: lift :math:`x\mapsto x_1`, one block :math:`F(z) = z - 2\,\mathrm{ReLU}(z)
    = -|z|`, output weight :math:`w = -1`."""
    net = LipschitzResNet(in_channels=2, width=1, depth=1, dense=True, output="scalar").double()
    with torch.no_grad():
        net.lift.linear.weight.copy_(torch.tensor([[1.0, 0.0]]))
        net.blocks[0].linear.weight.fill_(1.0)
        net.blocks[0].bias.zero_()
        net.project.linear.weight.fill_(-1.0)
    _set_identity_spline(net.blocks[0].activation, lambda t: t.clamp(min=0))
    _freeze_exact(net, [2.0])
    return net


def exact_max(a, b) -> tuple[LipschitzResNet, callable]:
    r""":math:`\max(a\cdot x, b\cdot x)` with :math:`|a| = |b| = 1`: with :math:`p = (a+b)/2`,
    :math:`q = (a-b)/2` (orthogonal, :math:`|p|^2+|q|^2 = 1`),
    :math:`\max = p\cdot x + |q\cdot x|`; lift to :math:`(\hat p\cdot x, \hat q\cdot x)`, one
    block giving :math:`(z_1, -|z_2|)`, output :math:`w = (|p|, -|q|)`, :math:`\|w\| = 1`."""
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    p, q = (a + b) / 2, (a - b) / 2
    net = LipschitzResNet(in_channels=2, width=2, depth=1, hidden=1, dense=True,
                          output="scalar").double()
    with torch.no_grad():
        net.lift.linear.weight.copy_(torch.stack([p / p.norm(), q / q.norm()]))
        net.blocks[0].linear.weight.copy_(torch.tensor([[0.0, 1.0]]))
        net.blocks[0].bias.zero_()
        net.project.linear.weight.copy_(torch.stack([p.norm(), -q.norm()])[None])
    _set_identity_spline(net.blocks[0].activation, lambda t: t.clamp(min=0))
    _freeze_exact(net, [2.0])
    return net, (lambda x: torch.maximum(x @ a.to(x.dtype), x @ b.to(x.dtype)))


def exact_w_shape() -> LipschitzResNet:
    r""":math:`|\,|x_1| - 0.5\,|` with two blocks: :math:`F_1(z) = -|z|` and
    :math:`F_2(z) = z - 2\sigma(z)` with the spline :math:`\sigma(t) = \mathrm{ReLU}(t+0.5) -
    0.25`, so :math:`F_2(z) = -|z + 0.5|`; output :math:`w = -1`."""
    net = LipschitzResNet(in_channels=2, width=1, depth=2, dense=True, output="scalar").double()
    with torch.no_grad():
        net.lift.linear.weight.copy_(torch.tensor([[1.0, 0.0]]))
        for block in net.blocks:
            block.linear.weight.fill_(1.0)
            block.bias.zero_()
        net.project.linear.weight.fill_(-1.0)
    _set_identity_spline(net.blocks[0].activation, lambda t: t.clamp(min=0))
    _set_identity_spline(net.blocks[1].activation, lambda t: (t + 0.5).clamp(min=0) - 0.25)
    _freeze_exact(net, [2.0, 2.0])
    return net


def exact_representations() -> dict:
    """Max grid error and certificate of each hand-built exact network."""
    with torch.no_grad():
        xg = grid(201).to(torch.float64)
        cases = {"|x1|": (exact_abs(), lambda x: x[:, 0].abs())}
        a = (0.6, 0.8)
        b = (0.8, -0.6)
        cases["max(a.x, b.x)"] = exact_max(a, b)
        cases["||x1| - 0.5|"] = (exact_w_shape(), lambda x: (x[:, 0].abs() - 0.5).abs())
        out = {}
        for name, (net, f) in cases.items():
            out[name] = {"max_error": float((net(xg) - f(xg)).abs().max()),
                         "certified_lipschitz": certify(net)}
        return out


# ----------------------------------------------------------------------------- driver
def plot(results: dict, depths, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, rows in results.items():
        ax.semilogy(depths, [r["rmse"] for r in rows], "o-", label=f"{name} (RMSE)")
        ax.semilogy(depths, [r["max_error"] for r in rows], "s--", label=f"{name} (max)")
    ax.set_xlabel("depth (number of gradient-step blocks)")
    ax.set_ylabel("error on a 101x101 grid")
    ax.set_title("Certified 1-Lipschitz ResNets, fixed width")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(depths=(1, 2, 4, 8), steps: int = 400, width: int = 8,
         out: str | None = "approximation.png", seed: int = 0) -> dict:
    """Fit both targets at every depth, plot, and check the exact representations.

    Returns ``{"fits": {target: [row per depth]}, "exact": {...}, "seconds": float}``.
    """
    t0 = time.perf_counter()
    depths = list(depths)
    fits = {}
    for name, target in TARGETS.items():
        fits[name] = []
        for d in depths:
            row = fit(target, width, d, steps, seed=seed)
            fits[name].append(row)
            print(f"{name:18s} depth {d:2d}: RMSE {row['rmse']:.4f}  max {row['max_error']:.4f}"
                  f"  certified Lip {row['certified_lipschitz']:.6f}")
    exact = exact_representations()
    for name, row in exact.items():
        print(f"exact {name:14s}: max error {row['max_error']:.1e}  "
              f"certified Lip {row['certified_lipschitz']:.10f}")
    if out:
        plot(fits, depths, out)
        print(f"wrote {out}")
    return {"fits": fits, "exact": exact, "seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="approximation.png")
    args = p.parse_args()
    res = main(args.depths, args.steps, args.width, args.out, args.seed)
    print(f"done in {res['seconds']:.1f} s")
