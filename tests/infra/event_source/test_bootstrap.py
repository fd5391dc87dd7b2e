"""Unit tests for infra.event_source.bootstrap's import guard, in this process: the guard
is asked what it would find, never installed here (see test_instances.py for an
instance that runs behind it)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import six  # noqa: F401  (its meta path importer makes six.moves)

from infra.event_source.bootstrap import PackageImportGuard
from infra.event_source.deployment import import_world


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with app.py, chalicelib/, vendor/ and a stray top-level package."""
    (tmp_path / "app.py").write_text("")
    for package in ("chalicelib", "vendor/vendored", "stray"):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
    return tmp_path


@pytest.fixture
def guard(project: Path) -> PackageImportGuard:
    world = import_world(str(project))
    return PackageImportGuard(
        sys.meta_path, world.files, world.directories, fallback_paths=[str(project / "vendor")]
    )


def finds(guard: PackageImportGuard, name: str) -> bool:
    """What the import system asks the guard for ``name`` (a submodule: with its
    parent's ``__path__``, so the parent must be importable here)."""
    parent = name.rpartition(".")[0]
    path = list(importlib.import_module(parent).__path__) if parent else None
    return guard.find_spec(name, path) is not None


@pytest.mark.parametrize(
    "name",
    ["json", "email.mime.text", "sqlite3", "boto3", "botocore.session", "dateutil.tz", "six.moves",
     "chalice", "chalice.app"],
)  # fmt: skip
def test_the_runtime_and_the_package_are_found(guard: PackageImportGuard, name: str) -> None:
    assert finds(guard, name)


@pytest.mark.parametrize(
    "name",
    ["moto", "requests", "rich", "pytest", "infra", "jobs_cli", "chalice.local", "chalice.cli"],
)
def test_the_development_environment_is_hidden(guard: PackageImportGuard, name: str) -> None:
    assert not finds(guard, name)


def test_the_task_root_offers_only_what_chalice_packages(
    guard: PackageImportGuard, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the instance sets it: the task root first, vendor/ last.
    monkeypatch.setattr(sys, "path", [str(project), *sys.path, str(project / "vendor")])
    assert finds(guard, "app") and finds(guard, "chalicelib")
    assert not finds(guard, "stray")  # beside app.py locally, but never zipped
    assert finds(guard, "vendored")
    # vendor/'s contents sit beside app.py in the zip, so a vendored copy of a package
    # also installed for development is found in vendor/, not in site-packages.
    (project / "vendor" / "requests").mkdir()
    (project / "vendor" / "requests" / "__init__.py").write_text("")
    spec = guard.find_spec("requests", None)
    assert spec is not None and spec.origin == str(project / "vendor" / "requests" / "__init__.py")
