"""A local stand-in for Lambda's DynamoDB Streams event source mapping.

What it reproduces (AWS Lambda Developer Guide, "Using AWS Lambda with Amazon DynamoDB"
and "Configuring partial batch response with DynamoDB and Lambda"; the API Reference's
"CreateEventSourceMapping" for the settings):

- **Reading the stream.** DescribeStream lists the shards; each shard is read in order
  from its starting position (TRIM_HORIZON or LATEST, the mapping's) with
  GetShardIterator and GetRecords, and its records reach the function in batches of at
  most ``batch_size``, never out of order, one batch of a shard in flight at a time.
- **The event.** ``{"Records": [...]}``, each record as GetRecords returns it plus
  ``eventSourceARN`` (the stream), its ``ApproximateCreationDateTime`` in epoch seconds.
- **Settling** (``ShardProcessor``): a normal return with no ``batchItemFailures``
  checkpoints past the batch; a ``batchItemFailures`` list checkpoints before the lowest
  sequence number it names and retries from there; an error, a timeout, a dead instance
  or a malformed response fails the whole batch.
- **Bisect on error.** With ``bisect_on_error`` a failed batch of more than one record is
  split in two and the halves retried in order, the first half first. A split is not a
  retry of the same records, so each half starts its own retry count (AWS does not say
  otherwise); a bad record in a batch of n is thus alone after at most ceil(log2 n)
  failed invocations.
- **Bounded retries.** A batch (a half, or what a partial response left) that fails
  ``max_retry_attempts`` + 1 times is given up: a description of it, in the shape AWS
  sends to an on-failure destination (``DDBStreamBatchInfo``: shard, first and last
  sequence numbers, batch size, stream), goes to the on-failure queue, and the shard
  moves on past it. ``-1`` retries forever, as AWS's default.

Where it differs from AWS, knowingly: the checkpoint lives in this process, so a new
runner starts again at the mapping's starting position (TRIM_HORIZON publishes the
stream's last 24 hours again: duplicates with the same ids, never a loss); shards are
read one after another per poll, not by parallel pollers; retries follow each other
without AWS's backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .instances import FunctionRuntime, RuntimeClosed
from .settlement import InvocationResult, InvocationStatus

log = logging.getLogger(__name__)

# How often an idle shard is read again (Lambda polls a stream's shards about 4 times a
# second: "Using AWS Lambda with Amazon DynamoDB", polling and batching streams).
POLL_INTERVAL_SECONDS = 0.25
# The mapping settings Chalice's decorator cannot carry, given to the runner in its
# environment (infra/run.py sets them from the project's declaration); unset: AWS's
# defaults (no bisection, retries until the record expires, no destination).
BISECT_VARIABLE = "EVENT_SOURCE_STREAM_BISECT_ON_ERROR"
MAX_RETRIES_VARIABLE = "EVENT_SOURCE_STREAM_MAX_RETRY_ATTEMPTS"
ON_FAILURE_VARIABLE = "EVENT_SOURCE_STREAM_ON_FAILURE_QUEUE_URL"
# What an on-failure destination's record says of a batch given up after its retries.
RETRIES_EXHAUSTED = "RetryAttemptsExhausted"

Record = dict[str, Any]


@dataclass(frozen=True)
class StreamMapping:
    """The settings of one stream mapping that this stand-in honours."""

    stream_arn: str
    batch_size: int
    starting_position: str  # TRIM_HORIZON or LATEST
    bisect_on_error: bool
    max_retry_attempts: int  # -1: forever
    on_failure_queue_url: str | None  # None: a batch given up is only logged


def mapping_extras(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings beyond the decorator's, from ``env`` (the variables above)."""
    return {
        "bisect_on_error": env.get(BISECT_VARIABLE, "").strip().lower() == "true",
        "max_retry_attempts": int(env.get(MAX_RETRIES_VARIABLE, "").strip() or -1),
        "on_failure_queue_url": env.get(ON_FAILURE_VARIABLE, "").strip() or None,
    }


def stream_event(records: Sequence[Record], stream_arn: str) -> dict[str, Any]:
    """Lambda's event for a batch of GetRecords' records."""
    shaped = []
    for record in records:
        change = dict(record["dynamodb"])
        moment = change.get("ApproximateCreationDateTime")
        if isinstance(moment, datetime):
            change["ApproximateCreationDateTime"] = int(moment.timestamp())
        shaped.append({**record, "dynamodb": change, "eventSourceARN": stream_arn})
    return {"Records": shaped}


@dataclass(frozen=True)
class GivenUp:
    """A batch the mapping gave up on, and why (for the on-failure record)."""

    records: tuple[Record, ...]
    attempts: int
    reason: str


class ShardProcessor:
    """Feeds one shard's records to the function, settling each batch as Lambda does.

    ``invoke`` runs the function on a batch and says how it ended; ``give_up`` receives
    each batch given up. Returns from ``process`` when every record is checkpointed
    (published, or given up), or when ``stop`` is set (the rest is left unprocessed)."""

    def __init__(
        self,
        mapping: StreamMapping,
        invoke: Callable[[Sequence[Record]], InvocationResult],
        give_up: Callable[[GivenUp], None],
    ) -> None:
        self.mapping = mapping
        self._invoke = invoke
        self._give_up = give_up
        self.invocations = 0

    def process(self, records: Sequence[Record], stop: threading.Event | None = None) -> None:
        size = self.mapping.batch_size
        for start in range(0, len(records), size):
            # Each batch is settled (to its last record) before the next one starts.
            pending: list[tuple[list[Record], int]] = [(list(records[start : start + size]), 0)]
            while pending:
                if stop is not None and stop.is_set():
                    return
                batch, failures = pending.pop(0)
                pending[:0] = self._settle(batch, failures)

    def _settle(self, batch: list[Record], failures: int) -> list[tuple[list[Record], int]]:
        """Invoke once; what remains to retry, in order, with each part's failure count."""
        self.invocations += 1
        result = self._invoke(batch)
        failed_from = _failed_from(result, batch)
        if failed_from is None:
            return []
        remaining, failures = batch[failed_from:], failures + 1
        whole_failed = failed_from == 0 and result.status is not InvocationStatus.RETURNED
        if whole_failed and self.mapping.bisect_on_error and len(remaining) > 1:
            middle = (len(remaining) + 1) // 2
            return [(remaining[:middle], 0), (remaining[middle:], 0)]
        retries = self.mapping.max_retry_attempts
        if retries >= 0 and failures > retries:
            reason = result.error or "batchItemFailures"
            self._give_up(GivenUp(tuple(remaining), failures, reason))
            return []
        return [(remaining, failures)]


def _failed_from(result: InvocationResult, batch: Sequence[Record]) -> int | None:
    """Where the batch must be retried from (its index), None if it all succeeded."""
    if result.status is not InvocationStatus.RETURNED:
        return 0
    response = result.response
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    if not failures:
        return None
    sequences = [str(record["dynamodb"]["SequenceNumber"]) for record in batch]
    positions = []
    for entry in failures if isinstance(failures, list) else [None]:
        item = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(item, str) or item not in sequences:
            return 0  # malformed: the whole batch failed
        positions.append(sequences.index(item))
    return min(positions)  # Lambda checkpoints before the lowest one


def failure_record(given_up: GivenUp, mapping: StreamMapping, function_arn: str) -> dict[str, Any]:
    """The on-failure destination's message for a batch given up (the shape AWS documents
    for stream sources: "Retaining discarded records", DDBStreamBatchInfo)."""
    first, last = given_up.records[0], given_up.records[-1]

    def arrival(record: Record) -> str:
        moment = record["dynamodb"].get("ApproximateCreationDateTime")
        if isinstance(moment, datetime):
            return moment.astimezone(UTC).isoformat()
        return datetime.fromtimestamp(float(moment or 0), UTC).isoformat()

    return {
        "requestContext": {
            "requestId": f"local-{time.time_ns()}",
            "functionArn": function_arn,
            "condition": RETRIES_EXHAUSTED,
            "approximateInvokeCount": given_up.attempts,
        },
        "responseContext": {"statusCode": 200, "functionError": given_up.reason},
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(),
        "DDBStreamBatchInfo": {
            "shardId": first.get("shardId", ""),
            "startSequenceNumber": str(first["dynamodb"]["SequenceNumber"]),
            "endSequenceNumber": str(last["dynamodb"]["SequenceNumber"]),
            "approximateArrivalOfFirstRecord": arrival(first),
            "approximateArrivalOfLastRecord": arrival(last),
            "batchSize": len(given_up.records),
            "streamArn": mapping.stream_arn,
        },
    }


class DynamoDBStreamEventSource:
    """Reads a table's stream and feeds each shard to the function (the runner's
    instances of it, one slot per batch) with a ShardProcessor per shard."""

    def __init__(
        self,
        mapping: StreamMapping,
        runtime: FunctionRuntime,
        streams: Any,
        sqs: Any,
        function_arn: str,
        poll_interval: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self.mapping = mapping
        self.runtime = runtime
        self._streams = streams
        self._sqs = sqs
        self._function_arn = function_arn
        self._poll_interval = poll_interval
        self._iterators: dict[str, str | None] = {}  # shard -> next iterator (None: closed)

    def describe(self) -> str:
        return f"{self._function_arn.rsplit(':', 1)[-1]} <- {self.mapping.stream_arn}"

    def prepare(self) -> None:
        """Check the stream exists (DescribeStream): a missing one fails here, at start."""
        self._shards()

    def run(self, stop: threading.Event, burst: bool) -> None:
        """Read every shard until ``stop``; in burst mode, until a pass finds no record."""
        while not stop.is_set():
            try:
                found = self.poll_once(stop)
            except RuntimeClosed:
                return  # shut down under us: the rest is read again by the next runner
            except (BotoCoreError, ClientError) as error:
                log.warning("%s: reading the stream failed: %s; retrying", self.describe(), error)
                found = 0
            if burst and not found:
                return
            if not found:
                stop.wait(self._poll_interval)

    def poll_once(self, stop: threading.Event | None = None) -> int:
        """One pass over the shards: the records read (each settled before returning)."""
        found = 0
        for shard in self._shards():
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._streams.get_shard_iterator(
                    StreamArn=self.mapping.stream_arn,
                    ShardId=shard_id,
                    ShardIteratorType=self.mapping.starting_position,
                )["ShardIterator"]
            iterator = self._iterators[shard_id]
            if iterator is None:
                continue
            response = self._streams.get_records(ShardIterator=iterator)
            self._iterators[shard_id] = response.get("NextShardIterator")
            records = [{**r, "shardId": shard_id} for r in response["Records"]]
            found += len(records)
            ShardProcessor(self.mapping, self._invoke_batch, self._give_up).process(records, stop)
        return found

    def _shards(self) -> list[dict[str, Any]]:
        description = self._streams.describe_stream(StreamArn=self.mapping.stream_arn)
        return list(description["StreamDescription"]["Shards"])

    def _invoke_batch(self, records: Sequence[Record]) -> InvocationResult:
        plain = [{k: v for k, v in r.items() if k != "shardId"} for r in records]
        event = stream_event(plain, self.mapping.stream_arn)
        self.runtime.reserve(timeout=self.runtime.function.timeout_seconds)
        try:
            return self.runtime.invoke(event).result
        finally:
            self.runtime.release()

    def _give_up(self, given_up: GivenUp) -> None:
        record = failure_record(given_up, self.mapping, self._function_arn)
        log.error(
            "%s: gave up on %d record(s) after %d attempt(s): %s",
            self.describe(),
            len(given_up.records),
            given_up.attempts,
            given_up.reason,
        )
        if self.mapping.on_failure_queue_url:
            self._sqs.send_message(
                QueueUrl=self.mapping.on_failure_queue_url, MessageBody=json.dumps(record)
            )
