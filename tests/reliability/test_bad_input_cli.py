"""Bad input at the command line: every run of ``lipinverse`` ends with exit status 0, 1
or 2, and a failure prints exactly one line ``lipinverse: error: ...`` (no traceback)."""

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lipinverse.cli import main

from ._policy import COUNTS, fuzz, no_hang

VALUES = ["nan", "inf", "-inf", "-1", "0", "1e308", "1e-300", "3", "x", "", "2.5"]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from skimage.io import imsave

    path = tmp_path_factory.mktemp("cli") / "img.png"
    g = np.random.default_rng(0)
    imsave(path, (g.random((16, 16)) * 255).astype(np.uint8), check_contrast=False)
    return path


def run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            with no_hang(60):
                code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors and --help
            code = exc.code
    return code, err.getvalue()


def check(argv):
    code, err = run_cli(argv)
    assert code in (0, 1, 2), (argv, code, err)
    if code:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("lipinverse: error: "), (argv, err)
        assert "Traceback" not in err
    COUNTS[("lipinverse CLI", "ok" if code == 0 else "refused")] += 1
    return code


@fuzz(30)
@given(command=st.sampled_from(["deblur", "ct", "denoise"]),
       option=st.sampled_from(["--lam", "--max-iter", "--tol", "--noise", "--size", "--seed",
                               "--angles", "--sigma", "--kernel", "--prior", "--device"]),
       value=st.sampled_from(VALUES + ["gaussian:-1", "box:0", "gaussian:1e9", "cuda:9",
                                       "crr"]))
def test_cli_options(tmp_path_factory, image, command, option, value):
    out = tmp_path_factory.mktemp("o") / "out.png"
    base = [command, image, "-o", out, "--max-iter", "3", "-q", "--prior", "tv"]
    if command == "ct":
        base += ["--angles", "8"]
    check(base + [option, value])


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["deblur"], ["deblur", "/nonexistent.png", "-o", "o.png"],
    ["certify", "/nonexistent"], ["train", "--images", "/nonexistent", "-o", "x"],
])
def test_cli_bad_commands(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check(argv) != 0


def test_cli_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert check(["deblur", bad, "-o", tmp_path / "o.png", "-q"]) == 2
