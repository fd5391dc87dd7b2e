"""Job kinds: the registry, the declarations and what derives from them, the two shipped
kinds (heavyLoad unchanged, countPrimes against published pi(x)), generic checkpoints and
their limits, and items written before kinds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import boto3
import pytest

from chalicelib import connections, kinds
from chalicelib.config import Settings
from chalicelib.errors import InvalidRequest, PayloadTooLarge
from chalicelib.jobs import (
    SCHEMA_VERSION,
    Job,
    JobStatus,
    from_item,
    request_fingerprint,
    to_item,
    utc_now,
)
from chalicelib.kinds import (
    MAX_RESULT_BYTES,
    MAX_STATE_BYTES,
    Context,
    count_primes,
    heavy_load,
    param,
)
from chalicelib.requests import MAX_BODY_BYTES, parse_job_request
from chalicelib.worker import Outcome
from tests.chalicelib.test_config import REQUIRED
from tests.chalicelib.test_worker import FakeClock, make_worker
from tests.ecma_patterns import NOT_ECMA, PATTERN_CASES
from tests.fake_kinds import kind_running

SETTINGS = Settings.from_mapping(REQUIRED)


def run(
    kind: Callable[[Any, Context], Any], input: Any, state: Any = None
) -> tuple[Any, list[Any]]:
    """Run a kind's function outside the worker; return its result and reported states."""
    reports: list[tuple[float, Any]] = []
    result = kind(input, Context(state=state, report=lambda p, s: reports.append((p, s))))
    progress = [p for p, _ in reports]
    assert progress == sorted(progress) and all(0 <= p <= 1 for p in progress)
    return result, [s for _, s in reports]


# --- the registry and the declarations ----------------------------------------------


def test_the_registry_finds_every_module_of_the_package() -> None:
    directory = os.path.dirname(kinds.__file__)
    modules = sorted(f for f in os.listdir(directory) if f.endswith(".py") and f[0] != "_")
    assert modules == ["count_primes.py", "heavy_load.py"]
    assert sorted(kinds.KINDS) == ["countPrimes", "heavyLoad"]


def test_input_schemas_are_the_declarations_with_the_stages_limits() -> None:
    settings = Settings.from_mapping({**REQUIRED, "JOBS_MAX_N": "99", "JOBS_DEFAULT_N": "9"})
    heavy = kinds.KINDS["heavyLoad"].input_schema(settings)
    assert heavy == {
        "type": "object",
        "title": "heavyLoad",
        "properties": {
            "n": {
                "type": "integer",
                "title": "n",
                "minimum": 0,
                "maximum": 99,
                "default": 9,
                "description": "How far to count.",
            }
        },
        "required": [],
        "additionalProperties": False,
    }
    primes = kinds.KINDS["countPrimes"].input_schema(settings)
    below = primes["properties"]["below"]
    assert primes["required"] == ["below"] and "default" not in below
    assert below["type"] == "integer" and below["minimum"] == 2 and below["maximum"] == 99
    assert kinds.KINDS["countPrimes"].fields(SETTINGS)[0].maximum == SETTINGS.max_n == 10**10
    assert kinds.KINDS["countPrimes"].result_schema() == {
        "type": "object",
        "title": "Result",
        "properties": {"count": {"type": "integer"}},
        "required": ["count"],
        "additionalProperties": False,
    }
    assert kinds.KINDS["heavyLoad"].result_schema() == {"type": "integer"}


def test_every_kind_declared_passes_the_declaration_check() -> None:
    kinds.check_declarations(kinds.KINDS.values())


@dataclass(frozen=True)
class PatternWithoutLength:
    word: str = param(default="a", pattern="^[a-z]+$")


@dataclass(frozen=True)
class UnsoundPatterns:
    python_only: str = param(default="a", max_length=8, pattern="(?P<w>a)")
    number: int = param(default=1, pattern="^[0-9]$")
    listed: list[int] = dataclasses.field(default_factory=list)


def declared(input: type[Any]) -> kinds.Kind[Any, Any]:
    """A kind declared with ``input``: declaring it checks nothing."""
    return kinds.Kind("probe", "a test kind", input, lambda i, c: 0, int, lambda i, s: 1.0)


def test_a_pattern_without_max_length_fails_the_declaration_check() -> None:
    with pytest.raises(kinds.DeclarationError) as caught:
        kinds.check_declarations([*kinds.KINDS.values(), declared(PatternWithoutLength)])
    assert str(caught.value) == "kind probe, input field word: a pattern needs a max_length"


def test_a_pattern_that_is_not_ecma_262_or_not_on_a_string_fails_the_check() -> None:
    problems = kinds.declaration_problems(declared(UnsoundPatterns))
    assert problems == [
        "kind probe, input field python_only: pattern '(?P<w>a)' is not ECMA-262: "
        + problems[0].rsplit(": ", 1)[1],
        "kind probe, input field number: a pattern applies to str fields only",
        "kind probe, input field number: a pattern needs a max_length",
        "kind probe, input field listed: list[int] is not int, float, str, bool or Literal",
    ]


@pytest.mark.parametrize("pattern", NOT_ECMA)
def test_python_only_syntax_is_no_ecma_262_pattern(pattern: str) -> None:
    @dataclass(frozen=True)
    class Input:
        word: str = param(default="a", max_length=8, pattern=pattern)

    assert len(kinds.declaration_problems(declared(Input))) == 1


@pytest.mark.parametrize(("pattern", "value", "matches"), PATTERN_CASES)
def test_patterns_match_as_ecma_262_and_the_dashboard_do(
    pattern: str, value: str, matches: bool
) -> None:
    """The same table a real browser is held to (tests/e2e/test_pattern_semantics.py)."""
    assert kinds.pattern_matches(pattern, value) is matches


# --- heavyLoad: unchanged ---------------------------------------------------------------


def test_heavy_load_counts_to_n_exactly_from_any_checkpoint() -> None:
    n = 3 * heavy_load.CHUNK + 17
    result, states = run(heavy_load.heavy_load, heavy_load.Input(n))
    assert result == n and states[-1] == n and states == sorted(states)
    assert run(heavy_load.heavy_load, heavy_load.Input(0))[0] == 0
    resumed, later = run(heavy_load.heavy_load, heavy_load.Input(n), 2 * heavy_load.CHUNK + 5)
    assert resumed == n and len(later) == 2  # from the checkpoint, not from zero


# --- countPrimes ----------------------------------------------------------------------

# pi(10^k): OEIS A006880.
PUBLISHED_PI = {10: 4, 100: 25, 1000: 168, 10**4: 1229, 10**5: 9592, 10**6: 78498, 10**7: 664579}


@pytest.mark.parametrize(("below", "count"), sorted(PUBLISHED_PI.items()))
def test_count_primes_matches_published_pi(below: int, count: int) -> None:
    # Primes < 10^k == primes <= 10^k: 10^k is not a prime.
    result, _ = run(count_primes.count_primes, count_primes.Input(below))
    assert result == count_primes.Result(count=count)


def test_count_primes_at_small_bounds_and_segment_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(count_primes, "SEGMENT", 64)  # many segments, odd edges
    for below in range(2, 700):
        expected = sum(1 for k in range(2, below) if all(k % d for d in range(2, int(k**0.5) + 1)))
        assert run(count_primes.count_primes, count_primes.Input(below))[0].count == expected


def test_count_primes_resumes_exactly_from_every_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(count_primes, "SEGMENT", 1 << 14)
    below = 1_000_003
    result, states = run(count_primes.count_primes, count_primes.Input(below))
    assert result.count == 78498 and len(states) == below // (1 << 14) + 1
    assert all(set(s) == {"low", "count"} for s in states)
    assert all(s["low"] % 2 == 0 for s in states[:-1]) and states[-1]["low"] == below
    for state in states[::7]:
        resumed, after = run(count_primes.count_primes, count_primes.Input(below), state)
        assert resumed == result
        assert after == states[states.index(state) + 1 :]  # only the segments left


# --- validation of POST /jobs -----------------------------------------------------------


def parse(body: Any) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return parse_job_request(raw, SETTINGS)


def refused(body: Any) -> tuple[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    return caught.value.code, caught.value.message


def test_a_valid_request_gets_its_defaults_filled_in() -> None:
    assert parse({"kind": "countPrimes", "input": {"below": 100}}).input == {"below": 100}
    assert parse({"kind": "heavyLoad"}).input == {"n": SETTINGS.default_n}
    assert parse({"kind": "heavyLoad", "input": {}}).input == {"n": SETTINGS.default_n}


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"kind": "nope"}, "unknown_kind", "Unknown kind 'nope'. Kinds: countPrimes, heavyLoad."),
        ({"input": {}}, "unknown_kind", "no kind. Kinds: countPrimes, heavyLoad."),
        ({"kind": 5}, "unknown_kind", "Unknown kind an integer"),
        ({"kind": "countPrimes"}, "invalid_input", "/input/below: is required."),
        (
            {"kind": "countPrimes", "input": {"below": 1}},
            "invalid_input",
            "/input/below: must be >= 2.",
        ),
        (
            {"kind": "countPrimes", "input": {"below": 10**10 + 1}},
            "invalid_input",
            "/input/below: must be <= 10000000000.",
        ),
        (
            '{"kind": "countPrimes", "input": {"below": 1' + "0" * 40 + "}}",
            "invalid_input",
            "/input/below: must be <= 10000000000.",
        ),
        (
            {"kind": "countPrimes", "input": {"below": True}},
            "invalid_input",
            "/input/below: must be an integer, got a boolean.",
        ),
        (
            {"kind": "countPrimes", "input": {"below": 10.0}},
            "invalid_input",
            "/input/below: must be an integer",
        ),
        (
            {"kind": "countPrimes", "input": {"below": "10"}},
            "invalid_input",
            "/input/below: must be an integer, got a string.",
        ),
        (
            {"kind": "countPrimes", "input": {"below": 10, "x": 1}},
            "invalid_input",
            "/input/x: unknown field",
        ),
        (
            {"kind": "countPrimes", "input": {"a/b": 1}},
            "invalid_input",
            "/input/a~1b: unknown field",
        ),
        (
            {"kind": "countPrimes", "input": [10]},
            "invalid_input",
            "/input: must be an object, got an array.",
        ),
        (
            {"kind": "countPrimes", "input": {"below": 10}, "n": 1},
            "unknown_field",
            "Unknown field(s): n.",
        ),
        ('{"kind": "countPrimes", "input": {"below": NaN}}', "invalid_json", "NaN"),
        ('{"kind": "countPrimes", "kind": "heavyLoad"}', "duplicate_field", "'kind'"),
        ("[]", "body_not_object", ""),
        ("", "body_not_object", ""),
    ],
)
def test_a_bad_request_is_refused_naming_what_is_wrong(body: Any, code: str, message: str) -> None:
    assert refused(body)[0] == code
    assert message in refused(body)[1]


def test_a_request_over_the_limit_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge):
        parse(" " * (MAX_BODY_BYTES + 1))


def test_the_idempotency_fingerprint_covers_kind_and_input() -> None:
    prints = {
        request_fingerprint("heavyLoad", {"n": 5}),
        request_fingerprint("heavyLoad", {"n": 6}),
        request_fingerprint("countPrimes", {"below": 5}),
        request_fingerprint("countPrimes", {"below": 6}),
    }
    assert len(prints) == 4
    # heavyLoad's is the one an earlier release recorded with its Idempotency-Keys.
    assert request_fingerprint("heavyLoad", {"n": 5}) == (
        hashlib.sha256(b'{"kind": "heavyLoad", "n": 5}').hexdigest()
    )


# --- generic checkpoints in the worker ---------------------------------------------


def test_a_count_primes_job_checkpoints_and_a_take_over_resumes_from_it(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(count_primes, "SEGMENT", 1 << 12)
    job = make_job(kind="countPrimes", input={"below": 100_000})
    table = connections.job_table()
    stopped: list[dict[str, Any]] = []

    def dies_midway(input: Any, ctx: Context) -> Any:
        def report(progress: float, state: Any) -> None:
            ctx.report(progress, state)
            if progress > 0.5:
                stopped.append(state)
                raise KeyboardInterrupt  # the process dies (SIGKILL, in the e2e test)

        return count_primes.count_primes(input, Context(ctx.state, report))

    monkeypatch.setitem(kinds.KINDS, "countPrimes", kind_running(dies_midway, "countPrimes"))
    with pytest.raises(KeyboardInterrupt):
        make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))
    saved = table.get(job.job_id)
    assert saved is not None and saved.state == stopped[0] and 0.5 < saved.progress < 1

    starts: list[Any] = []
    monkeypatch.setitem(
        kinds.KINDS,
        "countPrimes",
        kind_running(
            lambda i, ctx: starts.append(ctx.state) or count_primes.count_primes(i, ctx),
            "countPrimes",
        ),
    )
    later = utc_now() + timedelta(minutes=2)  # the lease expired
    assert make_worker(now=lambda: later).process_message(message_for(job)) is Outcome.SUCCEEDED
    final = table.get(job.job_id)
    assert starts == [stopped[0]]
    assert final is not None and final.result == {"count": 9592} and final.attempts == 2


@pytest.mark.parametrize(
    ("reported", "returned", "error"),
    [
        ("x" * MAX_STATE_BYTES, 1, f"the limit is {MAX_STATE_BYTES}"),
        ({1, 2}, 1, "the reported state is not JSON"),
        (None, "x" * MAX_RESULT_BYTES, "returned str, declared int"),
        (None, True, "returned bool, declared int"),
    ],
)
def test_a_state_or_result_that_cannot_be_saved_fails_the_job_clearly(
    make_job: Callable[..., Job],
    message_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    reported: Any,
    returned: Any,
    error: str,
) -> None:
    def misbehaving(input: Any, ctx: Context) -> Any:
        if reported is not None:
            ctx.report(0.5, reported)
        return returned

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(misbehaving))
    job = make_job(n=10)
    outcome = make_worker(monotonic=FakeClock(step=2.0)).process_message(message_for(job))
    final = connections.job_table().get(job.job_id)
    assert outcome is Outcome.FAILED and final is not None
    assert final.status is JobStatus.FAILED and error in (final.error or "")
    assert final.attempts == 1  # not retried: no retry can change it


def test_a_result_over_the_limit_fails_the_job_clearly(
    make_job: Callable[..., Job], message_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wordy = replace(kind_running(lambda i, ctx: "x" * MAX_RESULT_BYTES), result=str)
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", wordy)
    job = make_job(n=10)
    assert make_worker().process_message(message_for(job)) is Outcome.FAILED
    final = connections.job_table().get(job.job_id)
    assert final is not None and final.status is JobStatus.FAILED
    assert f"the limit is {MAX_RESULT_BYTES}" in (final.error or "")


# --- items written before kinds -------------------------------------------------------


def test_an_item_written_before_kinds_reads_resumes_and_is_backfilled(
    make_job: Callable[..., Job], aws: dict[str, str], message_for: Any
) -> None:
    job = make_job(n=50_000)
    old = to_item(job)
    del old["input"]
    old["position"] = {"N": "20000"}  # release 2's checkpoint of a job it was running
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(TableName=aws["TableName"], Item=old)
    read = from_item(old)
    assert read.input == {"n": 50_000} and read.state == 20_000 and read.n == 50_000

    table = connections.job_table()
    report = table.migrate()
    assert report.rewritten >= 1 and table.schema_version() == SCHEMA_VERSION
    item = dynamodb.get_item(TableName=aws["TableName"], Key={"job_id": {"S": job.job_id}})["Item"]
    assert json.loads(item["input"]["S"]) == {"n": 50_000}

    starts: list[Any] = []
    original = kinds.KINDS["heavyLoad"]
    kinds.KINDS["heavyLoad"] = kind_running(
        lambda i, ctx: starts.append(ctx.state) or heavy_load.heavy_load(i, ctx)
    )
    try:
        assert make_worker().process_message(message_for(job)) is Outcome.SUCCEEDED
    finally:
        kinds.KINDS["heavyLoad"] = original
    assert starts == [20_000]
    final = table.get(job.job_id)
    assert final is not None and final.result == 50_000
