"""Fixtures for the infrastructure tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.harness import copy_project


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project, shared by one test module."""
    return copy_project(tmp_path_factory.mktemp("project"))
