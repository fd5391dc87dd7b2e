"""When a job runs: ``--at T`` (a moment) and ``--in D`` (a delay), as the API takes them.

The API takes ``run_at`` (RFC 3339 with an offset or ``Z``) or ``delay_seconds`` (a whole
number, at least 0), never both; these turn what a person types into one of the two. Each
raises ``ValueError`` with a message that says what is wrong and what would be right.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# 90s, 15m, 2h, 1d and combinations in that order: 1h30m, 1d12h, 2m30s.
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (86_400, 3_600, 60, 1)
DURATION_EXAMPLES = "such as 90s, 15m, 2h, 1d or 1h30m"
TIME_EXAMPLE = "2026-12-24T09:00:00Z or 2026-12-24 10:00+01:00"


def delay_seconds(text: str) -> int:
    """``1h30m`` as 5400: days, hours, minutes and seconds, each at most once, in order."""
    cleaned = text.strip().lower()
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None:
        raise ValueError(f"not a duration: {text!r} ({DURATION_EXAMPLES})")
    return sum(
        int(part or 0) * size for part, size in zip(match.groups(), _UNIT_SECONDS, strict=True)
    )


def run_at(text: str) -> str:
    """An ISO 8601 / RFC 3339 moment with its offset (``Z``, ``+01:00``), as the API's
    ``run_at``: UTC, to the millisecond, with ``Z``. A time without an offset is refused
    rather than guessed: the same words mean another moment on another machine."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date and time: {text!r} (such as {TIME_EXAMPLE})") from None
    if moment.tzinfo is None:
        raise ValueError(
            f"{text!r} has no time zone offset: add Z for UTC or one like +01:00"
            f" (such as {TIME_EXAMPLE})"
        )
    return utc_text(moment)


def utc_text(moment: datetime) -> str:
    """``2026-12-24T08:00:00.000Z``: the API's form of a moment."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
