"""The two import packages stay light: deepinv is imported only by the adapters."""

import subprocess
import sys


def test_import_does_not_pull_deepinv():
    code = ("import sys, operators, lipinverse, lipinverse.functionals; "
            "print('deepinv' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout


def test_operators_never_imports_lipinverse():
    code = "import sys, operators, operators.testing; print('lipinverse' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
