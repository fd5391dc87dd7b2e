"""Execution environments: one process per function instance, as Lambda runs them.

``FunctionRuntime`` keeps up to ``concurrency`` instances of one function warm; each
``Instance`` is an interpreter of its own (``bootstrap.py``, run isolated) that imports
the app once (a cold start), seeing only what the deployment package and Lambda's
runtime contain (``deployment.import_world``), and then answers invocations with the
function's handler, killed when one outlives the timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import wait as wait_for_any
from pathlib import Path
from typing import Any

from .settings import FunctionSettings
from .settlement import InvocationResult, InvocationStatus

log = logging.getLogger(__name__)


INIT_TIMEOUT_SECONDS = 10.0  # Lambda's limit for a cold start's init phase
SHUTDOWN_GRACE_SECONDS = 0.5  # SIGTERM to SIGKILL for an instance at shutdown
# The instance's program, run as a script: it must not import this package.
BOOTSTRAP = Path(__file__).resolve().with_name("bootstrap.py")


@dataclass(frozen=True)
class InstanceSpec:
    """What an instance process needs; plain data, since it crosses into the child."""

    project_dir: str
    handler: str
    function_name: str
    memory_size: int
    timeout_seconds: int
    environment: dict[str, str]
    # deployment.ImportWorld.to_wire(): what the instance may import besides the stdlib
    import_world: dict[str, list[str]] = field(default_factory=dict)


def instance_environment(
    base: Mapping[str, str], function: FunctionSettings, region: str, project_dir: str
) -> dict[str, str]:
    """The environment of a function's instance: base, the function's variables, Lambda's.

    ``base`` is the runner's environment as it started (endpoint and credentials stand in
    for the execution role). Lambda's reserved variables are set last because AWS does
    not let a function's configuration override them.
    """
    env = dict(base)
    env.pop("AWS_CHALICE_CLI_MODE", None)  # set for the CLI's import of app.py, not Lambda's
    env.update(function.environment)
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.function_name}",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
            "LAMBDA_TASK_ROOT": project_dir,
            "_HANDLER": function.handler,
            "TZ": ":UTC",
        }
    )
    return env


class Instance:
    """One execution environment of a function: a child interpreter that imported the app
    once.

    The process starts on construction (``python -I bootstrap.py FD``, in the function's
    environment, with the task root as working directory, as Lambda runs it);
    ``wait_ready`` completes the cold start. Talks to the child over a pipe whose other
    end only the child holds, so a dead child reads as EOF at once.
    """

    def __init__(self, spec: InstanceSpec) -> None:
        self._conn, child_conn = Pipe()
        fd = child_conn.fileno()
        self._process = subprocess.Popen(
            [sys.executable, "-I", str(BOOTSTRAP), str(fd)],
            cwd=spec.project_dir,  # Lambda's working directory is the task root
            env=spec.environment,
            stdin=subprocess.DEVNULL,
            pass_fds=(fd,),
        )
        child_conn.close()  # only the child holds its end now: its death reads as EOF
        # reap() runs in two threads at once at shutdown: the runner's (shutdown) and a
        # source's whose instance died under it (kill). Closing the pipe twice at once
        # closed its descriptor twice: EBADF raised in the runner (exit status 1), or a
        # descriptor another thread had just been given closed under it.
        self._close_lock = threading.Lock()
        self._started = time.monotonic()
        self.init_ms: float | None = None  # the cold start, process start to handler imported
        with contextlib.suppress(OSError):  # it died at once: wait_ready reports how
            self._conn.send(asdict(spec))

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def wait_ready(self, timeout: float = INIT_TIMEOUT_SECONDS) -> InvocationResult | None:
        """Finish the cold start: None once ready, else the failed result (instance killed)."""
        reply = self._receive(timeout)
        if reply is None:
            self.kill()
            return InvocationResult(
                InvocationStatus.TIMED_OUT, error=f"Init timed out after {timeout:.2f} seconds"
            )
        kind, value = reply
        if kind == "ready":
            self.init_ms = (time.monotonic() - self._started) * 1000
            return None
        self.kill()
        if kind == "init_error":
            return InvocationResult(InvocationStatus.RAISED, error=f"Init error: {value}")
        return InvocationResult(InvocationStatus.DIED, error=value)

    def invoke(self, event: Any, request_id: str, timeout: float) -> InvocationResult:
        """Run one invocation; kill the instance if it outlives ``timeout`` seconds."""
        try:
            self._conn.send((event, request_id))
        except (BrokenPipeError, OSError):
            return InvocationResult(InvocationStatus.DIED, error=self._exit_description())
        reply = self._receive(timeout)
        if reply is None:
            self.kill()  # as Lambda does: the environment is discarded
            return InvocationResult(
                InvocationStatus.TIMED_OUT, error=f"Task timed out after {timeout:.2f} seconds"
            )
        kind, value = reply
        if kind == "returned":
            return InvocationResult(InvocationStatus.RETURNED, response=json.loads(value))
        if kind == "error":
            return InvocationResult(InvocationStatus.RAISED, error=value)
        return InvocationResult(InvocationStatus.DIED, error=value)

    def _receive(self, timeout: float) -> tuple[str, Any] | None:
        """The child's next message, ("died", description) if it exited, None on timeout."""
        if not wait_for_any([self._conn], timeout):
            return None
        try:
            reply: tuple[str, Any] = self._conn.recv()
            return reply
        except (EOFError, OSError):
            pass  # the child closed the pipe by exiting
        return ("died", self._exit_description())

    def _exit_description(self) -> str:
        try:
            code: int | None = self._process.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "Runtime exited"
        if code < 0:
            return f"Runtime exited with error: signal: {signal.Signals(-code).name}"
        return f"Runtime exited with error: exit status {code}"

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM); ``reap`` waits for it."""
        if self.alive:
            self._process.terminate()

    def kill(self) -> None:
        """Stop the process at once (SIGKILL) and reap it."""
        if self.alive:
            self._process.kill()
        self.reap(grace=0.0)

    def reap(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Wait up to ``grace`` seconds for the process to exit, then kill it; close the pipe."""
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        with self._close_lock:
            self._conn.close()  # a no-op once closed


@dataclass(frozen=True)
class Invocation:
    """One invocation as the runner logs it."""

    request_id: str
    result: InvocationResult
    cold_start: bool
    init_ms: float | None
    duration_ms: float


class RuntimeClosed(RuntimeError):
    """The runtime was shut down before the invocation reached an instance."""


class FunctionRuntime:
    """The instances of one function: at most ``concurrency`` at once, kept warm between uses.

    An event source reserves a slot before it takes events (``reserve``), invokes with
    it, and releases it afterwards; a slot with no warm instance cold-starts one.
    """

    def __init__(self, function: FunctionSettings, spec: InstanceSpec) -> None:
        self.function = function
        self._spec = spec
        self._slots = threading.Semaphore(function.concurrency)
        self._lock = threading.Lock()
        self._busy = 0
        self._idle: list[Instance] = []
        self._instances: set[Instance] = set()
        self._closed = False

    @property
    def busy(self) -> int:
        """Slots reserved right now."""
        with self._lock:
            return self._busy

    def reserve(self, timeout: float) -> bool:
        """Take a slot if one frees up within ``timeout`` seconds."""
        if not self._slots.acquire(timeout=timeout):
            return False
        with self._lock:
            self._busy += 1
        return True

    def release(self) -> None:
        with self._lock:
            self._busy -= 1
        self._slots.release()

    def invoke(self, event: Any) -> Invocation:
        """Invoke the function once (the caller holds a slot).

        Raises ``RuntimeClosed`` if the runtime has been shut down (no instance got the
        event).
        """
        request_id = str(uuid.uuid4())
        instance, cold = self._take_instance()
        result = instance.wait_ready() if cold else None
        started = time.monotonic()  # Lambda's timeout and duration exclude the init
        if result is None:
            result = instance.invoke(event, request_id, self.function.timeout_seconds)
        duration_ms = (time.monotonic() - started) * 1000
        self._give_back(instance)
        return Invocation(request_id, result, cold, instance.init_ms, duration_ms)

    def _take_instance(self) -> tuple[Instance, bool]:
        with self._lock:
            if self._closed:
                raise RuntimeClosed(f"{self.function.function_name} is shut down")
            if self._idle:
                return self._idle.pop(), False
            # Started under the lock so that shutdown() cannot miss it.
            instance = Instance(self._spec)
            self._instances.add(instance)
            return instance, True

    def _give_back(self, instance: Instance) -> None:
        with self._lock:
            if self._closed:
                return  # shutdown() reaps every instance it found
            if instance.alive:
                self._idle.append(instance)  # warm for the next invocation
                return
            self._instances.discard(instance)
        instance.kill()  # timed out or died: reap it; the next invocation cold-starts

    def shutdown(self) -> None:
        """Terminate every instance, busy or idle, and wait until they are gone."""
        with self._lock:
            self._closed = True
            instances = list(self._instances)
            self._instances.clear()
            self._idle.clear()
        for instance in instances:  # signal all first, so the grace periods overlap
            instance.terminate()
        for instance in instances:
            instance.reap()


def line_buffered_output() -> None:
    # Piped stdout is block-buffered by default; logs must show up line by line.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
