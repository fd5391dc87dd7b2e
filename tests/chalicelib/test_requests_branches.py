"""chalicelib/requests.py without AWS: what each refused submission says (the client reads
the message to fix its request), found by mutation testing (docs/mutation.md). POST /jobs input
is checked against test kinds that declare every type and limit a kind may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pytest

from chalicelib.config import Settings
from chalicelib.errors import InvalidRequest, LengthRequired, PayloadTooLarge
from chalicelib.kinds import KINDS, Kind, check_declarations, param
from chalicelib.requests import MAX_BODY_BYTES, parse_job_request, parse_prefer, parse_submission

SETTINGS = Settings(
    table_name="t", queue_name="q", delay_queue_name="d", stage="s", default_n=1000, max_n=10**10
)


def refusal(body: bytes, headers: dict[str, str] | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_submission(body, headers or {}, SETTINGS)
    return caught.value


@pytest.mark.parametrize(
    ("body", "got"),
    [
        (b'{"n": null}', "null"),
        (b'{"n": true}', "a boolean"),
        (b'{"n": false}', "a boolean"),
        (b'{"n": "5"}', "a string"),
        (b'{"n": 5.0}', "a number with a fraction or exponent"),
        (b'{"n": 1e3}', "a number with a fraction or exponent"),
        (b'{"n": [5]}', "an array"),
        (b'{"n": {"v": 5}}', "an object"),
    ],
)
def test_a_non_integer_n_is_named_by_its_json_type(body: bytes, got: str) -> None:
    error = refusal(body)
    assert (error.code, error.message) == ("invalid_n", f"n must be a JSON integer, got {got}.")


@pytest.mark.parametrize(
    "body",
    [
        b'{"n": -1}',
        b'{"n": 10000000001}',
        b'{"n": ' + b"9" * 31 + b"}",
        b'{"n": -' + b"9" * 31 + b"}",
    ],
)
def test_an_n_out_of_range_says_the_range(body: bytes) -> None:
    error = refusal(body)
    assert (error.code, error.message) == ("n_out_of_range", "n must be between 0 and 10000000000.")


def test_the_bounds_themselves_are_accepted() -> None:
    assert parse_submission(b'{"n": 0}', {}, SETTINGS) == 0
    assert parse_submission(b'{"n": 10000000000}', {}, SETTINGS) == 10**10
    assert parse_submission(b"{}", {}, SETTINGS) == SETTINGS.default_n
    assert parse_submission("  \n", {}, SETTINGS) == SETTINGS.default_n


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"[1]", "body_not_object", 'The body must be a JSON object like {"n": 1000}.'),
        (
            b'{"n": 1, "m": 2, "a": 3}',
            "unknown_field",
            "Unknown field(s): a, m. Allowed: n, run_at, delay_seconds.",
        ),
        (b'{"n": 1, "n": 2}', "duplicate_field", "Field 'n' appears more than once."),
        (b'{"n": NaN}', "invalid_json", "NaN is not valid JSON."),
        (b'{"n": -Infinity}', "invalid_json", "-Infinity is not valid JSON."),
        (b'{"n": \xff}', "invalid_json", "The body is not valid UTF-8."),
        (b"[" * 10_000, "invalid_json", "The body is nested too deeply."),
    ],
)
def test_each_refusal_says_what_is_wrong(body: bytes, code: str, message: str) -> None:
    error = refusal(body)
    assert (error.code, error.message) == (code, message)


def test_invalid_json_quotes_the_parser() -> None:
    error = refusal(b'{"n": 1')
    assert error.code == "invalid_json"
    assert error.message.startswith("The body is not valid JSON: Expecting ")


def test_the_size_limit_is_exact_and_named() -> None:
    at_limit = b'{"n": 1}' + b" " * (MAX_BODY_BYTES - 8)
    assert parse_submission(at_limit, {}, SETTINGS) == 1
    with pytest.raises(PayloadTooLarge) as caught:
        parse_submission(at_limit + b" ", {}, SETTINGS)
    assert caught.value.code == "body_too_large"
    assert caught.value.message == (
        f"The body is {MAX_BODY_BYTES + 1} bytes; the limit is {MAX_BODY_BYTES}."
    )


@pytest.mark.parametrize("encoding", ["chunked", "gzip, Chunked"])
def test_an_empty_chunked_body_needs_a_length(encoding: str) -> None:
    with pytest.raises(LengthRequired) as caught:
        parse_submission(b"", {"transfer-encoding": encoding}, SETTINGS)
    assert (caught.value.code, caught.value.message) == (
        "length_required",
        "Send the body with a Content-Length, not chunked.",
    )
    assert parse_submission(b"", {"transfer-encoding": "gzip"}, SETTINGS) == SETTINGS.default_n


@pytest.mark.parametrize(
    ("header", "respond_async", "wait"),
    [
        ("Respond-Async", True, None),
        ("wait=7", False, 7),
        ('wait="7"', False, 7),
        (" wait = 7 ; x=y", False, 7),
        ("wait=99", False, 25),
        ("wait=-1, wait=x, wait=", False, None),
        ("respond-async=yes,wait=3", True, 3),
        ("handling=lenient", False, None),
        # Parameters after a preference's ";" belong to it and are ignored (RFC 7240 §2).
        ("wait=5; a=1; b=2", False, 5),
        ("respond-async; a; b, wait=2", True, 2),
        # A wait that is not all digits is malformed and ignored, whatever surrounds it.
        ("wait=X5X", False, None),
        # An absurdly long wait is capped like any other (int() refuses 4,300+ digits).
        ("wait=" + "9" * 5000, False, 25),
        ("wait=" + "0" * 5000 + "7", False, 7),
        ("respond-async, wait=" + "1" * 5000, True, 25),
    ],
)
def test_prefer_reads_respond_async_and_a_capped_wait(
    header: str, respond_async: bool, wait: int | None
) -> None:
    preferences = parse_prefer(header, 25)
    assert (preferences.respond_async, preferences.wait) == (respond_async, wait)


# --- POST /jobs: the body, the kind, and each check a kind's declaration asks for --------


def job_refusal(body: str) -> tuple[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        parse_job_request(body, SETTINGS)
    return caught.value.code, caught.value.message


KINDS_NAMED = "Kinds: countPrimes, heavyLoad."


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            "[]",
            "body_not_object",
            'The body must be a JSON object like {"kind": "heavyLoad", "input": {"n": 1000}}.',
        ),
        (
            '{"kind": "heavyLoad", "z": 1, "a": 2}',
            "unknown_field",
            "Unknown field(s): a, z. Allowed: kind, input, run_at, delay_seconds.",
        ),
        ('{"kind": ["heavyLoad"]}', "unknown_kind", f"Unknown kind an array. {KINDS_NAMED}"),
        ('{"kind": {"a": 1}}', "unknown_kind", f"Unknown kind an object. {KINDS_NAMED}"),
        ('{"kind": null}', "unknown_kind", f"no kind. {KINDS_NAMED}"),
        (
            '{"kind": "' + "k" * 100 + '"}',
            "unknown_kind",
            f"Unknown kind '{'k' * 79}. {KINDS_NAMED}",  # the name's repr, cut at 80
        ),
        (
            '{"kind": ' + "9" * 40 + "}",
            "unknown_kind",
            f"Unknown kind an integer. {KINDS_NAMED}",
        ),
        (
            '{"kind": "heavyLoad", "input": ' + "9" * 40 + "}",
            "invalid_input",
            "/input: must be an object, got an integer.",
        ),
    ],
)
def test_a_job_request_refusal_says_exactly_what_is_wrong(
    body: str, code: str, message: str
) -> None:
    assert job_refusal(body) == (code, message)


@dataclass(frozen=True)
class ProbeInput:
    """One field of each type and limit a kind may declare."""

    word: str = param(default="abc", min_length=2, max_length=4, pattern="^[a-z]+$")
    digits: str = param(default="1", max_length=4, pattern="^\\d+$")
    mode: Literal["fast", "slow"] = "fast"
    ratio: float = param(default=0.5, minimum=0, maximum=1)
    weight: float = 1.0
    flag: bool = False


@dataclass(frozen=True)
class NoInput:
    pass


def _kind(name: str, input: type[Any]) -> Kind[Any, Any]:
    return Kind(name, "a test kind", input, lambda input, ctx: 0, int, lambda i, s: 1.0)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers the test kinds ``probe`` (ProbeInput) and ``empty`` (no fields)."""
    monkeypatch.setitem(KINDS, "probe", _kind("probe", ProbeInput))
    monkeypatch.setitem(KINDS, "empty", _kind("empty", NoInput))


def test_the_test_kinds_are_sound_declarations() -> None:
    check_declarations([_kind("probe", ProbeInput), _kind("empty", NoInput)])


def probe_input(input: str) -> dict[str, Any]:
    return parse_job_request('{"kind": "probe", "input": ' + input + "}", SETTINGS).input


PROBE_DEFAULTS = {
    "word": "abc",
    "digits": "1",
    "mode": "fast",
    "ratio": 0.5,
    "weight": 1.0,
    "flag": False,
}


@pytest.mark.parametrize(
    ("input", "given"),
    [
        ("{}", {}),
        ('{"word": "ab"}', {"word": "ab"}),  # min_length itself
        ('{"word": "abcd"}', {"word": "abcd"}),  # max_length itself
        ('{"word": "xyz", "mode": "slow"}', {"word": "xyz", "mode": "slow"}),
        ('{"ratio": 0}', {"ratio": 0}),  # minimum itself, an integer in a number field
        ('{"ratio": 1}', {"ratio": 1}),  # maximum itself
        ('{"ratio": 0.25}', {"ratio": 0.25}),
        ('{"weight": -2.5e3}', {"weight": -2500.0}),
        ('{"flag": true}', {"flag": True}),
    ],
)
def test_a_value_within_its_declared_limits_is_kept(
    probe: None, input: str, given: dict[str, Any]
) -> None:
    assert probe_input(input) == {**PROBE_DEFAULTS, **given}


HUGE = "9" * 40  # over _MAX_INT_DIGITS: never parsed as an int


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ('{"word": "a"}', "/input/word: must be at least 2 characters."),
        ('{"word": "abcde"}', "/input/word: must be at most 4 characters."),
        ('{"word": "AB"}', "/input/word: must match ^[a-z]+$."),
        # ECMA-262, as JSON Schema and the dashboard read the pattern: $ is the end.
        ('{"word": "abc\\n"}', "/input/word: must match ^[a-z]+$."),
        ('{"word": "ab\\ud800"}', "/input/word: must match ^[a-z]+$."),  # a lone surrogate
        ('{"digits": "\\u0661\\u0662"}', "/input/digits: must match ^\\d+$."),  # Arabic-Indic
        ('{"word": 12}', "/input/word: must be a string, got an integer."),
        ('{"mode": "medium"}', "/input/mode: must be one of: fast, slow."),
        ('{"mode": true}', "/input/mode: must be a string, got a boolean."),
        ('{"ratio": -0.5}', "/input/ratio: must be >= 0."),
        ('{"ratio": 1.5}', "/input/ratio: must be <= 1."),
        ('{"ratio": "0.5"}', "/input/ratio: must be a number, got a string."),
        (
            '{"weight": 1e999}',  # parsed as inf, which JSON cannot carry back
            "/input/weight: must be a number, got a number with a fraction or exponent.",
        ),
        ('{"weight": null}', "/input/weight: must be a number, got null."),
        ('{"flag": "true"}', "/input/flag: must be a boolean, got a string."),
        ('{"flag": 1}', "/input/flag: must be a boolean, got an integer."),
        # Integer literals too long to parse: out of range where a maximum is declared,
        # too large where none is, the wrong type for a field that is not a number.
        ('{"ratio": ' + HUGE + "}", "/input/ratio: must be <= 1."),
        ('{"weight": ' + HUGE + "}", "/input/weight: is too large."),
        ('{"word": ' + HUGE + "}", "/input/word: must be a string, got a number."),
        ('{"flag": ' + HUGE + "}", "/input/flag: must be a boolean, got a number."),
        (
            '{"a~b/c": 1}',
            "/input/a~0b~1c: unknown field (fields: word, digits, mode, ratio, weight, flag).",
        ),
    ],
)
def test_a_value_outside_its_declared_limits_is_refused_naming_the_field(
    probe: None, input: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        probe_input(input)
    assert (caught.value.code, caught.value.message) == ("invalid_input", message)


def test_a_kind_without_fields_says_it_has_none(probe: None) -> None:
    assert parse_job_request('{"kind": "empty"}', SETTINGS).input == {}
    assert job_refusal('{"kind": "empty", "input": {"x": 1}}') == (
        "invalid_input",
        "/input/x: unknown field (fields: none).",
    )
