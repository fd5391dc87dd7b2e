"""End-to-end fixtures: the local stack as real processes on free ports, over real HTTP.

Each test gets a copy of the project (``infra.run.copy_app``), so it
can shorten the stage's timeouts and intervals without touching the real config, and a
stack of its own: a moto server, the template applied to it, ``chalice local`` and the
local event source, all started by ``infra.run.Services`` exactly as ``make run`` does.
Everything is stopped afterwards, and the test fails if a process or port is left.

``make_stack(faults=True)`` puts a fault-injecting proxy (tests/e2e/fault_proxy.py) in
front of the emulator for DynamoDB and for SQS: the stack's processes reach each service
through its proxy, while the test's own clients (``Stack.client``) talk to the emulator
directly, so its checks see the truth during an outage.

``make_stack(keyed=True)`` runs the stage as ``JOBS_REQUIRE_API_KEY=true make run`` does:
the job routes need a key, checked by the local API as API Gateway checks it.
``Stack.api_key(client)`` makes (once) and returns a key through ``make api-key
STAGE=local [CLIENT=client]``'s own entry point, against the stack's emulator; set
``Stack.key`` to have ``submit`` and ``job`` send one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from chalicelib import config
from chalicelib.queue import MESSAGE_GROUP
from infra.emulator import endpoint_url, free_port, port_is_free
from infra.run import PROJECT_DIR, Services, copy_app
from tests.e2e.fault_proxy import FaultProxy, Mode
from tests.processes import is_running
from tests.waiting import wait_for

STAGE = "local"
# The copy's stage: quick heartbeats and recovery, so faults play out in seconds.
FAST_SETTINGS = {
    "JOBS_PROGRESS_INTERVAL_SECONDS": "0.2",
    "JOBS_STALE_AFTER_SECONDS": "2",
    "JOBS_RETRY_BASE_SECONDS": "1",
}
# A stack whose tests submit more than a client's quota allows (fuzzing: hundreds of
# generated jobs, up to n = 1e10 each) turns the quota off (chalicelib.config: 0 is off).
QUOTAS_OFF = {config.MAX_ACTIVE_PER_CLIENT: "0", config.MAX_ACTIVE_SECONDS_PER_CLIENT: "0"}
# The event source polls briefly and runs the recovery sweep every second.
WORKER_ARGS = ("--poll-seconds", "1", "--schedule-period-seconds", "1")
# The services the stack's processes reach through a fault-injecting proxy, when asked.
PROXIED_SERVICES = ("dynamodb", "sqs")
# The header API Gateway (and the local API) reads a key from.
API_KEY_HEADER = "x-api-key"


def configure(
    project: Path,
    environment: dict[str, str] | None = None,
    functions: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Change the copy's stage: its environment variables and per-function settings."""
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    stage = config["stages"][STAGE]
    stage.setdefault("environment_variables", {}).update(environment or {})
    for name, settings in (functions or {}).items():
        stage.setdefault("lambda_functions", {}).setdefault(name, {}).update(settings)
    path.write_text(json.dumps(config, indent=2))


@dataclass
class Stack:
    services: Services
    outputs: dict[str, str]
    log_path: Path
    # By service name, when the stack was made with faults=True.
    proxies: dict[str, FaultProxy] = field(default_factory=dict)
    # The key submit() and job() send, when set (a keyed stack's: api_key()).
    key: str | None = None

    @property
    def url(self) -> str:
        return self.services.api_url

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.services.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def api_key(self, client: str | None = None) -> str:
        """The value of ``client``'s key (the operator's without one) on this stack, made
        once: ``make api-key STAGE=local [CLIENT=client]``'s command, run against this
        stack's emulator."""
        command = [
            sys.executable, "-m", "infra.deploy", "api-key", "--stage", STAGE,
            *(["--client", client] if client is not None else []),
        ]  # fmt: skip
        result = subprocess.run(
            command, cwd=PROJECT_DIR, env=self.services.environment(),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {API_KEY_HEADER: self.key, **headers} if self.key is not None else headers

    def submit(self, n: int, **headers: str) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/heavy", json={"n": n}, headers=self._headers(headers), timeout=30
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/jobs/{job_id}", headers=self._headers({}), timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for_job(
        self, job_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        def satisfied() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if condition(job) else None

        found: dict[str, Any] = wait_for(
            satisfied, timeout, lambda: f"job {job_id}; the stack's log ends:\n{self.log[-4000:]}"
        )
        return found

    def send_raw(self, body: str) -> None:
        """Put ``body`` on the job queue as a sender would (its one message group, a
        deduplication id of its own)."""
        self.client("sqs").send_message(
            QueueUrl=self.outputs["QueueUrl"],
            MessageBody=body,
            MessageGroupId=MESSAGE_GROUP,
            MessageDeduplicationId=uuid.uuid4().hex,
        )

    def depth(self, queue_url_key: str = "QueueUrl") -> int:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.outputs[queue_url_key],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Factory: a running local stack on a project copy; stopped, and checked, afterwards."""
    with stacks(tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def make_module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """``make_stack`` for a whole test file: for tests that check answers, not state,
    and would each pay a stack's start and stop for a few seconds of requests."""
    with stacks(tmp_path_factory.mktemp("stacks")) as make:
        yield make


@contextlib.contextmanager
def stacks(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Factory of stacks in ``tmp_path``; on exit every one is stopped and checked."""
    started: list[tuple[Services, Any]] = []
    proxies: list[FaultProxy] = []

    def make(
        environment: dict[str, str] | None = None,
        functions: dict[str, dict[str, Any]] | None = None,
        parameters: dict[str, str] | None = None,
        worker: bool = True,
        extra_files: dict[str, str] | None = None,
        faults: bool = False,
        keyed: bool = False,
    ) -> Stack:
        project = copy_app(tmp_path / f"project{len(started)}")
        configure(project, {**FAST_SETTINGS, **(environment or {})}, functions)
        for relative, text in (extra_files or {}).items():
            target = project / relative
            target.write_text(target.read_text() + text if target.exists() else text)
        log_path = tmp_path / f"stack{len(started)}.log"
        log = log_path.open("w")
        emulator_port = free_port()
        stack_proxies = {
            service: FaultProxy(endpoint_url(emulator_port), service).start()
            for service in (PROXIED_SERVICES if faults else ())
        }
        proxies.extend(stack_proxies.values())
        services = Services(
            project_dir=project, stage=STAGE, api_port=free_port(),
            emulator_port=emulator_port, output=log, worker_args=WORKER_ARGS,
            service_endpoints={service: p.url for service, p in stack_proxies.items()},
            require_api_key=keyed,
        )  # fmt: skip
        started.append((services, log))
        outputs = services.start_all(parameters, worker)
        return Stack(services, outputs, log_path, stack_proxies)

    try:
        yield make
    finally:
        _stop(started, proxies)


def _stop(started: list[tuple[Services, Any]], proxies: list[FaultProxy]) -> None:
    for proxy in proxies:  # faults end first, so that the processes stop as they should
        proxy.clear_rules()
        proxy.set_mode(Mode.PASS)
    for services, log in started:
        pids = [p.popen.pid for p in services.processes.values()]
        ports = [services.api_port, services.emulator_port]
        services.stop_all()
        log.close()
        assert not [pid for pid in pids if is_running(pid)], "a process outlived the stack"
        assert all(port_is_free(port) for port in ports), "a port is still taken"
    for proxy in proxies:
        proxy.stop()
