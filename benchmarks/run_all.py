"""Run every benchmark (each writes results/<name>.json and .md), then collect RESULTS.md.

Usage: ``python benchmarks/run_all.py [--quick]``. ``--quick`` is passed to the scripts that
accept it (subsets of BSD68); the tables say which subset was used.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = ["radon.py", "solvers.py", "nn_blocks.py", "training.py", "denoise_bsd68.py",
           "deblur_bsd68.py", "real_data.py", "reliability.py"]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    failed = []
    for script in SCRIPTS:
        path = HERE / script
        if not path.exists():
            print(f"skip {script}: not present")
            continue
        cmd = [sys.executable, str(path)] + (["--quick"] if quick else [])
        print("running", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(script)
    subprocess.run([sys.executable, str(HERE / "collect.py")], check=True)
    if failed:
        print("failed:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
