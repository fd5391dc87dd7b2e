"""Fixtures for the infrastructure tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.harness import copy_project, isolated_environment, name_stage_key, run_make

# The stages `make package` is run for (each its own SAM template).
PACKAGED_STAGES = ("dev", "prod")
# The stage packaged again with a customer-managed KMS key named, and the key (any account's:
# the package needs none to exist).
KEYED_STAGE = "prod"
PACKAGE_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Any AWS call fails at once: this endpoint refuses connections, and there are no credentials.
DEAD_END = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project, shared by one test module."""
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`make package` for each stage with no AWS account: no credentials, region or endpoint.

    Shared by the package's tests and the scanner's. The package index stays reachable:
    Chalice bundles requirements.txt from it (pip's PIP_INDEX_URL or PIP_FIND_LINKS can
    point it at a mirror or a wheelhouse instead).
    """
    project = copy_project(tmp_path_factory.mktemp("packaged"))
    env = isolated_environment(AWS_ENDPOINT_URL=DEAD_END)
    for stage in PACKAGED_STAGES:
        run_make(project, env, "package", f"STAGE={stage}")
    return {stage: project / "out" / stage for stage in PACKAGED_STAGES}


@pytest.fixture(scope="session")
def packaged_with_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make package` for KEYED_STAGE with PACKAGE_KEY as its kms_key_arn; out/<stage>/."""
    project = copy_project(tmp_path_factory.mktemp("packaged-with-key"))
    name_stage_key(project, KEYED_STAGE, PACKAGE_KEY)
    run_make(
        project, isolated_environment(AWS_ENDPOINT_URL=DEAD_END), "package", f"STAGE={KEYED_STAGE}"
    )
    return project / "out" / KEYED_STAGE
