"""The documentation's fixtures: the built site, and one local stack shared by the
examples that need one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.emulator import free_port, port_is_free
from infra.run import Services, copy_app
from infra.stack import PROJECT_DIR
from tests.e2e.conftest import FAST_SETTINGS, STAGE, WORKER_ARGS, Stack, configure
from tests.processes import is_running

# `make test` builds the site (`make docs`) before the suite and names it here, so the
# suite does not build it a second time; without it, the site is built for the session.
BUILT_SITE = "HEAVY_JOBS_BUILT_SITE"


def build_site(site_dir: Path, project: Path = PROJECT_DIR) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``project``'s site into ``site_dir``, as ``make docs``
    runs it. Not ``--quiet``: it drops the warnings that ``--strict`` turns into errors."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=project, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(PROJECT_DIR)},
    )  # fmt: skip


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = os.environ.get(BUILT_SITE)
    if built:
        return (PROJECT_DIR / built).resolve()
    target = tmp_path_factory.mktemp("site")
    result = build_site(target)
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One local stack, as ``make run`` starts it, for every example of the module; stopped
    and checked afterwards (no process or port left)."""
    tmp = tmp_path_factory.mktemp("docs-stack")
    project = copy_app(tmp / "project")
    configure(project, dict(FAST_SETTINGS))
    log_path = tmp / "stack.log"
    with log_path.open("w") as log:
        services = Services(
            project_dir=project, stage=STAGE, api_port=free_port(),
            emulator_port=free_port(), output=log, worker_args=WORKER_ARGS,
            require_api_key=False,
        )  # fmt: skip
        try:
            yield Stack(services, services.start_all(None, True), log_path)
        finally:
            pids = [p.popen.pid for p in services.processes.values()]
            services.stop_all()
    assert not [pid for pid in pids if is_running(pid)], "a process outlived the stack"
    assert all(port_is_free(p) for p in (services.api_port, services.emulator_port))
