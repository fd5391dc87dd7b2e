"""infra.event_source as a package: self-contained, so it can be copied into another
Chalice project, and runnable as ``python -m`` from wherever it is put."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import infra.event_source

PACKAGE_DIR = Path(infra.event_source.__file__).parent
# What the package may import besides the standard library and its own modules: what
# any Chalice project has installed.
THIRD_PARTY = {"boto3", "botocore", "chalice"}


def imported_top_level_names(path: Path) -> set[str]:
    """The top-level names of every absolute import in a module (relative ones excluded)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_the_package_imports_only_the_standard_library_and_chalices_dependencies() -> None:
    modules = sorted(PACKAGE_DIR.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "__main__.py", "runner.py"}
    for module in modules:
        outside = imported_top_level_names(module) - THIRD_PARTY - sys.stdlib_module_names
        assert outside == set(), f"{module.name} imports {sorted(outside)}"


def test_a_copy_under_another_name_runs_as_a_command(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE_DIR, tmp_path / "lifted", ignore=shutil.ignore_patterns("__pycache__"))

    result = subprocess.run(
        [sys.executable, "-m", "lifted", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "--project-dir" in result.stdout and "--burst" in result.stdout
