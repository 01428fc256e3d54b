"""A plain (non-editable) install carries what training, resuming and loading need."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # builds a wheel (about 20 s)
def test_wheel_holds_recipes_and_weights_but_no_runs_or_benchmarks(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("lipinverse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("lipinverse/pretrained/recipes/crr.toml",
                 "lipinverse/pretrained/recipes/wcrr.toml",
                 "lipinverse/training/recipes.py", "lipinverse/pretrained/crr.safetensors",
                 "lipinverse/pretrained/wcrr.json"):
        assert want in names, want
    assert not any(n.startswith(("benchmarks/", "lipinverse/pretrained/runs/")) for n in names)
