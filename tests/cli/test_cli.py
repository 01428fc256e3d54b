"""The `lipinverse` command: every subcommand end to end, and one-line errors for bad input.

Happy paths run the real command in a subprocess (``python -m lipinverse.cli``), at small
sizes; error paths go through :func:`lipinverse.cli.main` in-process (the same code, without
paying the interpreter start-up for each), plus a few in a subprocess to check that no
traceback ever reaches the terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.io

from lipinverse import cli

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def shipped() -> list[str]:
    from lipinverse import pretrained  # an import error fails the test, never skips it

    return list(pretrained.available())


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "lipinverse.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def assert_png(path, shape=None):
    assert path.is_file(), f"{path} was not written"
    img = skimage.io.imread(path)
    assert img.dtype == np.uint8
    if shape is not None:
        assert img.shape == shape
    return img


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 40x40 piecewise-smooth grayscale test image (a downscaled camera)."""
    from skimage.transform import resize

    cam = skimage.data.camera().astype(float) / 255
    img = resize(cam, (40, 40), anti_aliasing=True)
    path = tmp_path_factory.mktemp("img") / "cam40.png"
    skimage.io.imsave(path, (img * 255).round().astype(np.uint8), check_contrast=False)
    return path


def _psnr_line(stdout: str, label: str) -> float:
    for line in stdout.splitlines():
        if line.startswith(label) and "PSNR" in line:
            return float(line.split("PSNR")[1].split("dB")[0])
    raise AssertionError(f"no PSNR line for {label!r} in:\n{stdout}")


def call(argv) -> int:
    """``cli.main(argv)``'s exit status (argparse exits by SystemExit for its own errors)."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


# ------------------------------------------------------------------ subprocess runs
def test_help_lists_every_subcommand_and_option(capsys):
    assert call(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("deblur", "ct", "denoise", "train", "certify", "models"):
        assert cmd in out
    assert call(["deblur", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--kernel", "--noise", "--prior", "--solver", "--out", "--figure",
                "--max-iter", "--tol", "--lam", "--device", "--seed"):
        assert opt in out
    assert call(["denoise", "--help"]) == 0
    assert "/255" in capsys.readouterr().out  # the unit of --sigma is documented


def test_deblur_tv_end_to_end(image, tmp_path):
    out, fig = tmp_path / "x.png", tmp_path / "fig" / "f.png"
    r = run("deblur", image, "--kernel", "gaussian:1.0", "--noise", "0.01", "--prior", "tv",
            "--max-iter", "30", "--out", out, "--figure", fig)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert_png(out, (40, 40))
    assert_png(fig)
    assert _psnr_line(r.stdout, "tv") > _psnr_line(r.stdout, "observation")
    assert "guarantee" in r.stdout and "FISTA" in r.stdout


def test_deblur_admm_with_kernel_file_and_observed(image, tmp_path):
    k = np.ones((3, 3))
    np.save(tmp_path / "k.npy", k)
    out = tmp_path / "x.png"
    code = cli.main(["deblur", str(image), "--kernel", str(tmp_path / "k.npy"), "--prior", "tv",
                     "--solver", "admm", "--max-iter", "20", "--out", str(out), "--observed",
                     "-q"])
    assert code == 0
    assert_png(out, (40, 40))


def test_ct_tv_end_to_end(image, tmp_path):
    out = tmp_path / "ct.png"
    r = run("ct", image, "--angles", "20", "--noise", "0.01", "--prior", "tv",
            "--max-iter", "30", "--size", "32", "--out", out)
    assert r.returncode == 0, r.stderr
    assert_png(out, (32, 32))
    assert _psnr_line(r.stdout, "tv") > _psnr_line(r.stdout, "FBP")


@pytest.mark.parametrize("name", ["crr", "wcrr"])
def test_ct_takes_the_priors_own_weight(name, image, tmp_path, monkeypatch):
    """``lipinverse ct --prior NAME`` without ``--lam``: the weight of
    ``pretrained.ct_prior`` (the shipped ``wcrr`` records its own, 0.5)."""
    from lipinverse import pretrained
    from lipinverse.cli import priors

    if name not in shipped():
        pytest.skip(f"shipped prior {name!r} not available yet")
    seen = {}
    real = priors.reconstruct

    def spy(*args, **kw):
        seen["lam"] = kw["lam"]
        return real(*args, **dict(kw, max_iter=2))

    monkeypatch.setattr(priors, "reconstruct", spy)
    assert call(["ct", image, "--angles", "10", "--noise", "0.01", "--prior", name,
                 "--size", "32", "--out", tmp_path / "ct.png", "-q"]) == 0
    assert seen["lam"] == pretrained.ct_prior(pretrained.load(name), 0.01)[1]
    assert seen["lam"] == (0.5 if name == "wcrr" else pretrained.CT_LAM)


def test_denoise_tv_end_to_end(image, tmp_path):
    out, fig = tmp_path / "d.png", tmp_path / "df.png"
    r = run("denoise", image, "--sigma", "25", "--prior", "tv", "--out", out, "--figure", fig)
    assert r.returncode == 0, r.stderr
    assert_png(out, (40, 40))
    assert_png(fig)
    assert _psnr_line(r.stdout, "tv") > _psnr_line(r.stdout, "noisy") + 2


def test_models_lists_tv_and_every_shipped_prior():
    r = run("models")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith("tv")
    for name in shipped():
        assert any(line.startswith(name) for line in r.stdout.splitlines())


def test_train_then_certify(tmp_path, capsys):
    from skimage.transform import resize

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("camera", "moon"):
        img = resize(getattr(skimage.data, name)().astype(float) / 255, (32, 32))
        skimage.io.imsave(folder / f"{name}.png", (img * 255).astype(np.uint8),
                          check_contrast=False)
    ckpt = tmp_path / "ckpt"
    r = run("train", "--images", folder, "--model", "crr", "--epochs", "1", "--patch-size",
            "16", "--batch-size", "4", "--max-patches", "8", "--out", ckpt)
    assert r.returncode == 0, r.stderr
    info = json.loads((ckpt / "last.json").read_text())
    assert info["model_class"] == "ConvexRidge"
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt / "last.safetensors"))
    assert tensors and all(t.numel() > 0 for t in tensors.values())

    assert info["metadata"]["epoch"] == 1
    # --resume continues from last (in-process: same code, no second interpreter start-up)
    assert call(["train", "--images", folder, "--model", "crr", "--epochs", "2",
                 "--patch-size", "16", "--batch-size", "4", "--max-patches", "8", "--out",
                 ckpt, "--resume", "-q"]) == 0
    assert json.loads((ckpt / "last.json").read_text())["metadata"]["epoch"] == 2
    capsys.readouterr()
    # the trained checkpoint is usable as a prior straight away
    out = tmp_path / "mine.png"
    assert call(["deblur", folder / "camera.png", "--prior", ckpt, "--max-iter", "5",
                 "--out", out, "-q"]) == 0
    assert_png(out, (32, 32))
    assert "L-BFGS from H0 = gamma P^-1" in capsys.readouterr().out  # blur: preconditioned
    assert call(["certify", ckpt]) == 0
    stdout = capsys.readouterr().out
    assert "ConvexRidge" in stdout and "convex          True" in stdout
    # the printed bound is the model's own certificate at sigma = 15/255
    from lipinverse.training import load_checkpoint

    model = load_checkpoint(ckpt / "last")
    lo, hi = model.curvature_bounds(15 / 255)
    line = next(x for x in stdout.splitlines() if x.startswith("sigma=15/255"))
    printed = float(line.split("grad Lipschitz")[1].split(",")[0])
    assert printed == pytest.approx(max(-lo, hi), rel=1e-5)


@pytest.mark.parametrize("name", ["crr", "wcrr", "lipdenoiser"])
def test_shipped_prior_deblur_and_certify(name, image, tmp_path):
    if name not in shipped():
        pytest.skip(f"shipped prior {name!r} not available yet")
    out = tmp_path / "x.png"
    assert cli.main(["deblur", str(image), "--kernel", "gaussian:1.0", "--prior", name,
                     "--max-iter", "15", "--out", str(out), "-q"]) == 0
    assert_png(out, (40, 40))
    assert cli.main(["certify", name]) == 0


# ------------------------------------------------------------------ user errors
def _error_line(capsys):
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("lipinverse: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture
def bad_inputs(image, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    return {"image": str(image), "junk": str(junk), "out": str(tmp_path / "o.png"),
            "dir": str(tmp_path)}


CASES = [
    ("missing file", ["deblur", "nope.png", "--prior", "tv"], "no such file"),
    ("unreadable image", ["deblur", "{junk}", "--prior", "tv"], "could not read"),
    ("bad kernel spec", ["deblur", "{image}", "--kernel", "gauss:2", "--prior", "tv"],
     "unknown kernel spec"),
    ("bad kernel value", ["deblur", "{image}", "--kernel", "gaussian:-2", "--prior", "tv"],
     "sigma"),
    ("missing kernel file", ["deblur", "{image}", "--kernel", "k.npy", "--prior", "tv"],
     "no such kernel file"),
    ("unknown prior", ["deblur", "{image}", "--prior", "bm3d"], "unknown prior 'bm3d'"),
    ("negative noise", ["deblur", "{image}", "--noise", "-0.1", "--prior", "tv"], "--noise"),
    ("nan noise", ["deblur", "{image}", "--noise", "nan", "--prior", "tv"], "--noise"),
    ("bad max-iter", ["deblur", "{image}", "--max-iter", "0", "--prior", "tv"], "--max-iter"),
    ("bad tol", ["deblur", "{image}", "--tol", "-1", "--prior", "tv"], "--tol"),
    ("crop too big", ["deblur", "{image}", "--size", "64", "--prior", "tv"], "smaller than"),
    ("bad device", ["deblur", "{image}", "--device", "tpu", "--prior", "tv"], "--device"),
    ("negative sigma", ["denoise", "{image}", "--sigma", "-5", "--prior", "tv"], "--sigma"),
    ("denoise unknown prior", ["denoise", "{image}", "--prior", "nlm"], "unknown prior"),
    ("ct zero angles", ["ct", "{image}", "--angles", "0", "--prior", "tv"], "--angles"),
    ("train missing folder", ["train", "--images", "nowhere", "--out", "{dir}"], "no such folder"),
    ("train bad epochs", ["train", "--images", "{dir}", "--epochs", "0", "--out", "{dir}"],
     "--epochs"),
    ("train shipped name", ["train", "--images", "{dir}", "--model", "lipdenoiser", "--out",
                            "{dir}"], "choose from 'crr', 'wcrr', 'lipresnet'"),
    ("certify missing", ["certify", "nothing_here"], "no such checkpoint"),
    ("bad output suffix", ["deblur", "{image}", "--prior", "tv", "--out", "x.txt"],
     "--out: expected a file name ending in"),
    ("output is a folder", ["denoise", "{image}", "--prior", "tv", "--out", "{dir}"],
     "got the folder"),
    ("bad figure suffix", ["ct", "{image}", "--prior", "tv", "--figure", "f.gif"], "--figure"),
    ("lam for a learned denoise", ["denoise", "{image}", "--prior", "crr", "--lam", "1"],
     "only for --prior tv"),
    ("unknown option", ["deblur", "{image}", "--out", "{out}", "--bogus"], "unrecognized"),
    ("bad number", ["deblur", "{image}", "--out", "{out}", "--noise", "abc"],
     "expected a noise level"),
    ("overflowing seed", ["deblur", "{image}", "--prior", "tv", "--seed", "1" + "0" * 25],
     "seed in [0, 2**63)"),
    ("negative seed", ["train", "--images", "{dir}", "--out", "{dir}", "--seed", "-1"],
     "seed in [0, 2**63)"),
    ("bad boundary", ["deblur", "{image}", "--prior", "tv", "--boundary", "zero"],
     "invalid choice"),
    ("bad geometry", ["ct", "{image}", "--prior", "tv", "--geometry", "cone"], "invalid choice"),
]


@pytest.mark.parametrize("label, argv, match", CASES, ids=[c[0] for c in CASES])
def test_user_errors_give_one_line_and_exit_2(label, argv, match, bad_inputs, capsys):
    argv = [a.format(**bad_inputs) for a in argv]
    if "--out" not in argv and argv[0] in ("deblur", "ct", "denoise"):
        argv += ["--out", bad_inputs["out"]]
    assert call(argv) == 2
    assert match in _error_line(capsys)
    assert not os.path.exists(bad_inputs["out"])


def test_cuda_requested_but_unavailable(image, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code = call(["deblur", image, "--prior", "tv", "--device", "cuda", "--out",
                 tmp_path / "o.png"])
    assert code == 2
    assert "CUDA was requested but is not available" in _error_line(capsys)


def test_errors_in_a_real_process_have_no_traceback(tmp_path):
    r = run("deblur", tmp_path / "missing.png", "--out", tmp_path / "o.png")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("lipinverse: error: "), r.stderr


# ------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_deblur_on_cuda_matches_cpu(image, tmp_path, capsys):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    psnrs = {}
    for dev in ("cpu", "cuda"):
        assert call(["deblur", image, "--prior", "tv", "--max-iter", "30", "--device", dev,
                     "--out", tmp_path / f"{dev}.png", "-q"]) == 0
        psnrs[dev] = _psnr_line(capsys.readouterr().out, "tv")
    assert psnrs["cuda"] == pytest.approx(psnrs["cpu"], abs=0.05)


def test_train_model_names_build_the_documented_classes():
    from lipinverse.cli.train import build_model
    from lipinverse.denoisers import LipschitzDenoiser
    from lipinverse.regularizers import ConvexRidge, WeakConvexRidge

    assert type(build_model("crr")[0]) is ConvexRidge
    assert type(build_model("wcrr")[0]) is WeakConvexRidge
    assert type(build_model("lipresnet")[0]) is LipschitzDenoiser
    with pytest.raises(ValueError, match="expected crr, wcrr or lipresnet, got 'lipdenoiser'"):
        build_model("lipdenoiser")


@pytest.mark.parametrize("text, want", [("0.098", 0.098), ("25/255", 25 / 255), ("25", 25 / 255),
                                        ("0", 0.0), ("1", 1 / 255), ("2.55/255", 0.01)])
def test_noise_levels_read_in_three_spellings(text, want):
    from lipinverse.cli.parser import noise_level

    assert noise_level(text) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("text", ["-0.1", "abc", "1/0", "inf", "nan", "25/"])
def test_bad_noise_levels_are_refused(text):
    import argparse

    from lipinverse.cli.parser import noise_level

    with pytest.raises(argparse.ArgumentTypeError, match="noise level"):
        noise_level(text)
