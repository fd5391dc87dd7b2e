"""The whole service on one machine: emulator, infrastructure, API and worker.

    python -m infra.run [--stage local] [--port 8000] [--emulator-port 4566]

``make run`` is this command. In the foreground, with every line prefixed by the name of
the process that wrote it, it:

1. uses the AWS endpoint answering on 127.0.0.1:$EMULATOR_PORT (a user's LocalStack, or
   a moto server left running), else the one a user's LocalStack settings point at
   (``$LOCALSTACK_HOST``, the legacy ``$EDGE_PORT``: ``infra.emulator.localstack_endpoint``)
   if it answers, else starts moto's server on $EMULATOR_PORT (``infra.emulator``);
2. applies infra/template.yaml to it as the stage's stack (``infra.stack``);
3. starts ``chalice local`` on 127.0.0.1:$PORT (``infra.local_api``: without autoreload,
   which drops requests in flight, and with Nagle's algorithm off, which otherwise costs
   40 ms a request on keep-alive connections) and the local Lambda event source
   (``infra.event_source``), which runs the SQS and scheduled handlers in processes of
   their own, never in the API's; ``EVENT_SOURCE_MODE=aws`` in the environment makes it
   poll as AWS's mapping does, throttles included (``infra/event_source/modes.py``).

``JOBS_REQUIRE_API_KEY=true`` in the environment (``JOBS_REQUIRE_API_KEY=true make run``)
runs the stage with keys required, as on prod: the app declares its job routes with
``api_key_required``, and the local API refuses them 403 without a key of the stage's
usage plan in the emulator, as API Gateway does (infra/local_api.py); ``make api-key
STAGE=local [CLIENT=name]`` makes and prints one (infra/deploy/access.py).

Ctrl-C or SIGTERM stops everything it started, in reverse order, and leaves no process
or listening port behind; if any of its processes dies, the rest are stopped too (exit 1).

Every piece reaches the emulator through boto3's standard ``AWS_ENDPOINT_URL``; nothing
here or in the app knows which emulator it is. ``Services`` is the same machinery as a
Python API, for the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import boto3
import requests

from chalicelib import config as settings
from chalicelib.jobs import utc_now
from chalicelib.store import JobTable
from infra import operations, stack
from infra.deploy import event_stream
from infra.emulator import (
    EmulatorHandle,
    default_port,
    endpoint_url,
    ensure_emulator,
    localstack_endpoint,
    wait_until,
)
from infra.event_source import mappings, streams
from infra.event_source.modes import MODE_VARIABLE

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# The stage `make run` serves (its settings in .chalice/config.json, stack heavy-jobs-local).
LOCAL_STAGE = "local"
DEFAULT_API_PORT = 8000
DEFAULT_REGION = "us-east-1"
STOP_GRACE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 30.0


@dataclass
class Process:
    """A child process whose output is copied, line by line, behind its name."""

    name: str
    popen: subprocess.Popen[bytes]
    pump: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, then SIGKILL to its whole process group after ``grace`` seconds."""
        if self.running:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                _kill_group(self.popen.pid)
                self.popen.wait()
        else:
            _kill_group(self.popen.pid)  # stragglers of a dead parent, if any
        if self.pump is not None:
            self.pump.join(timeout=2)

    def kill(self) -> None:
        """SIGKILL the process alone, as a crash would (its children notice and exit)."""
        self.popen.kill()
        self.popen.wait()


def stream_environment(outputs: Mapping[str, str]) -> dict[str, str]:
    """What the event source needs to read the job table's stream as the deployed mapping
    does: the stream's ARN (publish_job_events' decorator reads it when app.py is
    imported, as under ``chalice deploy``) and the settings ``make deploy`` gives the
    mapping (infra/deploy/event_stream.py), the on-failure queue by its URL."""
    failed_queue = outputs[event_stream.FAILED_QUEUE_OUTPUT].rsplit(":", 1)[-1]
    url = boto3.client("sqs").get_queue_url(QueueName=failed_queue)["QueueUrl"]
    extras = event_stream.mapping_settings(url)
    return {
        settings.TABLE_STREAM_ARN: outputs[event_stream.STREAM_OUTPUT],
        streams.BISECT_VARIABLE: str(extras["BisectBatchOnFunctionError"]).lower(),
        streams.MAX_RETRIES_VARIABLE: str(extras["MaximumRetryAttempts"]),
        streams.ON_FAILURE_VARIABLE: url,
    }


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Services:
    """The local stack's processes, started and stopped one by one or all together."""

    project_dir: Path = PROJECT_DIR
    stage: str = LOCAL_STAGE
    api_port: int = DEFAULT_API_PORT
    emulator_port: int = field(default_factory=default_port)
    output: IO[str] = field(default_factory=lambda: sys.stdout)
    # Extra arguments for the event source (e.g. a shorter schedule in tests).
    worker_args: Sequence[str] = ()
    # Where else an emulator may already answer (a user's LocalStack), tried after
    # emulator_port and before starting moto there; `make run` passes localstack_endpoint().
    localstack: str | None = None
    # The event source's mode ("exact" or "aws", see infra/event_source/modes.py); None
    # leaves $EVENT_SOURCE_MODE as the caller's environment has it (make run, make worker).
    event_source_mode: str | None = None
    # Per-service endpoints for the children, by boto3 service name (e.g. {"sqs": url}):
    # set as AWS_ENDPOINT_URL_<SERVICE>, which boto3 prefers to AWS_ENDPOINT_URL (the
    # outage tests put a fault-injecting proxy there, in front of the emulator).
    service_endpoints: Mapping[str, str] = field(default_factory=dict)
    # True: the children run with JOBS_REQUIRE_API_KEY=true (the job routes need a key,
    # checked by the local API as API Gateway checks it); None leaves the caller's
    # environment as it is (make run: JOBS_REQUIRE_API_KEY=true make run).
    require_api_key: bool | None = None
    emulator: EmulatorHandle | None = None
    # The job table stream's mapping, once the stack is applied (see stream_environment).
    stream: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    _print_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def endpoint(self) -> str:
        """The emulator's URL: the one in use once started, else 127.0.0.1:emulator_port."""
        if self.emulator is not None:
            return self.emulator.url
        return endpoint_url(self.emulator_port)

    def environment(self) -> dict[str, str]:
        """The children's environment: the caller's, pointed at the emulator.

        Dummy credentials only when none are configured (emulators accept any).
        """
        env = dict(os.environ)
        env["AWS_ENDPOINT_URL"] = self.endpoint
        for service, url in self.service_endpoints.items():
            env[f"AWS_ENDPOINT_URL_{service.upper()}"] = url
        env.setdefault("AWS_DEFAULT_REGION", DEFAULT_REGION)
        if "AWS_ACCESS_KEY_ID" not in env and "AWS_PROFILE" not in env:
            env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = "test"
        env["PYTHONUNBUFFERED"] = "1"
        if self.event_source_mode is not None:
            env[MODE_VARIABLE] = self.event_source_mode
        if self.require_api_key is not None:
            env[settings.REQUIRE_API_KEY] = str(self.require_api_key).lower()
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_DIR), env.get("PYTHONPATH")) if p
        )
        env.update(self.stream)
        return env

    # --- the pieces -----------------------------------------------------------------

    def start_emulator(self) -> EmulatorHandle:
        self.emulator = ensure_emulator(
            self.emulator_port, output=subprocess.PIPE, fallback=self.localstack
        )
        if self.emulator.owned and self.emulator.process is not None:
            self._pump("emulator", self.emulator.process)
            self.say(f"started moto server at {self.endpoint}")
        else:
            self.say(f"using the AWS endpoint already answering at {self.endpoint}")
        return self.emulator

    def apply_infra(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Apply the template to the emulator as the stage's stack; return its outputs."""
        with _environment(self.environment()):
            outputs = stack.apply_stage(self.stage, self.project_dir, overrides=overrides)
            paused = self._record_pause(outputs["TableName"])
            self.stream = stream_environment(outputs)
        self.say(
            f"infrastructure applied: queue {outputs['QueueName']}, table {outputs['TableName']}"
        )
        if paused:
            self.say(f"the worker is paused: make resume STAGE={self.stage} lets it take jobs")
        return outputs

    def _record_pause(self, table_name: str) -> bool:
        """A worker paused before this start stays paused (its mapping state is a file,
        infra/event_source/mappings.py), while a new emulator's table forgot it: record it
        there again, as `make pause` did, so the API reports it. True if paused."""
        config = stack.load_chalice_config(self.stage, self.project_dir)
        handler = operations.worker_handler(config)
        if mappings.is_enabled(self.project_dir, self.stage, handler):
            return False
        JobTable(boto3.client("dynamodb"), table_name).record_worker_paused(True, utc_now())
        return True

    def start_api(self) -> Process:
        command = [
            sys.executable, "-m", "infra.local_api", "--project-dir", str(self.project_dir),
            "--stage", self.stage, "--host", HOST, "--port", str(self.api_port),
        ]  # fmt: skip
        process = self._start("api", command)
        if not wait_until(
            lambda: self._api_answers() or not process.running, READY_TIMEOUT_SECONDS
        ):
            raise RuntimeError(f"the API did not answer at {self.api_url}")
        if not process.running:
            raise RuntimeError(f"the API exited with status {process.popen.returncode}")
        return process

    def start_worker(self, name: str = "worker") -> Process:
        command = [
            sys.executable, "-m", "infra.event_source",
            "--project-dir", str(self.project_dir), "--stage", self.stage,
            *self.worker_args,
        ]  # fmt: skip
        return self._start(name, command)

    def _api_answers(self) -> bool:
        try:
            return requests.get(f"{self.api_url}/fast", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    # --- all together ---------------------------------------------------------------

    def start_all(
        self, parameters: Mapping[str, str] | None = None, worker: bool = True
    ) -> dict[str, str]:
        """Emulator, infrastructure (with template ``parameters`` overridden), API and,
        unless ``worker`` is False, the worker; return the stack's outputs."""
        self.start_emulator()
        outputs = self.apply_infra(parameters)
        self.start_api()
        if worker:
            self.start_worker()
        return outputs

    def stop_all(self) -> None:
        """Stop every process started here, newest first, then the emulator if ours."""
        for name in reversed(list(self.processes)):
            self.processes.pop(name).stop()
        if self.emulator is not None:
            self.emulator.stop()
            if self.emulator.process is not None and self.emulator.process.stdout:
                self.emulator.process.stdout.close()
            self.emulator = None

    def dead(self) -> list[str]:
        return [name for name, p in self.processes.items() if not p.running]

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # --- output -----------------------------------------------------------------------

    def say(self, message: str) -> None:
        self._print("run", message)

    def _start(self, name: str, command: list[str]) -> Process:
        popen = subprocess.Popen(
            command,
            cwd=self.project_dir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches run.py only, which stops us in order
        )
        process = Process(name, popen, self._pump(name, popen))
        self.processes[name] = process
        return process

    def _pump(self, name: str, popen: subprocess.Popen[bytes]) -> threading.Thread:
        def copy() -> None:
            assert popen.stdout is not None
            for raw in iter(popen.stdout.readline, b""):
                self._print(name, raw.decode(errors="replace").rstrip())

        thread = threading.Thread(target=copy, name=f"output:{name}", daemon=True)
        thread.start()
        return thread

    def _print(self, name: str, line: str) -> None:
        with self._print_lock:
            self.output.write(f"{name:>8} | {line}\n")
            self.output.flush()


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def copy_app(destination: Path, project_dir: Path = PROJECT_DIR) -> Path:
    """A project of its own for a test or a benchmark: what Chalice deploys (app.py,
    chalicelib/, requirements.txt) and its config, which the copy's owner may change."""
    destination.mkdir(parents=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copy(project_dir / name, destination / name)
    shutil.copytree(
        project_dir / "chalicelib", destination / "chalicelib",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    (destination / ".chalice").mkdir()
    shutil.copy(project_dir / ".chalice" / "config.json", destination / ".chalice")
    return destination


BANNER = """\
heavy-jobs is running.  API: {url}   emulator: {endpoint}
  curl -s {url}/fast
  curl -si -X POST {url}/heavy -H 'Content-Type: application/json' -d '{{"n": 500000000}}'
  curl -s {url}/jobs/<job_id>        (the Location header of the answer above)
Ctrl-C stops everything."""
KEYED_BANNER = """\
The job routes need an API key (JOBS_REQUIRE_API_KEY=true), checked as API Gateway does:
  make api-key STAGE={stage} [CLIENT=name]     (prints it; then -H 'x-api-key: <key>')"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stage", default=LOCAL_STAGE)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_API_PORT)))
    parser.add_argument("--emulator-port", type=int, default=default_port())
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        localstack = localstack_endpoint()
    except ValueError as error:
        print(f"run: {error}", file=sys.stderr)
        return 2
    services = Services(
        stage=args.stage,
        api_port=args.port,
        emulator_port=args.emulator_port,
        localstack=localstack,
    )
    status = 0
    try:
        services.start_all()
        services.say(BANNER.format(url=services.api_url, endpoint=services.endpoint))
        if settings.api_key_required(services.environment()):
            services.say(KEYED_BANNER.format(stage=services.stage))
        while not stop.wait(0.5):
            if services.dead():
                services.say(f"{', '.join(services.dead())} stopped; stopping everything")
                status = 1
                break
    except Exception as error:  # a piece failed to start: say why, stop the rest
        services.say(f"could not start: {error}")
        status = 1
    finally:
        services.stop_all()
        services.say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
