"""Settling a batch after an invocation: which messages Lambda's SQS event source deletes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class InvocationStatus(StrEnum):
    """How an invocation ended, as the event source sees it."""

    RETURNED = "returned"  # the handler returned; `response` holds its JSON-decoded value
    RAISED = "raised"  # the handler raised, its response was not JSON, or the init failed
    TIMED_OUT = "timed_out"  # it outlived the function's timeout; the instance was killed
    DIED = "died"  # the instance process exited mid-invocation (sys.exit, a crash)


@dataclass(frozen=True)
class InvocationResult:
    status: InvocationStatus
    response: Any = None
    error: str = ""  # what Lambda would report, for RAISED, TIMED_OUT and DIED


class Outcome(StrEnum):
    """What became of a batch."""

    SUCCEEDED = "succeeded"  # the whole batch was deleted
    PARTIAL = "partial"  # the function reported batchItemFailures; only the others deleted
    FAILED = "failed"  # nothing deleted: the batch returns after the visibility timeout


@dataclass(frozen=True)
class Settlement:
    outcome: Outcome
    delete: tuple[str, ...]  # ids of the messages to delete, in batch order
    reason: str = ""


def settle_batch(result: InvocationResult, message_ids: Sequence[str]) -> Settlement:
    """Which messages of a batch to delete, by the rules of Lambda's SQS event source.

    - Raised, timed out or died: delete nothing (never touch visibility either).
    - Returned with no ``batchItemFailures`` (a null or non-object response, a missing,
      null or empty list): delete everything.
    - Returned ``batchItemFailures`` naming some records: delete the others.
    - A malformed ``batchItemFailures`` (not a list; an entry without a non-empty string
      ``itemIdentifier``; an id not in the batch): the whole batch failed.
    """
    if result.status is not InvocationStatus.RETURNED:
        return Settlement(Outcome.FAILED, (), result.error or result.status.value)
    try:
        failed = _reported_failures(result.response, message_ids)
    except (TypeError, ValueError) as err:
        return Settlement(Outcome.FAILED, (), f"malformed batchItemFailures: {err}")
    if not failed:
        return Settlement(Outcome.SUCCEEDED, tuple(message_ids))
    kept = tuple(i for i in message_ids if i not in failed)
    return Settlement(Outcome.PARTIAL, kept, f"{len(failed)} reported failed")


def _reported_failures(response: Any, message_ids: Sequence[str]) -> set[str]:
    # A response that is not a JSON object carries no batchItemFailures: Lambda treats
    # null and empty responses as complete success, and a handler that returns, say, a
    # string has not reported any failure.
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise TypeError(f"expected a list, got {type(failures).__name__}")
    failed: set[str] = set()
    for entry in failures:
        item = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(item, str) or not item:
            raise ValueError(f"entry without an itemIdentifier: {entry!r}")
        if item not in message_ids:
            raise ValueError(f"itemIdentifier {item!r} is not a message of this batch")
        failed.add(item)
    return failed
