"""The shape of the house: layers that point down (import-linter), and functions short enough to read."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "vaediff"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LONGEST_FUNCTION = 60
DECLARATIVE = {"cli.py:build_parser"}  # argparse declarations: long, but a list, not logic


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """Run import-linter with the project's contract on the package found under `source_root`."""
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: `uv sync` installs import-linter (dev dependency group)")
    environment = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, env=environment, cwd=ROOT, timeout=120)


def test_layers_point_down():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = tmp_path / "vaediff"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "data.py").open("a") as handle:  # the data layer reaching up to the report
        handle.write("\nfrom vaediff import report  # noqa: E402,F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "vaediff.data -> vaediff.report" in result.stdout


def test_no_function_is_longer_than_a_screen():
    too_long = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                name = f"{path.relative_to(SOURCE)}:{node.name}"
                if length > LONGEST_FUNCTION and name not in DECLARATIVE:
                    too_long.append(f"{name} ({length} lines)")
    assert not too_long, f"functions over {LONGEST_FUNCTION} lines: {', '.join(too_long)}"
