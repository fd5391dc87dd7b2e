"""Tests for infra.event_source.instances: an instance is an interpreter of its own that
imports exactly what the deployment package and Lambda's runtime contain, whatever the
developer's environment holds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.event_source import InstanceSpec, InvocationStatus
from infra.event_source.deployment import import_world
from infra.event_source.instances import Instance
from infra.run import copy_app
from tests.infra.event_source.toy import FIXTURES

IMPORTS_PROJECT = FIXTURES / "imports_project"
# Installed here for development and tests, absent from any deployment package; and the
# project's own packages beside app.py that Chalice does not zip.
DEVELOPMENT_ONLY = ["moto", "requests", "rich", "pytest", "infra", "jobs_cli", "tests"]


@pytest.fixture
def start_instance() -> Iterator[Any]:
    """Factory: an instance of ``handler`` in ``project``; killed after the test."""
    started: list[Instance] = []

    def start(project: Path, handler: str, **environment: str) -> Instance:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # The runner's own shell: its PYTHONPATH names the project and the tests.
        env["PYTHONPATH"] = os.pathsep.join([str(project), str(Path.cwd())])
        env.update(environment)
        spec = InstanceSpec(
            project_dir=str(project),
            handler=handler,
            function_name="imports-dev-probe",
            memory_size=128,
            timeout_seconds=30,
            environment=env,
            import_world=import_world(str(project)).to_wire(),
        )
        started.append(Instance(spec))
        return started[-1]

    yield start
    for instance in started:
        instance.kill()


def imports_project(tmp_path: Path, requirements: str | None = None) -> Path:
    project = tmp_path / "imports"
    shutil.copytree(IMPORTS_PROJECT, project)
    if requirements is not None:
        (project / "requirements.txt").write_text(requirements)
    return project


def probe(instance: Instance, *names: str) -> dict[str, Any]:
    assert instance.wait_ready() is None
    result = instance.invoke({"probes": list(names)}, "request-1", timeout=30)
    assert result.status is InvocationStatus.RETURNED, result.error
    response: dict[str, Any] = result.response
    return response


def test_a_stray_development_import_fails_at_init_as_on_lambda(
    tmp_path: Path, start_instance: Any
) -> None:
    project = imports_project(tmp_path)

    instance = start_instance(project, "app.probe", TOY_IMPORTS="requests")
    result = instance.wait_ready()

    assert result is not None and result.status is InvocationStatus.RAISED
    assert result.error == "Init error: ModuleNotFoundError: No module named 'requests'"


def test_a_requirements_txt_dependency_is_importable(tmp_path: Path, start_instance: Any) -> None:
    project = imports_project(tmp_path, requirements="requests==2.34.2\n")

    instance = start_instance(project, "app.probe", TOY_IMPORTS="requests")
    response = probe(instance, "requests", "idna", "moto", "rich")

    # requests and what it depends on, not what else is installed.
    assert response["importable"] == {"requests": True, "idna": True, "moto": False, "rich": False}


def test_an_instance_sees_the_runtime_and_its_package_only(
    tmp_path: Path, start_instance: Any
) -> None:
    project = imports_project(tmp_path)
    (project / "infra").mkdir()  # a package beside app.py that Chalice does not zip
    (project / "infra" / "__init__.py").write_text("")

    response = probe(
        start_instance(project, "app.probe"),
        "json", "boto3", "botocore", "s3transfer", "dateutil", "chalice", "chalice.app",
        "chalicelib", "chalice.local", "chalice.cli", *DEVELOPMENT_ONLY,
    )  # fmt: skip

    importable = response["importable"]
    assert [name for name, found in importable.items() if found] == [
        "json", "boto3", "botocore", "s3transfer", "dateutil", "chalice", "chalice.app",
        "chalicelib",
    ]  # fmt: skip
    assert response["cwd"] == str(project)  # Lambda runs in its task root
    assert str(Path.cwd()) not in response["sys_path"]  # the runner's PYTHONPATH is not


def test_the_real_app_initialises_behind_the_guard(tmp_path: Path, start_instance: Any) -> None:
    project = copy_app(tmp_path / "app")
    config = json.loads((project / ".chalice" / "config.json").read_text())
    names = config["stages"]["local"]["environment_variables"]  # the resources' names
    # Every event handler's function (the API's routes are chalice local's, not ours).
    functions = [name for name in config["lambda_functions"] if name != "api_handler"]
    assert "process_job" in functions
    for function in functions:
        instance = start_instance(
            project, f"app.{function}", AWS_DEFAULT_REGION="us-east-1", **names
        )
        assert instance.wait_ready() is None, function


def test_two_threads_reaping_one_instance_close_its_pipe_once(
    tmp_path: Path, start_instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At shutdown the runner reaps every instance while a source whose instance died under
    it reaps the same one: the pipe's descriptor must be closed once, and neither raises."""
    instance = start_instance(imports_project(tmp_path), "app.handler")
    conn = instance._conn
    closing, closes = threading.Barrier(2, timeout=5), []
    close = type(conn)._close

    def slow_close(self: Any) -> None:  # both threads inside close() at once, if allowed
        closes.append(self._handle)
        with contextlib.suppress(threading.BrokenBarrierError):
            closing.wait(1)
        close(self)

    monkeypatch.setattr(type(conn), "_close", slow_close)
    errors: list[BaseException] = []

    def reap() -> None:
        try:
            instance.reap(grace=5)
        except BaseException as error:  # what the runner would die of
            errors.append(error)

    instance.terminate()
    threads = [threading.Thread(target=reap) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(closes) == 1
