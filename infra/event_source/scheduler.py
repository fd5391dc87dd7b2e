"""A local stand-in for EventBridge Scheduler's firing.

The emulator implements the Scheduler API's CRUD (create, get, update, delete, list
schedules and groups) but fires nothing. This source reads the schedules whose target is
a function of the project (``@app.lambda_function``, named ``<app>-<stage>-<name>``
as Chalice deploys it) and invokes that function at each fire time with the target's
Input, ``<aws.scheduler.scheduled-time>`` replaced by the fire time, as EventBridge
Scheduler does ("Schedule types in EventBridge Scheduler", "Adding context attributes",
EventBridge Scheduler User Guide):

- fire times come from the served project's own ``chalicelib.schedules`` (its rules,
  loaded from the project as its ``app.py`` is: this package imports nothing of it, so it
  still runs lifted into another project, where a project without that module has no
  schedules to fire), in the schedule's time zone (daylight saving as that module
  documents it); a rate fires at its StartDate, or its creation without
  one, then every interval;
- only ENABLED schedules fire; a schedule that was disabled, or not yet seen, fires from
  the moment it is seen enabled: missed fires are not made up;
- at least once: an invocation that fails is retried (1, 2, 4 ... s apart) within the
  target's RetryPolicy, then the event is sent to the target's dead-letter queue if it
  has one. The function must tolerate the same fire twice, as on AWS.

``clock`` is injectable, so tests can put a fire time wherever they need it.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from .instances import FunctionRuntime
from .settings import FunctionSettings, function_settings
from .settlement import InvocationStatus

log = logging.getLogger(__name__)

SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
# How often the emulator's schedules are read again (a new or changed one starts firing
# within this long).
POLL_SECONDS = 0.5
# A schedule seen for the first time (new, enabled again, or a runner restarted) fires
# what fell due in this last while, nothing older: missed fires are not made up.
FIRST_SIGHT_GRACE = timedelta(seconds=10)


def fire_input(template: str, fire_time: datetime) -> Any:
    """The event a target's Input gives at ``fire_time`` (RFC 3339 UTC, as AWS writes it)."""
    stamp = fire_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.loads(template.replace(SCHEDULED_TIME, stamp))


# The served project's module that says what a schedule expression means, and its errors'.
RULES_MODULE = "chalicelib.schedules"
ERRORS_MODULE = "chalicelib.errors"


def project_rules() -> tuple[ModuleType, type[Exception]]:
    """The served project's schedule rules (``RULES_MODULE``: ``parse_expression``,
    ``parse_timezone``, ``next_fire``) and the error its parsers raise, imported from the
    project the runner has put on ``sys.path`` to load its ``app.py``. ImportError for a
    project without them (it has no schedules to fire)."""
    rules = importlib.import_module(RULES_MODULE)
    refused: type[Exception] = importlib.import_module(ERRORS_MODULE).InvalidRequest
    return rules, refused


class SchedulerEventSource:
    """Every schedule of the emulator whose target is one of ``runtimes``' functions, its
    fire times by ``rules`` (``project_rules``; the served project's unless given)."""

    def __init__(
        self,
        scheduler: Any,
        runtimes: Mapping[str, FunctionRuntime],
        sqs: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_seconds: float = POLL_SECONDS,
        rules: tuple[ModuleType, type[Exception]] | None = None,
    ) -> None:
        self._rules, self._refused = rules or project_rules()
        self._scheduler = scheduler
        self._runtimes = dict(runtimes)  # by deployed function name
        self._sqs = sqs
        self._clock = clock
        self._poll = poll_seconds
        # (group, name) -> the last fire time made (or the moment it was first seen).
        self._since: dict[tuple[str, str], datetime] = {}
        self.runtime = next(iter(self._runtimes.values()))

    def describe(self) -> str:
        names = ", ".join(sorted(self._runtimes))
        return f"EventBridge Scheduler schedules targeting {names}"

    def prepare(self) -> None:
        """Nothing to resolve: schedules are read as they come and go."""

    def run(self, stop: threading.Event, burst: bool) -> None:
        if burst:
            return
        while not stop.wait(self._poll):
            try:
                for runtime, event in self.due(self._clock()):
                    threading.Thread(
                        target=self._deliver, args=(runtime, event), daemon=True
                    ).start()
            except Exception:
                log.exception("scheduler: reading the emulator's schedules failed")

    def due(self, now: datetime) -> list[tuple[FunctionRuntime, tuple[dict[str, Any], Any]]]:
        """The fires due by ``now`` since the last call, each once: (runtime, (target,
        event)). Schedules gone or disabled are forgotten."""
        due: list[tuple[FunctionRuntime, tuple[dict[str, Any], Any]]] = []
        seen: set[tuple[str, str]] = set()
        for summary in self._summaries():
            key = (summary["GroupName"], summary["Name"])
            if summary.get("State") != "ENABLED":
                continue
            schedule = self._scheduler.get_schedule(Name=key[1], GroupName=key[0])
            target = schedule["Target"]
            runtime = self._runtimes.get(target["Arn"].rsplit(":", 1)[-1])
            if runtime is None:
                continue
            seen.add(key)
            try:
                expression = self._rules.parse_expression(schedule["ScheduleExpression"])
                zone = self._rules.parse_timezone(
                    schedule.get("ScheduleExpressionTimezone") or "UTC"
                )
            except self._refused as error:
                log.warning("scheduler: %s is not emulated: %s", key[1], error)
                continue
            start = schedule.get("StartDate") or schedule["CreationDate"]
            start = start.astimezone(UTC)
            since = self._since.get(key)
            if since is None:  # first seen: a rate due at its start fires; nothing older
                since = max(start - timedelta(microseconds=1), now - FIRST_SIGHT_GRACE)
            while True:
                moment = self._rules.next_fire(expression, zone, since, start)
                if moment is None or moment > now:
                    break
                due.append((runtime, (target, fire_input(target.get("Input", "{}"), moment))))
                since = moment
            self._since[key] = since
        for key in set(self._since) - seen:
            del self._since[key]
        return due

    def _summaries(self) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        for page in self._scheduler.get_paginator("list_schedules").paginate():
            summaries += page["Schedules"]
        return summaries

    def _deliver(self, runtime: FunctionRuntime, fire: tuple[dict[str, Any], Any]) -> None:
        """Invoke until it succeeds, within the target's retry policy; then dead-letter."""
        target, event = fire
        policy = target.get("RetryPolicy") or {}
        attempts = 1 + int(policy.get("MaximumRetryAttempts", 185))
        deadline = time.monotonic() + int(policy.get("MaximumEventAgeInSeconds", 86400))
        name = runtime.function.function_name
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(2.0 ** (attempt - 1), 60.0))
            if time.monotonic() > deadline:
                break
            runtime.reserve(timeout=runtime.function.timeout_seconds)
            try:
                invocation = runtime.invoke(event)
            except Exception:
                log.exception("scheduler: invoking %s broke", name)
                continue
            finally:
                runtime.release()
            result = invocation.result
            log.info(
                "invoke function=%s request_id=%s fire=%s status=%s%s",
                name,
                invocation.request_id,
                json.dumps(event),
                result.status.value,
                f" error={result.error!r}" if result.error else "",
            )
            if result.status is InvocationStatus.RETURNED:
                return
        self._dead_letter(target, event)

    def _dead_letter(self, target: dict[str, Any], event: Any) -> None:
        arn = (target.get("DeadLetterConfig") or {}).get("Arn")
        log.warning(
            "scheduler: fire %s given up%s", json.dumps(event), f"; to {arn}" if arn else ""
        )
        if arn and self._sqs is not None:
            queue = self._sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
            self._sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))


def lambda_functions(project_dir: str, stage: str) -> list[FunctionSettings]:
    """The project's ``@app.lambda_function`` functions, as Chalice deploys them (the
    project is loaded already: its app module is imported once)."""
    from chalice.cli.factory import CLIFactory

    config = CLIFactory(project_dir).create_config_obj(chalice_stage_name=stage)
    return [
        function_settings(config, stage, function.name, function.handler_string)
        for function in config.chalice_app.pure_lambda_functions
    ]
