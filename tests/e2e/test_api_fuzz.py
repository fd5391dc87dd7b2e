"""Schemathesis against the local API: generated requests, valid and invalid, for every
operation of /openapi.json. No answer may be a 5xx, and every answer must match the
document (status code, content type, body schema, headers). Then what schema-driven
generation rarely draws: integers of thousands of digits (int() refuses more than 4,300)
and cursors that decode to JSON nested thousands deep (json.loads' RecursionError),
each a 400 in the API's error shape.

Schemathesis' pytest plugin does not run under pytest 9, so each operation's strategy is
driven by Hypothesis directly; the checks are schemathesis' own (call_and_validate).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from chalicelib.requests import MAX_BODY_BYTES
from tests.e2e.conftest import QUOTAS_OFF, Stack

OPERATIONS = [
    "GET /",
    "GET /fast",
    "POST /heavy",
    "GET /kinds",
    "POST /jobs",
    "POST /jobs/batch",
    "GET /jobs",
    "GET /jobs/{job_id}",
    "POST /jobs/{job_id}/cancel",
    "POST /jobs/{job_id}/retry",
    "GET /schedules",
    "POST /schedules",
    "GET /schedules/{name}",
    "DELETE /schedules/{name}",
    "POST /schedules/{name}/pause",
    "POST /schedules/{name}/resume",
    "GET /webhooks",
    "POST /webhooks",
    "GET /webhooks/{webhook_id}",
    "DELETE /webhooks/{webhook_id}",
    "POST /webhooks/{webhook_id}/rotate",
    "GET /webhooks/{webhook_id}/deliveries",
]  # and GET /openapi.json, which schemathesis leaves out: it is the document itself


@pytest.fixture(scope="module")
def stack(make_module_stack: Callable[..., Stack]) -> Stack:
    """One stack for the file: each case checks the answers to its own requests, which no
    other case's jobs, schedules or endpoints change (quotas off; a client's eleventh
    endpoint and a schedule past the cap are documented 409s, allowed below). No worker:
    generated jobs (up to n = 1e10) need not run for the API to be checked."""
    return make_module_stack(worker=False, environment=QUOTAS_OFF)


def test_the_document_lists_every_operation(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    labels = sorted(result.ok().label for result in schema.get_all_operations())
    assert labels == sorted(OPERATIONS)


# Every operation with valid data; with invalid data, every operation that takes input
# (GET /, GET /fast and GET /kinds take none, so no request to them can be schema-invalid).
TAKES_NO_INPUT = {"GET /", "GET /fast", "GET /kinds"}
CASES = [(label, schemathesis.GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, schemathesis.GenerationMode.NEGATIVE)
    for label in OPERATIONS
    if label not in TAKES_NO_INPUT
]


@pytest.mark.parametrize(
    ("label", "mode"), CASES, ids=[f"{label} {mode.value}" for label, mode in CASES]
)
def test_every_operation_answers_as_documented(
    label: str, mode: schemathesis.GenerationMode, stack: Stack
) -> None:
    """Positive cases (schema-valid) must be accepted; negative ones (schema-invalid)
    refused with a documented 4xx. Neither may ever produce a 5xx."""
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operation = schema.find_operation_by_label(label)
    assert operation is not None

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def answers_as_documented(case: schemathesis.Case) -> None:
        # A cursor is opaque: only the `next` of a page is valid, which no schema can
        # express, so a made-up one may be refused (400). Every other check still applies.
        made_up_cursor = bool(case.query and "cursor" in case.query)
        # A schema-valid run_at may still be refused (400 invalid_run_at): past the
        # stage's retention, a leap second, or beyond year 9999 once in UTC, none of which
        # a date-time format can exclude; so may run_at and delay_seconds together.
        made_up_time = isinstance(case.body, dict) and "run_at" in case.body
        # A schedule's expression (EventBridge's cron and rate) and time zone (an IANA
        # name) are more than a schema can say: a schema-valid one may be refused with the
        # documented 400 naming the field, as schemathesis.toml says for the CLI's run.
        # So is a webhook's URL (a host, no credentials or fragment: docs/webhooks.md),
        # and the eleventh endpoint of a client is the documented 409.
        made_up_schedule = label in {"POST /schedules", "POST /webhooks"}
        excluded = (
            [positive_data_acceptance] if made_up_cursor or made_up_time or made_up_schedule else []
        )
        blank = is_blank_negative_body(case, stack.url)
        # POST /jobs/batch answers an invalid item in that item's own result, inside a 207
        # with the other items' (docs/batch.md): a schema-invalid batch is refused whole
        # (a documented 4xx) or has an item refused.
        invalid_batch = label == "POST /jobs/batch" and mode.is_negative
        # A schema-invalid body past the API's size limit (a string far beyond its
        # maxLength, say) is refused before it is read, with the documented 413, which
        # schemathesis' list of refusals lacks.
        oversized = mode.is_negative and _body_bytes(case) > MAX_BODY_BYTES
        if blank or invalid_batch or oversized:
            excluded.append(negative_data_rejection)
        response = case.call_and_validate(base_url=stack.url, excluded_checks=excluded)
        if oversized and not invalid_batch:
            assert response.status_code == 413, response.text[:1000]
        if invalid_batch and not blank:
            assert 400 <= response.status_code < 500 or any(
                result["status"] >= 400 for result in response.json()["results"]
            ), response.text[:1000]
        if blank:
            empty = case.as_transport_kwargs(base_url=stack.url)
            empty.pop("json", None)
            empty["data"] = b""
            assert answer(response) == answer(requests.request(**empty))

    answers_as_documented()


def _body_bytes(case: schemathesis.Case) -> int:
    """The size of the case's JSON body as sent (requests' encoding); 0 without one."""
    if not isinstance(case.body, (dict, list, str, int, float, bool)):
        return 0
    return len(json.dumps(case.body).encode())


def is_blank_negative_body(case: schemathesis.Case, base_url: str) -> bool:
    """A negative case whose body, as sent, is only whitespace (schemathesis' "invalid
    syntax: random bytes" can draw b"\\r"). By the API's contract (README, the document's
    requestBody, tests/test_app.py::test_no_body_or_empty_object_means_default_n) such a
    body is no body at all, so it is not refused: it must be answered exactly as the same
    request with an empty body is, which the caller checks instead."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return False
    data = case.as_transport_kwargs(base_url=base_url).get("data")
    body = data.encode() if isinstance(data, str) else data
    return isinstance(body, bytes) and body != b"" and body.strip() == b""


def answer(response: Any) -> tuple[int, dict[str, Any]]:
    """The status and the body of an answer, less what differs between two jobs."""
    body = response.json() if response.content else {}
    return response.status_code, {
        k: v for k, v in body.items() if k not in ("job_id", "status_url")
    }


# --- what the document's schemas rarely generate -------------------------------------------

# Past CPython's 4,300-digit limit on int() of a string, with or without leading zeros.
LONG_DIGITS = st.builds(
    lambda zeros, first, repeats: "0" * zeros + first + "9876543210" * repeats,
    st.integers(0, 3),
    st.sampled_from("123456789"),
    st.integers(430, 700),
)
# JSON nested thousands deep (arrays, objects, inside a cursor's own shape), as a cursor
# carries it.
NESTINGS = [("[", "]"), ('{"a":', "}"), ('{"l": "all", "p": [', "]}")]
DEEP_JSON = st.builds(
    lambda nesting, depth, inside: nesting[0] * depth + inside + nesting[1] * depth,
    st.sampled_from(NESTINGS),
    st.integers(1_000, 2_000),  # a longer cursor is over the local server's 64 KiB URL
    st.sampled_from(["", "1", "null", '"end"']),
)


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def assert_refused(response: requests.Response, code: str) -> None:
    assert response.status_code == 400, response.text[:500]
    assert response.json() == {
        "error": {"code": code, "message": response.json()["error"]["message"]}
    }


FUZZ = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def test_long_digit_strings_and_deep_cursors_are_400s(stack: Stack) -> None:
    a_job = f"{stack.url}/jobs/{uuid.uuid4()}"

    @given(digits=LONG_DIGITS)
    @FUZZ
    def long_digits(digits: str) -> None:
        assert_refused(
            requests.get(f"{stack.url}/jobs", params={"limit": digits}, timeout=30), "invalid_limit"
        )
        assert_refused(requests.get(a_job, params={"wait": digits}, timeout=30), "invalid_wait")
        # An absurd Prefer: wait= is capped like any other; respond-async answers at once.
        prefer = {"Prefer": f"respond-async, wait={digits}"}
        submitted = requests.post(f"{stack.url}/heavy", json={"n": 1}, headers=prefer, timeout=30)
        assert submitted.status_code == 202, submitted.text[:500]

    @given(nested=DEEP_JSON)
    @FUZZ
    def deep_cursors(nested: str) -> None:
        params = {"cursor": cursor_of(nested)}
        assert_refused(
            requests.get(f"{stack.url}/jobs", params=params, timeout=30), "invalid_cursor"
        )

    long_digits()
    deep_cursors()
