"""LipschitzResNetRegularizer: 1-Lipschitz values, autograd gradient, adversarial training."""

import pytest
import torch

from lipinverse.regularizers import LipschitzResNetRegularizer
from lipinverse.training import AdversarialLoss, PatchDataset, TrainConfig, Trainer


def tiny():
    torch.manual_seed(0)
    return LipschitzResNetRegularizer(width=4, depth=2).double()


def test_contract_and_certificates():
    R = LipschitzResNetRegularizer()
    x = torch.rand(3, 1, 12, 12)
    assert R.value(x).shape == (3,) and R(x).shape == (3,)
    assert R.grad(x).shape == x.shape
    assert R.grad_lipschitz is None and R.convex is False and R.weak_convexity is None
    assert not hasattr(R, "lipschitz_bound")  # a regulariser, not a denoiser, for the solvers
    assert R.value_lipschitz_bound() <= 1.0
    with pytest.raises(ValueError, match="LipschitzResNetRegularizer.grad: expected input"):
        R.grad(torch.rand(1, 2, 8, 8))


def test_values_are_lipschitz_and_gradients_bounded():
    R = tiny()
    with torch.no_grad():  # push the weights around
        for p in R.parameters():
            p.add_(0.5 * torch.randn_like(p))
    L = R.value_lipschitz_bound()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 8, 8, generator=g, dtype=torch.float64)
    y = x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert ((R.value(x) - R.value(y)).abs() <= L * (x - y).flatten(1).norm(dim=1) + 1e-12).all()
    assert (R.grad(x).flatten(1).norm(dim=1) <= L + 1e-12).all()
    # gradient against central finite differences
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    eps = 1e-6
    fd = (R.value(x + eps * v) - R.value(x - eps * v)) / (2 * eps)
    torch.testing.assert_close((R.grad(x) * v).flatten(1).sum(1), fd, rtol=1e-5, atol=1e-7)


def test_grad_is_differentiable_in_the_weights_when_asked():
    R = tiny()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    g = R.grad(x)
    assert g.requires_grad
    g.pow(2).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in R.parameters())
    assert not R.grad(x.detach()).requires_grad


def test_adversarial_training_separates_clean_from_noisy():
    g = torch.Generator().manual_seed(0)
    imgs = torch.nn.functional.interpolate(torch.rand(4, 1, 4, 4, generator=g), scale_factor=8)
    data = PatchDataset(imgs, patch_size=16, stride=8)
    torch.manual_seed(0)
    R = LipschitzResNetRegularizer(width=4, depth=2)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=2e-2, steps_per_epoch=5, progress=False,
                      sigma_range=(0.1, 0.2), val_sigma=0.15)
    hist = Trainer(R, AdversarialLoss(), cfg, data, list(imgs[:2])).fit()
    # val_loss = E R(clean) - E R(noisy): decreases (the critic separates better)
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert R.value_lipschitz_bound() <= 1.0


def test_in_pgd_with_backtracking():
    from lipinverse import solvers
    from lipinverse.functionals import L2Fidelity
    from operators import Blur

    R = tiny().requires_grad_(False)
    A = Blur(torch.ones(3, 3, dtype=torch.float64) / 9, padding="circular", in_shape=(1, 8, 8))
    A = A.double()
    y = A(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    res = solvers.PGD(L2Fidelity(A, y), R, 0.1, scheme="grad").solve(max_iter=30, tol=1e-8)
    obj = res.history.objective  # (K, B): backtracking keeps it decreasing
    assert obj is not None and obj.shape[0] > 1
    assert (obj[1:] <= obj[:-1] + 1e-12).all()
    assert torch.isfinite(res.x).all()
