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

from chalicelib.events import EVENT_SOURCE
from chalicelib.jobs import EXPIRES_AT, INDEXES, SCHEMA_ITEM
from chalicelib.queue import MAX_RECEIVE_COUNT, MESSAGE_GROUP
from chalicelib.store import JobTable, MigrationReport
from infra import policies, stack

PARAMS = {"VisibilityTimeoutSeconds": "60", "ExpiryAttributeName": EXPIRES_AT}
FOURTEEN_DAYS = 14 * 24 * 3600


def test_template_declares_the_queues_and_the_table(aws: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=aws["QueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == aws["DeadLetterQueueArn"]
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT  # the code's, not typed again
    assert MAX_RECEIVE_COUNT >= 5  # AWS's advice for an SQS-triggered function
    table = boto3.client("dynamodb").describe_table(TableName=aws["TableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]


def test_job_queue_and_its_dlq_are_fifo_and_the_delay_queue_standard(aws: dict[str, str]) -> None:
    sqs = boto3.client("sqs")

    def attributes(url_key: str) -> dict[str, str]:
        return dict(
            sqs.get_queue_attributes(QueueUrl=aws[url_key], AttributeNames=["All"])["Attributes"]
        )

    for url_key in ("QueueUrl", "DeadLetterQueueUrl"):
        fifo = attributes(url_key)
        assert fifo["FifoQueue"] == "true" and aws[url_key].endswith(".fifo")
        # Every send names its deduplication id (DESIGN section 1): no content dedup.
        assert fifo["ContentBasedDeduplication"] == "false"
    delay = attributes("DelayQueueUrl")
    assert delay.get("FifoQueue", "false") == "false"  # FIFO has no per-message delay
    assert "RedrivePolicy" not in delay
    # A message without a group or a deduplication id is refused: the job queue is FIFO.
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.send_message(QueueUrl=aws["QueueUrl"], MessageBody="x", MessageGroupId=MESSAGE_GROUP)


@pytest.mark.parametrize("url_key", ["QueueUrl", "DeadLetterQueueUrl", "DelayQueueUrl"])
def test_every_queue_keeps_messages_14_days_encrypted(aws: dict[str, str], url_key: str) -> None:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws[url_key], AttributeNames=["All"]
    )["Attributes"]
    assert int(attributes["MessageRetentionPeriod"]) == FOURTEEN_DAYS
    assert attributes["SqsManagedSseEnabled"] == "true"
    body = cfn_template_resource(
        {"QueueUrl": "JobQueue", "DeadLetterQueueUrl": "DeadLetterQueue"}.get(url_key, "DelayQueue")
    )
    assert body["Properties"]["SqsManagedSseEnabled"] is True


def test_table_has_exactly_the_indexes_the_code_queries(aws: dict[str, str]) -> None:
    table = boto3.client("dynamodb").describe_table(TableName=aws["TableName"])["Table"]
    described = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(described) == {shape.name for shape in INDEXES}
    for shape in INDEXES:
        index = described[shape.name]
        assert [k["AttributeName"] for k in index["KeySchema"]] == [
            shape.partition_key,
            shape.sort_key,
        ]
        projection = index["Projection"]
        if shape.projected:
            assert projection["ProjectionType"] == "INCLUDE"
            assert projection["NonKeyAttributes"] == list(shape.projected)
        else:
            assert projection["ProjectionType"] == "KEYS_ONLY"


def test_point_in_time_recovery_is_a_template_parameter() -> None:
    template = stack.load_template()
    parameter = template["Parameters"]["PointInTimeRecovery"]
    assert parameter["AllowedValues"] == ["true", "false"] and parameter["Default"] == "false"
    spec = template["Resources"]["JobTable"]["Properties"]["PointInTimeRecoverySpecification"]
    assert spec == {
        "PointInTimeRecoveryEnabled": {"Fn::If": ["PointInTimeRecoveryOn", True, False]}
    }
    assert template["Conditions"]["PointInTimeRecoveryOn"] == {
        "Fn::Equals": [{"Ref": "PointInTimeRecovery"}, "true"]
    }


def test_rendered_template_passes_cfn_lint(tmp_path: Path) -> None:
    import subprocess

    rendered = tmp_path / "rendered.json"
    rendered.write_text(json.dumps(stack.load_template()))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Each queue, its template parameter, and the function that consumes it.
QUEUES = [
    ("QueueUrl", "VisibilityTimeoutSeconds", "process_job"),
    ("DeadLetterQueueUrl", "DeadLetterVisibilityTimeoutSeconds", "process_dead_letters"),
    ("DelayQueueUrl", "DelayVisibilityTimeoutSeconds", "forward_delayed"),
    ("WebhookQueueUrl", "WebhookVisibilityTimeoutSeconds", "deliver_webhooks"),
]


@pytest.mark.parametrize(("queue_url", "parameter", "consumer"), QUEUES)
def test_visibility_timeout_is_the_consumers_timeout(
    aws: dict[str, str], queue_url: str, parameter: str, consumer: str
) -> None:
    """1 x, not AWS's 6 x: a failure the code cannot see holds the FIFO lane for the
    visibility timeout, and Lambda requires no more than the function's timeout."""
    config = stack.load_chalice_config("local")
    timeout = config.scope("local", consumer).lambda_timeout
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws[queue_url], AttributeNames=["VisibilityTimeout"]
    )
    visibility = int(attributes["Attributes"]["VisibilityTimeout"])
    assert visibility >= timeout  # Lambda refuses the mapping otherwise
    assert visibility == timeout


@pytest.mark.parametrize("stage", ["local", "dev", "prod"])
def test_template_defaults_are_what_apply_passes(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template's Defaults (what a stack applied without parameters gets) match what
    apply derives: the consumers' timeouts from config.json, maxReceiveCount from the code."""
    monkeypatch.delitem(sys.modules, "app", raising=False)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the import sets the stage's variables
    passed = stack.parameters_for_stage(stack.load_chalice_config(stage), stage)
    declared = stack.load_template()["Parameters"]
    assert passed["MaxReceiveCount"] == str(MAX_RECEIVE_COUNT)
    for _, parameter, _ in QUEUES:
        assert str(declared[parameter]["Default"]) == passed[parameter], parameter
    assert str(declared["MaxReceiveCount"]["Default"]) == passed["MaxReceiveCount"], (
        "infra/template.yaml's MaxReceiveCount Default is not chalicelib.queue.MAX_RECEIVE_COUNT"
    )
    assert passed["JobEventSource"] == EVENT_SOURCE
    assert declared["JobEventSource"]["Default"] == EVENT_SOURCE, (
        "infra/template.yaml's JobEventSource Default is not chalicelib.events.EVENT_SOURCE"
    )


def test_worker_settings_come_from_chalice_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chalice imports app.py once per process; drop it so the dev stage's import is fresh.
    monkeypatch.delitem(sys.modules, "app", raising=False)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the import sets dev's variables
    config = stack.load_chalice_config("dev")
    assert stack.queue_consumers(config) == {
        "process_job": "heavy-jobs-dev-queue.fifo",
        "forward_delayed": "heavy-jobs-dev-delay",
        "process_dead_letters": "heavy-jobs-dev-dlq.fifo",
        "deliver_webhooks": "heavy-jobs-dev-webhooks",
    }
    # Webhook deliveries have concurrency of their own: a slow endpoint never takes the
    # API's or the worker's.
    assert config.scope("dev", "deliver_webhooks").reserved_concurrency >= 1
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
        # The job, dead-letter and delay queues, the schedules' and the job events' failures,
        # the webhooks queue and its dead-letter queue.
        assert len(boto3.client("sqs").list_queues()["QueueUrls"]) == 7


@pytest.mark.parametrize("stage", ["local", "dev", "prod"])
def test_committed_config_names_match_the_stack_outputs(stage: str) -> None:
    """config.json holds exactly what applying the template writes there, but for the ARNs
    of a deployed stage: an ARN names the account, which only ``make deploy`` knows (it
    writes them; ``make package`` refers to the stack's own), so the committed config of
    dev and prod holds none, rather than the emulator's account. The local stage's are the
    emulator's own."""
    with mock_aws():
        cfn = boto3.client("cloudformation")
        outputs = stack.apply(cfn, f"heavy-jobs-{stage}", PARAMS)
    config = json.loads((stack.PROJECT_DIR / ".chalice" / "config.json").read_text())
    declared = config["stages"][stage]["environment_variables"]
    arns = {stack.OUTPUT_SETTINGS[key] for key in stack.OUTPUT_SETTINGS if key.endswith("Arn")}
    assert arns, "the stack has outputs that are ARNs"
    for name, value in stack.stage_environment(stage, outputs).items():
        if stage != "local" and name in arns:
            assert name not in declared, f"{stage}'s committed config names an account"
        else:
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

    handlers = [
        "api_handler",
        "process_job",
        "forward_delayed",
        "process_dead_letters",
        "recover_stalled_jobs",
        "fire_schedule",
        "publish_job_events",
        "deliver_webhooks",
    ]
    assert sorted(p.name for p in written) == sorted(
        f"policy-{stage}-{handler}.json" for handler in handlers
    )
    own = {
        outputs["TableArn"],
        outputs["QueueArn"],
        outputs["DeadLetterQueueArn"],
        outputs["DelayQueueArn"],
        outputs["WebhookQueueArn"],
        outputs["SchedulerRoleArn"],
        outputs["TableStreamArn"],
        outputs["JobEventBusArn"],
        outputs["JobEventsFailedQueueArn"],
        *(f"{outputs['TableArn']}/index/{shape.name}" for shape in INDEXES),
    }
    for path in written:
        document = json.loads(path.read_text())
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            assert all("*" not in action for action in statement["Action"])
            if statement["Sid"] == "OwnLogs":
                assert all(f"/aws/lambda/heavy-jobs-{stage}" in r for r in statement["Resource"])
            elif statement["Sid"] == "OwnTraces":
                # The stage traces; X-Ray's write actions have no resource type but "*".
                assert config.xray_enabled is True
                assert statement["Action"] == policies.XRAY_ACTIONS
                assert statement["Resource"] == ["*"]
            elif statement["Action"] == ["apigateway:GET"]:
                # The API reads its callers' key names (GetApiKey): keys of its region only.
                assert path.name == f"policy-{stage}-api_handler.json"
                assert statement["Resource"] == ["arn:aws:apigateway:us-east-1::/apikeys/*"]
            elif statement["Action"][0].startswith("scheduler:"):
                # The API manages the schedules of its stage's group only.
                assert path.name == f"policy-{stage}-api_handler.json"
                group = outputs["ScheduleGroupName"]
                assert statement["Resource"] == [
                    f"arn:aws:scheduler:us-east-1:123456789012:schedule/{group}/*"
                ]
            else:
                assert set(statement["Resource"]) <= own
    grants = {
        handler: actions_of(tmp_path / ".chalice" / f"policy-{stage}-{handler}.json")
        for handler in handlers
    }
    assert "sqs:SendMessage" in grants["api_handler"]
    # Failing a submission releases its Idempotency-Key in the same transaction.
    assert "dynamodb:DeleteItem" in grants["api_handler"]
    # POST /jobs/batch writes its jobs with BatchWriteItem (its SendMessageBatch is
    # granted by SendMessage).
    assert "dynamodb:BatchWriteItem" in grants["api_handler"]
    # The API passes the Scheduler its role; only the firing function is invoked by it.
    assert "iam:PassRole" in grants["api_handler"]
    assert "iam:PassRole" not in grants["fire_schedule"]
    assert "sqs:SendMessage" in grants["fire_schedule"]
    assert "dynamodb:Scan" not in set().union(*grants.values())  # listings use indexes
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= grants["process_job"]
    assert "sqs:ChangeMessageVisibility" in grants["process_job"]  # the message hold
    assert "dynamodb:PutItem" not in grants["process_job"]  # workers never create jobs
    # Deliveries read endpoints and record attempts; they never create or delete.
    assert grants["deliver_webhooks"] == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
        *policies.LOG_ACTIONS,
        *policies.XRAY_ACTIONS,
    }
    assert grants["forward_delayed"] == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
        *policies.LOG_ACTIONS,
        *policies.XRAY_ACTIONS,
    }
    assert grants["recover_stalled_jobs"] == {
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",
        *policies.LOG_ACTIONS,
        *policies.XRAY_ACTIONS,
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
    # (moto lists the schedule group, a type its CloudFormation skips, without an id.)
    table = next(r for r in resources["StackResources"] if r.get("LogicalResourceId") == "JobTable")
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


def test_apply_says_so_when_the_migration_left_items_to_migrate_again(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A migration that gave up on items still changing under it (it then records no
    version) is reported on stderr with what to do; the next apply migrates again."""
    ddb = boto3.client("dynamodb")
    ddb.delete_item(TableName=aws["TableName"], Key={"job_id": {"S": SCHEMA_ITEM}})
    migrations: list[int] = []

    def migrate(table: JobTable, page_size: int = 200) -> MigrationReport:
        migrations.append(page_size)
        return MigrationReport(scanned=4, rewritten=1, unsettled=2)

    monkeypatch.setattr(JobTable, "migrate", migrate)
    capsys.readouterr()

    stack.apply_stage("local", cfn=boto3.client("cloudformation"))

    assert migrations == [200]
    assert capsys.readouterr().err == (
        f"Job table {aws['TableName']}: 2 of 4 items changed each time the migration read "
        "them and were left as they were; apply the stage again to finish the migration\n"
    )
