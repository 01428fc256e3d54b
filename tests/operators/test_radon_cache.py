"""The on-disk cache of Radon matrices: reused across processes, atomic, never an error."""

import os

import torch

from operators import Radon
from operators import _radon_weights as rw


def _fresh(monkeypatch, folder):
    monkeypatch.setenv("LIPINVERSE_CACHE_DIR", str(folder))
    rw.clear_cache()


def test_second_build_comes_from_disk_and_is_identical(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    x = torch.rand(2, 1, 24, 24, dtype=torch.float64)
    for geometry in ("parallel", "fan"):
        A = Radon(24, 9, geometry=geometry)
        y, back = A(x), A.adjoint(A(x))
        files = sorted((tmp_path / "radon").iterdir())
        assert files and not any(f.name.startswith(".tmp-") for f in files)
        rw.clear_cache()
        calls = []

        def record(*a, calls=calls, **k):
            calls.append(a)

        monkeypatch.setattr(rw, "build_matrices", record)
        B = Radon(24, 9, geometry=geometry)
        assert torch.equal(B(x), y) and torch.equal(B.adjoint(B(x)), back)
        assert calls == []  # loaded, not rebuilt
        monkeypatch.undo()
        _fresh(monkeypatch, tmp_path)


def test_damaged_or_foreign_cache_files_are_rebuilt(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    x = torch.rand(1, 1, 20, 20, dtype=torch.float64)
    y = Radon(20, 7)(x)
    (path,) = (tmp_path / "radon").iterdir()
    for junk in (b"not a torch file", b""):
        path.write_bytes(junk)
        rw.clear_cache()
        assert torch.equal(Radon(20, 7)(x), y)  # rebuilt, and the cache rewritten
        assert path.stat().st_size > 100
    # a file with out-of-range indices is refused, not used
    d = torch.load(path, weights_only=True)
    d["A_col"] = d["A_col"] + 10**6
    torch.save(d, path)
    rw.clear_cache()
    assert torch.equal(Radon(20, 7)(x), y)


def test_unwritable_or_disabled_cache_is_not_an_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    _fresh(monkeypatch, blocker)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    y = Radon(16, 5)(x)
    _fresh(monkeypatch, "off")
    assert rw.disk_cache_dir() is None
    assert torch.equal(Radon(16, 5)(x), y)
    assert not os.path.exists("off")
