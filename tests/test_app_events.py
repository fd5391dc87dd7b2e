"""publish_job_events, the job table stream's consumer: a job's real writes (the store's
own), read back from the table's stream (moto's DynamoDB Streams), handed to the handler
as Lambda's DynamoDB event source does, reach a rule on the stage's bus once each, in
order, with the records' ids."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import boto3
from chalice.test import Client

from chalicelib import connections
from chalicelib.events import EVENT_SOURCE
from chalicelib.jobs import Job, utc_now

# botocore 1.44 addresses DynamoDB Streams at an account endpoint
# (<account>.streams-ddb.<region>.amazonaws.com), which moto 5.2.5's in-process mock does
# not route; its own endpoint's name it does.
STREAMS_ENDPOINT = "https://streams.dynamodb.us-east-1.amazonaws.com"


def stream_records(stream_arn: str) -> list[dict[str, Any]]:
    """Every record of the stream so far, shaped as Lambda's DynamoDB event source delivers
    them (GetRecords' records, with the source's ARN and the time as epoch seconds)."""
    streams = boto3.client("dynamodbstreams", endpoint_url=STREAMS_ENDPOINT)
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in streams.get_records(ShardIterator=iterator)["Records"]:
            change = record["dynamodb"]
            moment = change.get("ApproximateCreationDateTime")
            if isinstance(moment, datetime):
                change["ApproximateCreationDateTime"] = int(moment.timestamp())
            records.append({**record, "eventSourceARN": stream_arn})
    return records


def listen(bus: str) -> str:
    """A queue that a rule on ``bus`` sends every job event to; its URL."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    url = sqs.create_queue(QueueName="job-events-listener")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    pattern = json.dumps({"source": [EVENT_SOURCE]})
    events.put_rule(Name="jobs", EventBusName=bus, EventPattern=pattern)
    events.put_targets(Rule="jobs", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn["QueueArn"]}])
    return url


def heard(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return found
        found.extend(json.loads(m["Body"]) for m in messages)
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_a_jobs_life_is_published_from_the_stream(
    client: Client, aws: dict[str, str], make_job: Any
) -> None:
    url = listen(aws["JobEventBusName"])
    job: Job = make_job(client="alice")
    table = connections.job_table()
    running = table.claim(job.job_id, job.kind, "owner-1", utc_now(), 30_000, client="alice")
    assert running is not None
    assert table.succeed(running, "owner-1", 42, utc_now()) is not None
    records = stream_records(aws["TableStreamArn"])

    response = client.lambda_.invoke("publish_job_events", {"Records": records})

    assert response.payload == {"batchItemFailures": []}
    events = heard(url)
    mine = [e for e in events if e["detail"]["job_id"] == job.job_id]
    assert [e["detail-type"] for e in mine] == ["job.queued", "job.running", "job.succeeded"]
    ids = {r["eventID"] for r in records}
    assert {e["detail"]["event_id"] for e in mine} <= ids
    assert mine[1]["detail"]["attempt"] == 1
    assert mine[2]["detail"]["result"] == 42
    assert {e["detail"]["client"] for e in mine} == {"alice"}
    assert all(e["source"] == EVENT_SOURCE for e in mine)


def test_an_unreadable_record_after_others_is_the_reported_failure(
    client: Client, aws: dict[str, str], make_job: Any
) -> None:
    listen(aws["JobEventBusName"])
    jobs = [make_job(), make_job()]
    records = stream_records(aws["TableStreamArn"])
    mine = [
        next(r for r in records if r["dynamodb"]["Keys"]["job_id"]["S"] == job.job_id)
        for job in jobs
    ]
    mine[1]["dynamodb"]["NewImage"]["status"] = {"S": "exploded"}

    response = client.lambda_.invoke("publish_job_events", {"Records": mine})

    sequence = mine[1]["dynamodb"]["SequenceNumber"]
    assert response.payload == {"batchItemFailures": [{"itemIdentifier": sequence}]}
