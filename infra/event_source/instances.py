"""Execution environments: one process per function instance, as Lambda runs them.

``FunctionRuntime`` keeps up to ``concurrency`` instances of one function warm; each
``Instance`` is a spawned process that imports the app once (a cold start) and then
answers invocations with the function's handler, killed when one outlives the timeout.
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_any
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .settings import FunctionSettings
from .settlement import InvocationResult, InvocationStatus

log = logging.getLogger(__name__)


INIT_TIMEOUT_SECONDS = 10.0  # Lambda's limit for a cold start's init phase
SHUTDOWN_GRACE_SECONDS = 0.5  # SIGTERM to SIGKILL for an instance at shutdown


@dataclass(frozen=True)
class InstanceSpec:
    """What an instance process needs; picklable, since it crosses into the child."""

    project_dir: str
    handler: str
    function_name: str
    memory_size: int
    timeout_seconds: int
    environment: dict[str, str]


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


def _instance_main(conn: Connection, spec: InstanceSpec) -> None:
    """An instance process: Lambda's runtime loop for one function.

    Init once (environment, import the handler), report "ready" or the init error, then
    answer one invocation per event received until the runner closes the pipe.
    """
    # Ctrl-C in a terminal reaches the whole process group; shutdown is the runner's call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line_buffered_output()
    # Lambda's Python runtime logs through a root handler (WARNING and up by default).
    logging.basicConfig(stream=sys.stderr, format="[%(levelname)s]\t%(asctime)s\t%(message)s")
    os.environ.clear()
    os.environ.update(spec.environment)
    time.tzset()  # TZ changed
    _exit_when_orphaned()
    try:
        handler = _import_handler(spec.project_dir, spec.handler)
    except Exception as err:
        # Any init error fails the init, and Lambda logs it to the function's log.
        error = f"{type(err).__name__}: {err}"
        log.exception("Init error: %s", error)
        conn.send(("init_error", error))
        return
    conn.send(("ready", None))
    while True:
        try:
            event, request_id = conn.recv()
        except EOFError:
            return  # the runner is gone
        conn.send(_call_handler(handler, event, request_id, spec))


def _exit_when_orphaned(interval: float = 0.5) -> None:
    """Exit if the runner dies without shutting us down (SIGKILL, a crash).

    The pipe tells an idle instance (EOF), but not one busy in a long handler; a
    daemon thread that notices the change of parent covers that case.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _import_handler(project_dir: str, handler: str) -> Callable[[Any, Any], Any]:
    # Lambda's task root holds app.py and chalicelib/ with vendor/'s contents beside
    # them; like the chalice CLI, vendor/ goes last so locally built packages win.
    if project_dir not in sys.path:
        sys.path.insert(0, project_dir)
    vendor = os.path.join(project_dir, "vendor")
    if os.path.isdir(vendor) and vendor not in sys.path:
        sys.path.append(vendor)
    # Lambda's handler string is "module.attribute": for a Chalice handler that is
    # "app.<python function name>", the decorated object that Lambda itself calls.
    module_name, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_name)
    function: Callable[[Any, Any], Any] = getattr(module, attribute)
    return function


def _call_handler(
    handler: Callable[[Any, Any], Any], event: Any, request_id: str, spec: InstanceSpec
) -> tuple[str, str]:
    """Invoke once; ("returned", response JSON) or ("error", what Lambda would report)."""
    from chalice.local import LambdaContext  # imported in the instance only

    # Chalice's local context carries the real context's fields; its remaining time
    # counts down from now against the function's timeout. Set what it leaves blank and
    # Lambda fills in; invoked_function_arn stays "" (no account to put in it).
    context = LambdaContext(
        spec.function_name, spec.memory_size, max_runtime_ms=spec.timeout_seconds * 1000
    )
    context.aws_request_id = request_id
    context.log_group_name = f"/aws/lambda/{spec.function_name}"
    try:
        response = handler(event, context)
    except Exception as err:
        # Any error fails the invocation; the Python runtime logs it with its traceback.
        error = f"{type(err).__name__}: {err}"
        log.exception("%s", error)
        return ("error", error)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        # Lambda sends the response back as JSON; one that cannot be serialized fails the
        # invocation.
        return ("returned", json.dumps(response))
    except (TypeError, ValueError) as err:
        return ("error", f"Runtime.MarshalError: Unable to marshal response: {err}")


class Instance:
    """One execution environment of a function: a child process that imported the app once.

    The process starts on construction; ``wait_ready`` completes the cold start. Talks to
    the child over a pipe and watches its sentinel, so a dead child is noticed at once.
    """

    def __init__(self, spec: InstanceSpec, mp_context: BaseContext) -> None:
        self._conn, child_conn = mp_context.Pipe()
        self._process: BaseProcess = mp_context.Process(  # type: ignore[attr-defined]
            target=_instance_main,
            args=(child_conn, spec),
            name=f"instance:{spec.function_name}",
        )
        self._process.start()
        child_conn.close()  # only the child holds its end now: its death reads as EOF
        self._started = time.monotonic()
        self.init_ms: float | None = None  # the cold start, process start to handler imported

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

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
        ready = wait_for_any([self._conn, self._process.sentinel], timeout)
        if not ready:
            return None
        if self._conn in ready:
            try:
                reply: tuple[str, Any] = self._conn.recv()
                return reply
            except (EOFError, OSError):
                pass  # the child closed the pipe by exiting
        return ("died", self._exit_description())

    def _exit_description(self) -> str:
        self._process.join(1.0)
        code = self._process.exitcode
        if code is None:
            return "Runtime exited"
        if code < 0:
            return f"Runtime exited with error: signal: {signal.Signals(-code).name}"
        return f"Runtime exited with error: exit status {code}"

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM); ``reap`` waits for it."""
        if self._process.is_alive():
            self._process.terminate()

    def kill(self) -> None:
        """Stop the process at once (SIGKILL) and reap it."""
        if self._process.is_alive():
            self._process.kill()
        self.reap(grace=0.0)

    def reap(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Wait up to ``grace`` seconds for the process to exit, then kill it; close the pipe."""
        self._process.join(grace)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


@dataclass(frozen=True)
class Invocation:
    """One invocation as the runner logs it."""

    request_id: str
    result: InvocationResult
    cold_start: bool
    init_ms: float | None
    duration_ms: float


class FunctionRuntime:
    """The instances of one function: at most ``concurrency`` at once, kept warm between uses.

    An event source reserves a slot before it takes events (``reserve``), invokes with
    it, and releases it afterwards; a slot with no warm instance cold-starts one.
    """

    def __init__(
        self,
        function: FunctionSettings,
        spec: InstanceSpec,
        mp_context: BaseContext | None = None,
    ) -> None:
        self.function = function
        self._spec = spec
        self._mp = mp_context or multiprocessing.get_context("spawn")
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

        Raises ``RuntimeError`` if the runtime has been shut down.
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
                raise RuntimeError(f"{self.function.function_name} is shut down")
            if self._idle:
                return self._idle.pop(), False
            # Started under the lock so that shutdown() cannot miss it.
            instance = Instance(self._spec, self._mp)
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
