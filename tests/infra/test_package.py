"""`make package` for pipelines: needs no AWS, merges the stack in, and passes cfn-lint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib import config as settings
from chalicelib.events import STREAM_MAX_RETRY_ATTEMPTS, STREAM_STARTING_POSITION
from chalicelib.queue import MAX_RECEIVE_COUNT
from infra import encryption, operations, policies, stack
from infra.deploy import event_stream
from infra.deploy.access import Throttle
from infra.deploy.chalice_project import load_template
from infra.deploy.packaging import ANY_ACCOUNT, ANY_REGION, function_logical_id
from tests.infra.conftest import KEYED_STAGE, PACKAGE_KEY
from tests.infra.conftest import PACKAGED_STAGES as STAGES
from tests.infra.harness import VENV, stage_config


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV / "bin" / "cfn-lint"), str(path)], capture_output=True, text=True, check=False
    )


def test_template_passes_cfn_lint() -> None:
    result = cfn_lint(stack.TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_package_passes_cfn_lint(packaged: dict[str, Path], stage: str) -> None:
    assert (packaged[stage] / "deployment.zip").is_file()
    result = cfn_lint(packaged[stage] / "sam.json")
    assert result.returncode == 0, result.stdout + result.stderr


def load(packaged: dict[str, Path], stage: str) -> dict[str, Any]:
    return dict(json.loads((packaged[stage] / "sam.json").read_text()))


@pytest.mark.parametrize("stage", STAGES)
def test_package_holds_the_stack_under_the_names_the_app_uses(
    packaged: dict[str, Path], stage: str
) -> None:
    resources = load(packaged, stage)["Resources"]
    environment = resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert resources["JobQueue"]["Properties"]["QueueName"] == environment[settings.QUEUE_NAME]
    assert resources["JobTable"]["Properties"]["TableName"] == environment[settings.TABLE_NAME]
    assert resources["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    worker = resources["ProcessJob"]["Properties"]
    assert worker["ReservedConcurrentExecutions"] == 1
    (event,) = worker["Events"].values()
    assert event["Properties"]["Queue"]["Fn::Sub"].endswith(":" + environment[settings.QUEUE_NAME])


@pytest.mark.parametrize("stage", STAGES)
def test_package_parameters_default_to_what_deploy_passes(
    packaged: dict[str, Path], stage: str
) -> None:
    parameters = load(packaged, stage)["Parameters"]
    config = stage_config(stage)
    for parameter, consumer in (
        ("VisibilityTimeoutSeconds", "process_job"),
        ("DeadLetterVisibilityTimeoutSeconds", "process_dead_letters"),
        ("DelayVisibilityTimeoutSeconds", "forward_delayed"),
        ("WebhookVisibilityTimeoutSeconds", "deliver_webhooks"),
    ):
        timeout = config.scope(stage, consumer).lambda_timeout
        visibility = int(parameters[parameter]["Default"])
        assert visibility >= timeout, parameter  # Lambda refuses the mapping otherwise
        assert visibility == timeout, parameter  # 1 x: a failure holds the lane no longer
    assert int(parameters["MaxReceiveCount"]["Default"]) == MAX_RECEIVE_COUNT
    assert MAX_RECEIVE_COUNT >= 5  # AWS's advice for an SQS-triggered function


@pytest.mark.parametrize("stage", STAGES)
def test_package_policies_name_the_packaged_stack_in_any_account(
    packaged: dict[str, Path], stage: str
) -> None:
    text = (packaged[stage] / "sam.json").read_text()
    assert "123456789012" not in text  # no account baked in (moto's, or anyone's)
    assert ANY_REGION not in text and ANY_ACCOUNT not in text
    template = load(packaged, stage)
    stack_resources = set(load_template()["Resources"])
    # The functions' roles; the role EventBridge Scheduler assumes is the stack's own.
    scheduler_role = template["Resources"]["SchedulerRole"]
    roles = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::Role" and r is not scheduler_role
    ]
    assert len(roles) >= 2
    (invoke, dead_letter) = scheduler_role["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    assert invoke["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
        f"heavy-jobs-{stage}-fire_schedule"
    }
    assert dead_letter["Resource"] == {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}
    for role in roles:
        (policy,) = role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement["Sid"] == "OwnTraces":  # X-Ray's write actions have no resource type
                assert statement["Action"] == policies.XRAY_ACTIONS
                assert statement["Resource"] == ["*"]
                continue
            for resource in statement["Resource"]:
                if statement["Action"] == ["apigateway:GET"]:  # the callers' API keys
                    assert resource == {
                        "Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}::/apikeys/*"
                    }
                elif statement["Action"][0].startswith("scheduler:"):  # the stage's group
                    assert resource == {
                        "Fn::Sub": "arn:${AWS::Partition}:scheduler:${AWS::Region}:"
                        f"${{AWS::AccountId}}:schedule/{template_group(template)}/*"
                    }
                elif statement["Sid"] == "OwnLogs":
                    assert resource["Fn::Sub"].startswith(
                        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                    )
                else:
                    assert refers_to(resource) in stack_resources


def template_group(template: dict[str, Any]) -> str:
    """The packaged stack's schedule group name."""
    return str(template["Resources"]["ScheduleGroup"]["Properties"]["Name"])


def refers_to(resource: Any) -> str:
    """The template resource an ARN expression names: GetAtt X.Arn (or the job table's
    X.StreamArn), or ${X.Arn}/..."""
    if "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn" or (logical_id, attribute) == ("JobTable", "StreamArn")
        return str(logical_id)
    variable, _, _ = resource["Fn::Sub"].partition(".Arn}/")
    assert variable.startswith("${")
    return str(variable[2:])


@pytest.mark.parametrize("stage", STAGES)
def test_package_has_the_usage_plan_only_where_a_key_is_required(
    packaged: dict[str, Path], stage: str
) -> None:
    resources = load(packaged, stage)["Resources"]
    types = {r["Type"] for r in resources.values()}
    api_access = {
        "AWS::ApiGateway::UsagePlan",
        "AWS::ApiGateway::ApiKey",
        "AWS::ApiGateway::UsagePlanKey",
    }
    if stage == "dev":
        assert not types & api_access
        return
    assert api_access <= types
    throttle = resources["ApiUsagePlan"]["Properties"]["Throttle"]
    assert throttle == {
        "RateLimit": Throttle().rate_limit,
        "BurstLimit": Throttle().burst_limit,
    }
    assert resources["ApiKey"]["Properties"]["Name"] == stack.stack_name("heavy-jobs", stage)


@pytest.mark.parametrize("stage", STAGES)
def test_package_ships_unchecked_bytecode_for_every_module(
    packaged: dict[str, Path], stage: str, tmp_path: Path
) -> None:
    import importlib.util
    import zipfile

    with zipfile.ZipFile(packaged[stage] / "deployment.zip") as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path)
    sources = [n for n in names if n.endswith(".py")]
    assert "app.py" in sources and "chalicelib/worker.py" in sources
    missing = [s for s in sources if importlib.util.cache_from_source(s) not in names]
    assert missing == []
    pyc = (tmp_path / importlib.util.cache_from_source("app.py")).read_bytes()
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, source not checked
    # Lambda's task root is read-only: the entry point imports with nothing written.
    env = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(tmp_path),
        "JOBS_QUEUE_NAME": "q",
        "JOBS_DEAD_LETTER_QUEUE_NAME": "dlq",
        "JOBS_DELAY_QUEUE_NAME": "delay",
        "JOBS_WEBHOOK_QUEUE_NAME": "webhooks",
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import app, sys; print(sys.modules['app'].__cached__)"],
        env={**env, "PATH": "/usr/bin:/bin"}, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr


def functions_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


@pytest.mark.parametrize("stage", STAGES)
def test_each_functions_role_allows_exactly_its_own_log_group(
    packaged: dict[str, Path], stage: str
) -> None:
    """Lambda writes to /aws/lambda/<function name>: a role allowing another group (as with
    names CloudFormation generates) denies the function its logs, and so its metrics."""
    template = load(packaged, stage)
    functions = functions_of(template)
    assert len(functions) == len(stack.handler_names(stage_config(stage)))
    prefix = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
    for properties in functions.values():
        name = properties["FunctionName"]
        role_id, _ = properties["Role"]["Fn::GetAtt"]
        (policy,) = template["Resources"][role_id]["Properties"]["Policies"]
        (logs,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Sid"] == "OwnLogs"]
        group = f"{prefix}/aws/lambda/{name}"
        assert [r["Fn::Sub"] for r in logs["Resource"]] == [group, f"{group}:*"]


@pytest.mark.parametrize("stage", STAGES)
def test_functions_have_the_names_make_deploy_gives(packaged: dict[str, Path], stage: str) -> None:
    names = {p["FunctionName"] for p in functions_of(load(packaged, stage)).values()}
    config = stage_config(stage)
    assert names == set(stack.function_names(config, stage))


@pytest.mark.parametrize("stage", STAGES)
def test_only_the_functions_in_the_sqs_loop_may_recurse(
    packaged: dict[str, Path], stage: str, tmp_path: Path
) -> None:
    functions = functions_of(load(packaged, stage))
    loops = {logical_id: p.get("RecursiveLoop") for logical_id, p in functions.items()}
    assert loops["ProcessJob"] == "Allow"  # continuations and retries re-enter it
    # Fed by API Gateway, by SQS's redrive, by a schedule: AWS's default (Terminate).
    for not_a_loop in ("APIHandler", "ProcessDeadLetters", "RecoverStalledJobs"):
        assert loops[not_a_loop] is None
    # cfn-lint checks SAM's property exists (an unknown one fails E3002) but not its value:
    # the value SAM passes on must be one AWS::Lambda::Function takes.
    probe = tmp_path / "probe.json"
    function = {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": "python3.11",
            "Handler": "app.process_job",
            "Role": "arn:aws:iam::123456789012:role/probe",
            "Code": {"ZipFile": "x"},
            "RecursiveLoop": functions["ProcessJob"]["RecursiveLoop"],
        },
    }
    probe.write_text(json.dumps({"Resources": {"Probe": function}}))
    result = cfn_lint(probe)
    assert result.returncode == 0, result.stdout
    function["Properties"]["RecursiveLoop"] = "Sometimes"
    probe.write_text(json.dumps({"Resources": {"Probe": function}}))
    assert "E3030" in cfn_lint(probe).stdout  # the probe can fail


@pytest.mark.parametrize("stage", STAGES)
def test_package_holds_the_operations_stack_and_the_access_log(
    packaged: dict[str, Path], stage: str
) -> None:
    template = load(packaged, stage)
    resources = template["Resources"]
    ops = load_template(operations.TEMPLATE)
    assert set(ops["Resources"]) <= set(resources)
    ops_name = operations.ops_stack_name("heavy-jobs", stage)
    assert resources["Dashboard"]["Properties"]["DashboardName"] == ops_name
    assert resources["AlarmTopic"]["Properties"]["TopicName"] == f"{ops_name}-alarms"
    config = stage_config(stage)
    values = operations.StageOperations.from_config(config, stage)
    for parameter, value in operations.parameters(config, stage, values).items():
        assert str(template["Parameters"][parameter].get("Default", "")) == value, parameter
    access = resources["RestAPI"]["Properties"]["AccessLogSetting"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert json.loads(access["Format"])["requestId"] == "$context.requestId"


@pytest.mark.parametrize(("stage", "enabled"), [("dev", "false"), ("prod", "true")])
def test_package_sets_point_in_time_recovery_per_stage(
    packaged: dict[str, Path], stage: str, enabled: str
) -> None:
    parameters = load(packaged, stage)["Parameters"]
    assert parameters[operations.POINT_IN_TIME_RECOVERY]["Default"] == enabled


@pytest.mark.parametrize("stage", STAGES)
def test_package_traces_every_function_and_the_api_stage(
    packaged: dict[str, Path], stage: str
) -> None:
    """The stage's "xray" setting, in the SAM template: functions Tracing Active, with the
    X-Ray write grant on each role, and the REST API's stage TracingEnabled."""
    assert stage_config(stage).xray_enabled is True
    template = load(packaged, stage)
    functions = functions_of(template)
    assert len(functions) == len(stack.handler_names(stage_config(stage)))
    for properties in functions.values():
        assert properties["Tracing"] == "Active"
        role_id, _ = properties["Role"]["Fn::GetAtt"]
        (policy,) = template["Resources"][role_id]["Properties"]["Policies"]
        actions = [s["Action"] for s in policy["PolicyDocument"]["Statement"]]
        assert policies.XRAY_ACTIONS in actions
    assert template["Resources"]["RestAPI"]["Properties"]["TracingEnabled"] is True


@pytest.mark.parametrize("stage", STAGES)
def test_package_guards_the_account_as_make_deploy_does(
    packaged: dict[str, Path], stage: str
) -> None:
    """The API function's reserved concurrency (its ceiling in the account) and the stage's
    default throttling of every method, from the stage's settings."""
    config = stage_config(stage)
    resources = load(packaged, stage)["Resources"]
    reserved = config.scope(stage, "api_handler").reserved_concurrency
    assert reserved is not None and reserved > 0
    assert resources["APIHandler"]["Properties"]["ReservedConcurrentExecutions"] == reserved
    values = operations.StageOperations.from_config(config, stage)
    (setting,) = resources["RestAPI"]["Properties"]["MethodSettings"]
    assert setting == {
        "ResourcePath": "/*",
        "HttpMethod": "*",
        "ThrottlingRateLimit": values.method_throttle_rate_limit,
        "ThrottlingBurstLimit": values.method_throttle_burst_limit,
    }


# --- a stage that names a customer-managed KMS key ------------------------------------------


def _key_properties(resource_type: str) -> set[str]:
    """The properties a key sets on a resource of ``resource_type``, and those it replaces."""
    named = set(encryption.key_properties(resource_type, PACKAGE_KEY))
    return named | set(encryption.REPLACED.get(resource_type, ()))


def _without_key(template: dict[str, Any]) -> dict[str, Any]:
    """``template``'s resources with every key property and the roles' key grant removed."""
    stripped = {}
    for logical_id, resource in template["Resources"].items():
        resource = json.loads(json.dumps(resource))
        properties = resource.get("Properties", {})
        if resource["Type"] in encryption.KEYED_TYPES:
            for name in _key_properties(resource["Type"]):
                properties.pop(name, None)
        if resource["Type"] == "AWS::IAM::Role":
            for policy in properties["Policies"]:
                document = policy["PolicyDocument"]
                document["Statement"] = [
                    s for s in document["Statement"] if s.get("Sid") != policies.KEY_STATEMENT
                ]
        stripped[logical_id] = resource
    return stripped


def test_every_resource_of_the_package_is_known_to_store_data_or_not(
    packaged: dict[str, Path], packaged_with_key: Path
) -> None:
    """A new kind of resource (a schedule, a bucket) must be declared in infra/encryption.py
    as one the key encrypts or one that stores nothing, before it ships."""
    types = {
        r["Type"]
        for r in json.loads((packaged_with_key / "sam.json").read_text())["Resources"].values()
    }
    for stage in STAGES:
        types |= {r["Type"] for r in load(packaged, stage)["Resources"].values()}
    assert types <= set(encryption.KEYED_TYPES) | set(encryption.UNKEYED_TYPES)
    assert not set(encryption.KEYED_TYPES) & set(encryption.UNKEYED_TYPES)


def test_a_named_key_encrypts_everything_the_stage_stores(packaged_with_key: Path) -> None:
    """The table, every queue (no SSE-SQS beside the key), the alarm topic, the access log
    group and every function's environment name the stage's key."""
    resources = json.loads((packaged_with_key / "sam.json").read_text())["Resources"]
    keyed = {i: r for i, r in resources.items() if r["Type"] in encryption.KEYED_TYPES}
    assert {r["Type"] for r in keyed.values()} == {
        "AWS::SQS::Queue",
        "AWS::DynamoDB::Table",
        "AWS::SNS::Topic",
        "AWS::Logs::LogGroup",
        "AWS::Serverless::Function",
    }
    # The job queue, its dead-letter and delay queues, the schedules' dead-letter queue, the
    # job events' failure queue, and the webhooks queue and its dead-letter queue.
    assert len([r for r in keyed.values() if r["Type"] == "AWS::SQS::Queue"]) == 7
    # EventBridge Scheduler's role sends a fire it gave up on to that last one: it may use
    # the key for it, and for nothing else.
    (scheduler_policy,) = resources["SchedulerRole"]["Properties"]["Policies"]
    key_grants = [
        s
        for s in scheduler_policy["PolicyDocument"]["Statement"]
        if s.get("Sid") == policies.KEY_STATEMENT
    ]
    assert key_grants == [
        {
            "Sid": policies.KEY_STATEMENT,
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": PACKAGE_KEY,
        }
    ]
    for logical_id, resource in keyed.items():
        properties = resource["Properties"]
        wanted = encryption.key_properties(resource["Type"], PACKAGE_KEY)
        assert {k: properties.get(k) for k in wanted} == wanted, logical_id
        assert "SqsManagedSseEnabled" not in properties, logical_id
    (table,) = [r for r in keyed.values() if r["Type"] == "AWS::DynamoDB::Table"]
    assert table["Properties"]["SSESpecification"]["SSEType"] == "KMS"
    result = cfn_lint(packaged_with_key / "sam.json")  # CloudFormation takes them as written
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_named_key_changes_nothing_but_encryption_and_each_roles_use_of_it(
    packaged: dict[str, Path], packaged_with_key: Path
) -> None:
    """Without the key's properties (and SSE-SQS, which the key replaces) and grants, the
    keyed package is the keyless one; the keyless one names no key at all: SSE-SQS on the
    queues, AWS's keys everywhere else, as before keys could be named."""
    keyless = load(packaged, KEYED_STAGE)
    keyed = json.loads((packaged_with_key / "sam.json").read_text())
    assert set(keyed["Resources"]) == set(keyless["Resources"])
    stripped, keyless_stripped = _without_key(keyed), _without_key(keyless)
    for logical_id, resource in keyless_stripped.items():
        assert stripped[logical_id] == resource, logical_id
        if resource["Type"] in (*encryption.KEYED_TYPES, "AWS::IAM::Role"):  # and the key did
            assert keyed["Resources"][logical_id] != keyless["Resources"][logical_id], logical_id
    text = json.dumps(keyless)
    for named in ("KmsMasterKeyId", "KMSMasterKeyId", "KmsKeyId", "KmsKeyArn", "kms:"):
        assert named not in text
    queues = [r for r in keyless["Resources"].values() if r["Type"] == "AWS::SQS::Queue"]
    assert all(q["Properties"]["SqsManagedSseEnabled"] is True for q in queues)


def test_each_role_may_use_the_key_for_exactly_what_its_calls_need(
    packaged_with_key: Path,
) -> None:
    """Decrypt for every function (its environment, received messages, the table key); a
    data key for those that send to a queue; on the stage's key and nothing else."""
    template = json.loads((packaged_with_key / "sam.json").read_text())
    config = stage_config(KEYED_STAGE)
    handlers = {
        policies.lambda_function_name(config.app_name, KEYED_STAGE, h): h
        for h in stack.handler_names(config)
    }
    functions = functions_of(template)
    assert len(functions) == len(handlers)
    for properties in functions.values():
        handler = handlers[properties["FunctionName"]]
        role_id, _ = properties["Role"]["Fn::GetAtt"]
        (policy,) = template["Resources"][role_id]["Properties"]["Policies"]
        statements = policy["PolicyDocument"]["Statement"]
        key_statements = [s for s in statements if any(a.startswith("kms:") for a in s["Action"])]
        assert key_statements == [
            {
                "Sid": policies.KEY_STATEMENT,
                "Effect": "Allow",
                "Action": policies.key_actions(handler),
                "Resource": [PACKAGE_KEY],
            }
        ]
        sends = any("sqs:SendMessage" in s["Action"] for s in statements)
        assert key_statements[0]["Action"] == (
            ["kms:Decrypt", "kms:GenerateDataKey"] if sends else ["kms:Decrypt"]
        )


@pytest.mark.parametrize("stage", STAGES)
def test_the_event_publisher_reads_the_stacks_stream_with_bounded_retries(
    packaged: dict[str, Path], stage: str
) -> None:
    """publish_job_events' DynamoDB event: the packaged table's own stream, bisect on
    error, bounded retries, the events' failure queue, partial batch responses."""
    resources = load(packaged, stage)["Resources"]
    function = resources[function_logical_id(event_stream.HANDLER)]["Properties"]
    (event,) = function["Events"].values()
    assert event["Type"] == "DynamoDB"
    properties = event["Properties"]
    assert properties["Stream"] == {"Fn::GetAtt": ["JobTable", "StreamArn"]}
    assert properties["StartingPosition"] == STREAM_STARTING_POSITION
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["MaximumRetryAttempts"] == STREAM_MAX_RETRY_ATTEMPTS
    assert properties["DestinationConfig"] == {
        "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": ["JobEventsFailedQueue", "Arn"]}}
    }
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_standard_queues_mapping_is_capped_at_its_functions_reservation(
    packaged: dict[str, Path], stage: str
) -> None:
    """The webhook deliveries' SQS event: ScalingConfig.MaximumConcurrency equal to the
    function's reserved concurrency in .chalice/config.json (and in the package), so a burst
    waits in the queue instead of being throttled toward the dead-letter queue. The worker's
    FIFO mapping and the other SQS events are as Chalice writes them."""
    resources = load(packaged, stage)["Resources"]
    config = stage_config(stage)
    capped = {}
    for handler in stack.queue_consumers(config):
        function = resources[function_logical_id(handler)]["Properties"]
        (event,) = function["Events"].values()  # merged over Chalice's event, not beside it
        assert event["Type"] == "SQS"
        if "ScalingConfig" in event["Properties"]:
            capped[handler] = event["Properties"]["ScalingConfig"]["MaximumConcurrency"]
            assert capped[handler] == function["ReservedConcurrentExecutions"]
    reserved = config.scope(stage, "deliver_webhooks").reserved_concurrency
    assert capped == {"deliver_webhooks": reserved}
    assert 2 <= reserved <= 1000  # ScalingConfig's range (AWS::Lambda::EventSourceMapping)
