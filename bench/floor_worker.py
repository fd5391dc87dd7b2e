"""The floor of the worker: each job's AWS calls and nothing else.

    python -m bench.floor_worker --queue-url URL --table NAME

Long-polls its queue as the local event source does (one message per receive, waits of
up to 20 s), then for each message makes the calls a trivial job needs: the claim (one
conditional UpdateItem that sets ``running`` and ``started_at``), the message hold (one
ChangeMessageVisibility), the result (one UpdateItem) and the delete (one
DeleteMessageBatch). They go through the project's own adapters, so the requests are the
product's; what is left out is everything else (the Lambda runtime stand-in, Chalice's
event objects, logs and metrics). It runs until it is terminated. AWS settings come from
the environment (``AWS_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import argparse
import sys
import uuid

import boto3

from chalicelib.config import Settings
from chalicelib.jobs import DEFAULT_KIND, parse_message, utc_now
from chalicelib.queue import JobQueue
from chalicelib.store import JobTable

# The default settings' lease and message hold, as the worker uses them.
_DEFAULTS = Settings(table_name="", queue_name="", delay_queue_name="", stage="")
LEASE_MS = _DEFAULTS.stale_after_seconds * 1000
HOLD_SECONDS = _DEFAULTS.message_hold_seconds
WAIT_SECONDS = 20


def serve(queue_url: str, table_name: str) -> None:
    sqs = boto3.client("sqs")
    table = JobTable(boto3.client("dynamodb"), table_name)
    queue = JobQueue(sqs, queue_url.rsplit("/", 1)[-1], url=queue_url)
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=WAIT_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in messages:
            parsed = parse_message(message["Body"])
            owner = uuid.uuid4().hex
            job = table.claim(
                parsed.job_id, parsed.kind or DEFAULT_KIND, owner, utc_now(), LEASE_MS
            )
            if job is not None:
                queue.hold(message["ReceiptHandle"], HOLD_SECONDS)
                table.succeed(job, owner, job.n, utc_now())
        if messages:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_worker")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--table", required=True)
    args = parser.parse_args(argv)
    serve(args.queue_url, args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
