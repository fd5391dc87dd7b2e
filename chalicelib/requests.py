"""Strict parsing of a ``POST /heavy`` body into the n to count to, and of its ``Prefer``
header.

Strict means: only a JSON object, only known fields, and n only as a JSON integer.
Python's json module needs help for that: it accepts NaN/Infinity, keeps the last of
duplicate keys, raises ValueError on integers over 4,300 digits and RecursionError on deep
nesting, and ``bool`` is a subclass of ``int``. Each of those becomes a 400 here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.config import Settings
from chalicelib.errors import InvalidRequest, LengthRequired, PayloadTooLarge

MAX_BODY_BYTES = 16 * 1024
FIELDS = ("n",)
# Longer digit strings are over any cap we could have; keeps int() cheap and bounded.
_MAX_INT_DIGITS = 30


class _TooLarge:
    """Stands in for an integer literal too long to be a valid n."""


def parse_submission(raw: bytes | str, headers: Mapping[str, str], settings: Settings) -> int:
    """Return n for a submission body, or raise a RequestError saying what is wrong."""
    body = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            "body_too_large", f"The body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}."
        )
    if not body.strip():
        # chalice local drops chunked bodies: an empty one may not be what was sent.
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise LengthRequired(
                "length_required", "Send the body with a Content-Length, not chunked."
            )
        return settings.default_n
    payload = _loads(body)
    if not isinstance(payload, dict):
        raise InvalidRequest("body_not_object", 'The body must be a JSON object like {"n": 1000}.')
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise InvalidRequest(
            "unknown_field",
            f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(FIELDS)}.",
        )
    if "n" not in payload:
        return settings.default_n
    return _valid_n(payload["n"], settings.max_n)


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
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True)
class Preferences:
    """What a client asked for in its ``Prefer`` header (RFC 7240)."""

    respond_async: bool = False
    wait: int | None = None  # seconds, already capped


def parse_prefer(header: str | None, max_wait: int) -> Preferences:
    """Read ``respond-async`` and ``wait=N``; ignore the rest, as RFC 7240 asks.

    ``wait`` above ``max_wait`` is capped (API Gateway ends requests at 29 s); a
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
            wait = min(int(value), max_wait)
    return Preferences(respond_async=respond_async, wait=wait)
