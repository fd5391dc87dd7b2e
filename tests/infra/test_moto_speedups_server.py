"""infra.moto_speedups.server: the server's request routing and EventBridge's input paths
give moto's answers, without redoing the work that never changes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import jsonpath_ng.ext
import pytest
from moto import backends, mock_aws

from infra import moto_speedups

REGION = "us-east-1"


@pytest.fixture(params=["stock", "speedups"])
def flavour(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs against moto as released and with the speed-ups: same answers."""
    if request.param == "speedups":
        moto_speedups.apply()
    yield request.param
    moto_speedups.revert()


def test_routing_lists_moto_once_and_names_the_same_modules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stock = list(backends.list_of_moto_modules())
    assert {"sqs", "dynamodb", "events", "scheduler"} <= set(stock)
    listings = []
    listdir = os.listdir

    def counted(path: str) -> list[str]:
        listings.append(path)
        return listdir(path)

    monkeypatch.setattr(backends.os, "listdir", counted)
    moto_speedups.apply()
    try:
        for _ in range(3):
            assert list(backends.list_of_moto_modules()) == stock
            assert "sqs" in backends.list_of_moto_modules()
    finally:
        moto_speedups.revert()
    assert len(listings) == 1
    # Reverted: moto lists its directory again at each call.
    list(backends.list_of_moto_modules())
    assert len(listings) == 2


def test_a_path_is_parsed_once_and_finds_what_a_new_parse_finds() -> None:
    moto_speedups.apply()
    try:
        first = jsonpath_ng.ext.parse("$.detail.status")
        assert jsonpath_ng.ext.parse("$.detail.status") is first
        assert jsonpath_ng.ext.parse("$.detail.job_id") is not first
    finally:
        moto_speedups.revert()
    fresh = jsonpath_ng.ext.parse("$.detail.status")
    assert fresh is not jsonpath_ng.ext.parse("$.detail.status")
    event = {"detail": {"status": "succeeded", "job_id": "j1"}}
    assert [m.value for m in first.find(event)] == [m.value for m in fresh.find(event)]
    # Reused: finding in one event leaves nothing behind for the next.
    assert [m.value for m in first.find({"detail": {"status": "failed"}})] == ["failed"]


def _delivered(input_transformer: dict[str, Any] | None) -> list[Any]:
    events = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="targets")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.create_event_bus(Name="bus")
    events.put_rule(
        Name="jobs", EventBusName="bus", EventPattern=json.dumps({"source": ["heavy-jobs"]})
    )
    target: dict[str, Any] = {"Id": "queue", "Arn": arn}
    if input_transformer is not None:
        target["InputTransformer"] = input_transformer
    events.put_targets(Rule="jobs", EventBusName="bus", Targets=[target])
    for status in ("queued", "running", "succeeded"):
        events.put_events(
            Entries=[
                {
                    "EventBusName": "bus",
                    "Source": "heavy-jobs",
                    "DetailType": f"job.{status}",
                    "Detail": json.dumps({"job_id": "j1", "status": status}),
                }
            ]
        )
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return bodies
        bodies += [json.loads(m["Body"]) for m in got]


@pytest.mark.usefixtures("flavour")
def test_a_rule_delivers_every_event_whole_to_its_queue() -> None:
    with mock_aws():
        bodies = _delivered(None)
    assert [(b["detail-type"], b["detail"]["status"]) for b in bodies] == [
        ("job.queued", "queued"),
        ("job.running", "running"),
        ("job.succeeded", "succeeded"),
    ]
    assert len({b["id"] for b in bodies}) == 3


@pytest.mark.usefixtures("flavour")
def test_a_rule_with_an_input_transformer_fills_each_event_in() -> None:
    transformer = {
        "InputPathsMap": {"job": "$.detail.job_id", "status": "$.detail.status"},
        "InputTemplate": '{"job": "<job>", "now": "<status>"}',
    }
    with mock_aws():
        bodies = _delivered(transformer)
    assert bodies == [
        {"job": "j1", "now": "queued"},
        {"job": "j1", "now": "running"},
        {"job": "j1", "now": "succeeded"},
    ]
