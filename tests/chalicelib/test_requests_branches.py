"""chalicelib/requests.py without AWS: what each refused submission says (the client reads
the message to fix its request), found by mutation testing (issue 13.1)."""

from __future__ import annotations

import pytest

from chalicelib.config import Settings
from chalicelib.errors import InvalidRequest, LengthRequired, PayloadTooLarge
from chalicelib.requests import MAX_BODY_BYTES, parse_prefer, parse_submission

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
        (b'{"n": 1, "m": 2, "a": 3}', "unknown_field", "Unknown field(s): a, m. Allowed: n."),
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
    assert caught.value.code == "length_required"
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
    ],
)
def test_prefer_reads_respond_async_and_a_capped_wait(
    header: str, respond_async: bool, wait: int | None
) -> None:
    preferences = parse_prefer(header, 25)
    assert (preferences.respond_async, preferences.wait) == (respond_async, wait)
