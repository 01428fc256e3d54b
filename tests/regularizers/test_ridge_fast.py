"""The fast paths of the ridge priors: Anderson solves, the cached Hessian, compiled potentials."""

import pytest
import torch

from lipinverse.regularizers import ConvexRidge, WeakConvexRidge
from lipinverse.regularizers.ridge_solve import anderson, fista


def trained_like(cls, seed=0):
    """A small ridge prior with strong, varied potentials (ill-conditioned like trained ones)."""
    torch.manual_seed(seed)
    R = cls(channels=(1, 4, 8), kernel_size=3, num_knots=11).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in R.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        R.strength.values.add_(4.0)  # strength x e^4: curvature bounds in the tens
    return R


def noisy_batch(seed=0, n=5, size=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g, dtype=torch.float64)
    sigma = torch.linspace(2, 30, n, dtype=torch.float64) / 255
    return x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g, dtype=x.dtype), sigma


@pytest.mark.parametrize("method", ["anderson", "lbfgs"])
@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_fast_methods_meet_the_certified_tolerance(cls, method):
    R = trained_like(cls)
    y, sigma = noisy_batch()
    ref, info_ref = R.solve(y, 1.0, sigma, tol=1e-12, max_iter=20000)
    assert bool(info_ref.converged.all())
    for tol in (1e-3, 1e-6):
        x, info = R.solve(y, 1.0, sigma, tol=tol, max_iter=5000, method=method)
        assert bool(info.converged.all())
        dist = (x - ref).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
        # the certificate bounds the distance of the point that met the test; the
        # returned gradient step from it is no farther
        assert bool((dist <= tol * (1 + 1e-6)).all()), (dist, tol)
        assert bool((info.error_bound <= tol * y.flatten(1).norm(dim=1)).all())


def test_anderson_needs_fewer_gradients_than_fista_when_ill_conditioned():
    R = trained_like(WeakConvexRidge, seed=3)
    y, sigma = noisy_batch(seed=3)
    _, a = R.solve(y, 1.0, sigma, tol=1e-5, max_iter=5000, method="anderson")
    _, f = R.solve(y, 1.0, sigma, tol=1e-5, max_iter=5000, method="fista")
    assert a.iterations.sum() < 0.8 * f.iterations.sum(), (a.iterations, f.iterations)


def test_lbfgs_needs_fewer_gradients_than_anderson_on_a_shipped_prior():
    """Counted in gradient calls (an L-BFGS iteration may take more than one), on the
    shipped wcrr at sigma 25 (64x64 crop of camera): the reason it is the default."""
    from lipinverse import pretrained
    from lipinverse.io import builtin_image, center_crop, to_tensor
    from lipinverse.regularizers import ridge_solve

    model = pretrained.load("wcrr").double()
    x = to_tensor(center_crop(builtin_image("camera"), 64)).double()
    y = x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0),
                                   dtype=x.dtype)
    counts = {}
    for method in ("anderson", "lbfgs"):
        calls = []
        real = model.grad_scaled

        def counted(z, sc, real=real, calls=calls):
            calls.append(z.shape[0])
            return real(z, sc)

        model.grad_scaled = counted
        try:
            out, info = model.solve(y, 1.0, 25 / 255, tol=1e-3, max_iter=1000, method=method)
        finally:
            del model.grad_scaled
        assert bool(info.converged.all())
        counts[method] = sum(calls)
    assert counts["lbfgs"] < 0.9 * counts["anderson"], counts
    assert ridge_solve.METHODS == ("fista", "anderson", "lbfgs")


def test_anderson_restart_safeguard_recovers_from_a_bad_extrapolation():
    """A gradient whose norm jumps (a discontinuous 'F') triggers restarts, never a NaN."""
    y = torch.ones(3, 1, 4, 4, dtype=torch.float64)
    m = torch.ones(3, dtype=torch.float64)
    L = torch.full((3,), 2.0, dtype=torch.float64)
    calls = []

    def grad(z, idx):
        calls.append(1)
        g = z - 2.0 * y[idx]
        if len(calls) == 3:  # one wild gradient: 1e6 times too large
            return g * 1e6
        return g

    x, its, conv, err = anderson(grad, y, m, L, tol=1e-8, max_iter=200, restart=10.0)
    assert bool(conv.all()) and torch.isfinite(x).all()
    assert torch.allclose(x, 2.0 * y, atol=1e-7)
    x2, *_ = fista(lambda z, idx: z - 2.0 * y[idx], y, m, L, tol=1e-8, max_iter=200)
    assert torch.allclose(x, x2, atol=1e-7)


def test_solve_rejects_an_unknown_method():
    R = trained_like(ConvexRidge)
    y, sigma = noisy_batch(n=1)
    with pytest.raises(ValueError, match="method 'fista', 'anderson' or 'lbfgs'"):
        R.solve(y, 1.0, sigma, method="newton")


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_cached_hessian_equals_autograd(cls):
    R = trained_like(cls)
    y, sigma = noisy_batch(n=2, size=10)
    sc = R.scalings(sigma, 2, torch.float64)
    v = torch.randn_like(y)
    x = y.clone().requires_grad_(True)
    (hv,) = torch.autograd.grad((R.grad_scaled(x, sc) * v).sum(), x)
    assert torch.allclose(R.hessian_at(y, sc)(v), hv, atol=1e-10)
    assert torch.allclose(R.hvp_scaled(y, v, sc), hv, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_compiled_potentials_equal_eager(cls):
    """torch.compile of the potentials: same values, solves and parameter gradients as
    eager (float32)."""
    from lipinverse.regularizers import ridge_fused

    R = trained_like(cls).float()
    y, sigma = noisy_batch(n=3)
    y, sigma = y.float(), sigma.float()
    sc = R.scalings(sigma, 3, torch.float32)
    with torch.no_grad():
        eager = R.grad_scaled(y, sc)
        x_e, _ = R.solve(y, 1.0, sigma, tol=1e-4)
        h_e = R.hessian_at(y, sc)(y)
    R.compile_potentials()
    try:
        with torch.no_grad():
            compiled = R.grad_scaled(y, sc)
            assert "activation" in ridge_fused._COMPILED  # the compiled path ran
            assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)
            x_c, _ = R.solve(y, 1.0, sigma, tol=1e-4)
            assert torch.allclose(x_c, x_e, atol=1e-4)
            assert torch.allclose(R.hessian_at(y, sc)(y), h_e, rtol=1e-5, atol=1e-6)
        R.zero_grad()
        R.grad_scaled(y, R.scalings(sigma, 3, torch.float32)).pow(2).sum().backward()
        g_c = [p.grad.clone() for p in R.parameters() if p.grad is not None]
    finally:
        R.compile_potentials(False)
    R.zero_grad()
    R.grad_scaled(y, R.scalings(sigma, 3, torch.float32)).pow(2).sum().backward()
    g_e = [p.grad.clone() for p in R.parameters() if p.grad is not None]
    assert len(g_c) == len(g_e)
    for a, b in zip(g_c, g_e, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_preconditioned_cg_solves_the_same_system_in_fewer_iterations(cls):
    from operators.linalg import conjugate_gradient

    R = trained_like(cls, seed=2)
    y, sigma = noisy_batch(n=4, size=24)
    x, _ = R.solve(y, 1.0, sigma, tol=1e-8, max_iter=5000)
    sc = R.scalings(sigma, 4, torch.float64)
    hess, prec = R.hessian_at(x, sc, preconditioner=True)
    g = torch.randn_like(y)
    # the preconditioner is symmetric positive definite
    u, w = torch.randn_like(y), torch.randn_like(y)
    assert torch.allclose((prec(u) * w).sum(), (u * prec(w)).sum(), rtol=1e-10)
    assert bool(((prec(u) * u).flatten(1).sum(1) > 0).all())
    plain, n_plain = conjugate_gradient(lambda v, idx: v + hess(v, idx), g, tol=1e-10,
                                        max_iter=2000, batched=True)
    pre, n_pre = conjugate_gradient(lambda v, idx: v + hess(v, idx), g, tol=1e-10,
                                    max_iter=2000, batched=True, precondition=prec)
    for v in (plain, pre):
        r = g - v - hess(v)
        assert bool((r.flatten(1).norm(dim=1) <= 1e-10 * g.flatten(1).norm(dim=1) * 1.01).all())
    assert torch.allclose(pre, plain, atol=1e-8)
    assert n_pre < n_plain, (n_pre, n_plain)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    from lipinverse.regularizers import ridge_fused

    def broken(name):
        def fn(*args):
            raise RuntimeError("no C++ compiler found\nlong inductor trace")
        return fn

    monkeypatch.setattr(ridge_fused, "compiled", broken)
    R = trained_like(WeakConvexRidge)
    y, sigma = noisy_batch(n=2, size=10)
    sc = R.scalings(sigma, 2, torch.float64)
    with torch.no_grad():
        eager = R.grad_scaled(y, sc)
        R.compile_potentials()
        with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
            got = R.grad_scaled(y, sc)
        assert torch.equal(got, eager)
        assert torch.equal(R.grad_scaled(y, sc), eager)  # eager from now on, no second warning


@pytest.mark.parametrize("cls", ["ConvexRidge", "WeakConvexRidge"])
def test_large_images_go_in_strips_with_the_same_result(monkeypatch, cls):
    """Without autograd, gradient and value of a large image are computed in strips of rows
    (bounded memory): the result is the one-pass result to rounding, at every strip size."""
    from lipinverse.regularizers import ConvexRidge, WeakConvexRidge, ridge_calculus

    R = {"ConvexRidge": ConvexRidge, "WeakConvexRidge": WeakConvexRidge}[cls](
        channels=(1, 3, 6), kernel_size=5, num_knots=11).double()
    with torch.no_grad():
        for p in R.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(2, 1, 41, 23, dtype=torch.float64)
    sc = R.scalings(0.05, 2, torch.float64)
    with torch.no_grad():
        g0, v0 = R.grad_scaled(x, sc), R.value(x, 0.05)
        for rows in (1, 3, 8, 40):
            monkeypatch.setattr(ridge_calculus, "STRIP_ELEMENTS", 2 * 6 * 23 * rows)
            assert R._strips(x) is not None and len(R._strips(x)) == -(-41 // rows)
            torch.testing.assert_close(R.grad_scaled(x, sc), g0, rtol=0, atol=1e-13)
            torch.testing.assert_close(R.value(x, 0.05), v0, rtol=1e-13, atol=0)
    # with autograd on parameters that need it: one pass (the graph needs the whole map)
    assert R._strips(x) is None


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_curvature_symbol_is_the_mean_curvature_circulant(monkeypatch, cls):
    r"""sum_c mean(d_c) s^2 |K_c|^2, with K_c read off the impulse responses of the filters
    (independently of the composed kernel), per sample; the same in strips; colour images
    get the mean over their folded channels."""
    from lipinverse.regularizers import ridge_calculus
    from lipinverse.regularizers.colour import fold

    R = trained_like(cls)
    y, sigma = noisy_batch(n=2, size=20)
    sc = R.scalings(sigma, 2, torch.float64)
    with torch.no_grad():
        got = R.curvature_symbol_scaled(y, sc)
        d = R._curvature(R._filters(y, sc), sc) * sc.s.square()
        delta = torch.zeros(1, 1, 20, 20, dtype=torch.float64)
        delta[..., 10, 10] = 1.0
        power = torch.fft.rfft2(R.W.linear(delta)[0]).abs().square()      # (C, 20, 11)
        want = torch.einsum("bc,cuv->buv", d.mean((-2, -1)).clamp(min=0), power)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        assert got.shape == (2, 20, 11) and not torch.equal(got[0], got[1])
        monkeypatch.setattr(ridge_calculus, "STRIP_ELEMENTS", 8 * 20 * 3)
        assert R._strips(y) is not None
        torch.testing.assert_close(R.curvature_symbol_scaled(y, sc), got, rtol=1e-12, atol=0)
        rgb = torch.rand(1, 3, 20, 20, dtype=torch.float64)
        folded = R.curvature_symbol(fold(rgb), 0.05)
        torch.testing.assert_close(R.curvature_symbol(rgb, 0.05), folded.mean(0, keepdim=True))


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_lbfgs_denoising_with_the_metric_meets_the_same_certificate(cls):
    """The ridge denoiser's L-BFGS starts from the Fourier metric I + tau R's model: the same
    certified tolerance, the same minimiser as without it, in fewer gradients."""
    from lipinverse.regularizers import ridge_solve

    R = trained_like(cls)
    y, sigma = noisy_batch(n=3, size=24)
    calls = {}

    def counting(metric_on):
        def run(grad, *a, metric=None, **k):
            def g(z, idx):
                calls[metric_on] = calls.get(metric_on, 0) + 1
                return grad(z, idx)
            return ridge_solve_lbfgs(g, *a, metric=metric if metric_on else None, **k)
        return run

    ridge_solve_lbfgs = ridge_solve.lbfgs
    out = {}
    for on in (False, True):
        ridge_solve.lbfgs = counting(on)
        try:
            x, info = R.solve(y, 1.0, sigma, tol=1e-8, max_iter=5000, method="lbfgs")
        finally:
            ridge_solve.lbfgs = ridge_solve_lbfgs
        assert bool(info.converged.all())
        out[on] = x
    torch.testing.assert_close(out[True], out[False], rtol=0, atol=1e-6)
    assert calls[True] < calls[False]


def test_curvature_symbol_of_a_half_precision_image_does_not_overflow():
    """The per-channel curvature sums run in float32 for float16 input (over 65,504 at
    ordinary sizes): the symbol is finite and close to the float32 one."""
    R = trained_like(ConvexRidge).float()
    y = torch.rand(1, 1, 128, 128)
    sc32, sc16 = R.scalings(0.05, 1, torch.float32), R.half().scalings(0.05, 1, torch.float16)
    with torch.no_grad():
        half = R.curvature_symbol_scaled(y.half(), sc16)
        ref = R.float().curvature_symbol_scaled(y, sc32)
    assert half.dtype == torch.float32 and bool(torch.isfinite(half).all())
    torch.testing.assert_close(half, ref, rtol=2e-2, atol=1e-3 * float(ref.max()))


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_grad_value_gives_the_gradient_and_the_value_from_one_pass(monkeypatch, cls):
    """``grad_value``: the gradient of ``grad`` and, when called, the value of ``value``,
    per sample, for grey batches with per-sample noise levels, colour images and images in
    strips; the filters run once for both (not again for the value) where the responses
    fit in memory."""
    from lipinverse.regularizers import ridge_calculus

    R = trained_like(cls)
    y, sigma = noisy_batch(n=3, size=20)
    rgb = torch.rand(2, 3, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        for x, s in ((y, sigma), (rgb, 0.05)):
            g, v = R.grad_value(x, s)
            torch.testing.assert_close(g, R.grad(x, s), rtol=0, atol=1e-13)
            torch.testing.assert_close(v(), R.value(x, s), rtol=1e-13, atol=0)
            assert v().shape == (x.shape[0],)
            rows = torch.tensor([x.shape[0] - 1, 0])   # a subset, in any order
            torch.testing.assert_close(v(rows), R.value(x, s)[rows], rtol=1e-13, atol=0)
        calls = []
        real = R._filters
        monkeypatch.setattr(R, "_filters", lambda z, sc: calls.append(1) or real(z, sc))
        g, v = R.grad_value(y, sigma)
        v()
        assert len(calls) == 1
        monkeypatch.setattr(ridge_calculus, "STRIP_ELEMENTS", 8 * 20 * 3)
        assert R._strips(y) is not None
        g, v = R.grad_value(y, sigma)
        torch.testing.assert_close(g, R.grad(y, sigma), rtol=0, atol=1e-13)
        torch.testing.assert_close(v(), R.value(y, sigma), rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match="grad_value"):
        R.grad_value(torch.rand(8, 8, dtype=torch.float64))


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_curvature_along_bounds_the_hessian_along_every_direction(monkeypatch, cls):
    """``curvature_along(d)``: lo <= d^T Hess R(x) d <= hi at random points, per sample
    (float64, the exact Hessian-vector product); below half |d|^2 times the global bound for
    a smooth direction; colour folds sum; the strips give the same bounds."""
    from lipinverse.regularizers import ridge_calculus

    R = trained_like(cls)
    g = torch.Generator().manual_seed(3)
    sc = R.scalings(0.05, 2, torch.float64)
    lo_g, hi_g = R.curvature_bounds(0.05)
    for smooth in (False, True):
        d = torch.randn(2, 1, 20, 20, generator=g, dtype=torch.float64)
        if smooth:
            d = torch.nn.functional.avg_pool2d(d, 5, 1, 2, count_include_pad=False)
        lo, hi = R.curvature_along(d, 0.05)
        n = d.flatten(1).square().sum(1)
        assert bool((lo >= lo_g * n - 1e-9).all()) and bool((hi <= hi_g * n + 1e-9).all())
        for _ in range(5):
            x = torch.rand(2, 1, 20, 20, generator=g, dtype=torch.float64) * 4 - 2
            q = (R.hvp_scaled(x, d, sc) * d).flatten(1).sum(1)
            assert bool((lo <= q + 1e-9).all()) and bool((q <= hi + 1e-9).all())
        if smooth:
            assert bool((hi < 0.5 * hi_g * n).all())
    with torch.no_grad():
        monkeypatch.setattr(ridge_calculus, "STRIP_ELEMENTS", 8 * 20 * 3)
        torch.testing.assert_close(R.curvature_along(d, 0.05), (lo, hi), rtol=1e-12, atol=0)
    rgb = torch.randn(1, 3, 20, 20, generator=g, dtype=torch.float64)
    from lipinverse.regularizers.colour import fold
    lo3, hi3 = R.curvature_along(rgb, 0.05)
    lo1, hi1 = R.curvature_along(fold(rgb), 0.05)
    torch.testing.assert_close((lo3, hi3), (lo1.sum(0, keepdim=True), hi1.sum(0, keepdim=True)))
