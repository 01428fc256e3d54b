"""Reliability round 2 (issue 19): one property test per class of what a hostile user broke.

Each test draws its cases with hypothesis (derandomised, see ``_policy.fuzz``) and counts
them in ``_policy.COUNTS`` under ``"class N: ..."`` as ``ok`` (the right result, checked)
or ``refused`` (one clear error naming what was expected); anything else fails. The
benchmark ``benchmarks/reliability.py`` runs these with more examples and tabulates the
counts per class.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ._policy import COUNTS, fuzz


def _stderr():
    return contextlib.redirect_stderr(StringIO())


C1, C2, C3, C4 = ("class 1: image decoding", "class 2: atomic outputs", "class 3: resources",
                  "class 4: one-line CLI errors")
C5, C6, C7 = ("class 5: checkpoint sanity", "class 6: one writer per run",
              "class 7: numerics at the edges")


# ------------------------------------------------------------------ 1. image decoding
MODES = {  # PIL mode -> formats that store it
    "L": ("png", "jpeg", "tiff", "bmp"), "RGB": ("png", "jpeg", "tiff", "bmp"),
    "RGBA": ("png", "tiff"), "LA": ("png",), "P": ("png", "bmp", "tiff"),
    "1": ("png", "tiff", "bmp"), "CMYK": ("jpeg", "tiff"), "YCbCr": ("jpeg",),
    "I;16": ("png", "tiff"), "I": ("png", "tiff"), "F": ("tiff",),
}


@fuzz(60)
@given(mode=st.sampled_from(sorted(MODES)), data=st.data(), size=st.integers(8, 24),
       seed=st.integers(0, 2**16), gray=st.booleans(), nan=st.booleans())
def test_class1_every_mode_decodes_to_its_rgb_or_is_refused(tmp_path_factory, mode, data,
                                                            size, seed, gray, nan):
    from PIL import Image

    from lipinverse.io import read_image

    fmt = data.draw(st.sampled_from(MODES[mode]))
    rng = np.random.default_rng(seed)
    # a smooth colour image (JPEG-friendly), in [0, 1]
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([0.2 + 0.6 * xx, 0.8 - 0.5 * yy, 0.5 + 0.3 * np.sin(3 * xx + 2 * yy)], -1)
    rgb = np.clip(rgb + 0.02 * rng.standard_normal(rgb.shape), 0, 1)
    src = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    if mode in ("I;16", "I"):
        lum = (rgb @ [0.2125, 0.7154, 0.0721])
        img = Image.fromarray((lum * 65535).round().astype(np.uint16))
        img = img if mode == "I;16" else img.convert("I")
        truth = np.repeat(lum[..., None], 3, -1)
    elif mode == "F":
        lum = (rgb @ [0.2125, 0.7154, 0.0721]).astype(np.float32)
        if nan:
            lum[size // 2, size // 3] = np.nan
        img = Image.fromarray(lum, "F")
        truth = np.repeat(lum[..., None].astype(np.float64), 3, -1)
    else:
        img = src.convert(mode)
        truth = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    path = tmp_path_factory.mktemp("c1") / f"x.{fmt}"
    try:
        img.save(path)
    except (OSError, ValueError, KeyError):
        assume(False)  # PIL cannot write this mode in this format: not a case
    try:
        out = read_image(path, gray=gray)
    except ValueError as err:
        assert str(err).startswith("read_image: ") and str(path.name) in str(err), str(err)
        assert mode == "F" and nan, f"{mode} {fmt} refused: {err}"  # only NaN is refused
        COUNTS[(C1, "refused")] += 1
        return
    assert not (mode == "F" and nan), "a NaN float image was read"
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    want = truth @ [0.2125, 0.7154, 0.0721] if gray else truth
    if gray or mode in ("L", "LA", "1", "I;16", "I", "F"):
        assert out.shape == (size, size) if gray or mode in ("I;16", "I", "F", "L", "LA", "1") \
            else out.shape == (size, size, 3)
        want = want if want.ndim == 2 else want[..., 0]
        got = out if out.ndim == 2 else out[..., 0]
    else:
        assert out.shape == (size, size, 3), out.shape
        got = out
    tol = 0.06 if fmt == "jpeg" else 0.01  # JPEG is lossy; the rest are exact to 1/255
    err = float(np.abs(got - want).mean())
    assert err <= tol, f"{mode} {fmt} gray={gray}: mean error {err:.3f}"
    COUNTS[(C1, "ok")] += 1


def test_class1_multiframe_files_are_refused(tmp_path):
    from PIL import Image

    from lipinverse.io import read_image

    frames = [Image.new("L", (8, 8), v) for v in (10, 200)]
    path = tmp_path / "anim.tiff"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="read_image: .*frame"):
        read_image(path)
    COUNTS[(C1, "refused")] += 1


# ------------------------------------------------------------------ 2. atomic outputs
@fuzz(40)
@given(n_bytes=st.integers(0, 5000), fail_at=st.sampled_from(["write", "fsync", "replace",
                                                                None]),
       kind=st.sampled_from(["bytes", "png"]))
def test_class2_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path_factory, n_bytes,
                                                              fail_at, kind):
    from lipinverse import _atomic
    from lipinverse.io import write_image

    folder = tmp_path_factory.mktemp("c2")
    target = folder / ("out.png" if kind == "png" else "out.bin")
    target.write_bytes(b"OLD")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as m:
        if fail_at == "fsync":
            m.setattr(_atomic.os, "fsync", boom)
        elif fail_at == "replace":
            m.setattr(_atomic.os, "replace", boom)
        try:
            if kind == "png":
                img = np.linspace(0, 1, max(n_bytes, 4))[: 4 * (max(n_bytes, 4) // 4)]
                img = img.reshape(4, -1)
                if fail_at == "write":
                    m.setattr("PIL.Image.Image.save", boom)
                write_image(target, img)
            else:
                if fail_at == "write":
                    with pytest.raises(OSError), _atomic.atomic_path(target) as tmp:
                        Path(tmp).write_bytes(os.urandom(n_bytes))
                        boom()
                    raise OSError("expected")
                _atomic.atomic_write_bytes(target, os.urandom(n_bytes))
        except OSError:
            assert fail_at is not None
            assert target.read_bytes() == b"OLD"  # the old file is intact
            COUNTS[(C2, "refused")] += 1
        else:
            assert fail_at is None
            assert target.read_bytes() != b"OLD"
            COUNTS[(C2, "ok")] += 1
    assert sorted(p.name for p in folder.iterdir()) == [target.name], "temp file left"


# ------------------------------------------------------------------ 3. resources
@fuzz(30)
@given(side=st.integers(16, 48), avail_mib=st.integers(1, 512),
       prior=st.sampled_from(["tv", "crr"]))
def test_class3_a_solve_that_cannot_fit_is_refused_before_it_starts(
        tmp_path_factory, side, avail_mib, prior):
    from lipinverse import _resources, cli, pretrained
    from lipinverse.io import write_image

    folder = tmp_path_factory.mktemp("c3")
    img = folder / "in.png"
    write_image(img, np.random.default_rng(side).random((side, side)))
    # every problem 256 times costlier (a side-s image costs what a 16 s side one would)
    real = _resources.estimate_solve_bytes
    need = real(side * side, 1, None if prior == "tv" else pretrained.load(prior)) * 256
    with pytest.MonkeyPatch.context() as m, _stderr() as buf:
        m.setattr(_resources, "estimate_solve_bytes",
                  lambda n, c, p, *a, **k: real(n, c, p, *a, **k) * 256)
        m.setattr(_resources, "available_memory", lambda: avail_mib * 2**20)
        code = cli.main(["deblur", str(img), "--prior", prior, "--max-iter", "2", "--gray",
                         "-q", "--out", str(folder / "o.png")])
    err = buf.getvalue().strip().splitlines()
    if need > avail_mib * 2**20:
        assert code == 1 and len(err) == 1 and "GiB available" in err[0], err
        assert not (folder / "o.png").exists()
        COUNTS[(C3, "refused")] += 1
    else:
        assert code == 0 and (folder / "o.png").exists(), err
        COUNTS[(C3, "ok")] += 1


@fuzz(20)
@given(size=st.sampled_from([10**5, 10**6, 10**9]), angles=st.sampled_from([10, 10**5, 10**7]))
def test_class3_huge_radon_geometries_are_refused_quickly(size, angles):
    from operators import Radon

    assume(size * angles > 10**9)
    with pytest.raises((ValueError, MemoryError)) as info:
        Radon(size, angles)
    assert str(info.value).startswith("Radon"), str(info.value)
    COUNTS[(C3, "refused")] += 1


# ------------------------------------------------------------------ 4. one-line CLI errors
BAD_VALUES = ["-1", "nan", "inf", "1e400", "abc", "", "0", "99999999999999999999999"]
FLAGS = {
    "deblur": ["--noise", "--lam", "--max-iter", "--tol", "--seed", "--size", "--kernel",
               "--prior", "--solver", "--device", "--boundary"],
    "denoise": ["--sigma", "--lam", "--seed", "--size", "--prior", "--device"],
    "ct": ["--angles", "--noise", "--geometry", "--max-iter", "--size", "--device"],
    "train": ["--lr", "--epochs", "--batch-size", "--sigma-max", "--seed", "--model",
              "--device", "--resume"],
    "certify": [],
}


@fuzz(80)
@given(command=st.sampled_from(sorted(FLAGS)), data=st.data())
def test_class4_every_cli_error_is_one_line(tmp_path_factory, command, data):
    from lipinverse import cli
    from lipinverse.io import write_image

    folder = tmp_path_factory.mktemp("c4")
    img = folder / "in.png"
    write_image(img, np.random.default_rng(0).random((24, 24)))
    argv = [command]
    if command == "train":
        argv += ["--images", str(folder), "--out", str(folder / "run"), "--max-patches", "4",
                 "--patch-size", "8", "--steps-per-epoch", "1"]
    elif command == "certify":
        argv += [data.draw(st.sampled_from(["crr", "nosuch", str(img), str(folder)]))]
    else:
        argv += [str(img), "--out", str(folder / "o.png"), "--max-iter", "2", "-q"] \
            if command != "denoise" else [str(img), "--out", str(folder / "o.png"), "-q"]
    flags = data.draw(st.lists(st.sampled_from(FLAGS[command]), max_size=2, unique=True)) \
        if FLAGS[command] else []
    for flag in flags:
        argv += [flag, data.draw(st.sampled_from(BAD_VALUES))]
    with _stderr() as buf, contextlib.redirect_stdout(StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    err = buf.getvalue()
    assert "Traceback" not in err
    if code == 0:
        COUNTS[(C4, "ok")] += 1
        return
    lines = err.strip().splitlines()
    assert code in (1, 2), (argv, code)
    assert len(lines) == 1 and lines[0].startswith("lipinverse"), (argv, err)
    COUNTS[(C4, "refused")] += 1


# ------------------------------------------------------------------ 5. checkpoint sanity
@fuzz(40)
@given(what=st.sampled_from(["nan", "inf", "knots", "channels", "none"]), seed=st.integers(0, 99))
def test_class5_certificates_never_vouch_for_broken_weights(tmp_path_factory, what, seed):
    import json

    from safetensors.torch import load_file, save_file

    from lipinverse.regularizers import ConvexRidge
    from lipinverse.training import load_checkpoint, save_checkpoint

    folder = tmp_path_factory.mktemp("c5")
    save_checkpoint(ConvexRidge(channels=(1, 3, 4), kernel_size=3, num_knots=11), folder / "m")
    stem = folder / "m"
    weights, meta = Path(f"{stem}.safetensors"), Path(f"{stem}.json")
    state = load_file(weights)
    cfg = json.loads(meta.read_text())
    g = torch.Generator().manual_seed(seed)
    if what in ("nan", "inf"):
        names = sorted(k for k, v in state.items() if v.is_floating_point() and v.numel())
        k = names[int(torch.randint(len(names), (1,), generator=g))]
        flat = state[k].clone().reshape(-1)
        flat[int(torch.randint(flat.numel(), (1,), generator=g))] = float(what)
        state[k] = flat.reshape(state[k].shape)
        save_file(state, str(weights))
    elif what in ("knots", "channels"):
        conf = cfg["model_config"]
        key = "num_knots" if what == "knots" else "channels"
        conf[key] = 400_000_000 if what == "knots" else [1, 3, 10**8]
        meta.write_text(json.dumps(cfg))
    try:
        model = load_checkpoint(stem)
    except (ValueError, KeyError) as err:
        assert what != "none", err
        assert str(err).strip("'\"").startswith("load_checkpoint: "), str(err)
        COUNTS[(C5, "refused")] += 1
        return
    assert what == "none", f"{what}: loaded"
    assert all(torch.isfinite(p).all() for p in model.state_dict().values()
               if p.is_floating_point())
    assert model.convex and torch.isfinite(torch.tensor(model.grad_lipschitz))
    COUNTS[(C5, "ok")] += 1


# ------------------------------------------------------------------ 6. one writer per run
_HOLD = """
import sys, time
from lipinverse.training.lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@fuzz(6)
@given(second=st.sampled_from(["lock", "fit"]), killed=st.booleans())
def test_class6_a_second_writer_fails_in_one_line(tmp_path_factory, second, killed):
    from lipinverse.training.lock import RunFolderLocked, run_lock

    folder = tmp_path_factory.mktemp("c6")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        if killed:
            holder.kill()
            holder.wait()
            with run_lock(folder):  # a dead holder's lock is taken over
                pass
            COUNTS[(C6, "ok")] += 1
            return
        with pytest.raises(RunFolderLocked) as info, run_lock(folder):
            pass
        msg = str(info.value)
        assert "\n" not in msg and str(holder.pid) in msg, msg
        COUNTS[(C6, "refused")] += 1
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ 7. numerics at the edges
@fuzz(40)
@given(exponent=st.integers(-40, 40), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_class7_a_solve_never_reports_convergence_to_a_non_finite_point(exponent, dtype):
    from lipinverse.functionals import L2Fidelity
    from lipinverse.regularizers import TV
    from lipinverse.solvers import PGD, DivergenceError
    from operators import Blur, kernels

    g = torch.Generator().manual_seed(exponent % 97)
    x = torch.rand(1, 1, 12, 12, generator=g, dtype=torch.float64).to(dtype)
    A = Blur(kernels.gaussian(1.0).to(dtype))
    scale = 10.0 ** exponent
    y = A(x) * scale
    assume(bool(torch.isfinite(y).all()))
    try:
        res = PGD(L2Fidelity(A, y), TV(), 1e-3 * scale).solve(max_iter=30, tol=1e-5)
    except (DivergenceError, ValueError) as err:
        assert str(err).split(":")[0] in ("PGD", "TV.prox", "L2Fidelity", "PGD.solve"), str(err)
        COUNTS[(C7, "refused")] += 1
        return
    if bool(res.converged.all()):
        assert torch.isfinite(res.x).all(), "converged=True with a non-finite iterate"
    assert torch.isfinite(res.x).all() or not bool(res.converged.any())
    COUNTS[(C7, "ok")] += 1


@fuzz(30)
@given(exponent=st.integers(-200, 150))
def test_class7_gram_solve_of_scaled_operators(exponent):
    from operators import Blur, kernels

    A = 10.0 ** exponent * Blur(kernels.gaussian(1.0).double())
    b = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    x = A.gram_solve(b, 1.0)
    resid = A.gram(x, 1.0) - b
    assert torch.isfinite(x).all()
    assert float(resid.norm() / b.norm()) < 1e-6 or not torch.isfinite(resid).all()
    COUNTS[(C7, "ok")] += 1



_KILLED_WRITER = """
import sys, time
from lipinverse._atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    open(tmp, "wb").write(b"PARTIAL")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_class2_a_killed_writer_leaves_no_temp_file_after_the_next_write(tmp_path):
    from lipinverse._atomic import atomic_write_bytes

    target = tmp_path / "x.png"
    target.write_bytes(b"OLD")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    assert target.read_bytes() == b"OLD"  # the kill left the old file
    assert len(list(tmp_path.iterdir())) == 2  # ... and the killed writer's temp file
    atomic_write_bytes(target, b"NEW")
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"] and target.read_bytes() == b"NEW"
    COUNTS[(C2, "ok")] += 1
