"""infra/deploy/'s and infra/operations.py's pieces for operating a stage, one at a time:
the concurrency pre-flight, recursion, the deploy record in SSM, per-stage settings, the
alarms, log retention, access logs, pause/resume. Calls moto does not implement are
checked against a botocore Stubber (the exact requests made); the rest run under moto."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from chalice.config import Config
from moto import mock_aws

from chalicelib import config as settings
from chalicelib import connections, observability
from chalicelib.observability import NAMESPACE, Metric
from infra import encryption, operations, stack
from infra.deploy import chalice_project, lifecycle, state
from infra.deploy.event_stream import FAILED_QUEUE_OUTPUT
from tests.infra import moto_bridges
from tests.infra.harness import searched_functions, stage_config

REGION = "us-east-1"
WORKER = "heavy-jobs-dev-process_job"


@pytest.fixture(scope="module")
def dev_config() -> Config:
    return stage_config("dev")


@pytest.fixture(scope="module")
def prod_config() -> Config:
    return stage_config("prod")


def lambda_stub() -> tuple[Any, Stubber]:
    client = boto3.client("lambda", region_name=REGION)
    return client, Stubber(client)


def account(unreserved: int, total: int = 1000) -> dict[str, Any]:
    return {
        "AccountLimit": {
            "ConcurrentExecutions": total,
            "UnreservedConcurrentExecutions": unreserved,
        }
    }


def no_function(stubber: Stubber, name: str) -> None:
    stubber.add_client_error(
        "get_function_concurrency",
        service_error_code="ResourceNotFoundException",
        http_status_code=404,
        expected_params={"FunctionName": name},
    )


# --- pre-flight: the account's concurrency ------------------------------------------------

API = "heavy-jobs-dev"  # the API function (Chalice names it after the app and stage)
# What dev reserves (.chalice/config.json): the API's ceiling, the worker's one lane and
# the webhook deliveries' own.
DEV_API_RESERVED, DEV_WORKER_RESERVED, DEV_WEBHOOKS_RESERVED = 10, 1, 5
DEV_RESERVED = DEV_API_RESERVED + DEV_WORKER_RESERVED + DEV_WEBHOOKS_RESERVED
WEBHOOKS = "heavy-jobs-dev-deliver_webhooks"


def test_every_deployed_stage_reserves_concurrency_for_its_api_and_its_worker(
    dev_config: Any, prod_config: Any
) -> None:
    """The API's reservation is its ceiling: requests it holds (``?wait=``) can take no
    more of the account than that, so the account's other functions keep their pool."""
    for stage, config, api in (("dev", dev_config, DEV_API_RESERVED), ("prod", prod_config, 20)):
        assert config.scope(stage, "api_handler").reserved_concurrency == api
        assert config.scope(stage, "process_job").reserved_concurrency == DEV_WORKER_RESERVED


def no_reservations(stubber: Stubber) -> None:
    """None of dev's reserving functions exists yet (a first deploy)."""
    for function in (API, WORKER, WEBHOOKS):  # in handler order: the API first
        no_function(stubber, function)


def test_preflight_stops_when_the_reservation_would_leave_less_than_100(dev_config: Any) -> None:
    """A new account's quota of 50: reserving 11 would leave 39 unreserved; Lambda needs 100."""
    client, stubber = lambda_stub()
    stubber.add_response("get_account_settings", account(unreserved=50, total=50))
    no_reservations(stubber)
    with stubber, pytest.raises(chalice_project.DeployError) as refused:
        lifecycle.check_account_concurrency(client, dev_config, "dev")
    message = str(refused.value)
    assert f'"{lifecycle.CONCURRENCY_QUOTA}" ({lifecycle.CONCURRENCY_QUOTA_CODE})' in message
    assert f"{100 + DEV_RESERVED} are needed" in message and "Nothing was created" in message
    assert f"{API} ({DEV_API_RESERVED})" in message
    stubber.assert_no_pending_responses()


def test_preflight_counts_the_apis_reservation(dev_config: Any) -> None:
    """Enough for the worker and the deliveries alone; with the API's 10 it is too little."""
    client, stubber = lambda_stub()
    stubber.add_response(
        "get_account_settings",
        account(unreserved=100 + DEV_WORKER_RESERVED + DEV_WEBHOOKS_RESERVED),
    )
    no_reservations(stubber)
    with stubber, pytest.raises(chalice_project.DeployError, match=f"{100 + DEV_RESERVED} are"):
        lifecycle.check_account_concurrency(client, dev_config, "dev")


def test_preflight_passes_at_exactly_100_left(dev_config: Any) -> None:
    client, stubber = lambda_stub()
    stubber.add_response("get_account_settings", account(unreserved=100 + DEV_RESERVED))
    no_reservations(stubber)
    with stubber:
        lifecycle.check_account_concurrency(client, dev_config, "dev")
    stubber.assert_no_pending_responses()


def test_preflight_counts_the_reservations_a_redeployed_stage_already_holds(
    dev_config: Any,
) -> None:
    """On a re-deploy the API's 10, the worker's 1 and the deliveries' 5 are already out of
    the unreserved 100: still fine."""
    client, stubber = lambda_stub()
    stubber.add_response("get_account_settings", account(unreserved=100, total=100 + DEV_RESERVED))
    for function, reserved in (
        (API, DEV_API_RESERVED),
        (WORKER, DEV_WORKER_RESERVED),
        (WEBHOOKS, DEV_WEBHOOKS_RESERVED),
    ):
        stubber.add_response(
            "get_function_concurrency",
            {"ReservedConcurrentExecutions": reserved},
            expected_params={"FunctionName": function},
        )
    with stubber:
        lifecycle.check_account_concurrency(client, dev_config, "dev")


# --- recursion -----------------------------------------------------------------------------


def test_the_loop_is_the_consumers_of_queues_the_app_sends_to(dev_config: Any) -> None:
    env = dev_config.environment_variables
    sent_to = {env[settings.QUEUE_NAME]}
    assert chalice_project.looping_handlers(dev_config, sent_to) == ["process_job"]
    # The dead-letter queue is fed by SQS's redrive, never by the app: not a loop.
    assert chalice_project.looping_handlers(dev_config, {env[settings.DEAD_LETTER_QUEUE_NAME]}) == [
        "process_dead_letters"
    ]
    assert "QueueArn" in chalice_project.sent_queue_outputs()
    assert "DeadLetterQueueArn" not in chalice_project.sent_queue_outputs()
    # A webhook delivery re-sends its next attempt to its own queue, hop after hop for
    # more than 24 hours: a loop Lambda must allow, or it stops the chain.
    assert "WebhookQueueArn" in chalice_project.sent_queue_outputs()
    webhooks = {env[settings.WEBHOOK_QUEUE_NAME]}
    assert chalice_project.looping_handlers(dev_config, webhooks) == ["deliver_webhooks"]


def test_allow_recursion_sets_each_function_to_allow() -> None:
    """moto 5.2.5 lacks PutFunctionRecursionConfig: the request itself is checked."""
    client, stubber = lambda_stub()
    stubber.add_response(
        "put_function_recursion_config",
        {"RecursiveLoop": "Allow"},
        expected_params={"FunctionName": WORKER, "RecursiveLoop": "Allow"},
    )
    with stubber:
        lifecycle.allow_recursion(client, [WORKER])
    stubber.assert_no_pending_responses()


# --- the deploy record --------------------------------------------------------------------


@pytest.fixture
def ssm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)


def write_record(project: Path, stage: str, resources: list[dict[str, Any]]) -> None:
    path = state.record_path(project, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"resources": resources, "schema_version": "2.0"}))


def test_the_record_travels_from_one_clone_to_another_through_ssm(ssm: Any, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    resources = [{"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc"}]
    write_record(first, "dev", resources)
    assert state.restore(ssm, "heavy-jobs-dev", second, "dev") == "none"
    assert state.save(ssm, "heavy-jobs-dev", first, "dev") is True

    assert state.restore(ssm, "heavy-jobs-dev", second, "dev") == "aws"
    restored = json.loads(state.record_path(second, "dev").read_text())
    assert restored["resources"] == resources

    state.forget(ssm, "heavy-jobs-dev")
    state.forget(ssm, "heavy-jobs-dev")  # nothing left: still fine
    assert state.load(ssm, "heavy-jobs-dev") is None


def test_aws_wins_over_a_stale_local_record(ssm: Any, tmp_path: Path) -> None:
    write_record(tmp_path, "dev", [{"name": "from-aws"}])
    state.save(ssm, "heavy-jobs-dev", tmp_path, "dev")
    write_record(tmp_path, "dev", [{"name": "stale"}])
    assert state.restore(ssm, "heavy-jobs-dev", tmp_path, "dev") == "aws"
    record = json.loads(state.record_path(tmp_path, "dev").read_text())
    assert record["resources"] == [{"name": "from-aws"}]


def test_a_local_record_is_kept_until_saved(ssm: Any, tmp_path: Path) -> None:
    """A stage deployed before records were kept in AWS: this clone's record is used."""
    write_record(tmp_path, "dev", [{"name": "local"}])
    assert state.restore(ssm, "heavy-jobs-dev", tmp_path, "dev") == "local"


def test_functions_without_any_record_stop_the_deploy() -> None:
    state.check_known("none", [], "dev")  # a new stage
    state.check_known("aws", [WORKER], "dev")
    with pytest.raises(state.MissingDeployState, match="make deploy STAGE=dev"):
        state.check_known("none", [WORKER], "dev")


def test_a_large_record_still_fits(ssm: Any, tmp_path: Path) -> None:
    """Over the standard tier's 4 KB SSM moves the parameter to the advanced tier itself."""
    write_record(tmp_path, "dev", [{"name": f"function-{i}", "arn": "x" * 200} for i in range(30)])
    assert state.save(ssm, "heavy-jobs-dev", tmp_path, "dev")
    assert len(json.dumps(state.load(ssm, "heavy-jobs-dev"))) > 4096


# --- per-stage operations settings ----------------------------------------------------------


def test_stage_operations_default_and_prod_keeps_backups(dev_config: Any, prod_config: Any) -> None:
    dev = operations.StageOperations.from_config(dev_config, "dev")
    prod = operations.StageOperations.from_config(prod_config, "prod")
    assert dev == operations.StageOperations()
    assert dev.log_retention_days == 30 and not dev.point_in_time_recovery
    assert prod.point_in_time_recovery
    assert (dev.method_throttle_rate_limit, dev.method_throttle_burst_limit) == (10, 20)
    assert (prod.method_throttle_rate_limit, prod.method_throttle_burst_limit) == (20, 40)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"log_retention_days": 31}, "not a CloudWatch Logs retention"),
        ({"point_in_time_recovery": "yes"}, "true or false"),
        ({"oldest_message_alarm_seconds": 5}, ">= 60"),
        ({"retention": 30}, "unknown retention"),
        ({"method_throttle_rate_limit": 0}, "method_throttle_rate_limit must be a number > 0"),
        ({"method_throttle_rate_limit": "10"}, "method_throttle_rate_limit must be"),
        ({"method_throttle_burst_limit": 0}, "method_throttle_burst_limit must be an integer"),
        ({"method_throttle_burst_limit": 2.5}, "method_throttle_burst_limit must be"),
        ({"kms_key_arn": f"arn:aws:kms:{REGION}:123456789012:alias/jobs"}, "not a KMS key's ARN"),
        ({"kms_key_arn": "1234abcd-12ab-34cd-56ef-1234567890ab"}, "kms_key_arn: '1234abcd"),
        ({"kms_key_arn": None}, "not a KMS key's ARN"),
    ],
)
def test_bad_stage_operations_are_refused_by_name(
    dev_config: Any, overrides: dict[str, Any], complaint: str
) -> None:
    class Edited:
        config_from_disk = {"stages": {"dev": {operations.CONFIG_KEY: overrides}}}

    with pytest.raises(operations.OperationsError, match=complaint):
        operations.StageOperations.from_config(Edited(), "dev")  # type: ignore[arg-type]


def test_pitr_is_passed_only_to_a_template_that_declares_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    on, off = operations.StageOperations(point_in_time_recovery=True), operations.StageOperations()
    declared = {operations.POINT_IN_TIME_RECOVERY: {"Type": "String"}}
    assert operations.state_stack_parameters(on, declared) == {"PointInTimeRecovery": "true"}
    assert operations.state_stack_parameters(off, declared) == {"PointInTimeRecovery": "false"}
    assert operations.state_stack_parameters(off, {}) == {}
    assert operations.state_stack_parameters(on, {}) == {}
    assert "point-in-time recovery" in capsys.readouterr().err


def test_operations_parameters_are_the_projects_names(dev_config: Any) -> None:
    parameters = operations.parameters(dev_config, "dev", operations.StageOperations())
    template = chalice_project.load_template(operations.TEMPLATE)
    assert set(parameters) == set(template["Parameters"])
    env = dev_config.environment_variables
    assert parameters["JobQueueName"] == env[settings.QUEUE_NAME]
    assert parameters["DeadLetterQueueName"] == env[settings.DEAD_LETTER_QUEUE_NAME]
    assert parameters["WorkerFunctionName"] == WORKER
    # Read from the state template as the job queue's own is: its RedrivePolicy's target.
    job_dead_letters = operations.dead_letter_queue_name(
        stack.load_template(), "heavy-jobs-dev", env[settings.QUEUE_NAME]
    )
    assert job_dead_letters == env[settings.DEAD_LETTER_QUEUE_NAME]
    assert operations.worker_handler(dev_config) == "process_job"


# --- the service's own metrics: each stage watches what its functions emit -----------------

STAGES = ("dev", "prod")
# The dashboard's widgets on the service's metrics, and the metrics each must show.
JOB_WIDGETS = {
    "Jobs": {Metric.ACCEPTED, Metric.STARTED, Metric.SUCCEEDED, Metric.FAILED, Metric.CANCELLED},
    "Queue wait and run time (ms)": {Metric.QUEUE_WAIT, Metric.RUN_DURATION},
}

# (namespace, metric name, dimensions): what CloudWatch tells one metric stream apart by.
Stream = tuple[str, str, dict[str, str]]


def emitted(
    config: Config, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Stream:
    """The stream a function of the stage writes ``name`` to: its EMF line, emitted by the
    code with the stage's environment variables (as Lambda sets them) and parsed."""
    for variable, value in config.environment_variables.items():
        monkeypatch.setenv(variable, value)
    connections.reset()  # settings are read afresh, from this environment
    capsys.readouterr()
    observability.count(name)
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    (metric,) = directive["Metrics"]
    (dimension_names,) = directive["Dimensions"]  # one dimension set
    return directive["Namespace"], metric["Name"], {d: record[d] for d in dimension_names}


def ops_parameters(config: Config, stage: str) -> dict[str, str]:
    return operations.parameters(config, stage, operations.StageOperations())


def ref(node: Any, parameters: dict[str, str]) -> str:
    """A template value: a !Ref to a parameter, resolved, or a literal."""
    return parameters[node["Ref"]] if isinstance(node, dict) else str(node)


def alarm_stream(config: Config, stage: str) -> Stream:
    """The stream the stage's JobsFailed alarm watches, as its stack would be created."""
    parameters = ops_parameters(config, stage)
    alarm = chalice_project.load_template(operations.TEMPLATE)["Resources"]["JobsFailedAlarm"]
    properties = alarm["Properties"]
    dimensions = {
        ref(d["Name"], parameters): ref(d["Value"], parameters) for d in properties["Dimensions"]
    }
    namespace, name = (
        ref(properties["Namespace"], parameters),
        ref(properties["MetricName"], parameters),
    )
    return namespace, name, dimensions


def dashboard_body(config: Config, stage: str) -> Any:
    """The stage's dashboard body as CloudFormation renders it: its Fn::Sub resolved with
    the stage's parameters (a CommaDelimitedList is a list) and the variables it declares."""
    parameters = ops_parameters(config, stage)
    declared = chalice_project.load_template(operations.TEMPLATE)["Parameters"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            value = parameters[node["Ref"]]
            listed = declared[node["Ref"]]["Type"] == "CommaDelimitedList"
            return value.split(",") if listed else value
        if isinstance(node, dict) and "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(resolve(items))
        return node

    dashboard = chalice_project.load_template(operations.TEMPLATE)["Resources"]["Dashboard"]
    sub = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    text, variables = (sub, {}) if isinstance(sub, str) else sub
    values = {
        **parameters,
        **{name: resolve(value) for name, value in variables.items()},
        "AWS::Region": "us-east-1",
        "AWS::StackName": "s",
    }
    return json.loads(re.sub(r"\$\{([^}!]+)\}", lambda m: values[m.group(1)], text))


def dashboard_streams(config: Config, stage: str) -> dict[str, list[Stream]]:
    """Widget title -> the streams of the service's namespace its metric rows show, with
    the stage's parameters substituted and CloudWatch's "." and "..." shorthands expanded."""
    body = dashboard_body(config, stage)
    streams: dict[str, list[Stream]] = {}
    for widget in body["widgets"]:
        previous: list[str] = []
        for row in widget["properties"].get("metrics", []):
            items = [item for item in row if not isinstance(item, dict)]  # options dropped
            if items == ["..."]:
                items = previous
            else:
                items = [previous[i] if item == "." else item for i, item in enumerate(items)]
            previous = items
            if items and items[0] == NAMESPACE:
                namespace, name, *pairs = items
                stream = (namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)))
                streams.setdefault(widget["properties"]["title"], []).append(stream)
    return streams


@pytest.mark.parametrize("stage", STAGES)
def test_an_emitted_metric_carries_the_service_and_the_stage(
    stage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stage_config(stage)
    namespace, name, dimensions = emitted(config, Metric.FAILED, monkeypatch, capsys)
    assert (namespace, name) == (NAMESPACE, Metric.FAILED)
    assert dimensions == observability.dimensions(stage)
    assert dimensions == observability.dimensions(
        config.environment_variables[settings.STAGE]
    )  # the stage's own setting, which applying its stack writes


@pytest.mark.parametrize("stage", STAGES)
def test_the_failed_jobs_alarm_watches_what_the_stages_functions_emit(
    stage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stage_config(stage)
    assert alarm_stream(config, stage) == emitted(config, Metric.FAILED, monkeypatch, capsys)


@pytest.mark.parametrize("stage", STAGES)
def test_every_dashboard_widget_on_jobs_shows_what_the_stages_functions_emit(
    stage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stage_config(stage)
    streams = dashboard_streams(config, stage)
    assert set(streams) == set(JOB_WIDGETS)  # no other widget shows the service's metrics
    for title, wanted in JOB_WIDGETS.items():
        assert {name for _, name, _ in streams[title]} == wanted
        for stream in streams[title]:
            assert stream == emitted(config, stream[1], monkeypatch, capsys)


@pytest.mark.parametrize("stage", STAGES)
def test_the_errors_and_throttles_widget_shows_every_function_of_the_stage(stage: str) -> None:
    """Each Lambda metric search names every function the stage deploys, the API's and each
    handler's, by its exact name (the API's, <app>-<stage>, is a prefix of the others: one
    quoted prefix alone matches the API's function only)."""
    config = stage_config(stage)
    body = dashboard_body(config, stage)
    (widget,) = [
        w for w in body["widgets"] if w["properties"]["title"].startswith("Errors and throttles")
    ]
    searches = {
        row[0]["id"]: row[0]["expression"]
        for row in widget["properties"]["metrics"]
        if "AWS/Lambda" in row[0]["expression"]
    }
    assert set(searches) == {"errors", "throttles"}
    functions = stack.function_names(config, stage)
    # The app's handlers are the functions config.json gives settings to, every one.
    assert set(stack.handler_names(config)) == set(config.config_from_disk["lambda_functions"])
    assert {f"heavy-jobs-{stage}", f"heavy-jobs-{stage}-process_job"} <= set(functions)
    for metric, expression in searches.items():
        assert f'MetricName="{metric.capitalize()}"' in expression
        assert sorted(searched_functions(expression)) == sorted(functions)


def test_two_stages_alarms_watch_different_streams(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job failing in dev never moves prod's alarm, and the other way round."""
    dev, prod = stage_config("dev"), stage_config("prod")
    assert alarm_stream(dev, "dev") != alarm_stream(prod, "prod")
    assert emitted(dev, Metric.FAILED, monkeypatch, capsys) != alarm_stream(prod, "prod")
    assert emitted(prod, Metric.FAILED, monkeypatch, capsys) != alarm_stream(dev, "dev")


# --- the queues nobody consumes: alarmed on as the job queue's dead-letter queue is ---------

# Alarm -> the parameter naming the queue it watches; DeadLetterAlarm is what each copies.
UNCONSUMED_QUEUE_ALARMS = {
    "JobEventsFailedAlarm": "JobEventsFailedQueueName",
    "WebhookDeadLetterAlarm": "WebhookDeadLetterQueueName",
}


def alarm_shape(properties: dict[str, Any], queue_parameter: str) -> Any:
    """An alarm's properties but its name and description, its queue's parameter replaced."""
    kept = {k: v for k, v in properties.items() if k not in ("AlarmName", "AlarmDescription")}
    text = json.dumps(kept).replace(json.dumps({"Ref": queue_parameter}), '"the queue"')
    return json.loads(text)


@pytest.mark.parametrize(("alarm", "queue_parameter"), UNCONSUMED_QUEUE_ALARMS.items())
def test_an_unconsumed_queues_alarm_is_built_as_the_job_dead_letter_alarm(
    alarm: str, queue_parameter: str
) -> None:
    """The same metric math (messages received by, or waiting in, the queue), threshold,
    topic and OK actions; only the queue differs, and the description says what to do."""
    resources = chalice_project.load_template(operations.TEMPLATE)["Resources"]
    properties = resources[alarm]["Properties"]
    assert alarm_shape(properties, queue_parameter) == alarm_shape(
        resources["DeadLetterAlarm"]["Properties"], "DeadLetterQueueName"
    )
    assert f"${{{queue_parameter}}}" in properties["AlarmDescription"]["Fn::Sub"]


def test_the_webhook_dead_letter_alarm_says_how_to_redrive() -> None:
    resources = chalice_project.load_template(operations.TEMPLATE)["Resources"]
    description = resources["WebhookDeadLetterAlarm"]["Properties"]["AlarmDescription"]["Fn::Sub"]
    for what in ("GET /webhooks/{id}/deliveries", "StartMessageMoveTask", '"Start DLQ redrive"'):
        assert what in description


def queue_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


@pytest.mark.parametrize("stage", STAGES)
def test_the_applied_ops_stack_alarms_on_the_queues_nobody_consumes(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage's state stack and operations stack applied on moto (its alarms through the
    deploy rehearsal's bridge): the job events' failure queue and the webhooks queue's
    dead-letter queue, as the applied state stack names them, each have an alarm that
    notifies the topic, listed in the stack's AlarmNames."""
    config = stage_config(stage)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    moto_bridges.install(monkeypatch)
    with mock_aws():
        cfn = boto3.client("cloudformation")
        state_stack = stack.stack_name(config.app_name, stage)
        outputs = stack.apply(cfn, state_stack, stack.parameters_for_stage(config, stage))
        sqs = boto3.client("sqs")
        assert (
            outputs["WebhookQueueName"] == config.environment_variables[settings.WEBHOOK_QUEUE_NAME]
        )
        redrive = sqs.get_queue_attributes(
            QueueUrl=outputs["WebhookQueueUrl"], AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
        watched = {
            "events-failed": queue_name(outputs[FAILED_QUEUE_OUTPUT]),
            "webhook-dead-letters": queue_name(json.loads(redrive)["deadLetterTargetArn"]),
        }
        ops = operations.apply_operations(
            cfn, operations.ops_stack_name(config.app_name, stage), ops_parameters(config, stage)
        )
        described = boto3.client("cloudwatch").describe_alarms(AlarmNamePrefix=state_stack)
    alarms = {a["AlarmName"]: a for a in described["MetricAlarms"]}
    assert set(ops["AlarmNames"].split(",")) == set(alarms)
    for suffix, queue in watched.items():
        alarm = alarms[f"{state_stack}-{suffix}"]
        assert alarm["AlarmActions"] == alarm["OKActions"] == [ops["AlarmTopicArn"]]
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        queries = {q["Id"]: q for q in alarm["Metrics"]}
        for query, metric in (
            ("received", "NumberOfMessagesReceived"),
            ("visible", "ApproximateNumberOfMessagesVisible"),
        ):
            stat = queries[query]["MetricStat"]["Metric"]
            assert (stat["Namespace"], stat["MetricName"]) == ("AWS/SQS", metric)
            assert stat["Dimensions"] == [{"Name": "QueueName", "Value": queue}]
        assert queue in alarm["AlarmDescription"]


def test_a_queue_the_state_template_does_not_make_is_refused_by_name() -> None:
    template = stack.load_template()
    with pytest.raises(operations.OperationsError, match="no queue heavy-jobs-dev-elsewhere"):
        operations.dead_letter_queue_name(template, "heavy-jobs-dev", "heavy-jobs-dev-elsewhere")
    with pytest.raises(operations.OperationsError, match="has no dead-letter queue"):
        operations.dead_letter_queue_name(template, "heavy-jobs-dev", "heavy-jobs-dev-delay")


# --- log groups, access logs, pause ---------------------------------------------------------


def test_log_retention_is_set_on_new_and_existing_groups() -> None:
    with mock_aws():
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName=f"/aws/lambda/{WORKER}")
        operations.set_log_retention(logs, [WORKER, "heavy-jobs-dev"], 14)
        operations.set_log_retention(logs, [WORKER, "heavy-jobs-dev"], 30)  # settable again
        groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
        assert {g["logGroupName"]: g["retentionInDays"] for g in groups} == {
            f"/aws/lambda/{WORKER}": 30,
            "/aws/lambda/heavy-jobs-dev": 30,
        }


KEY = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = f"arn:aws:kms:{REGION}:123456789012:key/0000abcd-12ab-34cd-56ef-1234567890ab"


def logs_stub() -> tuple[Any, Stubber]:
    client = boto3.client("logs", region_name=REGION)
    return client, Stubber(client)


@pytest.mark.parametrize(
    ("wanted", "current", "call"),
    [
        (KEY, None, ("associate_kms_key", {"kmsKeyId": KEY})),
        (KEY, OTHER_KEY, ("associate_kms_key", {"kmsKeyId": KEY})),
        (KEY, KEY, None),
        ("", KEY, ("disassociate_kms_key", {})),
        ("", None, None),
    ],
)
def test_a_functions_log_group_follows_the_stages_key(
    wanted: str, current: str | None, call: tuple[str, dict[str, str]] | None
) -> None:
    """A new group is created with the key; an existing one is associated with it (Lambda
    made it, or an earlier deploy with another key), or loses its key when the stage names
    none. Checked on the exact requests (moto has no AssociateKmsKey)."""
    group = f"/aws/lambda/{WORKER}"
    logs, stubber = logs_stub()
    created = {"kmsKeyId": wanted} if wanted else {}
    stubber.add_client_error(
        "create_log_group",
        service_error_code="ResourceAlreadyExistsException",
        expected_params={"logGroupName": group, **created},
    )
    described = {"logGroupName": group, **({"kmsKeyId": current} if current else {})}
    stubber.add_response(
        "describe_log_groups", {"logGroups": [described]}, {"logGroupNamePrefix": group}
    )
    if call is not None:
        operation, parameters = call
        stubber.add_response(operation, {}, {"logGroupName": group, **parameters})
    stubber.add_response("put_retention_policy", {}, {"logGroupName": group, "retentionInDays": 30})
    with stubber:
        operations.set_log_retention(logs, [WORKER], 30, wanted)
        stubber.assert_no_pending_responses()


def test_a_new_log_group_is_created_with_the_stages_key() -> None:
    group = f"/aws/lambda/{WORKER}"
    logs, stubber = logs_stub()
    stubber.add_response("create_log_group", {}, {"logGroupName": group, "kmsKeyId": KEY})
    stubber.add_response("put_retention_policy", {}, {"logGroupName": group, "retentionInDays": 30})
    with stubber:
        operations.set_log_retention(logs, [WORKER], 30, KEY)
        stubber.assert_no_pending_responses()


def test_the_functions_environment_takes_the_stages_key_only_where_it_differs() -> None:
    """``chalice deploy`` cannot set it; each function whose key differs is updated, and
    waited for, and no other (a stage without a key changes nothing)."""
    client, stubber = lambda_stub()
    functions = {"heavy-jobs-dev": KEY, WORKER: None, "heavy-jobs-dev-forward_delayed": OTHER_KEY}
    for function, current in functions.items():
        configuration = {"FunctionName": function, **({"KMSKeyArn": current} if current else {})}
        stubber.add_response(
            "get_function_configuration", configuration, {"FunctionName": function}
        )
        if current == KEY:
            continue
        stubber.add_response(
            "update_function_configuration",
            {"FunctionName": function, "KMSKeyArn": KEY},
            {"FunctionName": function, "KMSKeyArn": KEY},
        )
        stubber.add_response(
            "get_function",
            {"Configuration": {"FunctionName": function, "LastUpdateStatus": "Successful"}},
            {"FunctionName": function},
        )
    with stubber:
        changed = operations.set_function_key(client, list(functions), KEY)
        stubber.assert_no_pending_responses()
    assert changed == [WORKER, "heavy-jobs-dev-forward_delayed"]

    client, stubber = lambda_stub()
    stubber.add_response("get_function_configuration", {}, {"FunctionName": WORKER})
    with stubber:
        assert operations.set_function_key(client, [WORKER], "") == []


def test_a_key_of_another_region_stops_the_deploy_before_anything_is_made() -> None:
    lifecycle.check_key_region("", REGION)
    lifecycle.check_key_region(KEY, REGION)
    with pytest.raises(chalice_project.DeployError, match="Nothing was created"):
        lifecycle.check_key_region(KEY.replace(REGION, "eu-west-1"), REGION)


def test_the_operations_template_takes_the_key_on_its_topic_and_log_group() -> None:
    assert operations.template_body("") == operations.TEMPLATE.read_text()
    keyed = json.loads(operations.template_body(KEY))["Resources"]
    assert keyed["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == KEY
    assert keyed["ApiAccessLogGroup"]["Properties"]["KmsKeyId"] == KEY
    plain = chalice_project.load_template(operations.TEMPLATE)["Resources"]
    assert {k: r["Type"] for k, r in keyed.items() if r["Type"] in encryption.KEYED_TYPES} == {
        "AlarmTopic": "AWS::SNS::Topic",
        "ApiAccessLogGroup": "AWS::Logs::LogGroup",
    }
    assert set(keyed) == set(plain)


def test_access_logging_role_is_set_once_for_the_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    with mock_aws():
        iam, apigw = boto3.client("iam"), boto3.client("apigateway", region_name=REGION)
        arn = operations.ensure_api_gateway_logging_role(iam, apigw)
        assert operations.ensure_api_gateway_logging_role(iam, apigw) == arn
        assert apigw.get_account()["cloudwatchRoleArn"] == arn
        attached = iam.list_attached_role_policies(RoleName=operations.API_GATEWAY_LOGS_ROLE)
        assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [
            operations.API_GATEWAY_LOGS_POLICY
        ]


def test_access_log_setting_drops_cloudformations_suffix() -> None:
    arn = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/apigateway/x-access"
    assert operations.log_group_arn(arn + ":*") == arn
    assert json.loads(operations.ACCESS_LOG_FORMAT)["requestId"] == "$context.requestId"


def test_method_throttling_is_the_default_of_every_method_of_the_stage() -> None:
    values = operations.StageOperations(
        method_throttle_rate_limit=7.5, method_throttle_burst_limit=9
    )
    with mock_aws():
        apigw = boto3.client("apigateway", region_name=REGION)
        api_id = apigw.create_rest_api(name="heavy-jobs")["id"]
        root = apigw.get_resources(restApiId=api_id)["items"][0]["id"]
        apigw.put_method(
            restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE"
        )
        apigw.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
        apigw.create_deployment(restApiId=api_id, stageName="dev")

        operations.set_method_throttling(apigw, api_id, "dev", values)
        operations.set_method_throttling(apigw, api_id, "dev", values)  # idempotent

        method_settings = apigw.get_stage(restApiId=api_id, stageName="dev")["methodSettings"]
    assert list(method_settings) == ["*/*"]
    assert method_settings["*/*"]["throttlingRateLimit"] == 7.5
    assert method_settings["*/*"]["throttlingBurstLimit"] == 9
    assert values.method_settings() == {
        "ResourcePath": "/*",
        "HttpMethod": "*",
        "ThrottlingRateLimit": 7.5,
        "ThrottlingBurstLimit": 9,
    }


UUIDS = {name: f"{index:08d}-0000-4000-8000-000000000000" for index, name in enumerate("wdp")}


def mapping(uuid: str, function: str, state: str = "Enabled") -> dict[str, Any]:
    arn = f"arn:aws:lambda:{REGION}:123456789012:function:{function}"
    return {"UUID": UUIDS[uuid], "FunctionArn": arn, "State": state}


@pytest.mark.parametrize("enabled", [False, True])
def test_pause_toggles_only_the_workers_mappings(enabled: bool) -> None:
    client, stubber = lambda_stub()
    stubber.add_response(
        "list_event_source_mappings",
        {
            "EventSourceMappings": [
                mapping("w", WORKER),
                mapping("d", "heavy-jobs-dev-process_dead_letters"),
                mapping("p", "heavy-jobs-prod-process_job"),
            ]
        },
    )
    worker = UUIDS["w"]
    stubber.add_response(
        "update_event_source_mapping", {"UUID": worker}, {"UUID": worker, "Enabled": enabled}
    )
    with stubber:
        assert operations.set_worker_enabled(client, WORKER, enabled) == [worker]
    stubber.assert_no_pending_responses()


def test_pausing_a_stage_that_is_not_deployed_says_so() -> None:
    client, stubber = lambda_stub()
    stubber.add_response("list_event_source_mappings", {"EventSourceMappings": []})
    with stubber, pytest.raises(operations.OperationsError, match="deploy the stage first"):
        operations.set_worker_enabled(client, WORKER, False)
