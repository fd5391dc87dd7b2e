"""Unit tests for infra.event_source.settlement: a batch's outcome by Lambda's rules for
partial batch responses."""

from __future__ import annotations

from typing import Any

import pytest

from infra.event_source import InvocationResult, InvocationStatus, Outcome, settle_batch

IDS = ("m1", "m2", "m3")


def returned(response: Any) -> InvocationResult:
    return InvocationResult(InvocationStatus.RETURNED, response=response)


@pytest.mark.parametrize(
    "response",
    [None, {}, "done", [1, 2], {"batchItemFailures": None}, {"batchItemFailures": []}],
    ids=["null", "empty-object", "string", "list", "null-list", "empty-list"],
)
def test_a_response_without_item_failures_deletes_the_whole_batch(response: Any) -> None:
    settlement = settle_batch(returned(response), IDS)
    assert settlement.outcome is Outcome.SUCCEEDED
    assert settlement.delete == IDS


def test_batch_item_failures_delete_only_the_other_records() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    settlement = settle_batch(returned(response), IDS)
    assert settlement.outcome is Outcome.PARTIAL
    assert settlement.delete == ("m1", "m3")


def test_every_record_reported_failed_deletes_nothing() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": i} for i in IDS]}
    settlement = settle_batch(returned(response), IDS)
    assert settlement.outcome is Outcome.PARTIAL
    assert settlement.delete == ()


@pytest.mark.parametrize(
    "failures",
    [
        "m2",
        {"itemIdentifier": "m2"},
        ["m2"],
        [{"ItemIdentifier": "m2"}],
        [{"itemIdentifier": None}],
        [{"itemIdentifier": ""}],
        [{"itemIdentifier": "not-in-batch"}],
        [{"itemIdentifier": "m1"}, {"itemIdentifier": 2}],
    ],
    ids=[
        "string",
        "object",
        "bare-ids",
        "wrong-key-case",
        "null-id",
        "empty-id",
        "unknown-id",
        "one-bad-entry",
    ],
)
def test_a_malformed_batch_response_fails_the_whole_batch(failures: Any) -> None:
    settlement = settle_batch(returned({"batchItemFailures": failures}), IDS)
    assert settlement.outcome is Outcome.FAILED
    assert settlement.delete == ()
    assert "malformed" in settlement.reason


@pytest.mark.parametrize(
    "status", [InvocationStatus.RAISED, InvocationStatus.TIMED_OUT, InvocationStatus.DIED]
)
def test_an_invocation_that_did_not_return_deletes_nothing(status: InvocationStatus) -> None:
    settlement = settle_batch(InvocationResult(status, error="why"), IDS)
    assert settlement.outcome is Outcome.FAILED
    assert settlement.delete == ()
    assert settlement.reason == "why"
