"""A solve that cannot fit in memory is refused before it starts, in one line."""

from __future__ import annotations

from lipinverse import _resources, cli, pretrained


def test_estimates_match_the_measured_peaks():
    n = 2048 * 2048
    tv = _resources.estimate_solve_bytes(n, 1, None) / 2**30
    crr = _resources.estimate_solve_bytes(n, 1, pretrained.load("crr")) / 2**30
    assert 1.2 < tv < 2.4  # measured 1.7 GiB
    assert tv < crr < 2.5  # measured 1.5 GiB (gradient in strips of rows)
    assert _resources.estimate_solve_bytes(n, 3, None) == 3 * _resources.estimate_solve_bytes(
        n, 1, None)


def test_cli_refuses_a_problem_larger_than_the_memory(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(_resources, "available_memory", lambda: 50 * 2**20)  # 50 MiB
    for argv in (["deblur", "skimage:camera", "--prior", "crr"],
                 ["denoise", "skimage:camera", "--prior", "tv"],
                 ["ct", "skimage:camera", "--prior", "tv", "--angles", "4000"]):
        code = cli.main(argv + ["--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1
        assert "GiB at its peak" in err[0] and "available" in err[0]
        assert not (tmp_path / "x.png").exists()


def test_available_memory_is_positive_here():
    avail = _resources.available_memory()
    assert avail is None or avail > 0
