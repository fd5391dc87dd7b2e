"""Adapter: the stage's EventBridge bus (``heavy-jobs-<stage>``), which job events go to,
and ``publish_records``, what the table stream's consumer (app.publish_job_events) does
with a batch of stream records.

``EventBus.put`` sends events with PutEvents, at most PUT_EVENTS_LIMIT entries a call
(Amazon EventBridge API Reference, "PutEvents": 1 to 10 entries). PutEvents is not all or
nothing: it answers 200 with ``FailedEntryCount`` and an error code on each entry it did
not accept (throttling, an internal failure), so ``put`` returns which events failed, and
the caller (the stream handler) retries from the first of them. A call that fails as a
whole (the bus is missing, EventBridge is unreachable) raises StoreUnavailable.

Failure cost: a failed put delays the stream records from the failed event on, in its
shard, by the event source's retries (chalicelib/events.py); the jobs themselves never
wait for the bus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.events import JobEvent, UnreadableChange, event_for
from chalicelib.observability import logger

# PutEvents' limit on entries a call (its whole request must also stay under 256 KB: a
# job's detail is its API representation, input and result included).
PUT_EVENTS_LIMIT = 10


class FailedEvent(NamedTuple):
    """An event the bus did not accept (its position in what was put), and EventBridge's
    reason."""

    position: int
    error_code: str
    error_message: str


class EventBus:
    """The stage's bus, through an ``events`` client."""

    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self.bus_name = bus_name

    def put(self, events: Sequence[JobEvent]) -> list[FailedEvent]:
        """Send ``events`` in order, in batches of PUT_EVENTS_LIMIT; the events the bus
        refused, in order (empty: all accepted). Once a batch has a failed entry the
        later batches are not sent: they are returned as failed too (``NotSent``), so a
        caller that retries from the first failure sends nothing twice needlessly.
        StoreUnavailable when a call fails as a whole; nothing after it was sent."""
        failed: list[FailedEvent] = []
        for start in range(0, len(events), PUT_EVENTS_LIMIT):
            batch = events[start : start + PUT_EVENTS_LIMIT]
            if failed:
                failed.extend(
                    FailedEvent(start + i, "NotSent", "an earlier event failed")
                    for i in range(len(batch))
                )
                continue
            failed.extend(self._put_batch(batch, start))
        return failed

    def _put_batch(self, batch: Sequence[JobEvent], start: int) -> list[FailedEvent]:
        try:
            response = self._client.put_events(
                Entries=[event.to_entry(self.bus_name) for event in batch]
            )
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"EventBridge PutEvents failed: {error}") from error
        if not response.get("FailedEntryCount"):
            return []
        # Result entries are in the request's order: an ErrorCode marks a refused one.
        return [
            FailedEvent(start + i, result["ErrorCode"], result.get("ErrorMessage", ""))
            for i, result in enumerate(response["Entries"])
            if result.get("ErrorCode")
        ]


def publish_records(records: Sequence[Mapping[str, Any]], bus: EventBus) -> list[str]:
    """Publish the events of a batch of job table stream records (as Lambda's DynamoDB
    event source delivers them, NEW_AND_OLD_IMAGES) in order; return the sequence numbers
    to report as batch item failures: none, or the first record that could not be
    published (unreadable, or refused by the bus). An unreadable first record raises
    UnreadableChange instead (see below).

    Lambda retries the batch from the lowest sequence number reported ("Configuring
    partial batch response with DynamoDB and Lambda", AWS Lambda Developer Guide), so the
    records after a failure are published again then: a consumer may see an event twice,
    with the same id, never out of order within a job. StoreUnavailable (the bus
    unreachable) propagates: the whole batch fails and is retried; what was sent before
    is sent again."""
    events: list[tuple[str, JobEvent]] = []
    for position, record in enumerate(records):
        change = record["dynamodb"]
        sequence = str(change["SequenceNumber"])
        try:
            event = event_for(change.get("OldImage"), change.get("NewImage"), record["eventID"])
        except UnreadableChange as error:
            logger.error("Stream record cannot be published", sequence=sequence, reason=str(error))
            if position == 0:
                # Nothing before it to keep: fail the invocation, so the event source
                # bisects the batch down to this record alone and, after its retries,
                # sends only it to the on-failure queue (reporting it would retry it
                # with every record after it, and give those up with it).
                raise
            return _first_failure(events, bus, fallback=sequence)
        if event is not None:
            events.append((sequence, event))
    return _first_failure(events, bus, fallback=None)


def _first_failure(
    events: Sequence[tuple[str, JobEvent]], bus: EventBus, fallback: str | None
) -> list[str]:
    """Put ``events``; the sequence number of the first refused one, else ``fallback``
    (the record that stopped the batch), as a batch item failure list."""
    failed = bus.put([event for _, event in events])
    if failed:
        first = failed[0]
        sequence, event = events[first.position]
        logger.warning(
            "Job event refused by the bus",
            event_id=event.event_id,
            job_id=event.job.job_id,
            error_code=first.error_code,
            reason=first.error_message,
        )
        return [sequence]
    return [] if fallback is None else [fallback]
