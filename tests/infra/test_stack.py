"""infra/stack.py: the template applied to moto, parameters from config, outputs to config."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.jobs import EXPIRES_AT, LISTED, RECENT_INDEX, STATUS_INDEX
from infra import policies, stack

PARAMS = {
    "VisibilityTimeoutSeconds": "60",
    "ExpiryAttributeName": EXPIRES_AT,
    "StatusIndexName": STATUS_INDEX,
    "RecentIndexName": RECENT_INDEX,
    "ListedAttributeName": LISTED,
}


def test_template_declares_queue_dlq_and_table(aws: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=aws["QueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == aws["DeadLetterQueueArn"]
    assert int(redrive["maxReceiveCount"]) >= 5
    table = boto3.client("dynamodb").describe_table(TableName=aws["TableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]


@pytest.mark.parametrize(
    ("queue_url", "consumer"),
    [("QueueUrl", "process_job"), ("DeadLetterQueueUrl", "process_dead_letters")],
)
def test_visibility_timeout_is_six_times_the_consumers_timeout(
    aws: dict[str, str], queue_url: str, consumer: str
) -> None:
    config = stack.load_chalice_config("local")
    timeout = config.scope("local", consumer).lambda_timeout
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws[queue_url], AttributeNames=["VisibilityTimeout"]
    )
    assert int(attributes["Attributes"]["VisibilityTimeout"]) == 6 * timeout


def test_worker_settings_come_from_chalice_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chalice imports app.py once per process; drop it so the dev stage's import is fresh.
    monkeypatch.delitem(sys.modules, "app", raising=False)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the import sets dev's variables
    config = stack.load_chalice_config("dev")
    assert stack.queue_consumers(config) == {
        "process_job": "heavy-jobs-dev-queue",
        "process_dead_letters": "heavy-jobs-dev-dlq",
    }
    worker = config.scope("dev", "process_job")
    assert worker.reserved_concurrency == 1
    assert worker.lambda_memory_size >= 1769  # one full vCPU for CPU-bound work
    assert config.scope("dev", "api_handler").lambda_timeout <= 29  # API Gateway's limit


def test_apply_is_idempotent() -> None:
    with mock_aws():
        cfn = boto3.client("cloudformation")
        first = stack.apply(cfn, "heavy-jobs-idem", PARAMS)
        second = stack.apply(cfn, "heavy-jobs-idem", PARAMS)
        assert first == second
        assert len(boto3.client("sqs").list_queues()["QueueUrls"]) == 2


@pytest.mark.parametrize("stage", ["local", "dev", "prod"])
def test_committed_config_names_match_the_stack_outputs(stage: str) -> None:
    """config.json holds exactly what applying the template writes there."""
    with mock_aws():
        cfn = boto3.client("cloudformation")
        outputs = stack.apply(cfn, f"heavy-jobs-{stage}", PARAMS)
    config = json.loads((stack.PROJECT_DIR / ".chalice" / "config.json").read_text())
    declared = config["stages"][stage]["environment_variables"]
    for name, value in stack.environment_from_outputs(outputs).items():
        assert declared[name] == value


def test_outputs_are_written_into_the_stage_config(tmp_path: Path) -> None:
    chalice_dir = tmp_path / ".chalice"
    chalice_dir.mkdir()
    (chalice_dir / "config.json").write_text(json.dumps({"stages": {"dev": {}}}))
    env = {"JOBS_QUEUE_NAME": "q1", "JOBS_TABLE_NAME": "t1"}

    assert stack.write_stage_environment("dev", env, tmp_path) is True
    assert stack.write_stage_environment("dev", env, tmp_path) is False  # unchanged
    data: Any = json.loads((chalice_dir / "config.json").read_text())
    assert data["stages"]["dev"]["environment_variables"] == env


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_function_gets_a_least_privilege_policy(
    stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "app", raising=False)
    monkeypatch.setattr(os, "environ", os.environ.copy())
    config = stack.load_chalice_config(stage)
    (tmp_path / ".chalice").mkdir()
    with mock_aws():
        outputs = stack.apply(boto3.client("cloudformation"), f"heavy-jobs-{stage}", PARAMS)

    written = stack.write_policies(config, stage, outputs, tmp_path)

    handlers = ["api_handler", "process_job", "process_dead_letters", "recover_stalled_jobs"]
    assert sorted(p.name for p in written) == sorted(
        f"policy-{stage}-{handler}.json" for handler in handlers
    )
    own = {
        outputs["TableArn"],
        outputs["QueueArn"],
        outputs["DeadLetterQueueArn"],
        f"{outputs['TableArn']}/index/{STATUS_INDEX}",
        f"{outputs['TableArn']}/index/{RECENT_INDEX}",
    }
    for path in written:
        document = json.loads(path.read_text())
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            assert all("*" not in action for action in statement["Action"])
            if statement["Sid"] == "OwnLogs":
                assert all(f"/aws/lambda/heavy-jobs-{stage}" in r for r in statement["Resource"])
            else:
                assert set(statement["Resource"]) <= own
    grants = {
        handler: actions_of(tmp_path / ".chalice" / f"policy-{stage}-{handler}.json")
        for handler in handlers
    }
    assert "sqs:SendMessage" in grants["api_handler"]
    assert "dynamodb:Scan" not in set().union(*grants.values())  # listings use indexes
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= grants["process_job"]
    assert "dynamodb:PutItem" not in grants["process_job"]  # workers never create jobs
    assert grants["recover_stalled_jobs"] == {
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
        *policies.LOG_ACTIONS,
    }


def actions_of(path: Path) -> set[str]:
    document = json.loads(path.read_text())
    return {action for statement in document["Statement"] for action in statement["Action"]}


def test_autogenerated_policy_is_off() -> None:
    config = json.loads((stack.PROJECT_DIR / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False


def test_job_records_expire_through_the_table_ttl() -> None:
    template = (stack.TEMPLATE).read_text()
    assert "TimeToLiveSpecification" in template
    with mock_aws():
        cfn = boto3.client("cloudformation")
        stack.apply(cfn, "heavy-jobs-ttl", PARAMS)
        resources = cfn.describe_stack_resources(StackName="heavy-jobs-ttl")
    table = next(r for r in resources["StackResources"] if r["LogicalResourceId"] == "JobTable")
    assert table["ResourceStatus"] == "CREATE_COMPLETE"
    # moto ignores TimeToLiveSpecification, so check the template's own declaration.
    body = cfn_template_resource("JobTable")
    assert body["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": {"Ref": "ExpiryAttributeName"},
        "Enabled": True,
    }
    assert (
        stack.parameters_for_stage(stack.load_chalice_config("local"), "local")[
            "ExpiryAttributeName"
        ]
        == EXPIRES_AT
    )


def cfn_template_resource(logical_id: str) -> Any:
    from cfnlint.decode import decode_str

    template, errors = decode_str(stack.TEMPLATE.read_text())
    assert not errors
    return template["Resources"][logical_id]
