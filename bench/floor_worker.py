"""The floor of the worker: each job's AWS calls and nothing else.

    python -m bench.floor_worker --queue-url URL --table NAME

Long-polls its queue as the local event source does (one message per receive, waits of
up to 20 s), then for each message makes the calls a trivial job needs: the claim (one
conditional UpdateItem that sets ``running`` and ``started_at``), the result (one
UpdateItem) and the delete (one DeleteMessageBatch). They go through the project's own
table adapter, so the requests are the product's; what is left out is everything else
(the Lambda runtime stand-in, Chalice's event objects, logs and metrics). It runs until
it is terminated. AWS settings come from the environment (``AWS_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

import boto3

from chalicelib.jobs import utc_now
from chalicelib.store import JobTable

LEASE_MS = 30_000
WAIT_SECONDS = 20


def serve(queue_url: str, table_name: str) -> None:
    sqs = boto3.client("sqs")
    table = JobTable(boto3.client("dynamodb"), table_name)
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=WAIT_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in messages:
            job_id = json.loads(message["Body"])["job_id"]
            owner = uuid.uuid4().hex
            job = table.claim(job_id, owner, utc_now(), LEASE_MS)
            if job is not None:
                table.succeed(job_id, owner, job.n, utc_now())
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
