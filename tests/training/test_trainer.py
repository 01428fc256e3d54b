"""Trainer and objectives: learning, seeding, resume, implicit gradients."""

import dataclasses

import pytest
import torch

from lipinverse.regularizers import ConvexRidge, WeakConvexRidge
from lipinverse.training import (
    DEQDenoisingLoss,
    PatchDataset,
    TrainConfig,
    Trainer,
    TStepDenoisingLoss,
    load_checkpoint,
    seed_everything,
)
from operators.linalg import conjugate_gradient


def data():
    g = torch.Generator().manual_seed(0)
    # piecewise-constant images: easy to denoise, so learning shows within a few steps
    base = torch.rand(4, 1, 4, 4, generator=g)
    imgs = torch.nn.functional.interpolate(base, scale_factor=8, mode="nearest")
    return PatchDataset(imgs, patch_size=16, stride=8), [imgs[0], imgs[1]]


def ridge(cls=ConvexRidge):
    seed_everything(0)
    return cls(channels=(1, 3, 6), kernel_size=3, num_knots=11)


def config(**kw):
    base = dict(epochs=2, batch_size=6, lr=2e-2, steps_per_epoch=4, progress=False,
                sigma_range=(10 / 255, 30 / 255), val_sigma=20 / 255, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_short_training_lowers_the_validation_loss(tmp_path):
    ds, val = data()
    tr = Trainer(ridge(), TStepDenoisingLoss(t=5, tv2_weight=1e-4), config(
        epochs=3, checkpoint_dir=str(tmp_path)), ds, val)
    hist = tr.fit()
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert hist[-1]["val_loss"] < 0.8 * hist[0]["val_loss"]
    assert hist[-1]["val_psnr"] > hist[0]["val_psnr"]
    assert {"train_loss", "train_tv2", "seconds", "step"} <= set(hist[-1])
    best = load_checkpoint(tmp_path / "best")
    last = load_checkpoint(tmp_path / "last")
    assert torch.equal(weights(last), weights(tr.model))
    assert isinstance(best, ConvexRidge)
    # the certificate still holds after training (dense Hessian, float64)
    m = last.double()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    H = torch.autograd.functional.jacobian(lambda z: m.grad(z.reshape(x.shape)).reshape(-1),
                                           x.reshape(-1))
    assert torch.linalg.eigvalsh(0.5 * (H + H.T)).max() <= m.grad_lipschitz * (1 + 1e-9)


def test_same_seed_gives_the_same_weights():
    ds, val = data()
    a = Trainer(ridge(WeakConvexRidge), TStepDenoisingLoss(t=3), config(), ds, val)
    b = Trainer(ridge(WeakConvexRidge), TStepDenoisingLoss(t=3), config(), ds, val)
    a.fit()
    b.fit()
    assert torch.equal(weights(a.model), weights(b.model))
    c = Trainer(ridge(WeakConvexRidge), TStepDenoisingLoss(t=3), config(seed=4), ds, val)
    c.fit()
    assert not torch.equal(weights(a.model), weights(c.model))


def test_resume_continues_exactly(tmp_path):
    ds, val = data()
    full = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    full.fit()
    half = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=1), ds, val)
    half.fit()
    half.save(tmp_path / "half")
    seed_everything(123)  # a different initialisation is overwritten by resume
    rest = Trainer(ConvexRidge(channels=(1, 3, 6), kernel_size=3, num_knots=11),
                   TStepDenoisingLoss(t=3), config(epochs=2), ds, val).resume(tmp_path / "half")
    assert rest.epoch == 1 and rest.step == 4
    rest.fit()
    assert torch.equal(weights(rest.model), weights(full.model))
    assert len(rest.history) == len(full.history)


@pytest.mark.parametrize("solver", ["anderson", "lbfgs"])
def test_deq_implicit_gradient_matches_differentiating_a_converged_unroll(solver):
    torch.set_default_dtype(torch.float64)
    try:
        R = ridge(WeakConvexRidge)
        with torch.no_grad():
            for p in R.parameters():
                p.add_(0.3 * torch.randn_like(p))
        g = torch.Generator().manual_seed(1)
        clean = torch.rand(2, 1, 8, 8, generator=g)
        sigma = torch.tensor([0.05, 0.1])
        noisy = clean + sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=g)
        obj = DEQDenoisingLoss(tol=1e-12, max_iter=5000, cg_tol=1e-12, cg_max_iter=500,
                               solver=solver)
        loss, metrics = obj.loss(R, clean, noisy, sigma)
        implicit = torch.autograd.grad(loss, list(R.parameters()), allow_unused=True)
        unrolled = R.gradient_steps(noisy, sigma, 400, step=0.5)
        ref_loss = (unrolled - clean).pow(2).flatten(1).mean(1).mean()
        assert abs(float(loss.detach()) - float(ref_loss.detach())) < 1e-10
        ref = torch.autograd.grad(ref_loss, list(R.parameters()), allow_unused=True)
        for a, b in zip(implicit, ref, strict=True):
            if b is None:
                continue
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-10)
        assert metrics["fixed_point_iterations"] > 1
    finally:
        torch.set_default_dtype(torch.float32)


def test_conjugate_gradient_solves_spd_systems():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)
    A = M @ M.transpose(1, 2) + torch.eye(5, dtype=torch.float64)
    b = torch.randn(2, 5, generator=g, dtype=torch.float64)
    x, its = conjugate_gradient(lambda v: (A @ v.unsqueeze(-1)).squeeze(-1), b, tol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(A, b))
    assert its <= 6


def test_batched_conjugate_gradient_stops_each_sample_on_its_own():
    """Per-sample stopping: a well-conditioned sample stops early (its products are no
    longer computed), every sample still meets the tolerance."""
    g = torch.Generator().manual_seed(1)
    n = 30
    M = torch.randn(3, n, n, generator=g, dtype=torch.float64)
    A = M @ M.transpose(1, 2) + torch.eye(n, dtype=torch.float64)
    A[0] = 2.0 * torch.eye(n, dtype=torch.float64)  # one CG step solves it
    b = torch.randn(3, n, generator=g, dtype=torch.float64)
    seen = []

    def apply(v, idx):
        seen.append(idx.tolist())
        return (A[idx] @ v.unsqueeze(-1)).squeeze(-1)

    x, its = conjugate_gradient(apply, b, tol=1e-10, max_iter=200, batched=True)
    r = b - (A @ x.unsqueeze(-1)).squeeze(-1)
    assert bool((r.norm(dim=1) <= 1e-10 * b.norm(dim=1) * (1 + 1e-6)).all())
    assert seen[0] == [0, 1, 2] and seen[-1] == [1, 2] or seen[-1] == [2] or seen[-1] == [1]
    assert sum(0 in s for s in seen) == 1 and its == len(seen)
    full, _ = conjugate_gradient(lambda v: (A @ v.unsqueeze(-1)).squeeze(-1), b, tol=1e-10,
                                 max_iter=200)
    torch.testing.assert_close(x, full, rtol=1e-8, atol=1e-8)


def test_config_and_trainer_errors():
    with pytest.raises(ValueError, match="TrainConfig: expected epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="sigma_range"):
        TrainConfig(sigma_range=(0.2, 0.1))
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(ridge(), TStepDenoisingLoss(), {"epochs": 1}, data()[0])
    with pytest.raises(ValueError, match="train_data or TrainConfig.train_images"):
        Trainer(ridge(), TStepDenoisingLoss(), config())
    with pytest.raises(ValueError, match="fewer than batch_size"):
        Trainer(ridge(), TStepDenoisingLoss(), config(batch_size=500), data()[0])
    cfg = config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0


def test_training_keeps_every_raw_spline_slope_feasible():
    # projected gradient: after each step the raw coefficients lie on the constraint set, so
    # no slope sits outside [lo, hi] where the clamp would freeze it
    ds, val = data()
    tr = Trainer(ridge(WeakConvexRidge), TStepDenoisingLoss(t=3), config(lr=0.5, epochs=1),
                 ds, val)
    tr.fit()
    from lipinverse.nn import LipschitzSpline

    splines = [m for m in tr.model.modules() if isinstance(m, LipschitzSpline)]
    assert len(splines) == 2
    for s in splines:
        raw = torch.diff(s.coefficients, dim=1) / s.spacing
        lo, hi = s.slope_bounds
        assert raw.min() >= lo - 1e-5 and raw.max() <= hi + 1e-5
        torch.testing.assert_close(s.coefficients, s.projected_coefficients().detach())


def test_resume_mid_epoch_is_bit_for_bit(tmp_path):
    """Stopped anywhere (here after 3 of 4 steps of an epoch), saved, resumed in a new
    Trainer: the same weights, Adam state and history as the run that never stopped."""
    ds, val = data()
    full = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    full.fit()
    part = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    part.history.append({"epoch": 0, **part.validate()})
    for _ in range(3):
        part._timed_step()
    part.save(tmp_path / "last")
    torch.manual_seed(99)  # resume restores torch's RNG state too
    rest = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    rest.resume(tmp_path / "last")
    assert rest.step == 3
    rest.fit()
    assert torch.equal(weights(rest.model), weights(full.model))
    for pa, pb in zip(rest.model.parameters(), full.model.parameters(), strict=True):
        sa, sb = rest.optimizer.state[pa], full.optimizer.state[pb]
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"]) and torch.equal(sa["step"],
                                                                                sb["step"])
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in rest.history] == strip
    csv = (tmp_path / "history.csv").read_text().splitlines()
    assert csv[0].startswith("epoch,") and len(csv) == 2  # header + epoch 0 at the save


def test_wall_time_budget_stops_and_saves(tmp_path):
    ds, val = data()
    tr = Trainer(ridge(), TStepDenoisingLoss(t=3), config(
        epochs=2, minutes=1e-7, checkpoint_dir=str(tmp_path)), ds, val)
    tr.fit()
    assert tr.stopped_early and not tr.finished and tr.step < tr.total_steps
    meta = load_checkpoint(tmp_path / "last", return_metadata=True)[1]["metadata"]
    assert meta["step"] == tr.step and "rng_state" in meta


@pytest.mark.parametrize("strength_prefix", ["strength.", "lam."])  # lam.: former name
def test_lr_factors_make_parameter_groups(strength_prefix):
    ds, val = data()
    cfg = config(lr=1e-2, lr_factors={"convex_spline.": 3.0, strength_prefix: 0.5})
    tr = Trainer(ridge(), TStepDenoisingLoss(t=3), cfg, ds, val)
    by_factor = {g["lr_factor"]: g for g in tr.optimizer.param_groups}
    assert set(by_factor) == {1.0, 3.0, 0.5}
    spline = tr.model.convex_spline.coefficients
    assert any(p is spline for p in by_factor[3.0]["params"])
    assert [p for p in by_factor[0.5]["params"]] == [tr.model.strength.values]
    tr.train_step()
    assert by_factor[3.0]["lr"] == pytest.approx(3e-2)
    assert by_factor[0.5]["lr"] == pytest.approx(5e-3)
    with pytest.raises(ValueError, match="lr_factors"):
        config(lr_factors={"W.": -1.0})


def test_ctrl_c_saves_the_last_complete_step_and_resume_continues(tmp_path):
    ds, val = data()
    full = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    full.fit()

    class Interrupting(TStepDenoisingLoss):
        calls = 0

        def loss(self, model, clean, noisy, sigma):
            Interrupting.calls += 1
            if Interrupting.calls == 6:  # during the 6th step's loss: steps 0-4 are done
                raise KeyboardInterrupt
            return super().loss(model, clean, noisy, sigma)

    tr = Trainer(ridge(), Interrupting(t=3), config(epochs=2, checkpoint_dir=str(tmp_path)),
                 ds, val)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    assert tr.interrupted_save == tmp_path / "last"
    meta = load_checkpoint(tmp_path / "last", return_metadata=True)[1]["metadata"]
    assert meta["step"] == 5
    rest = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    rest.resume(tmp_path / "last").fit()
    assert torch.equal(weights(rest.model), weights(full.model))


def test_interrupt_during_end_of_epoch_validation_keeps_the_epoch_record(tmp_path):
    ds, val = data()
    full = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    full.fit()

    class StopInValidation(TStepDenoisingLoss):
        calls = 0

        def predict(self, model, noisy, sigma):
            StopInValidation.calls += 1
            if StopInValidation.calls == len(val) + 1:  # first image of epoch 1's validation
                raise KeyboardInterrupt
            return super().predict(model, noisy, sigma)

    tr = Trainer(ridge(), StopInValidation(t=3), config(epochs=2, checkpoint_dir=str(tmp_path)),
                 ds, val)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    rest = Trainer(ridge(), TStepDenoisingLoss(t=3), config(epochs=2), ds, val)
    rest.resume(tmp_path / "last").fit()
    assert [h["epoch"] for h in rest.history] == [0, 1, 2]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in rest.history] == strip
    assert torch.equal(weights(rest.model), weights(full.model))
