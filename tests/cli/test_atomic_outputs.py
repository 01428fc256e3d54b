"""Outputs are atomic: a failed write leaves the existing file intact and no temporary
file; the CLI checks --out / --figure before the solve (one line, exit 2)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import skimage.io

from lipinverse import cli, io
from lipinverse._atomic import atomic_write_bytes


def test_failed_image_write_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "x.png"
    io.write_image(out, np.full((8, 8), 0.5))
    before = out.read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(skimage.io, "imsave", full_disk)
    with pytest.raises(OSError, match="No space"):
        io.write_image(out, np.zeros((8, 8)))
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left


def test_failed_figure_write_keeps_the_old_file(tmp_path, monkeypatch):
    import matplotlib.figure

    fig = tmp_path / "f.png"
    io.save_figure(fig, [("a", np.zeros((8, 8)))])
    before = fig.read_bytes()

    def broken(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError):
        io.save_figure(fig, [("a", np.ones((8, 8)))])
    assert fig.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_atomic_bytes_under_a_file_and_interrupted(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        atomic_write_bytes(blocker / "out.json", b"{}")
    target = tmp_path / "t.json"
    target.write_bytes(b"old")


    with pytest.raises(TypeError):
        atomic_write_bytes(target, 12345)  # not bytes: fails mid-write
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "t.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_refuses_unwritable_out_before_solving(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code = cli.main(["deblur", "skimage:camera", "--size", "32", "--prior", "tv",
                         "--out", str(ro / "x.png")])
    finally:
        ro.chmod(0o700)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0]


def test_cli_refuses_out_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["deblur", "skimage:camera", "--size", "32", "--prior", "tv",
                     "--out", str(blocker / "x.png"), "--max-iter", "2"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        io.write_image(tmp_path / "b.png", np.zeros((4, 4)))
    finally:
        os.umask(old)
    for name in ("a.json", "b.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
