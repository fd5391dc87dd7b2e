"""Deploy rehearsal: the real `make deploy` and `make destroy` against an embedded moto.

The tests run `make deploy STAGE=dev` and `STAGE=prod` (prod naming a customer-managed KMS
key, made in moto's KMS) from one copy of the project, then again from a second, fresh copy
(a second clone: no `.chalice/deployed/`), which must update the stage in place; then check
what exists, through boto3, against what the project declares; then `make pause`/`resume`,
`make api-key` (per client), `make destroy` for both from the second copy, a deploy after a
destroy, and a destroy again. Everything runs in
copies of the project (see conftest.py), against a moto server on a free port in this
process, with dummy credentials: nothing can reach AWS.

Stock moto cannot take Chalice's API definition; the gap is bridged here, in the harness
only (see ``bridge_chalice_api_import``), as are the Lambda calls and the CloudFormation
alarm moto lacks (tests/infra/moto_bridges.py). moto cannot run Lambda code (no Docker), so
the event source mappings the deploy creates are disabled as soon as each deploy returns.
Tests in this module share one rehearsal and run in file order: destroy comes last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.app import SQSEventConfig
from moto.apigateway.models import APIGatewayBackend
from moto.server import ThreadedMotoServer

from chalicelib import config as settings
from chalicelib.events import STREAM_MAX_RETRY_ATTEMPTS, STREAM_STARTING_POSITION
from chalicelib.observability import NAMESPACE, Metric, dimensions
from chalicelib.openapi import KEYED_OPERATIONS, SIGV4_SCHEME
from chalicelib.queue import MAX_RECEIVE_COUNT
from chalicelib.store import JobTable, WorkerPause
from infra import encryption, operations, policies, stack
from infra.deploy import event_stream, state
from infra.deploy.access import Throttle
from infra.deploy.lifecycle import CONCURRENCY_QUOTA, CONCURRENCY_QUOTA_CODE
from tests.infra import moto_bridges
from tests.infra.harness import (
    REGION,
    VENV,
    copy_project,
    isolated_environment,
    name_stage_key,
    run_make,
    searched_functions,
)

STAGES = ("dev", "prod")
KEY_STAGE = "prod"  # the stage whose config sets JOBS_REQUIRE_API_KEY=true
# The second prod deploy changes the throttle, to show the plan is updated in place.
# (Whole numbers: moto parses a patched rateLimit with int().)
UPDATED_THROTTLE = Throttle(rate_limit=3, burst_limit=7)
ALARM_EMAIL = "ops@example.com"  # given to prod's second deploy
KEYED_STAGE = "prod"  # the stage naming a customer-managed KMS key; dev names none


# --- the emulator and its bridge ---------------------------------------------------------


def bridge_chalice_api_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto 5.2.5's API Gateway import the API definition Chalice deploys.

    moto's ImportRestApi and PutRestApi reject ``swagger: "2.0"`` (they read only OpenAPI
    3) and ImportRestApi requires ``info.description``: both are relabelled here, as the
    paths, methods and integrations moto reads are the same in both versions. moto also
    drops ``security`` (it records every imported method with no authorization type), so
    each method gets what API Gateway makes of its definition's security: ``apiKeyRequired``
    for an ``apiKey`` scheme, authorization type ``AWS_IAM`` for a SigV4 scheme
    (``x-amazon-apigateway-authtype: awsSigv4``), ``NONE`` otherwise (moto's Method
    records and returns ``authorizationType`` as given: moto/apigateway/models.py).

    It also adds what else ``make deploy`` calls and moto 5.2.5 lacks (tests/infra/
    moto_bridges.py), so every rehearsal of a deploy gets the whole bridge from here.
    """
    moto_bridges.install(monkeypatch)
    original_import = APIGatewayBackend.import_rest_api
    original_put = APIGatewayBackend.put_rest_api

    def import_rest_api(self: Any, api_doc: dict[str, Any], fail_on_warnings: bool) -> Any:
        return original_import(self, _as_openapi3(api_doc), fail_on_warnings)

    def put_rest_api(
        self: Any,
        function_id: str,
        api_doc: dict[str, Any],
        fail_on_warnings: bool,
        mode: str = "merge",
    ) -> Any:
        api = original_put(self, function_id, _as_openapi3(api_doc), fail_on_warnings, mode)
        _secure_as_declared(api, api_doc)
        return api

    monkeypatch.setattr(APIGatewayBackend, "import_rest_api", import_rest_api)
    monkeypatch.setattr(APIGatewayBackend, "put_rest_api", put_rest_api)


def _as_openapi3(api_doc: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in api_doc.items() if k != "swagger"}
    doc.setdefault("openapi", "3.0.1")
    doc["info"] = {"description": "", **api_doc.get("info", {})}
    return doc


def _secure_as_declared(api: Any, api_doc: dict[str, Any]) -> None:
    definitions = api_doc.get("securityDefinitions", {})
    sigv4 = {
        name
        for name, d in definitions.items()
        if d.get("x-amazon-apigateway-authtype") == "awsSigv4"
    }
    key_schemes = {name for name, d in definitions.items() if d.get("type") == "apiKey"} - sigv4
    for path, methods in api_doc.get("paths", {}).items():
        for method, method_doc in methods.items():
            schemes = {name for r in method_doc.get("security", []) for name in r}
            found = api.get_resource_for_path(path).resource_methods[method.upper()]
            found.api_key_required = bool(key_schemes & schemes)
            found.authorization_type = "AWS_IAM" if sigv4 & schemes else "NONE"


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """A moto server in this process, on a free port; its URL. Wiped and stopped after."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        bridge_chalice_api_import(monkeypatch)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        assert port not in (4566, 8000)  # never the local stack's ports
        url = f"http://{host}:{port}"
        try:
            yield url
        finally:
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
            server.stop()


# --- the rehearsal -----------------------------------------------------------------------


@dataclass
class Rehearsal:
    """What the deploys left, for the tests to check against."""

    project: Path
    env: dict[str, str]
    endpoint: str
    # The copy the stages were first deployed from; `project` is a fresh one after that.
    first_project: Path | None = None
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    ops_outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    first_api_ids: dict[str, str] = field(default_factory=dict)
    first_functions: dict[str, dict[str, str]] = field(default_factory=dict)
    first_usage_plan: dict[str, Any] = field(default_factory=dict)
    # stage -> the KMS key's ARN it names ("" for none).
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def make(
        self, *args: str, check: bool = True, project: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return run_make(project or self.project, {**self.env, **env}, *args, check=check)

    def deploy(self, stage: str, **env: str) -> None:
        self.make("deploy", f"STAGE={stage}", **env)
        self.disable_event_sources(stage)
        self.create_log_groups(stage)

    def mappings_per_function(self) -> dict[str, int]:
        """How many event source mappings each function has (moto would accept duplicates)."""
        counts: dict[str, int] = {}
        for mapping in self.client("lambda").list_event_source_mappings()["EventSourceMappings"]:
            function = mapping["FunctionArn"].split(":")[-1]
            counts[function] = counts.get(function, 0) + 1
        return counts

    def create_log_groups(self, stage: str) -> None:
        """What Lambda does on a function's first run, so destroy has logs to delete."""
        logs = self.client("logs")
        for function in self.functions(stage).values():
            name = f"/aws/lambda/{function}"
            if not logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]:
                logs.create_log_group(logGroupName=name)

    def disable_event_sources(self, stage: str) -> None:
        """moto would try (and fail) to run the consumers on every message: switch them off."""
        lambda_client = self.client("lambda")
        assert self.event_sources(stage), f"no event source mapping for stage {stage}"
        for mapping in lambda_client.list_event_source_mappings()["EventSourceMappings"]:
            if mapping["State"] != "Disabled":
                lambda_client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)

    def event_sources(self, stage: str) -> list[dict[str, Any]]:
        """The event source mappings of the stage's worker.

        Filtered here: moto's FunctionName filter matches only what was given at creation
        (Chalice gives the ARN), where AWS also accepts the name.
        """
        worker = function_name(stage, "process_job")
        mappings = self.client("lambda").list_event_source_mappings()["EventSourceMappings"]
        return [m for m in mappings if m["FunctionArn"].endswith(f":function:{worker}")]

    def deployed(self, stage: str) -> list[dict[str, Any]]:
        """The resources Chalice recorded for the stage."""
        record = self.project / ".chalice" / "deployed" / f"{stage}.json"
        return list(json.loads(record.read_text())["resources"])

    def api_id(self, stage: str) -> str:
        return next(r["rest_api_id"] for r in self.deployed(stage) if r["name"] == "rest_api")

    def functions(self, stage: str) -> dict[str, str]:
        """handler -> Lambda function name, for every function Chalice deployed."""
        return {
            r["name"]: r["lambda_arn"].split(":")[-1]
            for r in self.deployed(stage)
            if r["resource_type"] == "lambda_function"
        }

    def usage_plans(self) -> list[dict[str, Any]]:
        return list(self.client("apigateway").get_usage_plans()["items"])


@pytest.fixture(scope="module")
def repository_state() -> tuple[str, bytes]:
    """The working tree's status and config.json before the rehearsal."""
    return _repository_state()


def _repository_state() -> tuple[str, bytes]:
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--", ".chalice", "out", "infra/build"],
        cwd=stack.PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return status, (stack.PROJECT_DIR / ".chalice" / "config.json").read_bytes()


@pytest.fixture(scope="module")
def rehearsal(
    emulator: str,
    project_copy: Path,
    repository_state: tuple[str, bytes],
    tmp_path_factory: pytest.TempPathFactory,
) -> Rehearsal:
    """Both stages deployed, then deployed again from a fresh copy (prod with another
    throttle and an alarm e-mail)."""
    env = isolated_environment(
        AWS_ENDPOINT_URL=emulator,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
    )
    run = Rehearsal(project=project_copy, env=env, endpoint=emulator, first_project=project_copy)
    key = run.client("kms").create_key(Description="heavy-jobs prod")["KeyMetadata"]["Arn"]
    run.keys = {stage: key if stage == KEYED_STAGE else "" for stage in STAGES}
    name_stage_key(project_copy, KEYED_STAGE, key)
    for stage in STAGES:
        run.deploy(stage)
        run.first_api_ids[stage] = run.api_id(stage)
        run.first_functions[stage] = run.functions(stage)
    run.first_usage_plan = run.usage_plans()[0]
    # A second clone, as CI or a colleague has it: no record of what the first deployed.
    run.project = copy_project(tmp_path_factory.mktemp("second-clone"))
    name_stage_key(run.project, KEYED_STAGE, key)
    assert not (run.project / ".chalice" / "deployed").exists()
    for stage in STAGES:
        run.deploy(
            stage,
            API_RATE_LIMIT=f"{UPDATED_THROTTLE.rate_limit:g}",
            API_BURST_LIMIT=str(UPDATED_THROTTLE.burst_limit),
            **({"ALARM_EMAIL": ALARM_EMAIL} if stage == KEY_STAGE else {}),
        )
    cfn = run.client("cloudformation")
    for stage in STAGES:
        run.outputs[stage] = stack.outputs(cfn, stack.stack_name("heavy-jobs", stage))
        run.ops_outputs[stage] = stack.outputs(cfn, operations.ops_stack_name("heavy-jobs", stage))
    return run


@dataclass(frozen=True)
class StageSettings:
    """What the copy's .chalice/config.json and app.py declare for a stage."""

    environment: dict[str, str]
    worker_timeout: int
    worker_reserved_concurrency: int
    worker_batch_size: int
    api_gateway_stage: str
    api_reserved_concurrency: int | None
    operations: operations.StageOperations


@contextmanager
def _fresh_app_import() -> Iterator[None]:
    """Let Chalice import the copy's app.py with a stage's variables, then undo it all."""
    saved_app, saved_env, saved_path = sys.modules.pop("app", None), dict(os.environ), sys.path[:]
    try:
        yield
    finally:
        sys.modules.pop("app", None)
        if saved_app is not None:
            sys.modules["app"] = saved_app
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


@pytest.fixture(scope="module")
def declared(project_copy: Path) -> dict[str, StageSettings]:
    declared = {}
    for stage in STAGES:
        with _fresh_app_import():
            config = stack.load_chalice_config(stage, project_copy)
            worker = config.scope(stage, "process_job")
            (source,) = [s for s in config.chalice_app.event_sources if s.name == "process_job"]
            assert isinstance(source, SQSEventConfig)
            declared[stage] = StageSettings(
                environment=config.environment_variables,
                worker_timeout=worker.lambda_timeout,
                worker_reserved_concurrency=worker.reserved_concurrency,
                worker_batch_size=source.batch_size,
                api_gateway_stage=config.api_gateway_stage,
                api_reserved_concurrency=config.scope(stage, "api_handler").reserved_concurrency,
                operations=operations.StageOperations.from_config(config, stage),
            )
    return declared


def function_name(stage: str, handler: str) -> str:
    return policies.lambda_function_name("heavy-jobs", stage, handler)


# --- before anything exists ------------------------------------------------------------


def test_deploy_stops_before_creating_anything_when_the_account_lacks_concurrency(
    emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new account's quota (here 50 concurrent executions) cannot give the worker its
    reservation and keep Lambda's 100 unreserved: the deploy says what to ask AWS for."""
    monkeypatch.setenv(moto_bridges.QUOTA_ENV, "50")
    env = isolated_environment(
        AWS_ENDPOINT_URL=emulator,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
    )
    project = copy_project(tmp_path)
    refused = run_make(project, env, "deploy", "STAGE=dev", check=False)
    assert refused.returncode != 0
    assert CONCURRENCY_QUOTA in refused.stderr
    assert CONCURRENCY_QUOTA_CODE in refused.stderr
    assert "Nothing was created" in refused.stderr
    client = Rehearsal(project=project, env=env, endpoint=emulator).client
    assert client("cloudformation").list_stacks()["StackSummaries"] == []
    assert client("lambda").list_functions()["Functions"] == []
    assert client("iam").list_roles()["Roles"] == []
    assert client("sqs").list_queues().get("QueueUrls", []) == []
    assert client("ssm").describe_parameters()["Parameters"] == []


def test_deploy_counts_the_workers_lanes_in_the_account_check(
    emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage whose ``lanes`` was edited by hand: the deploy renders the worker's
    reserved concurrency from it first, so the account check asks for N, not 1."""
    monkeypatch.setenv(moto_bridges.QUOTA_ENV, "50")
    env = isolated_environment(
        AWS_ENDPOINT_URL=emulator,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
    )
    project = copy_project(tmp_path)
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"]["dev"]["lanes"] = 4
    path.write_text(json.dumps(config, indent=2))
    refused = run_make(project, env, "deploy", "STAGE=dev", check=False)
    assert refused.returncode != 0
    assert f"{function_name('dev', 'process_job')} (4)" in refused.stderr
    assert "Nothing was created" in refused.stderr


# --- what a deployed stage must be -------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_worker_runs_one_job_at_a_time(
    rehearsal: Rehearsal, declared: dict[str, StageSettings], stage: str
) -> None:
    concurrency = rehearsal.client("lambda").get_function_concurrency(
        FunctionName=function_name(stage, "process_job")
    )
    assert concurrency["ReservedConcurrentExecutions"] == 1
    assert declared[stage].worker_reserved_concurrency == 1


@pytest.mark.parametrize("stage", STAGES)
def test_the_api_reserves_its_stages_concurrency(
    rehearsal: Rehearsal, declared: dict[str, StageSettings], stage: str
) -> None:
    """Its ceiling in the account: held requests (``?wait=``) cannot take the concurrency
    the account's other functions need."""
    concurrency = rehearsal.client("lambda").get_function_concurrency(
        FunctionName=function_name(stage, "api_handler")
    )
    reserved = declared[stage].api_reserved_concurrency
    assert reserved is not None and reserved > 0
    assert concurrency["ReservedConcurrentExecutions"] == reserved


@pytest.mark.parametrize("stage", STAGES)
def test_every_method_of_the_stage_is_throttled_by_default(
    rehearsal: Rehearsal, declared: dict[str, StageSettings], stage: str
) -> None:
    """The stage's ``*/*`` method settings: every route, the open ones included, at the
    stage's rate and burst; no route has settings of its own that would override them."""
    settings_of = rehearsal.client("apigateway").get_stage(
        restApiId=rehearsal.api_id(stage), stageName=declared[stage].api_gateway_stage
    )["methodSettings"]
    assert list(settings_of) == ["*/*"]
    values = declared[stage].operations
    assert settings_of["*/*"]["throttlingRateLimit"] == values.method_throttle_rate_limit
    assert settings_of["*/*"]["throttlingBurstLimit"] == values.method_throttle_burst_limit


@pytest.mark.parametrize("stage", STAGES)
def test_worker_is_fed_by_the_job_queue(
    rehearsal: Rehearsal, declared: dict[str, StageSettings], stage: str
) -> None:
    mappings = rehearsal.event_sources(stage)
    assert len(mappings) == 1  # the re-deploy updated it rather than adding one
    (mapping,) = mappings
    assert mapping["EventSourceArn"] == rehearsal.outputs[stage]["QueueArn"]
    assert mapping["BatchSize"] == declared[stage].worker_batch_size
    assert mapping["State"] == "Disabled"  # by this harness: moto cannot run the code


@pytest.mark.parametrize("stage", STAGES)
def test_queue_retries_then_dead_letters(
    rehearsal: Rehearsal, declared: dict[str, StageSettings], stage: str
) -> None:
    sqs = rehearsal.client("sqs")
    outputs = rehearsal.outputs[stage]
    queue = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])
    attributes = queue["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == outputs["DeadLetterQueueArn"]
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT  # the code's own number
    assert MAX_RECEIVE_COUNT >= 5  # AWS's advice for an SQS-triggered function
    assert int(attributes["VisibilityTimeout"]) == declared[stage].worker_timeout
    dlq_url = outputs["DeadLetterQueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["MessageRetentionPeriod"])
    assert int(dlq["Attributes"]["MessageRetentionPeriod"]) >= 7 * 24 * 3600


@pytest.mark.parametrize("stage", STAGES)
def test_each_queues_visibility_timeout_is_its_consumers_timeout(
    rehearsal: Rehearsal, stage: str
) -> None:
    """Read as AWS answers them: each mapping of the stage (the re-enabled ones too), its
    queue's VisibilityTimeout and its function's Timeout. At least the timeout, or Lambda
    refuses the mapping; no more, so a failure the code cannot see holds a queue (and the
    job queue's one message group) for one function timeout, not six."""
    sqs, lambda_client = rehearsal.client("sqs"), rehearsal.client("lambda")
    functions = set(rehearsal.functions(stage).values())
    checked = {}
    for mapping in lambda_client.list_event_source_mappings()["EventSourceMappings"]:
        function = mapping["FunctionArn"].split(":")[-1]
        if function not in functions:
            continue  # the other stage's
        if not mapping["EventSourceArn"].startswith("arn:aws:sqs:"):
            continue  # the job table's stream (publish_job_events): no visibility timeout
        queue_name = mapping["EventSourceArn"].split(":")[-1]
        queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        timeout = lambda_client.get_function_configuration(FunctionName=function)["Timeout"]
        visibility = int(attributes["VisibilityTimeout"])
        assert visibility >= timeout, (queue_name, function)
        assert visibility == timeout, (queue_name, function)
        checked[queue_name] = function
    outputs = rehearsal.outputs[stage]
    queues = ("QueueName", "DeadLetterQueueName", "DelayQueueName", "WebhookQueueName")
    assert set(checked) == {outputs[key] for key in queues}  # every queue has its consumer


@pytest.mark.parametrize("stage", STAGES)
def test_job_table_exists(
    rehearsal: Rehearsal, declared: dict[str, StageSettings], stage: str
) -> None:
    table_name = rehearsal.outputs[stage]["TableName"]
    assert declared[stage].environment[settings.TABLE_NAME] == table_name
    table = rehearsal.client("dynamodb").describe_table(TableName=table_name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]


@pytest.mark.parametrize("stage", STAGES)
def test_the_event_publisher_reads_the_table_stream_with_bounded_retries(
    rehearsal: Rehearsal, stage: str
) -> None:
    """publish_job_events' mapping: the stack's stream, bisect on error, bounded retries,
    the events' failure queue as its on-failure destination, partial batch responses."""
    outputs = rehearsal.outputs[stage]
    publisher = function_name(stage, event_stream.HANDLER)
    mappings = rehearsal.client("lambda").list_event_source_mappings(
        EventSourceArn=outputs["TableStreamArn"]
    )["EventSourceMappings"]
    (mapping,) = [m for m in mappings if m["FunctionArn"].endswith(f":function:{publisher}")]
    assert mapping["StartingPosition"] == STREAM_STARTING_POSITION
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == STREAM_MAX_RETRY_ATTEMPTS
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": outputs["JobEventsFailedQueueArn"]}
    }
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize("stage", STAGES)
def test_the_webhook_deliveries_mapping_is_capped_at_their_reservation(
    rehearsal: Rehearsal, stage: str
) -> None:
    """Each SQS mapping of the stage as moto recorded it after both deploys (the second from
    a fresh clone): the webhook deliveries' has ScalingConfig.MaximumConcurrency equal to
    the reserved concurrency the stage declares and the function holds; the worker's FIFO
    mapping and the others have none."""
    lambda_client = rehearsal.client("lambda")
    handlers = {function: handler for handler, function in rehearsal.functions(stage).items()}
    capped = {}
    for mapping in lambda_client.list_event_source_mappings()["EventSourceMappings"]:
        handler = handlers.get(mapping["FunctionArn"].split(":")[-1])
        if handler is not None and "ScalingConfig" in mapping:
            capped[handler] = mapping["ScalingConfig"]
    with _fresh_app_import():
        config = stack.load_chalice_config(stage, rehearsal.project)
        declared = config.scope(stage, "deliver_webhooks").reserved_concurrency
    assert capped == {"deliver_webhooks": {"MaximumConcurrency": declared}}
    held = lambda_client.get_function_concurrency(
        FunctionName=function_name(stage, "deliver_webhooks")
    )
    assert held["ReservedConcurrentExecutions"] == declared


@pytest.mark.parametrize("stage", STAGES)
def test_every_role_is_least_privilege(rehearsal: Rehearsal, stage: str) -> None:
    """Each function's own role holds exactly infra.policies' document: no wildcards, and
    no SQS or DynamoDB resource outside the stage's stack. The one exception is X-Ray's
    write actions, which have no resource type ("*" is their only resource), granted
    because the stage traces."""
    iam, lambda_client = rehearsal.client("iam"), rehearsal.client("lambda")
    outputs = rehearsal.outputs[stage]
    stack_arns = {v for k, v in outputs.items() if k.endswith("Arn")}
    functions = rehearsal.functions(stage)
    assert {"api_handler", "process_job"} <= set(functions)
    for handler, function in functions.items():
        role = lambda_client.get_function(FunctionName=function)["Configuration"]["Role"]
        role_name = role.split("/")[-1]
        assert role_name == f"heavy-jobs-{stage}-{handler}"  # one role per function
        assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
        (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
        document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)
        statements = document["PolicyDocument"]["Statement"]
        wanted = policies.policy_for(
            handler, "heavy-jobs", stage, outputs, tracing=True, kms_key_arn=rehearsal.keys[stage]
        )
        assert statements == wanted["Statement"]
        key_grants = [s for s in statements if any(a.startswith("kms:") for a in s["Action"])]
        if rehearsal.keys[stage]:  # exactly its key actions, on the stage's key
            assert [(s["Action"], s["Resource"]) for s in key_grants] == [
                (policies.key_actions(handler), [rehearsal.keys[stage]])
            ]
        else:
            assert key_grants == []
        traces = [s for s in statements if s["Action"] == policies.XRAY_ACTIONS]
        assert [s["Resource"] for s in traces] == [["*"]]
        for statement in statements:
            assert statement["Effect"] == "Allow"
            assert all("*" not in action for action in statement["Action"])
            if statement not in traces:
                assert "*" not in statement["Resource"]
            if any(a.startswith(("sqs:", "dynamodb:")) for a in statement["Action"]):
                for resource in statement["Resource"]:
                    assert resource in stack_arns or resource.startswith(
                        outputs["TableArn"] + "/index/"
                    )


# In a stage that requires a key, it guards what creates, lists or cancels jobs; reading
# one job stays open (its unguessable id is the capability).
# What the OpenAPI document says a key guards (one list, chalicelib/openapi.py).
KEYED_ROUTES = set(KEYED_OPERATIONS)


def test_only_prods_job_changes_and_listing_require_an_api_key(rehearsal: Rehearsal) -> None:
    """Checked on Chalice's own API definition; moto's copy is only as good as the bridge."""
    chalice = [str(VENV / "bin" / "chalice"), "--project-dir", str(rehearsal.project)]
    for stage in STAGES:
        generated = subprocess.run(
            [*chalice, "generate-models", "--stage", stage],
            env=rehearsal.env,
            capture_output=True,
            text=True,
            check=True,
        )
        definition = json.loads(generated.stdout)
        keyed = {
            (path, method)
            for path, methods in definition["paths"].items()
            for method, doc in methods.items()
            if {"api_key": []} in doc.get("security", [])
        }
        assert keyed == (KEYED_ROUTES if stage == KEY_STAGE else set())
        if stage == KEY_STAGE:
            scheme = definition["securityDefinitions"]["api_key"]
            assert scheme == {"type": "apiKey", "name": "x-api-key", "in": "header"}

        apigw = rehearsal.client("apigateway")
        resources = apigw.get_resources(restApiId=rehearsal.api_id(stage))["items"]
        heavy = next(r for r in resources if r["path"] == "/heavy")
        assert heavy["resourceMethods"]["POST"]["apiKeyRequired"] is (stage == KEY_STAGE)


def test_every_jobs_route_of_the_keyed_stage_requires_a_key(rehearsal: Rehearsal) -> None:
    """Every method of every /jobs path (reading and waiting for a job included) needs a
    key on the keyed stage, and none on the other; the open routes stay open on both."""
    apigw = rehearsal.client("apigateway")
    for stage in STAGES:
        resources = apigw.get_resources(restApiId=rehearsal.api_id(stage))["items"]
        required = {
            (resource["path"], method): bool(doc.get("apiKeyRequired"))
            for resource in resources
            for method, doc in resource.get("resourceMethods", {}).items()
            if method != "OPTIONS"  # CORS preflight: API Gateway never asks it for a key
        }
        jobs = {route for route in required if route[0].split("/")[1] == "jobs"}
        assert ("/jobs/{job_id}", "GET") in jobs and len(jobs) >= 5
        assert {required[route] for route in jobs} == {stage == KEY_STAGE}, stage
        for route in [("/", "GET"), ("/fast", "GET"), ("/kinds", "GET"), ("/openapi.json", "GET")]:
            assert required[route] is False, (stage, route)


def test_prod_has_a_throttled_usage_plan_with_its_key(
    rehearsal: Rehearsal, declared: dict[str, StageSettings]
) -> None:
    apigw = rehearsal.client("apigateway")
    (plan,) = rehearsal.usage_plans()  # one plan, for prod only, after two deploys
    assert plan["name"] == "heavy-jobs-prod"
    api_stage = {"apiId": rehearsal.api_id(KEY_STAGE), "stage": "prod"}
    assert plan["apiStages"] == [api_stage]
    assert declared[KEY_STAGE].api_gateway_stage == "prod"
    assert plan["throttle"] == UPDATED_THROTTLE.as_api()
    assert rehearsal.first_usage_plan["throttle"] == Throttle().as_api()
    assert rehearsal.first_usage_plan["id"] == plan["id"]
    (key,) = apigw.get_api_keys(includeValues=True)["items"]
    assert key["name"] == "heavy-jobs-prod" and key["enabled"]
    members = apigw.get_usage_plan_keys(usagePlanId=plan["id"])["items"]
    assert [(m["id"], m["value"]) for m in members] == [(key["id"], key["value"])]


def test_make_api_key_prints_the_key(rehearsal: Rehearsal) -> None:
    (key,) = rehearsal.client("apigateway").get_api_keys(includeValues=True)["items"]
    assert rehearsal.make("api-key", "STAGE=prod").stdout == key["value"] + "\n"
    refused = rehearsal.make("api-key", "STAGE=dev", check=False)
    assert refused.returncode != 0
    assert "requires no API key" in refused.stderr


def test_each_client_gets_its_own_key_in_the_plan(rehearsal: Rehearsal) -> None:
    """Usage plans throttle per key: a client with its own key has the plan's whole rate."""
    apigw = rehearsal.client("apigateway")
    (plan,) = rehearsal.usage_plans()
    alice = rehearsal.make("api-key", "STAGE=prod", "CLIENT=alice").stdout.strip()
    again = rehearsal.make("api-key", "STAGE=prod", "CLIENT=alice").stdout.strip()
    bob = rehearsal.make("api-key", "STAGE=prod", "CLIENT=bob").stdout.strip()
    assert alice == again and alice != bob
    keys = {k["name"]: k for k in apigw.get_api_keys(includeValues=True)["items"]}
    assert keys["heavy-jobs-prod-alice"]["value"] == alice
    assert keys["heavy-jobs-prod-bob"]["value"] == bob
    members = {m["name"] for m in apigw.get_usage_plan_keys(usagePlanId=plan["id"])["items"]}
    assert members == {"heavy-jobs-prod", "heavy-jobs-prod-alice", "heavy-jobs-prod-bob"}
    assert rehearsal.make("api-key", "STAGE=prod", "CLIENT=a/b", check=False).returncode != 0


def test_redeploy_updated_in_place(rehearsal: Rehearsal) -> None:
    lambda_client = rehearsal.client("lambda")
    names = sorted(f["FunctionName"] for f in lambda_client.list_functions()["Functions"])
    assert names == sorted(
        function for stage in STAGES for function in rehearsal.first_functions[stage].values()
    )
    for stage in STAGES:
        assert rehearsal.functions(stage) == rehearsal.first_functions[stage]
        assert rehearsal.api_id(stage) == rehearsal.first_api_ids[stage]
    assert len(rehearsal.client("apigateway").get_rest_apis()["items"]) == len(STAGES)


# --- deploy state kept in AWS (any clone can deploy and destroy) ----------------------------


def test_a_deploy_from_a_fresh_clone_updated_every_mapping_in_place(rehearsal: Rehearsal) -> None:
    """moto accepts a duplicate SQS mapping (AWS answers ResourceConflictException): count.
    The job table stream's mapping too."""
    counts = rehearsal.mappings_per_function()
    with _fresh_app_import():
        consumers = stack.queue_consumers(stack.load_chalice_config("dev", rehearsal.project))
    handlers = [*consumers, event_stream.HANDLER]
    expected = {function_name(stage, handler): 1 for stage in STAGES for handler in handlers}
    assert counts == expected


@pytest.mark.parametrize("stage", STAGES)
def test_the_deploy_record_is_kept_with_the_stage(rehearsal: Rehearsal, stage: str) -> None:
    parameter = state.parameter_name(f"heavy-jobs-{stage}")
    value = rehearsal.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]
    record = json.loads(value)
    assert record["resources"] == rehearsal.deployed(stage)
    assert {r["name"] for r in record["resources"]} >= {"rest_api", "process_job"}
    assert first_deploy_record(rehearsal, stage) != []  # the first clone had it too


def first_deploy_record(rehearsal: Rehearsal, stage: str) -> list[dict[str, Any]]:
    assert rehearsal.first_project is not None
    path = state.record_path(rehearsal.first_project, stage)
    return list(json.loads(path.read_text())["resources"])


def test_a_stage_without_a_record_anywhere_is_refused_until_its_clone_saves_it(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    """A stage deployed before records were kept in AWS: its record is only in the clone
    that deployed it. Other clones stop before changing anything; that clone's next deploy
    saves the record, and from then on any clone works."""
    ssm = rehearsal.client("ssm")
    parameter = state.parameter_name("heavy-jobs-dev")
    ssm.delete_parameter(Name=parameter)
    before = (rehearsal.mappings_per_function(), rehearsal.client("lambda").list_functions())

    stranger = copy_project(tmp_path)
    for command in ("deploy", "destroy"):
        refused = rehearsal.make(command, "STAGE=dev", check=False, project=stranger)
        assert refused.returncode != 0
        assert "no deploy record" in refused.stderr
    after = (rehearsal.mappings_per_function(), rehearsal.client("lambda").list_functions())
    assert after[0] == before[0]
    assert [f["FunctionName"] for f in after[1]["Functions"]] == [
        f["FunctionName"] for f in before[1]["Functions"]
    ]

    rehearsal.deploy("dev")  # from the clone that has the record: saved again
    assert json.loads(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])["resources"]
    assert rehearsal.mappings_per_function() == before[0]
    assert rehearsal.api_id("dev") == rehearsal.first_api_ids["dev"]


# --- recursion, operations ------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_the_worker_may_recurse_and_nothing_else_was_changed(
    rehearsal: Rehearsal, stage: str
) -> None:
    """Continuations and retries re-enter the worker through its own queue (SQS -> Lambda ->
    SQS); the dead-letter consumer is fed by SQS alone and keeps AWS's default."""
    configs = moto_bridges.recursion_configs
    assert configs[function_name(stage, "process_job")] == "Allow"
    assert function_name(stage, "process_dead_letters") not in configs
    assert function_name(stage, "api_handler") not in configs
    answer = rehearsal.client("lambda").get_function_recursion_config(
        FunctionName=function_name(stage, "process_job")
    )
    assert answer["RecursiveLoop"] == "Allow"


@pytest.mark.parametrize("stage", STAGES)
def test_alarms_watch_dead_letters_backlog_worker_and_failed_jobs(
    rehearsal: Rehearsal, stage: str
) -> None:
    outputs, ops = rehearsal.outputs[stage], rehearsal.ops_outputs[stage]
    alarms = rehearsal.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"heavy-jobs-{stage}-")
    by_name = {
        a["AlarmName"].removeprefix(f"heavy-jobs-{stage}-"): a for a in alarms["MetricAlarms"]
    }
    assert set(by_name) == {
        "dead-letters",
        "events-failed",
        "webhook-dead-letters",
        "queue-age",
        "worker-errors",
        "worker-throttles",
        "jobs-failed",
    }
    assert sorted(ops["AlarmNames"].split(",")) == sorted(
        a["AlarmName"] for a in alarms["MetricAlarms"]
    )
    for alarm in by_name.values():
        assert alarm["AlarmActions"] == [ops["AlarmTopicArn"]]
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"

    dead = {q["Id"]: q for q in by_name["dead-letters"]["Metrics"]}
    for query in ("received", "visible"):
        (dimension,) = dead[query]["MetricStat"]["Metric"]["Dimensions"]
        assert dimension == {"Name": "QueueName", "Value": outputs["DeadLetterQueueName"]}
    assert by_name["dead-letters"]["Threshold"] == 0

    age = by_name["queue-age"]
    assert age["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert age["Dimensions"] == [{"Name": "QueueName", "Value": outputs["QueueName"]}]
    assert age["Threshold"] == operations.StageOperations().oldest_message_alarm_seconds

    worker = function_name(stage, "process_job")
    for name, metric in (("worker-errors", "Errors"), ("worker-throttles", "Throttles")):
        assert (by_name[name]["Namespace"], by_name[name]["MetricName"]) == ("AWS/Lambda", metric)
        assert by_name[name]["Dimensions"] == [{"Name": "FunctionName", "Value": worker}]

    failed = by_name["jobs-failed"]
    assert (failed["Namespace"], failed["MetricName"]) == (NAMESPACE, Metric.FAILED)
    # What the stage's functions emit: its own metrics, not another stage's.
    assert {d["Name"]: d["Value"] for d in failed["Dimensions"]} == dimensions(stage)


@pytest.mark.parametrize("stage", STAGES)
def test_alarms_reach_the_e_mail_given_to_the_deploy(rehearsal: Rehearsal, stage: str) -> None:
    topic = rehearsal.ops_outputs[stage]["AlarmTopicArn"]
    subscriptions = rehearsal.client("sns").list_subscriptions_by_topic(TopicArn=topic)
    endpoints = [(s["Protocol"], s["Endpoint"]) for s in subscriptions["Subscriptions"]]
    assert endpoints == ([("email", ALARM_EMAIL)] if stage == KEY_STAGE else [])


@pytest.mark.parametrize("stage", STAGES)
def test_a_dashboard_shows_the_queue_the_jobs_and_the_worker(
    rehearsal: Rehearsal, stage: str
) -> None:
    name = rehearsal.ops_outputs[stage]["DashboardName"]
    body = json.loads(
        rehearsal.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"]
    )
    widgets = {w["properties"]["title"]: w["properties"] for w in body["widgets"]}
    text = json.dumps(widgets)
    assert rehearsal.outputs[stage]["QueueName"] in text
    assert rehearsal.outputs[stage]["DeadLetterQueueName"] in text
    assert function_name(stage, "process_job") in text
    for metric in (
        Metric.ACCEPTED,
        Metric.STARTED,
        Metric.SUCCEEDED,
        Metric.FAILED,
        Metric.CANCELLED,
    ):
        assert metric in json.dumps(widgets["Jobs"])
    waits = json.dumps(widgets["Queue wait and run time (ms)"])
    assert Metric.QUEUE_WAIT in waits and Metric.RUN_DURATION in waits
    assert '"p50"' in waits and '"p99"' in waits
    assert "ApproximateAgeOfOldestMessage" in text and "Throttles" in text and "Duration" in text


@pytest.mark.parametrize("stage", STAGES)
def test_the_deployed_dashboard_shows_errors_and_throttles_of_every_function(
    rehearsal: Rehearsal, stage: str
) -> None:
    """As CloudFormation rendered it: each Lambda search names, by exact name, every
    function Chalice deployed for the stage."""
    name = rehearsal.ops_outputs[stage]["DashboardName"]
    body = json.loads(
        rehearsal.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"]
    )
    (widget,) = [
        w["properties"]
        for w in body["widgets"]
        if w["properties"]["title"].startswith("Errors and throttles")
    ]
    expressions = [row[0]["expression"] for row in widget["metrics"]]
    searches = [e for e in expressions if "{AWS/Lambda,FunctionName}" in e]
    assert len(searches) == 2  # errors, throttles
    deployed = set(rehearsal.functions(stage).values())
    assert len(deployed) >= 5  # the API's and each handler's
    for expression in searches:
        assert sorted(searched_functions(expression)) == sorted(deployed)


@pytest.mark.parametrize("stage", STAGES)
def test_every_log_group_has_a_retention(rehearsal: Rehearsal, stage: str) -> None:
    days = operations.StageOperations().log_retention_days
    logs = rehearsal.client("logs")
    for function in rehearsal.functions(stage).values():
        name = f"/aws/lambda/{function}"
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        (group,) = [g for g in groups if g["logGroupName"] == name]
        assert group.get("retentionInDays") == days
    access = rehearsal.ops_outputs[stage]["AccessLogGroupName"]
    (group,) = logs.describe_log_groups(logGroupNamePrefix=access)["logGroups"]
    assert group["retentionInDays"] == days


@pytest.mark.parametrize("stage", STAGES)
def test_the_api_stage_writes_a_json_access_log_with_the_request_id(
    rehearsal: Rehearsal, stage: str
) -> None:
    apigw = rehearsal.client("apigateway")
    settings_ = apigw.get_stage(restApiId=rehearsal.api_id(stage), stageName=stage)[
        "accessLogSettings"
    ]
    group = rehearsal.ops_outputs[stage]["AccessLogGroupName"]
    assert settings_["destinationArn"].endswith(f":log-group:{group}")
    line = json.loads(settings_["format"])
    assert line["requestId"] == "$context.requestId"
    # API Gateway logs only for an account that names its CloudWatch role.
    assert apigw.get_account()["cloudwatchRoleArn"].endswith(f"/{operations.API_GATEWAY_LOGS_ROLE}")


@pytest.mark.parametrize("stage", STAGES)
def test_functions_and_the_api_stage_are_traced(rehearsal: Rehearsal, stage: str) -> None:
    """Active tracing on every function, X-Ray tracing on the REST API's stage: the stage's
    "xray" setting in .chalice/config.json, which `chalice deploy` applies."""
    with _fresh_app_import():
        config = stack.load_chalice_config(stage, rehearsal.project)
    assert config.xray_enabled is True
    lambda_client = rehearsal.client("lambda")
    functions = rehearsal.functions(stage)
    assert set(functions) == set(stack.handler_names(config))
    for function in functions.values():
        configuration = lambda_client.get_function_configuration(FunctionName=function)
        assert configuration["TracingConfig"] == {"Mode": "Active"}, function
    api_stage = rehearsal.client("apigateway").get_stage(
        restApiId=rehearsal.api_id(stage), stageName=stage
    )
    assert api_stage["tracingEnabled"] is True


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_point_in_time_recovery_follows_the_stage(rehearsal: Rehearsal, stage: str) -> None:
    table = rehearsal.outputs[stage]["TableName"]
    backups = rehearsal.client("dynamodb").describe_continuous_backups(TableName=table)
    status = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    with _fresh_app_import():
        config = stack.load_chalice_config(stage, rehearsal.project)
    wanted = operations.StageOperations.from_config(config, stage).point_in_time_recovery
    assert wanted is (stage == KEY_STAGE)  # on in prod, by .chalice/config.json
    assert status["PointInTimeRecoveryStatus"] == ("ENABLED" if wanted else "DISABLED")


@pytest.mark.parametrize("stage", STAGES)
def test_every_queue_is_encrypted(rehearsal: Rehearsal, stage: str) -> None:
    """With SQS-managed keys (SQS and moto encrypt new queues so by default; the template
    says so explicitly, which the scanner checks: tests/infra/test_checkov.py), or with the
    stage's own KMS key and the data key reuse period chosen for it, instead of them."""
    sqs = rehearsal.client("sqs")
    urls = [v for k, v in rehearsal.outputs[stage].items() if k.endswith("QueueUrl")]
    assert len(urls) == 4
    key = rehearsal.keys[stage]
    for url in urls:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        if key:
            assert attributes["KmsMasterKeyId"] == key
            assert int(attributes["KmsDataKeyReusePeriodSeconds"]) == (
                encryption.DATA_KEY_REUSE_SECONDS
            )
        else:
            assert attributes["SqsManagedSseEnabled"] == "true"
            assert "KmsMasterKeyId" not in attributes


@pytest.mark.parametrize("stage", STAGES)
def test_the_stages_key_encrypts_what_the_stage_stores_and_only_there(
    rehearsal: Rehearsal, stage: str
) -> None:
    """As AWS answers: the job table, the alarm topic, every log group (the functions' and
    the access log) and every function's environment name the stage's key; a stage without
    one names none (AWS-owned and AWS-managed keys, as before keys could be named)."""
    key = rehearsal.keys[stage]
    assert bool(key) is (stage == KEYED_STAGE)
    table = rehearsal.client("dynamodb").describe_table(
        TableName=rehearsal.outputs[stage]["TableName"]
    )["Table"]
    topic = rehearsal.client("sns").get_topic_attributes(
        TopicArn=rehearsal.ops_outputs[stage]["AlarmTopicArn"]
    )["Attributes"]
    logs = rehearsal.client("logs")
    groups = [f"/aws/lambda/{f}" for f in rehearsal.functions(stage).values()]
    groups.append(rehearsal.ops_outputs[stage]["AccessLogGroupName"])
    group_keys = {}
    for name in groups:
        (group,) = [
            g
            for g in logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
            if g["logGroupName"] == name
        ]
        group_keys[name] = group.get("kmsKeyId", "")
    lambda_client = rehearsal.client("lambda")
    function_keys = {
        f: lambda_client.get_function_configuration(FunctionName=f).get("KMSKeyArn") or ""
        for f in rehearsal.functions(stage).values()
    }
    assert len(function_keys) >= 5
    if key:
        assert table["SSEDescription"]["SSEType"] == "KMS"
        assert table["SSEDescription"]["KMSMasterKeyArn"] == key
        assert topic["KmsMasterKeyId"] == key
    else:
        assert "SSEDescription" not in table
        assert "KmsMasterKeyId" not in topic
    assert group_keys == dict.fromkeys(groups, key)
    assert function_keys == dict.fromkeys(function_keys, key)


def test_pause_and_resume_switch_only_the_worker(rehearsal: Rehearsal) -> None:
    lambda_client = rehearsal.client("lambda")

    def states() -> dict[str, str]:
        mappings = lambda_client.list_event_source_mappings()["EventSourceMappings"]
        return {m["FunctionArn"].split(":")[-1]: m["State"] for m in mappings}

    worker = function_name("dev", "process_job")
    table = JobTable(rehearsal.client("dynamodb"), rehearsal.outputs["dev"]["TableName"])
    assert table.worker_paused() == WorkerPause(paused=False)  # never paused: not recorded
    before = states()
    assert rehearsal.make("resume", "STAGE=dev").returncode == 0
    assert table.worker_paused() == WorkerPause(paused=False)
    resumed = states()
    assert resumed[worker] == "Enabled"
    assert {f: s for f, s in resumed.items() if f != worker} == {
        f: s for f, s in before.items() if f != worker
    }
    # A deploy leaves the mapping as it is (the harness's own disabling skipped here).
    rehearsal.make("deploy", "STAGE=dev")
    assert states()[worker] == "Enabled"
    paused = rehearsal.make("pause", "STAGE=dev")
    assert "paused" in paused.stdout
    assert states() == before  # disabled again (as the harness keeps it: moto cannot run it)
    assert before[worker] == "Disabled"
    # The control item follows, for the API to report (GET /jobs "paused").
    recorded = table.worker_paused()
    assert recorded.paused is True and recorded.paused_at is not None
    rehearsal.make("deploy", "STAGE=dev")  # maintenance does not end with a deploy
    assert states()[worker] == "Disabled"
    assert table.worker_paused() == recorded


def test_a_deploy_without_alarm_email_keeps_the_subscription(rehearsal: Rehearsal) -> None:
    rehearsal.deploy(KEY_STAGE)  # no ALARM_EMAIL this time
    topic = rehearsal.ops_outputs[KEY_STAGE]["AlarmTopicArn"]
    subscriptions = rehearsal.client("sns").list_subscriptions_by_topic(TopicArn=topic)
    assert [s["Endpoint"] for s in subscriptions["Subscriptions"]] == [ALARM_EMAIL]


# --- a stage that authenticates with IAM ------------------------------------------------

IAM_STAGE = "iam"


def add_iam_stage(project: Path) -> None:
    """A stage ``iam`` in the copy's .chalice/config.json: dev's, renamed, with
    JOBS_AUTH=iam (the project's own config has no such stage)."""
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    dev = json.dumps(config["stages"]["dev"]).replace("-dev-", f"-{IAM_STAGE}-")
    stage = json.loads(dev.replace('"dev"', f'"{IAM_STAGE}"'))
    stage["environment_variables"][settings.AUTH] = "iam"
    config["stages"][IAM_STAGE] = stage
    path.write_text(json.dumps(config, indent=2))


def test_an_iam_stages_job_routes_need_aws_iam_and_the_open_ones_nothing(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    """Deployed from a clone whose config adds the stage, then destroyed. Checked on
    Chalice's own API definition and on the deployed methods' authorizationType."""
    project = copy_project(tmp_path)
    add_iam_stage(project)
    rehearsal.make("deploy", f"STAGE={IAM_STAGE}", project=project)
    try:
        rehearsal.disable_event_sources(IAM_STAGE)
        chalice = [str(VENV / "bin" / "chalice"), "--project-dir", str(project)]
        generated = subprocess.run(
            [*chalice, "generate-models", "--stage", IAM_STAGE],
            env=rehearsal.env,
            capture_output=True,
            text=True,
            check=True,
        )
        definition = json.loads(generated.stdout)
        signed = {
            (path, method)
            for path, methods in definition["paths"].items()
            for method, doc in methods.items()
            if {"sigv4": []} in doc.get("security", [])
        }
        assert signed == KEYED_ROUTES
        assert definition["securityDefinitions"] == {"sigv4": SIGV4_SCHEME}

        record = json.loads((project / ".chalice" / "deployed" / f"{IAM_STAGE}.json").read_text())
        api_id = next(r["rest_api_id"] for r in record["resources"] if r["name"] == "rest_api")
        resources = rehearsal.client("apigateway").get_resources(restApiId=api_id)["items"]
        authorization = {
            (resource["path"], method.lower()): doc["authorizationType"]
            for resource in resources
            for method, doc in resource.get("resourceMethods", {}).items()
            if method != "OPTIONS"
        }
        assert {route for route, kind in authorization.items() if kind == "AWS_IAM"} == (
            KEYED_ROUTES
        )
        open_routes = {route for route, kind in authorization.items() if kind == "NONE"}
        assert open_routes == {("/", "get"), ("/fast", "get"), ("/kinds", "get")} | {
            ("/openapi.json", "get")
        }
        assert not any(
            doc["apiKeyRequired"]
            for resource in resources
            for doc in resource.get("resourceMethods", {}).values()
        )
        # No usage plan or key is made for it: nothing but IAM says who calls.
        plans = rehearsal.usage_plans()
        assert all(p["name"] != f"heavy-jobs-{IAM_STAGE}" for p in plans)
    finally:
        rehearsal.make("destroy", f"STAGE={IAM_STAGE}", project=project)


# --- tear down ---------------------------------------------------------------------------


def test_destroy_removes_everything_and_deploy_works_again(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    # From yet another fresh clone: the record in AWS says what to delete.
    rehearsal.project = copy_project(tmp_path)
    for stage in STAGES:
        rehearsal.make("destroy", f"STAGE={stage}")
    assert_nothing_left(rehearsal)

    rehearsal.deploy("dev")  # after a destroy: a new stack, functions and REST API
    assert rehearsal.api_id("dev") != rehearsal.first_api_ids["dev"]
    functions = rehearsal.client("lambda").list_functions()["Functions"]
    assert len(functions) == len(rehearsal.first_functions["dev"])
    rehearsal.make("destroy", "STAGE=dev")
    rehearsal.make("destroy", "STAGE=dev")  # nothing left to delete: still succeeds
    assert_nothing_left(rehearsal)


def assert_nothing_left(rehearsal: Rehearsal) -> None:
    apigw = rehearsal.client("apigateway")
    assert rehearsal.client("lambda").list_functions()["Functions"] == []
    assert rehearsal.client("lambda").list_event_source_mappings()["EventSourceMappings"] == []
    assert apigw.get_rest_apis()["items"] == []
    assert apigw.get_usage_plans()["items"] == []
    assert apigw.get_api_keys()["items"] == []
    # Only the account's API Gateway logging role stays: it belongs to every API there.
    roles = [r["RoleName"] for r in rehearsal.client("iam").list_roles()["Roles"]]
    assert roles == [operations.API_GATEWAY_LOGS_ROLE]
    stacks = rehearsal.client("cloudformation").list_stacks()["StackSummaries"]
    assert {s["StackStatus"] for s in stacks} <= {"DELETE_COMPLETE"}
    assert rehearsal.client("sqs").list_queues().get("QueueUrls", []) == []
    assert rehearsal.client("dynamodb").list_tables()["TableNames"] == []
    assert rehearsal.client("logs").describe_log_groups()["logGroups"] == []
    assert rehearsal.client("events").list_rules()["Rules"] == []  # scheduled functions
    assert rehearsal.client("ssm").describe_parameters()["Parameters"] == []  # deploy records
    assert rehearsal.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert rehearsal.client("cloudwatch").list_dashboards()["DashboardEntries"] == []
    assert rehearsal.client("sns").list_topics()["Topics"] == []


def test_the_working_tree_was_not_touched(
    rehearsal: Rehearsal, repository_state: tuple[str, bytes]
) -> None:
    assert _repository_state() == repository_state
    assert (rehearsal.project / ".chalice" / "deployed" / "prod.json").exists()
