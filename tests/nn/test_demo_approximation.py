"""Smoke test of demos/approximation.py at a tiny size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demos" / "approximation.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("demo_approximation", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_main_small(tmp_path, capsys):
    demo = _load_demo()
    out = tmp_path / "approx.png"
    res = demo.main(depths=(1, 2), steps=15, width=4, out=str(out))
    assert out.is_file() and out.stat().st_size > 0
    assert "wrote" in capsys.readouterr().out
    for rows in res["fits"].values():
        assert len(rows) == 2
        for row in rows:
            assert row["certified_lipschitz"] <= 1.0
            assert 0.0 <= row["rmse"] <= row["max_error"]
    for row in res["exact"].values():
        assert row["max_error"] < 1e-12
        assert 1.0 <= row["certified_lipschitz"] <= 1.0 + 1e-8


def test_targets_are_one_lipschitz():
    import torch

    demo = _load_demo()
    torch.manual_seed(0)
    a, b = torch.rand(2000, 2) * 2 - 1, torch.rand(2000, 2) * 2 - 1
    for f in demo.TARGETS.values():
        ratio = (f(a) - f(b)).abs() / (a - b).norm(dim=1)
        assert float(ratio.max()) <= 1.0 + 1e-6
