"""``jobs submit --from FILE``: one job per line, sent to POST /jobs/batch in batches.

Each line is one batch item as the API takes it: a JSON object ``{"kind", "input",
"run_at"?, "delay_seconds"?, "idempotency_key"?}``. Blank lines and lines starting with
``#`` are skipped. A line that is not a JSON object is reported with its number and not
sent; the API checks everything else, item by item, and one bad item does not stop the
others. A batch the API refuses as a whole (or that cannot be sent) fails each of its
items with that reason, and the next batch is still tried.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs_cli.client import ApiError, CliError

# POST /jobs/batch takes 1 to 100 jobs per request.
BATCH_SIZE = 100
INVALID_JSON = "invalid_json"
NOT_SENT = "not_sent"  # the batch it was in could not be sent (no answer at all)


@dataclass
class Line:
    number: int
    item: dict[str, Any] | None  # None: not sent, ``result`` says why
    result: dict[str, Any] = field(default_factory=dict)


def read_lines(lines: Iterable[str], when: Mapping[str, Any]) -> list[Line]:
    """The file's items by line number; ``when`` (``--at``/``--in``) is given to each item
    that says nothing of its own about when to run."""
    read: list[Line] = []
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            item = json.loads(stripped)
        except json.JSONDecodeError as error:
            read.append(_refused(number, f"not JSON: {error.msg} at column {error.colno}"))
            continue
        if not isinstance(item, dict):
            read.append(_refused(number, "not a JSON object: each line is one job"))
            continue
        if when and "run_at" not in item and "delay_seconds" not in item:
            item = {**item, **when}
        read.append(Line(number, item))
    return read


def _refused(number: int, message: str) -> Line:
    error = {"code": INVALID_JSON, "message": message}
    return Line(number, None, {"status": 400, "error": error})


def send(
    lines: list[Line],
    post: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    advance: Callable[[int], None],
) -> None:
    """Send the items in batches of BATCH_SIZE, filling in each line's result; ``advance``
    is told how many lines each batch settled."""
    for chunk in _chunks([line for line in lines if line.item is not None]):
        try:
            results = post([line.item for line in chunk if line.item is not None])
        except ApiError as error:
            failed = {"code": error.code or f"http_{error.status}", "message": str(error)}
            results = [{"status": error.status, "error": failed}] * len(chunk)
        except CliError as error:
            unsent = {"code": NOT_SENT, "message": str(error)}
            results = [{"status": 0, "error": unsent}] * len(chunk)
        for line, result in zip(chunk, results, strict=True):
            line.result = result
        advance(len(chunk))
    advance(sum(1 for line in lines if line.item is None))


def _chunks(lines: list[Line]) -> Iterator[list[Line]]:
    for start in range(0, len(lines), BATCH_SIZE):
        yield lines[start : start + BATCH_SIZE]


@dataclass
class Summary:
    made: int
    replayed: int
    failed: Counter[str]

    def text(self) -> str:
        """``made 98, replayed 1, failed 2 (invalid_input 1, invalid_json 1)``."""
        failed = sum(self.failed.values())
        text = f"made {self.made}, replayed {self.replayed}, failed {failed}"
        if failed:
            text += " (" + ", ".join(f"{c} {n}" for c, n in sorted(self.failed.items())) + ")"
        return text


def summary(lines: list[Line]) -> Summary:
    made = sum(1 for line in lines if line.result.get("status") == 202)
    replayed = sum(1 for line in lines if line.result.get("status") == 200)
    failed = Counter(error_code(line) for line in lines if not succeeded(line))
    return Summary(made, replayed, failed)


def succeeded(line: Line) -> bool:
    return line.result.get("status") in (200, 202) and isinstance(line.result.get("job"), dict)


def error_code(line: Line) -> str:
    error = line.result.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code else f"http_{line.result.get('status')}"


def error_message(line: Line) -> str:
    error = line.result.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return " ".join(str(message or "no error given").split())
