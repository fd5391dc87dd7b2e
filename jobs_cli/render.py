"""How jobs look in a terminal: durations, rates, one job, a list of jobs.

Text from the API is always wrapped in ``rich.text.Text`` (never parsed as markup), so
brackets in an error message print as they are.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from jobs_cli.client import FINAL_STATUSES, Job

STATUS_STYLES = {
    "queued": "dim",
    "running": "bold blue",
    "succeeded": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
}
NONE = "-"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``1 h 02 min``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return NONE
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def rate(per_second: float | None) -> str:
    """Loop iterations per second: ``98.7 M it/s``."""
    if per_second is None or not math.isfinite(per_second) or per_second < 0:
        return NONE
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= size:
            return f"{per_second / size:.1f} {unit} it/s"
    return f"{per_second:.0f} it/s"


def timings(job: Job, now: datetime) -> tuple[float | None, float | None]:
    """(queue wait, run time) in seconds, as far as they go at ``now``.

    Queue wait runs from submission to the start (to the end, for a job cancelled
    before it started); run time from the start to the end.
    """
    created, started = parse_time(job.get("created_at")), parse_time(job.get("started_at"))
    finished = parse_time(job.get("finished_at"))
    final = job.get("status") in FINAL_STATUSES
    wait_end = started or (finished if final else now)
    queue_wait = (wait_end - created).total_seconds() if created and wait_end else None
    run_time = ((finished or now) - started).total_seconds() if started else None
    return queue_wait, run_time


def status_text(status: Any) -> Text:
    return Text(str(status), style=STATUS_STYLES.get(str(status), ""))


def percent(progress: Any) -> str:
    try:
        value = min(1.0, max(0.0, float(progress)))
    except (TypeError, ValueError):
        return NONE
    return f"{math.floor(value * 100)}%"


def _value(value: Any) -> Text:
    return Text(NONE if value is None else str(value))


def job_details(job: Job, now: datetime) -> Table:
    """One job as labelled lines, for ``jobs status``."""
    queue_wait, run_time = timings(job, now)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Text]] = [
        ("job", _value(job.get("job_id"))),
        ("status", status_text(job.get("status"))),
        ("client", _value(job.get("client"))),
        ("kind", _value(job.get("kind"))),
        ("input", Text(input_text(job.get("input")))),
        ("n", _value(job.get("n"))),
        ("progress", Text(percent(job.get("progress")))),
        ("result", Text(result_text(job.get("result")))),
    ]
    if job.get("retry_of") is not None:
        rows.insert(3, ("retry of", _value(job["retry_of"])))
    # Where it runs and when; a stage older than lanes, later and schedules has none.
    extra = [
        ("lane", job.get("lane")),
        ("run at", job.get("run_at")),
        ("schedule", job.get("schedule")),
    ]
    at = next(i for i, (label, _) in enumerate(rows) if label == "kind")
    rows[at:at] = [(label, _value(value)) for label, value in extra if value is not None]
    if job.get("error") is not None:
        rows.append(("error", Text(str(job["error"]), style="red")))
    rows += [
        ("attempts", _value(job.get("attempts"))),
        ("created", _value(job.get("created_at"))),
        ("started", _value(job.get("started_at"))),
        ("finished", _value(job.get("finished_at"))),
        ("queue wait", Text(duration(queue_wait))),
        ("run time", Text(duration(run_time))),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


def job_list(jobs: list[Job], now: datetime) -> Table:
    """Jobs as a table, for ``jobs list``: full ids, so they can be copied; the client
    each belongs to (``-`` from a stage older than clients)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("JOB", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CLIENT", no_wrap=True)
    table.add_column("LANE", justify="right", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    for name in ("N", "PROGRESS", "RESULT", "QUEUE WAIT", "RUN TIME"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    for job in jobs:
        queue_wait, run_time = timings(job, now)
        result = job.get("result")
        if job.get("status") == "failed":
            outcome = Text(str(job.get("error") or "failed"), style="red")
        elif waits_for_its_time(job):
            outcome = Text(f"runs at {timestamp(job.get('run_at'))}", style="dim")
        else:
            outcome = Text(result_text(result))
        table.add_row(
            _value(job.get("job_id")),
            status_text(job.get("status")),
            _value(job.get("client")),
            _value(job.get("lane")),
            _value(job.get("kind")),
            _value(job.get("n")),
            Text(percent(job.get("progress"))),
            outcome,
            Text(duration(queue_wait)),
            Text(duration(run_time)),
            Text(timestamp(job.get("created_at"))),
        )
    return table


def timestamp(value: Any) -> str:
    """``2026-01-01 09:30:00Z``: to the second, in UTC like the API."""
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else NONE


def waits_for_its_time(job: Job) -> bool:
    """A queued job with a ``run_at``: it waits for that time (the API says ``queued``
    until then; a job whose time came and went but has not started is queued too, and
    still shows when it was due)."""
    return job.get("status") == "queued" and job.get("run_at") is not None


def schedule_list(schedules: list[dict[str, Any]]) -> Table:
    """Schedules as a table, for ``jobs schedules list``."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in ("NAME", "CLIENT", "KIND", "SCHEDULE", "TIMEZONE", "STATE", "NEXT FIRE"):
        table.add_column(name, no_wrap=True)
    for schedule in schedules:
        state = str(schedule.get("state"))
        table.add_row(
            _value(schedule.get("name")),
            _value(schedule.get("client")),
            _value(schedule.get("kind")),
            _value(schedule.get("schedule")),
            _value(schedule.get("timezone")),
            Text(state, style="bold yellow" if state == "paused" else ""),
            Text(timestamp(schedule.get("next_fire_at")) if state != "paused" else NONE),
        )
    return table


def schedule_details(schedule: dict[str, Any]) -> Table:
    """One schedule as labelled lines, for ``jobs schedules show``."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in (
        ("schedule", _value(schedule.get("name"))),
        ("state", _value(schedule.get("state"))),
        ("client", _value(schedule.get("client"))),
        ("kind", _value(schedule.get("kind"))),
        ("input", Text(input_text(schedule.get("input")))),
        ("expression", _value(schedule.get("schedule"))),
        ("timezone", _value(schedule.get("timezone"))),
        ("next fire", Text(timestamp(schedule.get("next_fire_at")))),
        ("created", _value(schedule.get("created_at"))),
    ):
        table.add_row(label, value)
    return table


def outcome(job: Job, now: datetime) -> str:
    """One line saying how a finished job ended, for ``watch``."""
    queue_wait, run_time = timings(job, now)
    spent = f"queued {duration(queue_wait)}, ran {duration(run_time)}"
    status = job.get("status")
    if status == "succeeded":
        return f"succeeded: result {result_text(job.get('result'))} ({spent})"
    if status == "failed":
        return f"failed: {job.get('error')} ({spent})"
    return f"{status} at {percent(job.get('progress'))} ({spent})"


def result_text(result: Any) -> str:
    """A job's result as one line: an integer as is (heavyLoad's), JSON otherwise."""
    if result is None:
        return NONE
    if isinstance(result, int) and not isinstance(result, bool):
        return str(result)
    return json.dumps(result, separators=(", ", ": "))


def input_text(input: Any) -> str:
    """A job's input as ``below=1000000000 ...``."""
    if not isinstance(input, dict) or not input:
        return NONE
    return " ".join(f"{name}={json.dumps(value)}" for name, value in input.items())


def kind_list(kinds: list[dict[str, Any]]) -> Table:
    """The kinds as a table, for ``jobs kinds``: each field's type, limits and default."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("KIND", no_wrap=True)
    table.add_column("FIELDS")
    table.add_column("DESCRIPTION")
    for kind in kinds:
        schema = kind.get("input_schema") or {}
        required = set(schema.get("required") or [])
        fields = [
            _field_text(name, spec, name in required)
            for name, spec in (schema.get("properties") or {}).items()
        ]
        table.add_row(
            _value(kind.get("kind")),
            Text("\n".join(fields) or NONE),
            _value(kind.get("description")),
        )
    return table


def _field_text(name: str, spec: dict[str, Any], required: bool) -> str:
    text = f"{name}: {spec.get('type')}"
    if "enum" in spec:
        text += " (" + "|".join(map(str, spec["enum"])) + ")"
    low, high = spec.get("minimum"), spec.get("maximum")
    if low is not None or high is not None:
        text += f" {'' if low is None else low}..{'' if high is None else high}"
    return text + (" required" if required else f" = {json.dumps(spec.get('default'))}")
