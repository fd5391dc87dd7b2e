"""The stack's parts of job events (infra/template.yaml): the job table's stream, the
stage's bus, and the stream consumer's failure queue; a table of an earlier release gets
its stream by an update that keeps its items (no replacement)."""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib import config as settings
from infra import stack
from tests.infra.test_migration import bridge_stack_updates

STAGE = "local"
EVENT_OUTPUTS = ("TableStreamArn", "JobEventBusName", "JobEventBusArn", "JobEventsFailedQueueArn")


def test_the_stack_has_the_stream_the_bus_and_the_failure_queue(aws: dict[str, str]) -> None:
    table = boto3.client("dynamodb").describe_table(TableName=aws["TableName"])["Table"]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert aws["TableStreamArn"] == table["LatestStreamArn"]
    assert aws["JobEventBusName"] == f"heavy-jobs-{STAGE}"
    bus = boto3.client("events").describe_event_bus(Name=aws["JobEventBusName"])
    assert bus["Arn"] == aws["JobEventBusArn"]
    assert aws["JobEventsFailedQueueArn"].endswith(f":heavy-jobs-{STAGE}-events-failed")
    assert stack.stage_environment(STAGE, aws)[settings.EVENT_BUS_NAME] == f"heavy-jobs-{STAGE}"


def without_events(template: dict[str, Any]) -> dict[str, Any]:
    """``template`` as an earlier release had it: no stream, no bus, no failure queue, and
    none of the webhooks' parts (their queues, the bus's rule to them and its policy)."""
    earlier = copy.deepcopy(template)
    del earlier["Resources"][stack.TABLE_RESOURCE]["Properties"]["StreamSpecification"]
    webhooks = [name for name in earlier["Resources"] if name.startswith("Webhook")]
    for resource in ("JobEventBus", "JobEventsFailedQueue", *webhooks):
        del earlier["Resources"][resource]
    webhook_outputs = [name for name in earlier["Outputs"] if name.startswith("Webhook")]
    for output in (
        "TableStreamArn",
        "JobEventBusName",
        "JobEventBusArn",
        "JobEventsFailedQueueArn",
        *webhook_outputs,
    ):
        del earlier["Outputs"][output]
    return earlier


@pytest.mark.usefixtures("_isolated_aws_env")
def test_an_earlier_table_gets_its_stream_and_keeps_its_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto's CloudFormation cannot update a table; the bridge applies the change in place,
    # as CloudFormation does for StreamSpecification ("Update requires: No interruption").
    bridge_stack_updates(monkeypatch)
    with mock_aws():
        cfn, ddb = boto3.client("cloudformation"), boto3.client("dynamodb")
        config = stack.load_chalice_config(STAGE)
        parameters = stack.parameters_for_stage(config, STAGE)
        name = stack.stack_name(config.app_name, STAGE)
        template = stack.render(stack.load_template(), stack.wanted_indexes())
        before = stack.apply(cfn, name, parameters, json.dumps(without_events(template)))
        table_arn = ddb.describe_table(TableName=before["TableName"])["Table"]["TableArn"]
        ddb.put_item(TableName=before["TableName"], Item={"job_id": {"S": "kept"}})
        after = stack.apply(cfn, name, parameters, json.dumps(template))
        table = ddb.describe_table(TableName=after["TableName"])["Table"]
        assert table["TableArn"] == table_arn
        assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert after["TableStreamArn"] == table["LatestStreamArn"]
        item = ddb.get_item(TableName=after["TableName"], Key={"job_id": {"S": "kept"}})
        assert "Item" in item
