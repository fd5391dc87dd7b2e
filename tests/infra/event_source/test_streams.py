"""The local DynamoDB Streams event source (infra/event_source/streams.py): batches in
shard order, checkpoints after a partial batch response, bisection down to a bad record,
the retry bound, and the on-failure queue; then the same through the emulator's
DynamoDB Streams (moto server), with the project's own publish_records as the function."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from infra.emulator import EmulatorHandle
from infra.event_source.settlement import InvocationResult, InvocationStatus
from infra.event_source.streams import (
    RETRIES_EXHAUSTED,
    DynamoDBStreamEventSource,
    GivenUp,
    ShardProcessor,
    StreamMapping,
)

REGION = "us-east-1"


def mapping(**changes: Any) -> StreamMapping:
    settings: dict[str, Any] = {
        "stream_arn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
        "batch_size": 8,
        "starting_position": "TRIM_HORIZON",
        "bisect_on_error": True,
        "max_retry_attempts": 2,
        "on_failure_queue_url": None,
    }
    return StreamMapping(**{**settings, **changes})


def records(count: int) -> list[dict[str, Any]]:
    return [
        {"eventID": f"e{n}", "dynamodb": {"SequenceNumber": str(100 + n), "Keys": {}}}
        for n in range(count)
    ]


class Function:
    """A function that fails (raises, or reports) any batch holding a bad record."""

    def __init__(self, bad: set[str], report: bool = False) -> None:
        self.bad = bad
        self.report = report
        self.batches: list[list[str]] = []
        self.done: list[str] = []

    def __call__(self, batch: Sequence[dict[str, Any]]) -> InvocationResult:
        ids = [r["eventID"] for r in batch]
        self.batches.append(ids)
        for position, record in enumerate(batch):
            if record["eventID"] in self.bad:
                if not self.report:
                    return InvocationResult(InvocationStatus.RAISED, error="Boom")
                sequence = record["dynamodb"]["SequenceNumber"]
                self.done += ids[:position]
                failures = [{"itemIdentifier": sequence}]
                return InvocationResult(InvocationStatus.RETURNED, {"batchItemFailures": failures})
        self.done += ids
        return InvocationResult(InvocationStatus.RETURNED, {"batchItemFailures": []})


def run(function: Function, count: int, **changes: Any) -> tuple[ShardProcessor, list[GivenUp]]:
    given_up: list[GivenUp] = []
    processor = ShardProcessor(mapping(**changes), function, given_up.append)
    processor.process(records(count))
    return processor, given_up


def test_batches_follow_the_shard_in_order() -> None:
    function = Function(bad=set())
    run(function, 20)
    assert function.batches == [[f"e{n}" for n in range(s, min(s + 8, 20))] for s in (0, 8, 16)]


def test_bisection_isolates_one_bad_record_and_gives_up_only_it() -> None:
    function = Function(bad={"e5"})
    processor, given_up = run(function, 8)
    assert [g.records[0]["eventID"] for g in given_up] == ["e5"]
    assert len(given_up[0].records) == 1
    assert given_up[0].attempts == 3  # the first try and max_retry_attempts retries
    assert sorted(set(function.done)) == sorted(f"e{n}" for n in range(8) if n != 5)
    # At most ceil(log2 8) splits, the bad record's own tries, and the good halves.
    splits = math.ceil(math.log2(8))
    assert processor.invocations <= splits + 3 + splits


def test_without_bisection_the_whole_batch_is_given_up_after_its_retries() -> None:
    function = Function(bad={"e5"})
    processor, given_up = run(function, 8, bisect_on_error=False)
    assert processor.invocations == 3
    assert [len(g.records) for g in given_up] == [8]


def test_a_partial_response_checkpoints_before_the_reported_record() -> None:
    function = Function(bad={"e5"}, report=True)
    _, given_up = run(function, 8, bisect_on_error=False)
    assert function.batches[0] == [f"e{n}" for n in range(8)]
    assert function.batches[1] == ["e5", "e6", "e7"]  # e0..e4 are never sent again
    assert [r["eventID"] for r in given_up[0].records] == ["e5", "e6", "e7"]


def test_unbounded_retries_keep_trying() -> None:
    calls = []

    def flaky(batch: Sequence[dict[str, Any]]) -> InvocationResult:
        calls.append(len(batch))
        if len(calls) < 10:
            return InvocationResult(InvocationStatus.TIMED_OUT, error="Task timed out")
        return InvocationResult(InvocationStatus.RETURNED, None)

    given_up: list[GivenUp] = []
    ShardProcessor(mapping(max_retry_attempts=-1, batch_size=1), flaky, given_up.append).process(
        records(1)
    )
    assert len(calls) == 10 and given_up == []


@pytest.fixture
def emulated(emulator: EmulatorHandle) -> dict[str, Any]:
    """A table with a NEW_AND_OLD_IMAGES stream and a failure queue on the emulator."""

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=emulator.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    ddb, sqs = client("dynamodb"), client("sqs")
    name = f"jobs-{id(ddb)}"
    table = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    queue = sqs.create_queue(QueueName=f"{name}-failed")["QueueUrl"]
    yield {
        "ddb": ddb,
        "sqs": sqs,
        "streams": client("dynamodbstreams"),
        "table": name,
        "stream_arn": table["LatestStreamArn"],
        "failed_queue": queue,
    }
    ddb.delete_table(TableName=name)
    sqs.delete_queue(QueueUrl=queue)


def test_the_emulators_stream_reaches_the_publisher_and_a_bad_record_the_failure_queue(
    emulated: dict[str, Any],
) -> None:
    from chalicelib.event_bus import publish_records
    from chalicelib.jobs import Job, to_item, utc_now

    jobs = [Job.new(n=n, now=utc_now()) for n in range(5)]
    items = [to_item(job) for job in jobs]
    items[2]["status"] = {"S": "exploded"}  # a job item this release cannot read
    for item in items:
        emulated["ddb"].put_item(TableName=emulated["table"], Item=item)

    published: list[str] = []

    class Bus:
        def put(self, events: Sequence[Any]) -> list[Any]:
            published.extend(e.job.job_id for e in events)
            return []

    class Runtime:
        """The runner's instances of the publisher, in process."""

        function = SimpleNamespace(name="publish_job_events", timeout_seconds=60)

        def reserve(self, timeout: float) -> bool:
            return True

        def release(self) -> None:
            pass

        def invoke(self, event: dict[str, Any]) -> Any:
            json.dumps(event)  # what reaches a function is JSON
            try:
                failed = publish_records(event["Records"], Bus())  # type: ignore[arg-type]
            except Exception as error:
                result = InvocationResult(InvocationStatus.RAISED, error=repr(error))
            else:
                failures = [{"itemIdentifier": s} for s in failed]
                response = {"batchItemFailures": failures}
                result = InvocationResult(InvocationStatus.RETURNED, response)
            return SimpleNamespace(result=result)

    source = DynamoDBStreamEventSource(
        mapping(
            stream_arn=emulated["stream_arn"],
            batch_size=100,
            on_failure_queue_url=emulated["failed_queue"],
        ),
        Runtime(),  # type: ignore[arg-type]
        emulated["streams"],
        emulated["sqs"],
        "arn:aws:lambda:us-east-1:123456789012:function:publish_job_events",
    )
    source.prepare()
    assert source.poll_once() == 5

    assert sorted(set(published)) == sorted(job.job_id for n, job in enumerate(jobs) if n != 2)
    messages = emulated["sqs"].receive_message(QueueUrl=emulated["failed_queue"])["Messages"]
    (failure,) = [json.loads(m["Body"]) for m in messages]
    assert failure["requestContext"]["condition"] == RETRIES_EXHAUSTED
    info = failure["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1
    assert info["streamArn"] == emulated["stream_arn"]
    assert source.poll_once() == 0  # checkpointed: nothing is read twice


def test_the_emulators_bus_delivers_to_a_rules_queue(emulator: EmulatorHandle) -> None:
    """What the webhooks' delivery relies on locally: a rule on a custom bus sends the
    events it matches to an SQS queue, through the emulator (moto server)."""
    from chalicelib.event_bus import EventBus
    from chalicelib.events import EVENT_SOURCE, EventType, JobEvent
    from chalicelib.jobs import Job, utc_now

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=emulator.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    events, sqs = client("events"), client("sqs")
    bus = f"bus-{id(events)}"
    events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName=f"{bus}-listener")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    pattern = {"source": [EVENT_SOURCE], "detail-type": ["job.succeeded"]}
    events.put_rule(Name="done", EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule="done", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn["QueueArn"]}])
    job = Job.new(n=1, now=utc_now())
    sent = [JobEvent(EventType.QUEUED, "e-1", job), JobEvent(EventType.SUCCEEDED, "e-2", job)]
    assert EventBus(events, bus).put(sent) == []
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    assert [(b["detail-type"], b["detail"]["event_id"]) for b in bodies] == [
        ("job.succeeded", "e-2")
    ]
    sqs.delete_queue(QueueUrl=url)
    events.remove_targets(Rule="done", EventBusName=bus, Ids=["q"])
    events.delete_rule(Name="done", EventBusName=bus)
    events.delete_event_bus(Name=bus)


def test_the_project_serves_its_stream_handler_once_given_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """load_project lists publish_job_events with the decorator's batching when the
    process has the stream's ARN (as `make run` gives it), and says why it is not served
    when it has not (as a bare `make worker`)."""
    import sys

    from chalicelib import config as settings
    from chalicelib.events import STREAM_BATCH_SIZE, STREAM_STARTING_POSITION
    from infra.event_source.settings import load_project
    from infra.stack import PROJECT_DIR

    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/heavy-jobs-local-jobs/stream/x"
    for given in (arn, None):
        monkeypatch.delitem(sys.modules, "app", raising=False)
        monkeypatch.delenv(settings.TABLE_STREAM_ARN, raising=False)
        if given is not None:
            monkeypatch.setenv(settings.TABLE_STREAM_ARN, given)
        project = load_project(str(PROJECT_DIR), "local")
        names = [s.function.name for s in project.stream_sources]
        if given is None:
            assert names == []
            assert any("publish_job_events" in n for n in project.not_emulated)
            continue
        (source,) = project.stream_sources
        assert source.function.name == "publish_job_events"
        assert source.stream_arn == arn
        assert source.batch_size == STREAM_BATCH_SIZE
        assert source.starting_position == STREAM_STARTING_POSITION


def test_a_runtime_shut_down_under_the_source_ends_its_run(emulated: dict[str, Any]) -> None:
    import threading

    from infra.event_source.instances import RuntimeClosed

    emulated["ddb"].put_item(TableName=emulated["table"], Item={"job_id": {"S": "x"}})

    class Closed:
        function = SimpleNamespace(name="publish_job_events", timeout_seconds=60)

        def reserve(self, timeout: float) -> bool:
            return True

        def release(self) -> None:
            pass

        def invoke(self, event: dict[str, Any]) -> Any:
            raise RuntimeClosed("shut down")

    source = DynamoDBStreamEventSource(
        mapping(stream_arn=emulated["stream_arn"]),
        Closed(),  # type: ignore[arg-type]
        emulated["streams"],
        emulated["sqs"],
        "arn:aws:lambda:us-east-1:123456789012:function:publish_job_events",
    )
    source.run(threading.Event(), burst=False)  # returns, raising nothing
