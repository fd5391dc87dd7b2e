"""A local stand-in for Lambda's SQS event source mapping, for any Chalice app.

``chalice local`` serves routes but ignores ``@app.on_sqs_message`` handlers. This runner
does for them what Lambda's event source mapping does on AWS::

    python -m infra.event_source --project-dir DIR --stage STAGE [--burst] [--poll-seconds N]

What it reproduces, and how:

- **The deployed configuration, read the way Chalice reads it.** The project is loaded
  with ``CLIFactory(project_dir).create_config_obj(stage)`` and ``config.chalice_app``
  (the stage's environment variables are in ``os.environ`` before ``app.py`` is imported,
  as under the ``chalice`` CLI). Every ``on_sqs_message`` handler in ``app.event_sources``
  is served, with its queue, batch size and batching window from the decorator and its
  reserved concurrency, timeout, memory size and environment variables from
  ``config.scope(stage, name)``. Nothing is copied or typed a second time.
- **Polling.** Long-poll ReceiveMessage (batch size ≤ 10 per call, all system and message
  attributes), honouring the batching window. A function's poller only receives when one
  of the function's instance slots is free, so messages are never taken that cannot run
  now, and a function never runs more invocations at once than its reserved concurrency
  (``DEFAULT_CONCURRENCY`` when unset), capped by the mapping's ``maximum_concurrency``.
- **The event.** Lambda's exact SQS event (``sqs_message_to_record``), checked against
  AWS's documented sample.
- **Execution environments.** Each function gets up to ``concurrency`` instances, each a
  process of its own (multiprocessing, spawn) that imports the app once with the
  function's environment (a cold start) and then serves invocations (warm). It calls the
  very object Lambda calls, the function's handler string (``app.<function>``) resolved
  in the imported module, with ``(event, context)``; the context is Chalice's own
  ``chalice.local.LambdaContext``. An invocation that outlives the function's timeout has
  its instance killed ("Task timed out after N seconds"); the next one cold-starts.
- **Settling the batch** (``settle_batch``): a normal return deletes the batch; a
  ``batchItemFailures`` response deletes all but the listed records; an exception, a
  timeout, a dead instance or a malformed response deletes nothing and leaves visibility
  alone, so the messages come back after the queue's visibility timeout and SQS's own
  redrive policy moves them to the dead-letter queue after ``maxReceiveCount``.
- **Shutdown.** SIGINT/SIGTERM stop polling and terminate the instances (messages in
  flight come back through the visibility timeout, as when Lambda is interrupted); the
  runner exits 0 with no child left. ``--burst`` drains instead: it exits 0 once a receive
  on every queue came back empty with no invocation in flight (what tests want; a message
  hidden by its visibility timeout after a failure is not waited for).

Where it differs from AWS, knowingly:

- AWS runs about five pollers per mapping regardless of reserved concurrency and
  *throttles* the batches it cannot run; they go back to the queue and their receive count
  rises (with a low ``maxReceiveCount`` a message can reach the DLQ without ever running).
  This runner never over-receives, so receive counts rise only on real failures.
- It behaves as a mapping with ``FunctionResponseTypes: [ReportBatchItemFailures]``.
  Chalice cannot set that; the deployment must (e.g. ``chalice package
  --merge-template``), or AWS ignores the response and deletes the whole batch.
- Not reproduced: memory limits and memory-proportional CPU, the 6 MB payload limit,
  Lambda's back-off after failures, FIFO per-message-group ordering across concurrent
  instances, and the visibility extension AWS applies when batching window + function
  timeout exceed the queue's visibility timeout. Instances inherit the runner's
  environment (its endpoint and credentials stand in for the execution role) on top of
  which Lambda's reserved variables and the function's own are set.
- Like ``CreateEventSourceMapping``, it refuses a function timeout longer than the
  queue's visibility timeout.

AWS is reached only through boto3's standard settings (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, credentials from the environment): the same runner works against
moto, LocalStack or a real account.

Scheduled handlers (``@app.schedule`` with a ``rate(...)`` expression, as EventBridge
runs them) are served too, by ``ScheduleEventSource``: every period it invokes the
function with EventBridge's "Scheduled Event", first one period after start, as a new
rule does. ``--schedule-period-seconds`` shortens every period (for tests that cannot wait
a minute); cron expressions are reported as not emulated.

Extending: another kind of trigger is one more class with the ``EventSource`` shape, and
one more list in ``ProjectSettings``; instances, concurrency, timeouts and logging are
shared through ``FunctionRuntime``.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_any
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import Rate, ScheduledEventConfig, SQSEventConfig
from chalice.cli.factory import CLIFactory
from chalice.constants import (
    DEFAULT_LAMBDA_MEMORY_SIZE,
    DEFAULT_LAMBDA_TIMEOUT,
    DEFAULT_STAGE_NAME,
)

log = logging.getLogger("infra.event_source")

# Instances a function may run at once when its reserved concurrency is unset. On AWS
# it would share the account's pool (1,000 by default); locally that would only mean
# as many processes as messages, so cap it at a number a laptop runs comfortably.
DEFAULT_CONCURRENCY = 10
MAX_MESSAGES_PER_RECEIVE = 10  # SQS's limit for ReceiveMessage and DeleteMessageBatch
MAX_WAIT_SECONDS = 20  # SQS's longest long poll, and what Lambda's pollers use
INIT_TIMEOUT_SECONDS = 10.0  # Lambda's limit for a cold start's init phase
SHUTDOWN_GRACE_SECONDS = 0.5  # SIGTERM to SIGKILL for an instance at shutdown


class SourceError(RuntimeError):
    """An event source cannot start (missing queue, invalid settings); the message says why."""


# --------------------------------------------------------------------------------------
# The project's settings, read through Chalice


@dataclass(frozen=True)
class FunctionSettings:
    """One Lambda function as ``chalice deploy`` would configure it."""

    name: str  # Chalice's name for it: the key under `lambda_functions` in config.json
    handler: str  # Lambda's handler string, "module.attribute" (e.g. "app.handle_jobs")
    function_name: str  # the deployed function's name: <app>-<stage>-<name>
    concurrency: int  # instances allowed at once
    timeout_seconds: int
    memory_size: int
    environment: dict[str, str] = field(default_factory=dict)  # stage + function scope


@dataclass(frozen=True)
class SQSSourceSettings:
    """One ``@app.on_sqs_message`` handler: its queue, batching and function."""

    function: FunctionSettings
    queue: str | None  # the queue's name, or None when given by ARN
    queue_arn: str | None
    batch_size: int
    batching_window_seconds: int


@dataclass(frozen=True)
class ScheduleSourceSettings:
    """One ``@app.schedule`` handler with a rate: its function and its period."""

    function: FunctionSettings
    expression: str  # as EventBridge shows it, e.g. "rate(1 minute)"
    period_seconds: float


# EventBridge's rate units, in seconds.
RATE_UNIT_SECONDS = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}


@dataclass(frozen=True)
class ProjectSettings:
    """The event sources of a Chalice app at one stage."""

    app_name: str
    stage: str
    project_dir: str
    sqs_sources: list[SQSSourceSettings]
    schedule_sources: list[ScheduleSourceSettings]
    # Event sources this runner does not serve (yet), as "kind name", so they can be
    # reported rather than silently ignored.
    not_emulated: list[str]


def effective_concurrency(reserved: int | None, maximum: int | None) -> int:
    """How many invocations of a function may run at once.

    The function's reserved concurrency (``DEFAULT_CONCURRENCY`` when unset), capped by
    the event source's ``maximum_concurrency`` when set. 0 means throttled: never invoked.
    Raises ``ValueError`` on a negative value (AWS rejects it too).
    """
    limit = DEFAULT_CONCURRENCY if reserved is None else reserved
    if maximum is not None:
        limit = min(limit, maximum)
    if limit < 0:
        raise ValueError(f"concurrency cannot be negative: {limit}")
    return limit


def function_settings(
    config: Any, stage: str, name: str, handler: str, maximum_concurrency: int | None = None
) -> FunctionSettings:
    """A function's settings from Chalice's ``Config``, scoped as the deployer scopes them.

    Lookup order is Chalice's (stage's function, stage, top-level function, top level);
    unset timeout and memory take Chalice's own defaults.
    """
    scoped = config.scope(stage, name)
    timeout = scoped.lambda_timeout
    memory = scoped.lambda_memory_size
    return FunctionSettings(
        name=name,
        handler=handler,
        # As chalice.deploy.appgraph names the function it deploys.
        function_name=f"{scoped.app_name}-{stage}-{name}",
        concurrency=effective_concurrency(scoped.reserved_concurrency, maximum_concurrency),
        timeout_seconds=DEFAULT_LAMBDA_TIMEOUT if timeout is None else int(timeout),
        memory_size=DEFAULT_LAMBDA_MEMORY_SIZE if memory is None else int(memory),
        environment=dict(scoped.environment_variables),
    )


def load_project(
    project_dir: str, stage: str, environ: MutableMapping[str, str] | None = None
) -> ProjectSettings:
    """Load a Chalice project exactly as the ``chalice`` CLI does, and list its event sources.

    ``environ`` (default ``os.environ``) receives the stage's environment variables before
    ``app.py`` is imported, so an app that reads e.g. its queue name at import time sees
    it. Raises ``RuntimeError`` for a missing or invalid config, and whatever importing
    ``app.py`` raises.
    """
    env = os.environ if environ is None else environ
    project_dir = os.path.abspath(project_dir)
    # The chalice CLI passes os.environ itself; without it CLIFactory copies the
    # environment and app.py would not see the stage's variables.
    factory = CLIFactory(project_dir, environ=env)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    sqs_sources: list[SQSSourceSettings] = []
    schedule_sources: list[ScheduleSourceSettings] = []
    not_emulated: list[str] = []
    for source in app.event_sources:
        if isinstance(source, SQSEventConfig):
            sqs_sources.append(_sqs_source_settings(config, stage, source))
        elif isinstance(source, ScheduledEventConfig) and isinstance(
            source.schedule_expression, Rate
        ):
            rate = source.schedule_expression
            schedule_sources.append(
                ScheduleSourceSettings(
                    function=function_settings(config, stage, source.name, source.handler_string),
                    expression=rate.to_string(),
                    period_seconds=rate.value * RATE_UNIT_SECONDS[rate.unit],
                )
            )
        else:
            not_emulated.append(f"{type(source).__name__} {source.name}")
    return ProjectSettings(
        app_name=config.app_name,
        stage=stage,
        project_dir=project_dir,
        sqs_sources=sqs_sources,
        schedule_sources=schedule_sources,
        not_emulated=not_emulated,
    )


def _sqs_source_settings(config: Any, stage: str, source: SQSEventConfig) -> SQSSourceSettings:
    function = function_settings(
        config, stage, source.name, source.handler_string, source.maximum_concurrency
    )
    return SQSSourceSettings(
        function=function,
        queue=source.queue,
        queue_arn=source.queue_arn,
        batch_size=source.batch_size,
        batching_window_seconds=source.maximum_batching_window_in_seconds,
    )


# --------------------------------------------------------------------------------------
# Lambda's SQS event


def sqs_message_to_record(
    message: Mapping[str, Any], queue_arn: str, region: str
) -> dict[str, Any]:
    """One record of Lambda's SQS event from one message of a boto3 ReceiveMessage response.

    Keys and value types are Lambda's (see AWS's sample event): camelCase names, system
    attributes copied as SQS returned them (all strings), message attributes with
    lowercase keys, binary values as base64 text and both list keys always present.
    ``md5OfMessageAttributes`` appears only when the message has attributes. Raises
    ``KeyError`` if the message lacks a field every received message has.
    """
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _lambda_message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = queue_arn
    record["awsRegion"] = region
    return record


def sqs_event(messages: Iterable[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """Lambda's SQS event for a batch of received messages: ``{"Records": [...]}``."""
    return {"Records": [sqs_message_to_record(m, queue_arn, region) for m in messages]}


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = _base64(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [_base64(v) for v in value.get("BinaryListValues", [])]
    attribute["dataType"] = value["DataType"]
    return attribute


def _base64(data: bytes) -> str:
    # boto3 hands binary attributes over decoded; Lambda's JSON event carries base64 text.
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------
# Settling a batch after an invocation


class InvocationStatus(StrEnum):
    """How an invocation ended, as the event source sees it."""

    RETURNED = "returned"  # the handler returned; `response` holds its JSON-decoded value
    RAISED = "raised"  # the handler raised, its response was not JSON, or the init failed
    TIMED_OUT = "timed_out"  # it outlived the function's timeout; the instance was killed
    DIED = "died"  # the instance process exited mid-invocation (sys.exit, a crash)


@dataclass(frozen=True)
class InvocationResult:
    status: InvocationStatus
    response: Any = None
    error: str = ""  # what Lambda would report, for RAISED, TIMED_OUT and DIED


class Outcome(StrEnum):
    """What became of a batch."""

    SUCCEEDED = "succeeded"  # the whole batch was deleted
    PARTIAL = "partial"  # the function reported batchItemFailures; only the others deleted
    FAILED = "failed"  # nothing deleted: the batch returns after the visibility timeout


@dataclass(frozen=True)
class Settlement:
    outcome: Outcome
    delete: tuple[str, ...]  # ids of the messages to delete, in batch order
    reason: str = ""


def settle_batch(result: InvocationResult, message_ids: Sequence[str]) -> Settlement:
    """Which messages of a batch to delete, by the rules of Lambda's SQS event source.

    - Raised, timed out or died: delete nothing (never touch visibility either).
    - Returned with no ``batchItemFailures`` (a null or non-object response, a missing,
      null or empty list): delete everything.
    - Returned ``batchItemFailures`` naming some records: delete the others.
    - A malformed ``batchItemFailures`` (not a list; an entry without a non-empty string
      ``itemIdentifier``; an id not in the batch): the whole batch failed.
    """
    if result.status is not InvocationStatus.RETURNED:
        return Settlement(Outcome.FAILED, (), result.error or result.status.value)
    try:
        failed = _reported_failures(result.response, message_ids)
    except (TypeError, ValueError) as err:
        return Settlement(Outcome.FAILED, (), f"malformed batchItemFailures: {err}")
    if not failed:
        return Settlement(Outcome.SUCCEEDED, tuple(message_ids))
    kept = tuple(i for i in message_ids if i not in failed)
    return Settlement(Outcome.PARTIAL, kept, f"{len(failed)} reported failed")


def _reported_failures(response: Any, message_ids: Sequence[str]) -> set[str]:
    # A response that is not a JSON object carries no batchItemFailures: Lambda treats
    # null and empty responses as complete success, and a handler that returns, say, a
    # string has not reported any failure.
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise TypeError(f"expected a list, got {type(failures).__name__}")
    failed: set[str] = set()
    for entry in failures:
        item = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(item, str) or not item:
            raise ValueError(f"entry without an itemIdentifier: {entry!r}")
        if item not in message_ids:
            raise ValueError(f"itemIdentifier {item!r} is not a message of this batch")
        failed.add(item)
    return failed


# --------------------------------------------------------------------------------------
# Execution environments: one process per function instance


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
    _line_buffered_output()
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


def _line_buffered_output() -> None:
    # Piped stdout is block-buffered by default; logs must show up line by line.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


# --------------------------------------------------------------------------------------
# Event sources


class EventSource(Protocol):
    """A trigger that turns outside events into invocations of one function.

    ``prepare`` resolves what the source needs (a queue's URL, a schedule) and raises
    ``SourceError`` when it cannot; ``run`` delivers events until ``stop`` is set or, in
    burst mode, until it has nothing left to deliver.
    """

    runtime: FunctionRuntime

    def describe(self) -> str: ...

    def prepare(self) -> None: ...

    def run(self, stop: threading.Event, burst: bool) -> None: ...


ReceiveFn = Callable[[int, int], list[dict[str, Any]]]


def collect_batch(
    receive: ReceiveFn,
    batch_size: int,
    window_seconds: float,
    poll_seconds: int,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """Gather one batch as Lambda's poller does.

    ``receive(max_messages, wait_seconds)`` is one ReceiveMessage call. The first is a long
    poll of ``poll_seconds``; an empty answer ends the batch (empty). With a batching
    window, receiving goes on until the batch holds ``batch_size`` messages or
    ``window_seconds`` have passed since the first ones arrived; without one, the first
    answer is the batch. No call asks for more than 10 messages (SQS's limit).
    """
    batch = receive(min(batch_size, MAX_MESSAGES_PER_RECEIVE), poll_seconds)
    if not batch or window_seconds <= 0:
        return batch
    deadline = clock() + window_seconds
    while len(batch) < batch_size:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        wanted = min(batch_size - len(batch), MAX_MESSAGES_PER_RECEIVE)
        # Long polls return as soon as a message arrives, so rounding up costs nothing
        # when messages flow and at most a second of lateness when they do not.
        batch += receive(wanted, min(poll_seconds, math.ceil(remaining)))
    return batch


class SQSEventSource:
    """Lambda's SQS event source mapping for one function: poll, invoke, settle."""

    def __init__(
        self,
        settings: SQSSourceSettings,
        runtime: FunctionRuntime,
        sqs: Any,
        region: str,
        poll_seconds: int = MAX_WAIT_SECONDS,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self._sqs = sqs
        self._region = region
        self._poll_seconds = poll_seconds
        self._queue_url = ""
        self._queue_arn = ""
        self._stop = threading.Event()

    def describe(self) -> str:
        s = self.settings
        f = s.function
        return (
            f"{f.name} ({f.function_name}) <- SQS {self._queue_arn or s.queue or s.queue_arn}: "
            f"batch {s.batch_size}, window {s.batching_window_seconds} s, "
            f"concurrency {f.concurrency}, timeout {f.timeout_seconds} s, memory {f.memory_size} MB"
        )

    def prepare(self) -> None:
        """Resolve the queue's URL and ARN; refuse what CreateEventSourceMapping refuses.

        Raises ``SourceError`` if the queue does not exist or cannot be reached, or if the
        function's timeout exceeds the queue's visibility timeout.
        """
        name, owner = self._queue_name_and_owner()
        request: dict[str, str] = {"QueueName": name}
        if owner:
            request["QueueOwnerAWSAccountId"] = owner
        try:
            self._queue_url = self._sqs.get_queue_url(**request)["QueueUrl"]
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self._queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"]
            )["Attributes"]
        except (BotoCoreError, ClientError) as err:
            raise SourceError(f"{self.settings.function.name}: queue {name!r}: {err}") from err
        self._queue_arn = attributes["QueueArn"]
        visibility = int(attributes["VisibilityTimeout"])
        timeout = self.settings.function.timeout_seconds
        if timeout > visibility:
            raise SourceError(
                f"{self.settings.function.name}: queue visibility timeout: {visibility} "
                f"seconds is less than function timeout: {timeout} seconds (AWS refuses "
                f"this event source mapping too)"
            )
        window = self.settings.batching_window_seconds
        if window > 0 and window + timeout > visibility:
            log.warning(
                "%s: batching window + function timeout (%d s) exceed the queue's visibility "
                "timeout (%d s): AWS would extend visibility to %d s, this runner does not, "
                "so messages may be delivered twice",
                self.settings.function.name,
                window + timeout,
                visibility,
                window + timeout + 30,
            )

    def _queue_name_and_owner(self) -> tuple[str, str | None]:
        if self.settings.queue:
            return self.settings.queue, None
        arn = self.settings.queue_arn or ""
        parts = arn.split(":")  # arn:aws:sqs:<region>:<account>:<name>
        if len(parts) != 6 or parts[2] != "sqs":
            raise SourceError(f"{self.settings.function.name}: not an SQS queue ARN: {arn!r}")
        return parts[5], parts[4]

    def run(self, stop: threading.Event, burst: bool) -> None:
        """Poll and dispatch until ``stop``; in burst mode, until the queue is drained.

        Receives only while holding a free slot of the function, so never more batches
        than it can run at once. Transient AWS errors are logged and retried after 1 s.
        """
        self._stop = stop
        if self.runtime.function.concurrency == 0:
            log.warning("%s: concurrency 0: throttled, not polling", self.runtime.function.name)
            return
        while not stop.is_set():
            if not self.runtime.reserve(timeout=0.25):
                continue
            try:
                batch = self._next_batch()
            except (BotoCoreError, ClientError) as err:
                self.runtime.release()
                log.warning("%s: receive failed: %s; retrying", self.settings.function.name, err)
                stop.wait(1.0)
                continue
            if batch and not stop.is_set():
                threading.Thread(
                    target=self._invoke_and_settle,
                    args=(batch,),
                    name=f"invoke:{self.settings.function.name}",
                    daemon=True,
                ).start()
                continue
            # Nothing received, or shutting down: a batch received now just comes back
            # after the visibility timeout, as when Lambda is interrupted.
            self.runtime.release()
            if burst and not batch and self.runtime.busy == 0:
                return

    def _next_batch(self) -> list[dict[str, Any]]:
        return collect_batch(
            self._receive,
            self.settings.batch_size,
            self.settings.batching_window_seconds,
            self._poll_seconds,
        )

    def _receive(self, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _invoke_and_settle(self, batch: list[dict[str, Any]]) -> None:
        """Invoke with one batch, delete what the outcome allows, log one line; free the slot."""
        ids = [m["MessageId"] for m in batch]
        name = self.runtime.function.function_name
        try:
            invocation = self.runtime.invoke(sqs_event(batch, self._queue_arn, self._region))
            if self._stop.is_set():
                log.info(
                    "%s: interrupted by shutdown; %d message(s) return to the queue", name, len(ids)
                )
                return
            result = invocation.result
            if result.status is InvocationStatus.TIMED_OUT:
                log.error("%s %s %s", name, invocation.request_id, result.error)
            settlement = settle_batch(result, ids)
            deleted = self._delete(batch, settlement.delete)
            log.info("%s", _invocation_line(name, ids, invocation, settlement, deleted))
        except Exception:
            if self._stop.is_set():
                return  # the runtime was shut down under us; nothing was deleted
            log.exception("%s: invocation of %d message(s) broke the runner", name, len(ids))
        finally:
            self.runtime.release()

    def _delete(self, batch: list[dict[str, Any]], ids: Sequence[str]) -> int:
        """DeleteMessageBatch for ``ids``; returns how many were deleted, logs the rest."""
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in batch}
        entries = [{"Id": str(n), "ReceiptHandle": handles[i]} for n, i in enumerate(ids)]
        deleted = 0
        for chunk in _chunks(entries, MAX_MESSAGES_PER_RECEIVE):
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=chunk)
            except (BotoCoreError, ClientError) as err:
                # As on AWS, an undeleted message simply comes back after its visibility
                # timeout.
                log.error("%s: delete failed: %s", self.settings.function.name, err)
                continue
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.error("%s: delete failed: %s", self.settings.function.name, failure)
        return deleted


def scheduled_event(rule_arn: str, region: str, moment: float) -> dict[str, Any]:
    """EventBridge's "Scheduled Event", as it invokes a function on a schedule rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": rule_arn.split(":")[4],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment)),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class ScheduleEventSource:
    """An EventBridge schedule rule for one function: invoke it every period."""

    def __init__(
        self,
        settings: ScheduleSourceSettings,
        runtime: FunctionRuntime,
        region: str,
        account: str,
        period_override: float | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self._region = region
        # Chalice names the rule after the function it triggers.
        self._rule_arn = f"arn:aws:events:{region}:{account}:rule/{settings.function.function_name}"
        self._period = period_override or settings.period_seconds

    def describe(self) -> str:
        f = self.settings.function
        every = f"every {self._period:g} s"
        if self._period != self.settings.period_seconds:
            every += f" (shortened from {self.settings.expression})"
        return f"{f.name} ({f.function_name}) <- schedule {self.settings.expression}: {every}"

    def prepare(self) -> None:
        """Nothing to resolve: a schedule needs no AWS resource to exist locally."""

    def run(self, stop: threading.Event, burst: bool) -> None:
        """Invoke once per period until ``stop``; a schedule has nothing to drain in burst
        mode. A run that finds every slot busy is skipped, as a throttled one would be."""
        if burst:
            return
        while not stop.wait(self._period):
            if not self.runtime.reserve(timeout=0):
                log.warning(
                    "%s: still running; this period is skipped", self.settings.function.name
                )
                continue
            threading.Thread(
                target=self._invoke, name=f"invoke:{self.settings.function.name}", daemon=True
            ).start()

    def _invoke(self) -> None:
        name = self.runtime.function.function_name
        try:
            invocation = self.runtime.invoke(
                scheduled_event(self._rule_arn, self._region, time.time())
            )
            result = invocation.result
            log.info(
                "invoke function=%s request_id=%s schedule=%r status=%s duration_ms=%.0f%s",
                name,
                invocation.request_id,
                self.settings.expression,
                result.status.value,
                invocation.duration_ms,
                f" error={result.error!r}" if result.error else "",
            )
        except Exception:
            log.exception("%s: scheduled invocation broke the runner", name)
        finally:
            self.runtime.release()


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def _invocation_line(
    function_name: str,
    ids: Sequence[str],
    invocation: Invocation,
    settlement: Settlement,
    deleted: int,
) -> str:
    start = "warm"
    if invocation.cold_start:
        init = "-" if invocation.init_ms is None else f"{invocation.init_ms:.0f}"
        start = f"cold init_ms={init}"
    line = (
        f"invoke function={function_name} request_id={invocation.request_id} "
        f"records={len(ids)} ids={','.join(ids)} outcome={settlement.outcome.value} "
        f"deleted={deleted} duration_ms={invocation.duration_ms:.0f} start={start}"
    )
    if settlement.reason:
        line += f" reason={settlement.reason!r}"
    return line


# --------------------------------------------------------------------------------------
# The runner


def run_sources(
    sources: Sequence[EventSource],
    runtimes: Iterable[FunctionRuntime],
    stop: threading.Event,
    burst: bool = False,
) -> None:
    """Run every source in a thread of its own until ``stop`` (or, in burst mode, until
    all have drained), then shut every function runtime down.

    Source threads are daemons: one blocked in a long poll is abandoned at shutdown
    rather than waited for.
    """
    threads = [
        threading.Thread(
            target=s.run, args=(stop, burst), name=f"source:{s.runtime.function.name}", daemon=True
        )
        for s in sources
    ]
    for thread in threads:
        thread.start()
    try:
        while not stop.wait(0.1):
            if burst and not any(t.is_alive() for t in threads):
                break
    finally:
        stop.set()
        for runtime in runtimes:
            runtime.shutdown()


def _configure_logging() -> None:
    # The runner's own lines only: the root logger (boto3's chatter, the app's loggers
    # imported into this process) is left alone.
    _line_buffered_output()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s event_source %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _poll_seconds(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_WAIT_SECONDS}")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.event_source",
        description="Serve a Chalice app's on_sqs_message handlers as Lambda's SQS event "
        "source mapping would.",
    )
    parser.add_argument("--project-dir", default=".", help="the Chalice project (default: .)")
    parser.add_argument(
        "--stage", default=DEFAULT_STAGE_NAME, help=f"Chalice stage (default: {DEFAULT_STAGE_NAME})"
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="exit once every queue is empty and no invocation runs (for tests)",
    )
    parser.add_argument(
        "--schedule-period-seconds",
        type=float,
        default=None,
        help="invoke scheduled handlers this often instead of their rate (for tests)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=_poll_seconds,
        default=MAX_WAIT_SECONDS,
        help=f"long-poll wait of each receive, 0..{MAX_WAIT_SECONDS} (default: {MAX_WAIT_SECONDS})",
    )
    return parser.parse_args(argv)


def _build_sources(
    project: ProjectSettings,
    base_environment: Mapping[str, str],
    session: boto3.session.Session,
    region: str,
    poll_seconds: int,
    schedule_period: float | None = None,
) -> tuple[list[EventSource], list[FunctionRuntime]]:
    # One client for all sources: boto3 clients are thread-safe. Its read timeout must
    # outlast the longest long poll.
    sqs = session.client("sqs", config=Config(read_timeout=poll_seconds + 30))
    runtimes: dict[str, FunctionRuntime] = {}

    def runtime_for(function: FunctionSettings) -> FunctionRuntime:
        if function.name not in runtimes:
            spec = InstanceSpec(
                project_dir=project.project_dir,
                handler=function.handler,
                function_name=function.function_name,
                memory_size=function.memory_size,
                timeout_seconds=function.timeout_seconds,
                environment=instance_environment(
                    base_environment, function, region, project.project_dir
                ),
            )
            runtimes[function.name] = FunctionRuntime(function, spec)
        return runtimes[function.name]

    sources: list[EventSource] = [
        SQSEventSource(settings, runtime_for(settings.function), sqs, region, poll_seconds)
        for settings in project.sqs_sources
    ]
    if project.schedule_sources:
        account = _account_id(session)
        sources += [
            ScheduleEventSource(
                settings, runtime_for(settings.function), region, account, schedule_period
            )
            for settings in project.schedule_sources
        ]
    return sources, list(runtimes.values())


def _account_id(session: boto3.session.Session) -> str:
    """The account the credentials belong to (for ARNs in events); moto's if unknown."""
    try:
        return str(session.client("sts").get_caller_identity()["Account"])
    except (BotoCoreError, ClientError):
        return "123456789012"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 when the project or a queue is unusable)."""
    args = _parse_args(argv)
    _configure_logging()
    stop = threading.Event()
    _stop_on_signals(stop)
    # What instances inherit: the environment before Chalice adds the stage's variables.
    base_environment = dict(os.environ)
    # As the chalice CLI sets it for its own import of app.py, so an app can tell.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    try:
        project = load_project(args.project_dir, args.stage)
    except Exception:
        log.exception("cannot load the Chalice project in %s", args.project_dir)
        return 2
    session = boto3.session.Session()
    region = session.region_name
    if not region:
        log.error("no AWS region: set AWS_DEFAULT_REGION")
        return 2
    sources, runtimes = _build_sources(
        project,
        base_environment,
        session,
        region,
        args.poll_seconds,
        args.schedule_period_seconds,
    )
    try:
        for source in sources:
            source.prepare()
    except SourceError as err:
        log.error("%s", err)
        return 2
    for source in sources:
        log.info("serving %s", source.describe())
    for skipped in project.not_emulated:
        log.info("not emulated: %s", skipped)
    if not sources:
        log.warning("%s has no on_sqs_message handler", project.app_name)
    run_sources(sources, runtimes, stop, burst=args.burst)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
