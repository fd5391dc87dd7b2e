"""Malformed query parameters and cursors are 400s, whatever their size or shape: the
integer parameters with thousands of digits (int() refuses more than 4,300) and cursors
that decode to deeply nested JSON (json.loads raises RecursionError)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import connections, service
from chalicelib.errors import InvalidRequest
from chalicelib.jobs import Listing
from chalicelib.requests import parse_prefer
from chalicelib.store import JobTable

LONG_DIGITS = ("9" * 5000, "1" + "0" * 5000, "0" * 5000 + "200")


@pytest.fixture
def table(aws: dict[str, str]) -> JobTable:
    return connections.job_table()


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("digits", LONG_DIGITS)
def test_a_limit_of_thousands_of_digits_is_invalid_limit(table: JobTable, digits: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        service.list_jobs({"limit": digits}, table)
    assert refused.value.code == "invalid_limit"


@pytest.mark.parametrize("digits", LONG_DIGITS)
def test_a_wait_of_thousands_of_digits_is_invalid_wait(digits: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        service.wait_param({"wait": digits}, service.MAX_WAIT_SECONDS)
    assert refused.value.code == "invalid_wait"


def test_leading_zeros_do_not_make_a_valid_number_invalid(table: JobTable) -> None:
    assert service.wait_param({"wait": "0" * 5000 + "3"}, service.MAX_WAIT_SECONDS) == 3
    assert service.list_jobs({"limit": "0" * 5000 + "1"}, table).jobs == []


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000 + "]" * 3000,
        '{"l": "all", "p": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"a":' * 3000 + "1" + "}" * 3000,
    ],
)
def test_a_cursor_nested_thousands_deep_is_invalid_cursor(table: JobTable, text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        service.list_jobs({"cursor": cursor_of(text)}, table)
    assert refused.value.code == "invalid_cursor"


# --- any text at all: a value or a 400, never another exception ---------------------------

# Short numbers, and runs of one digit around CPython's 4,300-digit limit on int().
DIGITS = st.one_of(
    st.text("0123456789", min_size=1, max_size=30),
    st.builds(
        lambda zeros, digit, length: "0" * zeros + digit * length,
        st.integers(0, 5),
        st.sampled_from("0123456789"),
        st.integers(4_000, 6_000),
    ),
)
ANY_TEXT = st.one_of(st.text(), DIGITS, st.text("0123456789\u0661\uff11 -+_", max_size=50))
NESTED = st.builds(
    lambda opening, closing, depth: opening * depth + closing * depth,
    st.sampled_from(["[", '{"a":[', '{"l":"all","p":[']),
    st.sampled_from(["]", "]}", "]}"]),
    st.integers(0, 5_000),
)


@settings(max_examples=300, deadline=None)
@given(raw=ANY_TEXT)
def test_an_integer_parameter_is_a_number_in_range_or_a_400(raw: str) -> None:
    try:
        value = service._int_param({"limit": raw}, "limit", 20, 1, service.MAX_PAGE_SIZE)
    except InvalidRequest as refused:
        assert refused.code == "invalid_limit"
    else:
        assert 1 <= value <= service.MAX_PAGE_SIZE and value == int(raw)


@settings(max_examples=300, deadline=None)
@given(raw=ANY_TEXT, respond_async=st.booleans())
def test_a_prefer_wait_is_capped_or_ignored_never_an_error(raw: str, respond_async: bool) -> None:
    header = f"{'respond-async, ' if respond_async else ''}wait={raw}"
    preferences = parse_prefer(header, service.MAX_WAIT_SECONDS)
    assert preferences.respond_async is respond_async
    assert preferences.wait is None or 0 <= preferences.wait <= service.MAX_WAIT_SECONDS


@settings(max_examples=100, deadline=None)
@given(text=st.one_of(NESTED, st.text(max_size=200)))
def test_a_cursor_of_any_content_is_read_or_invalid_cursor(text: str) -> None:
    try:
        service._decode_cursor(cursor_of(text), Listing())
    except InvalidRequest as refused:
        assert refused.code == "invalid_cursor"
