"""Backlogs of queued jobs, made fast, and the bare AWS calls timed beside the product.

A backlog is written straight to the emulator in the shapes the API writes: each job is
``chalicelib.jobs.Job.new`` stored with ``to_item`` (its listing keys and its pending mark
included, as the API stores it; BatchWriteItem, 25 at a time) and announced with
``to_message`` on the FIFO job queue, in the adapter's one message group with the job id
as the deduplication id (docs/design.md, "Deduplication ids"; SendMessageBatch, 10 at a
time), records first, as the API writes then sends. The backlog is one client's
(``BACKLOG_CLIENT``) and the API's callers another (``anonymous``, on the bench's stage
without keys): what the API reads for its caller (a client's listing, its quota) is that
client's alone, and stays flat however deep another client's backlog grows.

The bare calls are what each operation of the product costs the emulator alone, made
with boto3 on the same emulator, table and queue at the same depth: PutItem of a job
record, SendMessage of its message, GetItem, a checkpoint-shaped UpdateItem,
BatchGetItem of 20 jobs, GetQueueAttributes, a 20-item Query (newest first) of every
index of the table (found with DescribeTable, so the list follows the template), the
listing's own calls (one Query per shard of the all-jobs index, then one BatchGetItem:
what ``GET /jobs?limit=20`` asks of DynamoDB), the sweep's (GetQueueAttributes, GetItem of
the watermark, per shard a Query of the pending index below the cutoff and one of the
running jobs), and ReceiveMessage then DeleteMessage on a "mirror" queue made like the
job queue and filled to the same depth (a receive on the job queue itself would take the
jobs the worker is about to be timed on).

``python -m bench.backlog`` compares moto as released with the speed-ups on these bare
calls alone (an in-process moto server, backlogs injected into moto's models, because
filling stock moto through its API is quadratic: 10,000 messages take tens of minutes):

    python -m bench.backlog [--depths 0,1000,10000] [--samples 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from chalicelib import queue as queue_adapter
from chalicelib.config import Settings
from chalicelib.jobs import (
    LIST_ALL,
    PENDING,
    SHARDS,
    WATERMARK_ITEM,
    Job,
    JobStatus,
    Listing,
    epoch_ms,
    to_item,
    to_message,
    utc_now,
)
from chalicelib.worker import SWEEP_LIMIT_PER_SHARD

# Backlog jobs are the API's default retention, as its records are.
RETENTION = timedelta(days=Settings.retention_days)
WRITE_BATCH = 25  # BatchWriteItem's limit
SEND_BATCH = 10  # SendMessageBatch's limit
PAGE = 20  # GET /jobs?limit=20, the listing the issue measures
LISTING_FLOOR = f"listing: Query x{SHARDS} + BatchGetItem"
SWEEP_FLOOR = f"sweep: GetQueueAttributes + GetItem + Query x{2 * SHARDS}"
QUEUE_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


# Whose jobs a backlog is: not the API's callers' (chalicelib.clients.ANONYMOUS).
BACKLOG_CLIENT = "backlog"


def new_job() -> Job:
    return Job.new(n=0, now=utc_now(), retention=RETENTION, client=BACKLOG_CLIENT)


@dataclass
class Target:
    """The job table and queue of a stack, and a mirror of the queue for receives."""

    ddb: Any
    sqs: Any
    table_name: str
    queue_url: str
    mirror_url: str = ""
    fifo: bool = False
    indexes: dict[str, str] = field(default_factory=dict)  # GSI name -> hash key attribute

    @classmethod
    def of(cls, ddb: Any, sqs: Any, table_name: str, queue_url: str) -> Target:
        """Read the queue's kind and the table's indexes; make the mirror queue."""
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])[
            "Attributes"
        ]
        fifo = attributes.get("FifoQueue") == "true"
        name = queue_url.rsplit("/", 1)[-1].removesuffix(".fifo") + "-bare"
        mirror = {"VisibilityTimeout": attributes["VisibilityTimeout"]}
        if fifo:
            mirror.update(FifoQueue="true", ContentBasedDeduplication="false")
            name += ".fifo"
        mirror_url = sqs.create_queue(QueueName=name, Attributes=mirror)["QueueUrl"]
        table = ddb.describe_table(TableName=table_name)["Table"]
        indexes = {
            index["IndexName"]: next(
                k["AttributeName"] for k in index["KeySchema"] if k["KeyType"] == "HASH"
            )
            for index in table.get("GlobalSecondaryIndexes", [])
        }
        return cls(ddb, sqs, table_name, queue_url, mirror_url, fifo, indexes)

    # --- the shapes the product writes ----------------------------------------------------

    def message_entry(self, job: Job) -> dict[str, Any]:
        """A SendMessage request for the job's message, as the API sends it."""
        entry: dict[str, Any] = {"MessageBody": to_message(job)}
        if self.fifo:
            entry["MessageGroupId"] = queue_adapter.MESSAGE_GROUP
            entry["MessageDeduplicationId"] = job.job_id  # the submission's logical send
        return entry

    # --- filling -------------------------------------------------------------------------------

    def fill(self, count: int, mirror: bool = True) -> list[str]:
        """Queue ``count`` new jobs (records, then messages, in order); the mirror queue
        gets as many messages. Returns the job ids in the order they were sent."""
        ids: list[str] = []
        for start in range(0, count, WRITE_BATCH * SEND_BATCH):
            jobs = [new_job() for _ in range(min(WRITE_BATCH * SEND_BATCH, count - start))]
            for chunk in chunks(jobs, WRITE_BATCH):
                self.ddb.batch_write_item(
                    RequestItems={
                        self.table_name: [{"PutRequest": {"Item": to_item(j)}} for j in chunk]
                    }
                )
            for chunk in chunks(jobs, SEND_BATCH):
                for url in (self.queue_url, self.mirror_url) if mirror else (self.queue_url,):
                    entries = [self.message_entry(j) for j in chunk]
                    self.sqs.send_message_batch(
                        QueueUrl=url, Entries=[{"Id": str(i), **e} for i, e in enumerate(entries)]
                    )
            ids += [j.job_id for j in jobs]
        return ids

    def depth(self) -> int:
        """Messages on the job queue: visible, in flight and delayed."""
        got = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])
        a = got["Attributes"]
        return sum(
            int(a[n])
            for n in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )

    def empty(self, job_ids: list[str]) -> None:
        """Empty both queues and delete the jobs' records: a clean slate for the next
        depth. PurgeQueue, because it also drops a message in flight: a worker stopped
        while it held one leaves it invisible for the queue's visibility timeout (90 min),
        and on the FIFO job queue that one message blocks the whole group. SQS allows
        one purge a minute; a queue purged too recently is emptied by receive-and-delete
        instead (which cannot reach a message in flight)."""
        for url in (self.queue_url, self.mirror_url):
            try:
                self.sqs.purge_queue(QueueUrl=url)
                continue
            except self.sqs.exceptions.PurgeQueueInProgress:
                pass
            while messages := self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
                "Messages", []
            ):
                self.sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
        for chunk in chunks(job_ids, WRITE_BATCH):
            self.ddb.batch_write_item(
                RequestItems={
                    self.table_name: [
                        {"DeleteRequest": {"Key": {"job_id": {"S": job_id}}}} for job_id in chunk
                    ]
                }
            )


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the bare calls ---------------------------------------------------------------------------


class BareCalls:
    """The emulator's share of each operation: one boto3 call each, timed alone."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.created: list[str] = []  # job records written by PutItem, to delete later
        self._sample: dict[str, Any] = {}
        self._job: Job | None = None

    def operations(self) -> dict[str, Callable[[], float]]:
        ops: dict[str, Callable[[], float]] = {
            "PutItem": self.put_item,
            "SendMessage": self.send_message,
            "GetItem": self.get_item,
            "UpdateItem": self.update_item,
            "BatchGetItem": self.batch_get_item,
            "GetQueueAttributes": self.get_queue_attributes,
            "ReceiveMessage+DeleteMessage": self.receive_and_delete,
            LISTING_FLOOR: self.listing_calls,
            SWEEP_FLOOR: self.sweep_calls,
        }
        for index in self.target.indexes:
            ops[f"Query {index}"] = self._query(index)
        return ops

    def warm(self) -> None:
        """A few calls of each, and a job record to read and list (written first)."""
        self.put_item()
        for operation in self.operations().values():
            for _ in range(3):
                operation()

    def put_item(self) -> float:
        job = new_job()
        item = to_item(job)
        start = time.perf_counter()
        self.target.ddb.put_item(
            TableName=self.target.table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(job_id)",
        )
        elapsed = time.perf_counter() - start
        self.created.append(job.job_id)
        self._sample, self._job = item, job
        return elapsed

    def send_message(self) -> float:
        # For the last record written: the pair is a submission's floor. It goes to the
        # tail of the job queue, behind the jobs the worker is timed on.
        entry = self.target.message_entry(self._job or new_job())
        if self.target.fifo:
            entry["MessageDeduplicationId"] = str(uuid.uuid4())
        start = time.perf_counter()
        self.target.sqs.send_message(QueueUrl=self.target.queue_url, **entry)
        return time.perf_counter() - start

    def get_item(self) -> float:
        start = time.perf_counter()
        self.target.ddb.get_item(
            TableName=self.target.table_name, Key=self._key(), ConsistentRead=True
        )
        return time.perf_counter() - start

    def update_item(self) -> float:
        # Checkpoint-shaped: one attribute, a condition on the status.
        start = time.perf_counter()
        self.target.ddb.update_item(
            TableName=self.target.table_name,
            Key=self._key(),
            UpdateExpression="SET progress = :p",
            ConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": {"N": "0"}, ":s": self._sample["status"]},
        )
        return time.perf_counter() - start

    def batch_get_item(self) -> float:
        keys = [{"job_id": {"S": job_id}} for job_id in dict.fromkeys(self.created[-PAGE:])]
        start = time.perf_counter()
        self.target.ddb.batch_get_item(RequestItems={self.target.table_name: {"Keys": keys}})
        return time.perf_counter() - start

    def get_queue_attributes(self) -> float:
        start = time.perf_counter()
        self.target.sqs.get_queue_attributes(QueueUrl=self.target.queue_url, AttributeNames=["All"])
        return time.perf_counter() - start

    def receive_and_delete(self) -> float:
        start = time.perf_counter()
        got = self.target.sqs.receive_message(
            QueueUrl=self.target.mirror_url, MaxNumberOfMessages=1
        )
        messages = got.get("Messages", [])
        if messages:
            self.target.sqs.delete_message(
                QueueUrl=self.target.mirror_url, ReceiptHandle=messages[0]["ReceiptHandle"]
            )
        elapsed = time.perf_counter() - start
        # Keep the mirror at its depth: one out, one in (not timed).
        entry = self.target.message_entry(new_job())
        self.target.sqs.send_message(QueueUrl=self.target.mirror_url, **entry)
        return elapsed

    def listing_calls(self) -> float:
        """What GET /jobs?limit=20 asks of DynamoDB: a Query per shard of the all-jobs
        index (keys and expiry, newest first, expired ones filtered), one BatchGetItem."""
        listing, now = Listing(), int(utc_now().timestamp())
        start = time.perf_counter()
        candidates: list[tuple[str, str]] = []
        for shard in range(SHARDS):
            items = self.target.ddb.query(
                TableName=self.target.table_name,
                IndexName=LIST_ALL.name,
                KeyConditionExpression="#p = :p",
                FilterExpression="attribute_not_exists(#e) OR #e > :now",
                ExpressionAttributeNames={"#p": LIST_ALL.partition_key, "#e": "expires_at"},
                ExpressionAttributeValues={
                    ":p": {"S": listing.partition(shard)},
                    ":now": {"N": str(now)},
                },
                ScanIndexForward=False,
                Limit=PAGE,
            )["Items"]
            candidates += [(i[LIST_ALL.sort_key]["S"], i["job_id"]["S"]) for i in items]
        keys = [{"job_id": {"S": job_id}} for _, job_id in sorted(candidates)[-PAGE:]]
        if keys:
            self.target.ddb.batch_get_item(RequestItems={self.target.table_name: {"Keys": keys}})
        return time.perf_counter() - start

    def sweep_calls(self) -> float:
        """What one run of the recovery sweep asks when nothing is lost, with its cutoff
        rule (chalicelib.worker): the queue's counts; then, if the queue is empty, the
        cutoff is now minus JOBS_LOST_AFTER_SECONDS, else the watermark (GetItem) minus
        it, and with no watermark yet no pending job is read; per shard the pending index
        below the cutoff, and the running jobs."""
        running = Listing(status=JobStatus.RUNNING)
        lost_after_ms = 1000 * Settings.lost_after_seconds
        start = time.perf_counter()
        counts = self.target.sqs.get_queue_attributes(
            QueueUrl=self.target.queue_url, AttributeNames=list(QUEUE_COUNTS)
        )["Attributes"]
        cutoff: int | None = epoch_ms(utc_now()) - lost_after_ms
        if any(int(counts[name]) for name in QUEUE_COUNTS):
            item = self.target.ddb.get_item(
                TableName=self.target.table_name, Key={"job_id": {"S": WATERMARK_ITEM}}
            ).get("Item")
            cutoff = int(item["sent_ms"]["N"]) - lost_after_ms if item else None
        for shard in range(SHARDS):
            if cutoff is not None:
                self.target.ddb.query(
                    TableName=self.target.table_name,
                    IndexName=PENDING.name,
                    KeyConditionExpression="#p = :p AND #a < :cutoff",
                    ExpressionAttributeNames={"#p": PENDING.partition_key, "#a": PENDING.sort_key},
                    ExpressionAttributeValues={
                        ":p": {"S": f"pending#{shard}"},
                        ":cutoff": {"N": str(cutoff)},
                    },
                    Limit=SWEEP_LIMIT_PER_SHARD,
                )
            self.target.ddb.query(
                TableName=self.target.table_name,
                IndexName=running.index.name,
                KeyConditionExpression="#p = :p",
                ExpressionAttributeNames={"#p": running.index.partition_key},
                ExpressionAttributeValues={":p": {"S": running.partition(shard)}},
                Limit=SWEEP_LIMIT_PER_SHARD,
            )
        return time.perf_counter() - start

    def _query(self, index: str) -> Callable[[], float]:
        attribute = self.target.indexes[index]

        def query() -> float:
            value = self._sample.get(attribute)
            if value is None:  # a sparse index the sample is not in: its emptiest case
                value = {"S": "-"}
            start = time.perf_counter()
            self.target.ddb.query(
                TableName=self.target.table_name,
                IndexName=index,
                KeyConditionExpression="#h = :h",
                ExpressionAttributeNames={"#h": attribute},
                ExpressionAttributeValues={":h": value},
                ScanIndexForward=False,
                Limit=PAGE,
            )
            return time.perf_counter() - start

        return query

    def _key(self) -> dict[str, Any]:
        return {"job_id": self._sample["job_id"]}


def sample_round(
    operations: dict[str, Callable[[], float]], rng: random.Random
) -> dict[str, float]:
    """Each operation once, in a random order (so drift falls on all alike)."""
    names = list(operations)
    rng.shuffle(names)
    return {name: operations[name]() for name in names}


# --- stock moto against the speed-ups, bare calls only -----------------------------------------


def compare_flavours(depths: list[int], samples: int) -> dict[str, dict[int, dict[str, float]]]:
    """p50 (ms) of each bare call at each depth, on moto as released and with the
    speed-ups, in one process: an in-process moto server, the project's template applied
    as the local stage, backlogs injected into moto's models."""
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    from bench.stats import p50
    from infra import moto_speedups
    from infra import stack as infra_stack
    from infra.emulator import HOST, endpoint_url, free_port
    from infra.run import copy_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    url = endpoint_url(port)
    # apply_stage reads and migrates the table through chalicelib, which takes the
    # endpoint and credentials from the environment, as the app does.
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
    )
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    results: dict[str, dict[int, dict[str, float]]] = {}
    try:
        for flavour in ("stock", "fast"):
            if flavour == "fast":
                moto_speedups.apply()
            requests.post(f"{url}/moto-api/reset", timeout=30)
            project = copy_app(Path(tempfile.mkdtemp(prefix="bench-backlog-")) / "project")
            outputs = infra_stack.apply_stage(
                "local", project, cfn=session.client("cloudformation", endpoint_url=url)
            )
            target = Target.of(
                session.client("dynamodb", endpoint_url=url),
                session.client("sqs", endpoint_url=url),
                outputs["TableName"],
                outputs["QueueUrl"],
            )
            results[flavour] = {}
            filled = 0
            for depth in depths:
                inject(target, depth - filled)
                filled = depth
                bare = BareCalls(target)
                bare.warm()
                rng = random.Random(depth)
                rounds = [sample_round(bare.operations(), rng) for _ in range(samples)]
                results[flavour][depth] = {
                    name: 1000 * p50([r[name] for r in rounds]) for name in rounds[0]
                }
                print(f"{flavour} depth {depth}: {json.dumps(results[flavour][depth])}", flush=True)
    finally:
        moto_speedups.revert()
        server.stop()
    return results


def inject(target: Target, count: int) -> None:
    """Put ``count`` jobs and their messages (and mirror messages) straight into moto's
    models in this process: what SendMessage and PutItem would store, without their cost
    on stock moto."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.sqs.models import Message, sqs_backends

    from infra import moto_speedups

    account, region = "123456789012", "us-east-1"
    table_backend = dynamodb_backends[account][region]
    queues = sqs_backends[account][region].queues
    for _ in range(count):
        job = new_job()
        table_backend.put_item(target.table_name, to_item(job))
        entry = target.message_entry(job)
        for url in (target.queue_url, target.mirror_url):
            queue = queues[url.rsplit("/", 1)[-1]]
            message = Message(str(uuid.uuid4()), entry["MessageBody"])
            message.mark_sent()
            if target.fifo:
                message.group_id = entry["MessageGroupId"]
                message.deduplication_id = entry["MessageDeduplicationId"]
                message.sequence_number = str(time.time_ns())
            if moto_speedups.applied():
                queue.add_message(message)
            else:
                with queue._messages_lock:
                    queue._messages.append(message)


def markdown(results: dict[str, dict[int, dict[str, float]]]) -> str:
    depths = sorted(results["stock"])
    names = list(results["stock"][depths[0]])
    head = " | ".join(f"{d:,}: stock / fast" for d in depths)
    lines = [f"| call (p50, ms) | {head} |", "| --- |" + " ---: |" * len(depths)]
    for name in names:
        cells = " | ".join(
            f"{results['stock'][d][name]:.1f} / {results['fast'][d][name]:.1f}" for d in depths
        )
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__)
    parser.add_argument("--depths", default="0,1000,10000")
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    print(markdown(compare_flavours(depths, args.samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
