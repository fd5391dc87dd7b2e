"""Malformed query parameters and cursors are 400s, whatever their size or shape: the
integer parameters with thousands of digits (int() refuses more than 4,300) and cursors
that decode to deeply nested JSON (json.loads raises RecursionError)."""

from __future__ import annotations

import base64

import pytest

from chalicelib import connections, service
from chalicelib.errors import InvalidRequest
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
