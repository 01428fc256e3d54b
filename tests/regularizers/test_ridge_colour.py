"""Grey ridge priors on colour images: opponent transform, per-channel prior, same certificates."""

from pathlib import Path

import pytest
import torch

from lipinverse.regularizers import ConvexRidge, WeakConvexRidge
from lipinverse.regularizers.colour import colour_transform, fold, unfold

SIGMA = 20 / 255


def model(cls, seed=0):
    torch.manual_seed(seed)
    R = cls(channels=(1, 3, 6), kernel_size=3, num_knots=11).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in R.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        R.strength.values.add_(2.0)
    return R


def test_transform_is_orthonormal_and_fold_inverts():
    q = colour_transform(3)
    torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64))
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(unfold(fold(x), 3), x)
    assert fold(x).shape == (6, 1, 5, 4)
    # the first opponent channel is the (scaled) luminance mean
    torch.testing.assert_close(fold(x)[0, 0], x[0].sum(0) / 3 ** 0.5)


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_colour_value_grad_and_certificates(cls):
    R = model(cls)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    u = fold(x)
    per = R.value(u, SIGMA).reshape(2, 3).sum(1)
    torch.testing.assert_close(R.value(x, SIGMA), per)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(R.value(xr, SIGMA).sum(), xr)
    torch.testing.assert_close(R.grad(x, SIGMA), g)
    # the dense Hessian of the colour prior lies within the grey certificate
    lo, hi = R.curvature_bounds(SIGMA)
    x1 = x[:1]
    H = torch.autograd.functional.jacobian(
        lambda z: R.grad(z.reshape(x1.shape), SIGMA).reshape(-1), x1.reshape(-1))
    ev = torch.linalg.eigvalsh(0.5 * (H + H.T))
    assert float(ev.max()) <= hi * (1 + 1e-9) + 1e-12
    assert float(ev.min()) >= lo * (1 + 1e-9) - 1e-12


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_colour_solve_is_certified(cls):
    R = model(cls, seed=2)
    g = torch.Generator().manual_seed(3)
    clean = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
    y = clean + SIGMA * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    sig = torch.tensor([SIGMA, 2 * SIGMA], dtype=torch.float64)
    ref, info_ref = R.solve(y, 1.0, sig, tol=1e-12, max_iter=20000)
    assert bool(info_ref.converged.all())
    # the minimiser: gradient of 1/2|x - y|^2 + R(x) vanishes
    with torch.no_grad():
        assert float((ref - y + R.grad(ref, sig)).abs().max()) < 1e-9
    for method in ("fista", "anderson"):
        x, info = R.solve(y, 1.0, sig, tol=1e-4, method=method)
        dist = (x - ref).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
        assert bool((dist <= 1e-4).all()) and bool(info.converged.all())
        assert info.iterations.shape == (2,)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        R.solve(y, 1.0, torch.ones(3) * SIGMA)


def test_shipped_prior_denoises_a_colour_photo():
    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "set5_colour"
    if not path.is_dir():
        pytest.skip(f"colour test images not found at {path} (see ../shared/data/README.md)")
    from skimage.io import imread

    from lipinverse import pretrained

    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        pytest.skip(f"no PNG in {path}")
    img = torch.from_numpy(imread(files[0])[..., :3] / 255.0)
    h, w = img.shape[:2]
    clean = img[h // 2 - 48:h // 2 + 48, w // 2 - 48:w // 2 + 48].permute(2, 0, 1)[None]
    clean = clean.float().contiguous()
    g = torch.Generator().manual_seed(0)
    y = clean + 25 / 255 * torch.randn(clean.shape, generator=g)
    x = pretrained.load("crr").denoise(y, 25 / 255)
    assert x.shape == y.shape

    def psnr(a):
        return float(10 * torch.log10(1 / (a - clean).pow(2).mean()))

    assert psnr(x) > psnr(y) + 5.0, (psnr(x), psnr(y))
