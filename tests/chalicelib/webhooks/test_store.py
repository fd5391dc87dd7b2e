"""An endpoint's delivery attempts in the job table (chalicelib.webhooks.store), against
moto's DynamoDB: the newest RECENT_ATTEMPTS shown newest first, the write units each
attempt costs (the same at the first attempt and the hundred and twentieth), a slow
writer that never overwrites a newer attempt, expiry, deletion with the endpoint, and
none of the items in a listing or on the job events' stream."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib import connections
from chalicelib.events import event_for
from chalicelib.jobs import EXPIRES_AT, INDEXES
from chalicelib.webhooks.endpoints import Attempt, Endpoint, new_id, new_secret
from chalicelib.webhooks.store import (
    ATTEMPT_PREFIX,
    ATTEMPT_RETENTION,
    COUNTER_PREFIX,
    RECENT_ATTEMPTS,
    WebhookTable,
)

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WRITES = ("put_item", "update_item", "delete_item")


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def item_size(value: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it ("DynamoDB item sizes and formats", DynamoDB
    Developer Guide): names and values, a number one byte per two significant digits plus
    one, a boolean one byte, a list or map 3 bytes plus 1 per element."""
    return sum(len(name.encode()) + _value_size(v) for name, v in value.items())


def _value_size(value: dict[str, Any]) -> int:
    [(kind, raw)] = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        digits = len(raw.lstrip("-").replace(".", "").strip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    if kind == "M":
        return 3 + item_size(raw) + len(raw)
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    return 1  # BOOL, NULL


class Metered:
    """The DynamoDB client, with the write units each write consumes: 1 per started KB
    of the larger of the item's size before and after ("Read/write capacity mode",
    DynamoDB Developer Guide). moto answers ReturnConsumedCapacity with a fixed 1.0
    whatever the size, so the item is read before and after each write and sized."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name
        self.writes: list[tuple[str, str, int]] = []
        self.calls: list[str] = []

    def __getattr__(self, operation: str) -> Any:
        call = getattr(self.client, operation)
        if operation not in WRITES:

            def counted(**kwargs: Any) -> Any:
                self.calls.append(operation)
                return call(**kwargs)

            return counted

        def metered(**kwargs: Any) -> Any:
            self.calls.append(operation)
            key = kwargs["Key"] if "Key" in kwargs else {"job_id": kwargs["Item"]["job_id"]}
            before = self._size(key)
            try:
                return call(**kwargs)
            finally:
                size = max(before, self._size(key))
                self.writes.append((operation, key["job_id"]["S"], max(1, math.ceil(size / 1024))))

        return metered

    def _size(self, key: dict[str, Any]) -> int:
        item = self.client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        return item_size(item.get("Item", {}))


@pytest.fixture
def dynamodb(aws: dict[str, str]) -> Any:
    return boto3.client("dynamodb")


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def table(aws: dict[str, str], dynamodb: Any, clock: Clock) -> WebhookTable:
    return WebhookTable(dynamodb, connections.webhook_table().table_name, clock)


@pytest.fixture
def endpoint(table: WebhookTable) -> Endpoint:
    made = Endpoint(
        new_id(), "alice", "https://hooks.example.com/in", ("job.succeeded",), new_secret(), START
    )
    table.create(made, 10)
    return made


def attempt(n: int, at: datetime = START, status: int | None = 500) -> Attempt:
    """The n-th attempt, told apart by its event id; a failure with an error, as the
    delivery records one (about the size of a real attempt)."""
    error = None if status == 200 else f"answered {status}" if status else "no answer: timeout"
    return Attempt(
        f"event-{n:08d}-{'0' * 27}", "job.succeeded", at, 1, status, status == 200, error
    )


def numbers(attempts: list[Attempt]) -> list[int]:
    return [int(a.event_id.split("-")[1]) for a in attempts]


def items_of(dynamodb: Any, table: WebhookTable, endpoint_id: str) -> Iterator[dict[str, Any]]:
    """Every item of the endpoint's attempts and counter (a Scan: only tests read so)."""
    pages = dynamodb.get_paginator("scan").paginate(TableName=table.table_name)
    for page in pages:
        for item in page["Items"]:
            key = item["job_id"]["S"]
            if key == COUNTER_PREFIX + endpoint_id or key.startswith(
                f"{ATTEMPT_PREFIX}{endpoint_id}#"
            ):
                yield item


def test_the_newest_attempts_show_newest_first(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any
) -> None:
    for n in range(1, 121):
        table.record_attempt(endpoint.endpoint_id, attempt(n, START + timedelta(seconds=n)))

    shown = table.attempts(endpoint.endpoint_id)

    assert len(shown) == RECENT_ATTEMPTS == 50
    assert numbers(shown) == list(range(120, 70, -1))
    assert shown[0] == attempt(120, START + timedelta(seconds=120))
    # The ring: slot n % 50 holds attempt n, numbered by the counter, which is at 120.
    stored = {
        i["job_id"]["S"]: int(i["seq"]["N"])
        for i in items_of(dynamodb, table, endpoint.endpoint_id)
    }
    assert stored.pop(COUNTER_PREFIX + endpoint.endpoint_id) == 120
    slot = f"{ATTEMPT_PREFIX}{endpoint.endpoint_id}#"
    assert stored == {f"{slot}{n % RECENT_ATTEMPTS}": n for n in range(71, 121)}


def test_an_attempt_costs_two_writes_of_one_unit_whatever_the_history(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any
) -> None:
    metered = Metered(dynamodb, table.table_name)
    recording = WebhookTable(metered, table.table_name, Clock(START))
    costs: dict[int, list[tuple[str, str, int]]] = {}
    for n in range(1, 121):
        metered.writes.clear()
        metered.calls.clear()
        # The largest attempt the delivery records: an error naming a long host.
        recording.record_attempt(
            endpoint.endpoint_id,
            Attempt(f"event-{n}", "job.succeeded", START, 11, None, False, "refused: " + "h" * 300),
        )
        assert metered.calls == ["update_item", "update_item"]  # no read, no trim
        costs[n] = list(metered.writes)

    for n in (1, RECENT_ATTEMPTS, RECENT_ATTEMPTS + 1, 120):
        assert [units for _, _, units in costs[n]] == [1, 1], (n, costs[n])
    assert costs[120][0][1] == COUNTER_PREFIX + endpoint.endpoint_id
    assert costs[120][1][1] == f"{ATTEMPT_PREFIX}{endpoint.endpoint_id}#{120 % RECENT_ATTEMPTS}"


def test_a_late_write_never_overwrites_a_newer_attempt(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any, clock: Clock
) -> None:
    """Attempt 1 takes its number, then its write waits while 50 more are recorded: the
    51st took its slot meanwhile, and keeps it."""

    class Slow:
        def __init__(self) -> None:
            self.held = True

        def __getattr__(self, operation: str) -> Any:
            call = getattr(dynamodb, operation)

            def slowed(**kwargs: Any) -> Any:
                slot = kwargs.get("Key", {}).get("job_id", {}).get("S", "")
                if self.held and slot.startswith(ATTEMPT_PREFIX):
                    self.held = False
                    for n in range(2, RECENT_ATTEMPTS + 2):
                        table.record_attempt(endpoint.endpoint_id, attempt(n))
                return call(**kwargs)

            return slowed

    WebhookTable(Slow(), table.table_name, clock).record_attempt(endpoint.endpoint_id, attempt(1))

    assert numbers(table.attempts(endpoint.endpoint_id)) == list(range(51, 1, -1))


def test_attempts_expire_and_a_counter_that_starts_again_overwrites_them(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any, clock: Clock
) -> None:
    for n in range(1, RECENT_ATTEMPTS + 3):
        table.record_attempt(endpoint.endpoint_id, attempt(n))
    items = {i["job_id"]["S"]: i for i in items_of(dynamodb, table, endpoint.endpoint_id)}
    expiry = int((START + ATTEMPT_RETENTION).timestamp())
    counter = items.pop(COUNTER_PREFIX + endpoint.endpoint_id)
    assert {int(i[EXPIRES_AT]["N"]) for i in items.values()} == {expiry}
    # The counter outlives every attempt it numbered.
    assert int(counter[EXPIRES_AT]["N"]) > expiry

    # Past their expiry, before DynamoDB's TTL deletes them: no longer shown.
    clock.at = START + ATTEMPT_RETENTION
    assert table.attempts(endpoint.endpoint_id) == []

    # TTL deleted the counter; the next attempt is number 1 again, and its slot (which
    # holds number 51, expired) takes it.
    dynamodb.delete_item(
        TableName=table.table_name, Key={"job_id": {"S": COUNTER_PREFIX + endpoint.endpoint_id}}
    )
    clock.at = START + ATTEMPT_RETENTION + timedelta(days=2)
    table.record_attempt(endpoint.endpoint_id, attempt(1000, clock.at, status=200))
    assert table.attempts(endpoint.endpoint_id) == [attempt(1000, clock.at, status=200)]


def test_an_attempt_overwrites_every_field_of_its_slot(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any
) -> None:
    """A delivered attempt has no error and a timeout no status: none is left from the
    attempt that held the slot before."""
    table.record_attempt(endpoint.endpoint_id, attempt(1, status=500))
    for n in range(2, RECENT_ATTEMPTS + 2):
        table.record_attempt(endpoint.endpoint_id, attempt(n, status=200 if n % 2 else None))

    shown = table.attempts(endpoint.endpoint_id)

    assert shown[0] == attempt(RECENT_ATTEMPTS + 1, status=200)
    assert shown[0].error is None and shown[1].status_code is None
    slot = dynamodb.get_item(
        TableName=table.table_name,
        Key={"job_id": {"S": f"{ATTEMPT_PREFIX}{endpoint.endpoint_id}#1"}},
    )["Item"]
    assert "error" not in slot and slot["status_code"] == {"N": "200"}


def test_deleting_the_endpoint_deletes_its_attempts_and_counter(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any
) -> None:
    other = Endpoint(new_id(), "alice", endpoint.url, endpoint.events, new_secret(), START)
    table.create(other, 10)
    for n in range(1, RECENT_ATTEMPTS + 11):
        table.record_attempt(endpoint.endpoint_id, attempt(n))
        table.record_attempt(other.endpoint_id, attempt(n))
    assert len(list(items_of(dynamodb, table, endpoint.endpoint_id))) == RECENT_ATTEMPTS + 1

    table.delete(endpoint)
    table.delete(endpoint)  # again: nothing left to delete, no error

    assert list(items_of(dynamodb, table, endpoint.endpoint_id)) == []
    assert table.attempts(endpoint.endpoint_id) == []
    assert table.get(endpoint.endpoint_id) is None
    assert len(table.attempts(other.endpoint_id)) == RECENT_ATTEMPTS


def test_no_attempt_or_counter_carries_an_index_key_or_makes_a_job_event(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any
) -> None:
    table.record_attempt(endpoint.endpoint_id, attempt(1))
    first = {i["job_id"]["S"]: i for i in items_of(dynamodb, table, endpoint.endpoint_id)}
    for n in range(2, RECENT_ATTEMPTS + 2):
        table.record_attempt(endpoint.endpoint_id, attempt(n))
    after = {i["job_id"]["S"]: i for i in items_of(dynamodb, table, endpoint.endpoint_id)}
    slot = f"{ATTEMPT_PREFIX}{endpoint.endpoint_id}#1"
    counter = COUNTER_PREFIX + endpoint.endpoint_id
    assert set(first) == {counter, slot}

    index_keys = {k for index in INDEXES for k in (index.partition_key, index.sort_key)}
    assert all(not index_keys & set(item) for item in after.values())
    # The table's stream carries each write, new and old image: a new item, an
    # overwritten slot, a counter moved on, a deletion. None is a job's change.
    changes: list[tuple[Any, Any]] = [
        (None, first[slot]),
        (None, first[counter]),
        (first[slot], after[slot]),
        (first[counter], after[counter]),
        (after[slot], None),
    ]
    assert [event_for(old, new, "stream-1") for old, new in changes] == [None] * len(changes)


def test_reading_attempts_is_one_batch_get(
    table: WebhookTable, endpoint: Endpoint, dynamodb: Any
) -> None:
    for n in range(1, 4):
        table.record_attempt(endpoint.endpoint_id, attempt(n))
    metered = Metered(dynamodb, table.table_name)

    shown = WebhookTable(metered, table.table_name, Clock(START)).attempts(endpoint.endpoint_id)

    assert numbers(shown) == [3, 2, 1]
    assert metered.calls == ["batch_get_item"]
