"""The schedules' use cases: create, list, show, delete, pause and resume a client's
recurring schedule, and fire one (chalicelib.schedules has the expressions).

Isolation follows the jobs' (chalicelib.clients): a client's schedule names are its own;
another client's schedule is ScheduleNotFound exactly as an unknown one; the operator (and
the anonymous caller of a stage without keys) sees every client's, and names another
client's with ``client``.

Two stores hold a schedule: its record in the job table (the truth the API and the firing
function read) and its AWS schedule in EventBridge Scheduler (what fires). Every change
writes the record first, then the AWS schedule, and each use case is safe to repeat:

- create: if the Scheduler call fails after the record was written, the record is deleted
  again and the caller gets 503; if that delete fails too, a repeated create of the same
  definition finds the record and completes the AWS schedule (a different definition is
  409 schedule_exists). A record whose AWS schedule is missing fires nothing until then.
- delete: the AWS schedule first (one already gone is fine), then the record; a failure
  between them is 503 and a repeat finishes it. A fire that arrives for a deleted
  schedule makes no job.
- pause and resume: the record first; the firing function reads it, so a fire that
  EventBridge Scheduler still sends for a paused schedule makes no job.

Firing (``fire``) makes each fire time submit one job: the submission carries an
Idempotency-Key of (client, schedule name, scheduled time) in a scope no client's own keys
can use, so a fire delivered twice, or retried after a failure, returns the job the first
made. A fire refused by the client's quota makes no job: it is logged and recorded on the
schedule (``last_error``), and not retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from chalicelib import requests
from chalicelib.clients import RECORDED_CLIENT, Caller
from chalicelib.config import Settings
from chalicelib.errors import (
    IdempotencyConflict,
    InvalidRequest,
    QuotaExceeded,
    RequestError,
)
from chalicelib.jobs import Job, utc_now
from chalicelib.observability import logger
from chalicelib.queue import JobQueue
from chalicelib.schedule_store import ScheduleExists, ScheduleTable, TooManySchedules
from chalicelib.scheduler import INPUT_CLIENT, INPUT_NAME, INPUT_TIME, Scheduler
from chalicelib.schedules import (
    DEFAULT_TIMEZONE,
    ENABLED,
    PAUSED,
    SCHEDULE_NAME,
    Schedule,
    parse_expression,
    parse_timezone,
)
from chalicelib.service import IdempotencyKey, submit_job
from chalicelib.store import JobTable

FIELDS = ("name", "kind", "input", "schedule", "timezone")
# The scope of a fire's Idempotency-Key: "#" is in no client's name, so no key a client
# sends can hold a fire's record.
FIRE_SCOPE_PREFIX = "schedule#"


class ScheduleNotFound(RequestError):
    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__("schedule_not_found", f"No schedule named {name!r}.")


class ScheduleConflict(RequestError):
    status_code = 409


def parse_request(
    raw: bytes | str, settings: Settings
) -> tuple[str, str, dict[str, Any], str, str]:
    """A POST /schedules body as (name, kind, input, expression, timezone), each validated
    as POST /jobs validates a kind and its input; 400 naming the bad field otherwise."""
    payload = requests.object_body(
        raw,
        FIELDS,
        '{"name": "nightly", "kind": "heavyLoad", "input": {"n": 1000}, '
        '"schedule": "cron(0 2 * * ? *)", "timezone": "UTC"}',
    )
    name = payload.get("name")
    if not isinstance(name, str) or not SCHEDULE_NAME.fullmatch(name):
        raise InvalidRequest("invalid_name", "/name: must be 1 to 64 of A-Z, a-z, 0-9, _ and -.")
    # The body holds only FIELDS: kind_and_input reads its kind and input (no run_at).
    job = requests.kind_and_input(payload, settings, utc_now)
    if "schedule" not in payload:
        raise InvalidRequest("invalid_schedule", "/schedule: is required.")
    expression = payload["schedule"]
    parse_expression(expression)
    timezone = payload.get("timezone", DEFAULT_TIMEZONE)
    parse_timezone(timezone)
    return name, job.kind, job.input, expression, timezone


def create(
    raw: bytes | str,
    caller: Caller,
    table: ScheduleTable,
    scheduler: Scheduler,
    settings: Settings,
    now: Callable[[], datetime] = utc_now,
) -> tuple[Schedule, bool]:
    """Create the caller's schedule; returns it and whether it is new (False: a repeat of
    the same definition, completed). 409 schedule_exists for another definition under
    the name, 409 too_many_schedules at the cap."""
    name, kind, input, expression, timezone = parse_request(raw, settings)
    moment = now()
    schedule = Schedule(
        name, caller.client, kind, input, expression, timezone, ENABLED, moment, moment
    )
    try:
        table.create(schedule, settings.max_schedules_per_client)
    except TooManySchedules:
        raise ScheduleConflict(
            "too_many_schedules",
            f"Client {caller.client!r} has {settings.max_schedules_per_client} schedules, "
            "the most it may have; delete one first.",
        ) from None
    except ScheduleExists:
        existing = table.get(caller.client, name)
        if existing is None or existing.definition() != schedule.definition():
            raise ScheduleConflict(
                "schedule_exists", f"A schedule named {name!r} exists already."
            ) from None
        scheduler.put(existing)  # a repeat: complete what the first request began
        return existing, False
    try:
        scheduler.put(schedule)
    except Exception:
        logger.exception(
            "Could not create the AWS schedule; removing its record", schedule_name=name
        )
        table.delete(schedule.client, name)
        raise
    logger.info("Schedule created", schedule_name=name, client=caller.client, schedule=expression)
    return schedule, True


def owner(caller: Caller, params: Mapping[str, str]) -> str:
    """The client whose schedule a request names: the caller's, or for a caller who sees
    all, ``?client=`` if given."""
    chosen = params.get("client")
    if chosen is None or not caller.sees_all:
        return caller.client
    if not RECORDED_CLIENT.fullmatch(chosen):
        raise InvalidRequest("invalid_client", "client must be a client's name.")
    return chosen


def get(name: str, client: str, table: ScheduleTable) -> Schedule:
    """``client``'s schedule ``name``; ScheduleNotFound if it has none of that name."""
    schedule = table.get(client, name) if SCHEDULE_NAME.fullmatch(name) else None
    if schedule is None:
        raise ScheduleNotFound(name)
    return schedule


def listing(caller: Caller, params: Mapping[str, str], table: ScheduleTable) -> list[Schedule]:
    """The caller's schedules; for a caller who sees all, every client's, or ``?client=``'s."""
    unknown = sorted(set(params) - {"client"})
    if unknown:
        raise InvalidRequest("unknown_parameter", f"Unknown parameter(s): {', '.join(unknown)}.")
    if caller.sees_all and "client" not in params:
        return table.listing(None)
    return table.listing(owner(caller, params))


def delete(name: str, client: str, table: ScheduleTable, scheduler: Scheduler) -> None:
    get(name, client, table)
    scheduler.delete(client, name)
    table.delete(client, name)
    logger.info("Schedule deleted", schedule_name=name, client=client)


def set_state(
    name: str,
    client: str,
    state: str,
    table: ScheduleTable,
    scheduler: Scheduler,
    now: Callable[[], datetime] = utc_now,
) -> Schedule:
    """Pause or resume; a resume skips the fires missed while paused (its next fire is
    computed from now). Repeating either changes nothing but the AWS schedule's state."""
    schedule = get(name, client, table)
    if schedule.state != state:
        resumed_at = now() if state == ENABLED else schedule.resumed_at
        schedule = schedule.with_(state=state, resumed_at=resumed_at)
        table.set_state(schedule)
    scheduler.update(schedule)
    logger.info("Schedule " + ("resumed" if state == ENABLED else "paused"), schedule_name=name)
    return schedule


def fire(
    event: Mapping[str, Any],
    table: ScheduleTable,
    jobs: JobTable,
    queue: JobQueue,
    settings: Settings,
    now: Callable[[], datetime] = utc_now,
) -> Job | None:
    """Submit the job of one fire (the target Input: client, schedule, scheduled time),
    once per fire time; None when the fire makes no job (an unknown or deleted schedule,
    a paused one, a fire from before its resume, its client's quota). StoreUnavailable
    when AWS fails: the caller raises, EventBridge Scheduler retries, and the retry finds
    the job the first attempt made, if it made one."""
    client, name = str(event[INPUT_CLIENT]), str(event[INPUT_NAME])
    scheduled = datetime.fromisoformat(str(event[INPUT_TIME]).replace("Z", "+00:00"))
    schedule = table.get(client, name)
    if (
        schedule is None
        or schedule.state == PAUSED
        or scheduled < schedule.resumed_at.replace(second=0, microsecond=0)
    ):
        logger.info(
            "Schedule fire skipped", schedule_name=name, client=client, scheduled=str(scheduled)
        )
        return None
    key = IdempotencyKey(key=f"{name}@{scheduled.isoformat()}", scope=FIRE_SCOPE_PREFIX + client)
    try:
        submission = submit_job(
            schedule.kind,
            schedule.input,
            jobs,
            queue,
            settings.retention,
            key,
            now=now,
            client=client,
            settings=settings,
            schedule=name,
        )
    except (QuotaExceeded, InvalidRequest, IdempotencyConflict) as error:
        logger.warning(
            "Schedule fire made no job", schedule_name=name, client=client, error=error.message
        )
        table.record_error(client, name, f"{scheduled.isoformat()}: {error.message}")
        return None
    if schedule.last_error is not None:
        table.record_error(client, name, None)
    return submission.job
