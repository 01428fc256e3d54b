"""The architecture as tests: the import contract (layers, no cycles, private modules), no
private name imported across packages, no module over 500 lines."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "lipinverse").rglob("*.py")) + sorted((ROOT / "operators").glob("*.py"))


def _package(module: str) -> str:
    """The unit of privacy: ``lipinverse.X`` or ``operators``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "lipinverse" and len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _cross_package_private_uses(path: Path) -> list[str]:
    module = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    here = _package(module)
    modules = {}  # local alias -> imported module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node, path.name == "__init__.py")
            for alias in node.names:
                target = f"{source}.{alias.name}"
                modules[alias.asname or alias.name] = target
                if alias.name.startswith("_") and not alias.name.startswith("__") \
                        and _package(source) != here and source.split(".")[0] in (
                            "lipinverse", "operators"):
                    found.append(f"{path.name}:{node.lineno} imports {source}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            target = modules.get(node.value.id)
            if target and target.split(".")[0] in ("lipinverse", "operators") \
                    and _package(target) != here:
                found.append(f"{path.name}:{node.lineno} uses {target}.{node.attr}")
    return found


def test_no_private_name_is_used_across_packages():
    found = [hit for p in SOURCES for hit in _cross_package_private_uses(p)]
    assert not found, "private names used across packages:\n" + "\n".join(found)


def test_the_private_name_check_can_fail(tmp_path):
    bad = ROOT / "lipinverse" / "solvers" / "_probe_private_use.py"
    bad.write_text("from operators import base as b\nfrom operators.base import _x\n"
                   "y = b._secret\n")
    try:
        hits = _cross_package_private_uses(bad)
    finally:
        bad.unlink()
    assert len(hits) == 2, hits


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_import_contract():
    """``lint-imports`` (import-linter, configured in pyproject.toml) keeps every contract."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]'")
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
