"""Strict parsing of a ``POST /heavy`` body into the n to count to, of a ``POST /jobs``
body into a kind and its validated input, and of their ``Prefer`` header.

Strict means: only a JSON object, only known fields, and numbers only as JSON numbers
within the declared limits (n, or each field a kind declares: chalicelib.kinds).
Python's json module needs help for that: it accepts NaN/Infinity, keeps the last of
duplicate keys, raises ValueError on integers over 4,300 digits and RecursionError on deep
nesting, and ``bool`` is a subclass of ``int``. Each of those becomes a 400 here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from chalicelib.config import Settings
from chalicelib.errors import InvalidRequest, LengthRequired, PayloadTooLarge
from chalicelib.jobs import DEFAULT_KIND, utc_now
from chalicelib.kinds import KINDS, Field, Kind, pattern_matches

MAX_BODY_BYTES = 16 * 1024
# When a job runs (docs/later.md): either field, in both POST bodies.
TIMING_FIELDS = ("run_at", "delay_seconds")
FIELDS = ("n", *TIMING_FIELDS)
# Longer digit strings are over any cap we could have; keeps int() cheap and bounded.
_MAX_INT_DIGITS = 30


class _TooLarge:
    """Stands in for an integer literal too long to be a valid n."""


def parse_submission(raw: bytes | str, headers: Mapping[str, str], settings: Settings) -> int:
    """Return n for a submission body, or raise a RequestError saying what is wrong."""
    n: int = parse_heavy_request(raw, headers, settings).input["n"]
    return n


def parse_heavy_request(
    raw: bytes | str,
    headers: Mapping[str, str],
    settings: Settings,
    now: Callable[[], datetime] = utc_now,
) -> JobRequest:
    """A ``POST /heavy`` body as heavyLoad's request: its n and when it runs
    (``parse_run_at``), or a RequestError saying what is wrong."""
    body = _bounded(raw)
    if not body.strip():
        # chalice local drops chunked bodies: an empty one may not be what was sent.
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise LengthRequired(
                "length_required", "Send the body with a Content-Length, not chunked."
            )
        return JobRequest(DEFAULT_KIND, {"n": settings.default_n})
    payload = _loads(body)
    if not isinstance(payload, dict):
        raise InvalidRequest("body_not_object", 'The body must be a JSON object like {"n": 1000}.')
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise InvalidRequest(
            "unknown_field",
            f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(FIELDS)}.",
        )
    n = _valid_n(payload["n"], settings.max_n) if "n" in payload else settings.default_n
    return JobRequest(DEFAULT_KIND, {"n": n}, parse_run_at(payload, settings, now))


JOB_FIELDS = ("kind", "input", *TIMING_FIELDS)


class JobRequest(NamedTuple):
    """A valid ``POST /jobs`` body: a registered kind and its input, defaults filled in."""

    kind: str
    input: dict[str, Any]
    # When it runs (run_at or delay_seconds); None: at once.
    run_at: datetime | None = None


def parse_job_request(
    raw: bytes | str, settings: Settings, now: Callable[[], datetime] = utc_now
) -> JobRequest:
    """Parse ``{"kind": ..., "input": {...}}`` (input may be left out: all defaults).

    400 unknown_kind (naming the kinds) for a kind not registered, 400 invalid_input
    naming the field by JSON pointer ("/input/below: must be >= 2"), the body errors of
    POST /heavy otherwise, 413 over MAX_BODY_BYTES.
    """
    payload = object_body(raw, JOB_FIELDS, '{"kind": "heavyLoad", "input": {"n": 1000}}')
    return kind_and_input(payload, settings, now)


# POST /jobs/batch: at most this many jobs a request.
MAX_BATCH_JOBS = 100
# Each item may be as large as a whole POST /jobs body, so any job one POST /jobs accepts
# fits in a batch of the maximum: 100 x 16 KiB = 1.6 MiB. The answer echoes each job's input
# (the request's size, plus under 1 KiB a job), so both stay far below Lambda's 6 MB
# invocation payload limit (request and response, synchronous: Lambda Developer Guide,
# "Lambda quotas"), which is below API Gateway's 10 MB payload limit (API Gateway
# Developer Guide, "Amazon API Gateway quotas"); the base64 encoding API Gateway may
# apply to a body (4/3 of it: 2.2 MB) fits too.
MAX_BATCH_BODY_BYTES = MAX_BATCH_JOBS * MAX_BODY_BYTES
BATCH_FIELDS = ("jobs",)
BATCH_ITEM_FIELDS = (*JOB_FIELDS, "idempotency_key")


class BatchItem(NamedTuple):
    """One valid item of a POST /jobs/batch body: its job (kind, input and when it runs, as
    a POST /jobs body says them) and its Idempotency-Key as sent (checked by the service,
    scoped to the client)."""

    request: JobRequest
    idempotency_key: str | None = None


def parse_batch_request(
    raw: bytes | str, settings: Settings, now: Callable[[], datetime] = utc_now
) -> list[BatchItem | InvalidRequest]:
    """Parse ``{"jobs": [item, ...]}``: one entry per item, in order, the item or the 400
    that item alone earns (its message starts with the item's JSON pointer, as in
    "/jobs/3/input/n: must be >= 0."). An item is validated exactly as a POST /jobs body
    (``parse_job_request``), plus ``run_at``/``delay_seconds`` and ``idempotency_key``.

    The whole body is refused (a RequestError, nothing made) when it is not a JSON object
    with only ``jobs``, a list of 1 to MAX_BATCH_JOBS entries (400), or is over
    MAX_BATCH_BODY_BYTES (413).
    """
    payload = object_body(
        raw,
        BATCH_FIELDS,
        '{"jobs": [{"kind": "heavyLoad", "input": {"n": 1000}}]}',
        MAX_BATCH_BODY_BYTES,
    )
    jobs = payload.get("jobs")
    if not isinstance(jobs, list):
        shown = "missing" if jobs is None and "jobs" not in payload else _json_type(jobs)
        raise InvalidRequest("invalid_jobs", f"/jobs must be an array of jobs, got {shown}.")
    if not 1 <= len(jobs) <= MAX_BATCH_JOBS:
        raise InvalidRequest(
            "invalid_jobs",
            f"/jobs has {len(jobs)} jobs; a batch has 1 to {MAX_BATCH_JOBS}.",
        )
    items: list[BatchItem | InvalidRequest] = []
    for index, item in enumerate(jobs):
        try:
            items.append(_batch_item(item, f"/jobs/{index}", settings, now))
        except InvalidRequest as error:
            items.append(error)
    return items


def _batch_item(item: Any, at: str, settings: Settings, now: Callable[[], datetime]) -> BatchItem:
    # An error about the item as a whole names it inside its message, never first: a
    # message that starts with "/jobs/3" reads as a link to GET /jobs/{job_id}.
    if not isinstance(item, dict):
        raise InvalidRequest(
            "item_not_object", f"Each job must be an object; {at} is {_json_type(item)}."
        )
    unknown = sorted(set(item) - set(BATCH_ITEM_FIELDS))
    if unknown:
        allowed = ", ".join(BATCH_ITEM_FIELDS)
        raise InvalidRequest(
            "unknown_field",
            f"Unknown field(s) in {at}: {', '.join(unknown)}. Allowed: {allowed}.",
        )
    key = item.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise InvalidRequest(
            "invalid_idempotency_key",
            f"{at}/idempotency_key: must be a string, got {_json_type(key)}.",
        )
    return BatchItem(kind_and_input(item, settings, now, at), key)


def kind_and_input(
    payload: dict[str, Any], settings: Settings, now: Callable[[], datetime], at: str = ""
) -> JobRequest:
    """The kind, validated input and run_at (``parse_run_at``) of a parsed POST /jobs body,
    of a batch item at JSON pointer ``at`` (whose errors then start with that pointer) or of
    a schedule's job. Reads the parsed ``payload``: an integer literal too long to parse is
    refused here as too large (re-serializing the payload would fail on it)."""
    name = payload.get("kind")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        shown = "no kind" if name is None else f"Unknown kind {_shown(name)}"
        message = f"{shown}. Kinds: {', '.join(sorted(KINDS))}."
        raise InvalidRequest("unknown_kind", f"{at}/kind: {message}" if at else message)
    input = validate_input(kind, payload.get("input", {}), settings, at)
    try:
        run_at = parse_run_at(payload, settings, now)
    except InvalidRequest as error:
        if not at:
            raise
        field = "delay_seconds" if "delay_seconds" in payload else "run_at"
        message = error.message.removeprefix(f"{field} ")
        raise InvalidRequest(error.code, f"{at}/{field}: {message}") from None
    return JobRequest(kind.name, input, run_at)


# RFC 3339's date-time (section 5.6): a full date and time with seconds, an optional
# fraction, and a Z or a numeric offset (T and Z in either case).
_RFC3339 = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>[Zz]|[+-]\d\d:\d\d)"
)


def parse_run_at(
    payload: Mapping[str, Any], settings: Settings, now: Callable[[], datetime] = utc_now
) -> datetime | None:
    """When a job given ``payload``'s ``run_at`` (RFC 3339 text) or ``delay_seconds`` (an
    integer >= 0) runs, in UTC; None if neither is given. 400 invalid_run_at, naming the
    field, for both, a malformed value, or a time more than the stage's retention ahead.
    A time already past is returned as is: the job runs at once."""
    if all(name in payload for name in TIMING_FIELDS):
        raise _invalid_run_at("Give run_at or delay_seconds, not both.")
    retention = settings.retention
    if "delay_seconds" in payload:
        delay = payload["delay_seconds"]
        if isinstance(delay, _TooLarge) or (
            type(delay) is int and delay > retention.total_seconds()
        ):
            raise _beyond_retention(retention)
        if type(delay) is not int or delay < 0:
            raise _invalid_run_at(f"delay_seconds must be an integer >= 0, got {_shown(delay)}.")
        return now() + timedelta(seconds=delay)
    if "run_at" not in payload:
        return None
    text = payload["run_at"]
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise _invalid_run_at(
            "run_at must be an RFC 3339 date-time with a Z or an offset, like "
            f"2030-01-02T09:00:00Z; got {_shown(text)}."
        )
    zone = match["zone"].upper().replace("Z", "+00:00")
    # fromisoformat takes at most 6 fraction digits (microseconds).
    fraction = f".{match['fraction'][:6]}" if match["fraction"] else ""
    try:
        run_at = datetime.fromisoformat(match["time"].upper() + fraction + zone).astimezone(UTC)
    # A date or time out of range (2030-02-30, 25:00), or past year 9999 once in UTC.
    except (ValueError, OverflowError):
        raise _invalid_run_at(f"run_at is not a valid date-time: {_shown(text)}.") from None
    if run_at - now() > retention:
        raise _beyond_retention(retention)
    return run_at


def _invalid_run_at(message: str) -> InvalidRequest:
    return InvalidRequest("invalid_run_at", message)


def _beyond_retention(retention: timedelta) -> InvalidRequest:
    return _invalid_run_at(
        f"A job may run at most {retention.days} day(s) ahead (the stage's retention)."
    )


def validate_input(
    kind: Kind[Any, Any], raw: Any, settings: Settings, at: str = ""
) -> dict[str, Any]:
    """``raw`` checked against the kind's declared fields, defaults filled in; 400
    invalid_input naming the first wrong field (``at``: the pointer of the object that
    holds the input, empty for a POST /jobs body)."""
    if not isinstance(raw, dict):
        raise _invalid(at, "", f"must be an object, got {_json_type(raw)}")
    fields = kind.fields(settings)
    unknown = sorted(set(raw) - {f.name for f in fields})
    if unknown:
        allowed = ", ".join(f.name for f in fields) or "none"
        raise _invalid(at, f"/{_escape(unknown[0])}", f"unknown field (fields: {allowed})")
    values: dict[str, Any] = {}
    for field in fields:
        if field.name in raw:
            values[field.name] = _valid_value(field, raw[field.name], at)
        elif field.required:
            raise _invalid(at, f"/{_escape(field.name)}", "is required")
        else:
            values[field.name] = field.default
    return values


def _valid_value(field: Field, value: Any, at: str = "") -> Any:
    where = f"/{_escape(field.name)}"
    if isinstance(value, _TooLarge):
        if field.type not in ("integer", "number"):
            raise _invalid(at, where, f"must be {_TYPE_NAMES[field.type]}, got a number")
        too_large = f"must be <= {field.maximum}" if field.maximum is not None else "is too large"
        raise _invalid(at, where, too_large)
    if not _is_json_type(value, field.type):
        raise _invalid(at, where, f"must be {_TYPE_NAMES[field.type]}, got {_json_type(value)}")
    if field.minimum is not None and value < field.minimum:
        raise _invalid(at, where, f"must be >= {field.minimum}")
    if field.maximum is not None and value > field.maximum:
        raise _invalid(at, where, f"must be <= {field.maximum}")
    if field.type == "string":
        if field.min_length is not None and len(value) < field.min_length:
            raise _invalid(at, where, f"must be at least {field.min_length} characters")
        if field.max_length is not None and len(value) > field.max_length:
            raise _invalid(at, where, f"must be at most {field.max_length} characters")
        if field.pattern is not None and not _matches(field.pattern, value):
            raise _invalid(at, where, f"must match {field.pattern}")
        if field.enum is not None and value not in field.enum:
            raise _invalid(at, where, f"must be one of: {', '.join(field.enum)}")
    return value


def _matches(pattern: str, value: str) -> bool:
    try:
        return pattern_matches(pattern, value)
    except ValueError:  # a lone surrogate ("\ud800" in the JSON): no pattern matches it
        return False


_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean",
}


def _is_json_type(value: Any, type_name: str) -> bool:
    # bool is an int subclass in Python, but true/false is not a number in JSON.
    if type_name == "integer":
        return type(value) is int
    if type_name == "number":  # finite: 1e999 parses as inf, which JSON cannot carry
        return type(value) is int or (type(value) is float and math.isfinite(value))
    if type_name == "string":
        return isinstance(value, str)
    return isinstance(value, bool)


def _invalid(at: str, pointer: str, message: str) -> InvalidRequest:
    return InvalidRequest("invalid_input", f"{at}/input{pointer}: {message}.")


def _escape(name: str) -> str:
    """A field name as a JSON pointer token (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")


def _shown(value: Any) -> str:
    return repr(value)[:80] if isinstance(value, str) else _json_type(value)


def object_body(
    raw: bytes | str, fields: tuple[str, ...], example: str, limit: int = MAX_BODY_BYTES
) -> dict[str, Any]:
    """A request body that must be a JSON object with only ``fields``: 413 body_too_large
    over ``limit``, 400 invalid_json, 400 body_not_object (showing ``example``, the body
    an empty one should have been), 400 unknown_field naming the others."""
    body = _bounded(raw, limit)
    payload = _loads(body) if body.strip() else None
    if not isinstance(payload, dict):
        raise InvalidRequest("body_not_object", f"The body must be a JSON object like {example}.")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise InvalidRequest(
            "unknown_field",
            f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(fields)}.",
        )
    return payload


def _bounded(raw: bytes | str, limit: int = MAX_BODY_BYTES) -> bytes:
    body = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(body) > limit:
        raise PayloadTooLarge(
            "body_too_large", f"The body is {len(body)} bytes; the limit is {limit}."
        )
    return body


def _loads(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            object_pairs_hook=_no_duplicates,
        )
    except InvalidRequest:
        raise
    except UnicodeDecodeError:
        raise InvalidRequest("invalid_json", "The body is not valid UTF-8.") from None
    except RecursionError:
        raise InvalidRequest("invalid_json", "The body is nested too deeply.") from None
    except ValueError as error:
        raise InvalidRequest("invalid_json", f"The body is not valid JSON: {error}.") from None


def _valid_n(n: Any, max_n: int) -> int:
    # bool is an int subclass in Python, but true/false is not a number in JSON.
    if isinstance(n, _TooLarge) or (type(n) is int and not 0 <= n <= max_n):
        raise InvalidRequest("n_out_of_range", f"n must be between 0 and {max_n}.")
    if type(n) is not int:
        raise InvalidRequest("invalid_n", f"n must be a JSON integer, got {_json_type(n)}.")
    return n


def _reject_constant(name: str) -> Any:
    raise InvalidRequest("invalid_json", f"{name} is not valid JSON.")


def _parse_int(digits: str) -> int | _TooLarge:
    return _TooLarge() if len(digits.lstrip("-")) > _MAX_INT_DIGITS else int(digits)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRequest("duplicate_field", f"Field {key!r} appears more than once.")
        result[key] = value
    return result


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | _TooLarge):  # an integer literal too long to parse is one too
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Preferences(NamedTuple):
    """What a client asked for in its ``Prefer`` header (RFC 7240)."""

    respond_async: bool = False
    wait: int | None = None  # seconds, already capped


def parse_prefer(header: str | None, max_wait: int) -> Preferences:
    """Read ``respond-async`` and ``wait=N``; ignore the rest, as RFC 7240 asks.

    ``wait`` above ``max_wait`` is capped (API Gateway ends requests at 29 s), however
    many digits it has (int() refuses more than 4,300, so they are counted first); a
    malformed one is ignored like any preference the server cannot honour.
    """
    respond_async, wait = False, None
    for preference in (header or "").split(","):
        token = preference.split(";", 1)[0]
        name, _, value = token.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "respond-async":
            respond_async = True
        elif name == "wait" and value.isascii() and value.isdigit():
            digits = value.lstrip("0") or "0"
            too_long = len(digits) > len(str(max_wait))
            wait = max_wait if too_long else min(int(digits), max_wait)
    return Preferences(respond_async=respond_async, wait=wait)
