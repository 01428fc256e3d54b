"""The README's Python examples run as written (a user copies them first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _block(marker: str) -> str:
    found = [b for b in _blocks() if marker in b]
    assert len(found) == 1, f"README: expected one python block with {marker!r}"
    return found[0]


def test_readme_names_the_two_commands_first():
    text = README.read_text()
    first_code = text.index("```bash")
    assert text.index("make demo") > first_code and text.index("make test") > first_code
    assert text.index("make demo") < text.index("```python")


def test_own_operator_example_runs():
    ns: dict = {}
    exec(compile(_block("class ColumnSums"), "README-own-operator", "exec"), ns)
    A = ns["A"]
    assert A.norm() >= 32 ** 0.5 * (1 - 1e-9)  # certified upper bound of sqrt(n)


def test_deepinv_example_runs():
    ns: dict = {}
    exec(compile(_block("from_deepinv"), "README-deepinv", "exec"), ns)
    assert 1.0 <= ns["A"].norm() <= 1.0 + 1e-4  # certified for the nonnegative mask


@pytest.mark.slow
def test_main_example_runs_with_the_shipped_prior():
    from lipinverse import pretrained

    if "crr" not in pretrained.available():
        pytest.skip("the shipped prior 'crr' is not available yet")
    ns: dict = {}
    exec(compile(_block("deblur_prior"), "README-example", "exec"), ns)
    result = ns["result"]
    assert not str(result.guarantee).startswith("none")
    assert bool(result.converged.all())


def test_ct_example_runs_and_beats_fbp():
    from lipinverse.metrics import image_metrics

    ns: dict = {}
    setup = "import torch\nfrom lipinverse import pretrained\n" \
            "from lipinverse.functionals import L2Fidelity\nfrom lipinverse.solvers import PGD\n"
    code = _block("normalize=True").replace("max_iter=200", "max_iter=60")
    exec(compile(setup + code, "README-ct", "exec"), ns)
    assert image_metrics(ns["ct"].x, ns["x"])[0] > image_metrics(ns["A"].fbp(ns["y"]),
                                                                 ns["x"])[0] + 1.0
