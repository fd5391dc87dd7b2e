"""Deploy rehearsal: the real `make deploy` and `make destroy` against an embedded moto.

The tests run `make deploy STAGE=dev` and `STAGE=prod` (twice: the second run updates in
place), then check what exists, through boto3, against what the project declares; then
`make destroy` for both, a deploy after a destroy, and a destroy again. Everything runs in
a copy of the project (see conftest.py), against a moto server on a free port in this
process, with dummy credentials: nothing can reach AWS.

Stock moto cannot take Chalice's API definition; the gap is bridged here, in the harness
only (see ``bridge_chalice_api_import``). moto cannot run Lambda code (no Docker), so the
event source mappings the deploy creates are disabled as soon as each deploy returns.
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
from infra import deploy, policies, stack
from tests.infra.harness import REGION, VENV, isolated_environment, run_make

STAGES = ("dev", "prod")
KEY_STAGE = "prod"  # the stage whose config sets JOBS_REQUIRE_API_KEY=true
# The second prod deploy changes the throttle, to show the plan is updated in place.
# (Whole numbers: moto parses a patched rateLimit with int().)
UPDATED_THROTTLE = deploy.Throttle(rate_limit=3, burst_limit=7)


# --- the emulator and its bridge ---------------------------------------------------------


def bridge_chalice_api_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto 5.2.5's API Gateway import the API definition Chalice deploys.

    moto's ImportRestApi and PutRestApi reject ``swagger: "2.0"`` (they read only OpenAPI
    3) and ImportRestApi requires ``info.description``: both are relabelled here, as the
    paths, methods and integrations moto reads are the same in both versions. moto also
    drops ``security``, so methods whose definition requires an ``apiKey`` scheme get
    ``apiKeyRequired`` set, as API Gateway does.
    """
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
        _require_api_keys(api, api_doc)
        return api

    monkeypatch.setattr(APIGatewayBackend, "import_rest_api", import_rest_api)
    monkeypatch.setattr(APIGatewayBackend, "put_rest_api", put_rest_api)


def _as_openapi3(api_doc: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in api_doc.items() if k != "swagger"}
    doc.setdefault("openapi", "3.0.1")
    doc["info"] = {"description": "", **api_doc.get("info", {})}
    return doc


def _require_api_keys(api: Any, api_doc: dict[str, Any]) -> None:
    definitions = api_doc.get("securityDefinitions", {})
    key_schemes = {name for name, d in definitions.items() if d.get("type") == "apiKey"}
    for path, methods in api_doc.get("paths", {}).items():
        for method, method_doc in methods.items():
            if any(key_schemes & set(r) for r in method_doc.get("security", [])):
                resource = api.get_resource_for_path(path)
                resource.resource_methods[method.upper()].api_key_required = True


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
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    first_api_ids: dict[str, str] = field(default_factory=dict)
    first_functions: dict[str, dict[str, str]] = field(default_factory=dict)
    first_usage_plan: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def make(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        return run_make(self.project, {**self.env, **env}, *args, check=check)

    def deploy(self, stage: str, **env: str) -> None:
        self.make("deploy", f"STAGE={stage}", **env)
        self.disable_event_sources(stage)
        self.create_log_groups(stage)

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
def rehearsal(emulator: str, project_copy: Path, repository_state: tuple[str, bytes]) -> Rehearsal:
    """Both stages deployed, then deployed again (prod with another throttle)."""
    env = isolated_environment(
        AWS_ENDPOINT_URL=emulator,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
    )
    run = Rehearsal(project=project_copy, env=env, endpoint=emulator)
    for stage in STAGES:
        run.deploy(stage)
        run.first_api_ids[stage] = run.api_id(stage)
        run.first_functions[stage] = run.functions(stage)
    run.first_usage_plan = run.usage_plans()[0]
    for stage in STAGES:
        run.deploy(
            stage,
            API_RATE_LIMIT=f"{UPDATED_THROTTLE.rate_limit:g}",
            API_BURST_LIMIT=str(UPDATED_THROTTLE.burst_limit),
        )
    cfn = run.client("cloudformation")
    for stage in STAGES:
        run.outputs[stage] = stack.outputs(cfn, stack.stack_name("heavy-jobs", stage))
    return run


@dataclass(frozen=True)
class StageSettings:
    """What the copy's .chalice/config.json and app.py declare for a stage."""

    environment: dict[str, str]
    worker_timeout: int
    worker_reserved_concurrency: int
    worker_batch_size: int
    api_gateway_stage: str


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
            )
    return declared


def function_name(stage: str, handler: str) -> str:
    return policies.lambda_function_name("heavy-jobs", stage, handler)


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
    assert int(redrive["maxReceiveCount"]) >= 5
    assert int(attributes["VisibilityTimeout"]) >= 6 * declared[stage].worker_timeout
    dlq_url = outputs["DeadLetterQueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["MessageRetentionPeriod"])
    assert int(dlq["Attributes"]["MessageRetentionPeriod"]) >= 7 * 24 * 3600


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
def test_every_role_is_least_privilege(rehearsal: Rehearsal, stage: str) -> None:
    """Each function's own role holds exactly infra.policies' document: no wildcards, and
    no SQS or DynamoDB resource outside the stage's stack."""
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
        assert statements == policies.policy_for(handler, "heavy-jobs", stage, outputs)["Statement"]
        for statement in statements:
            assert statement["Effect"] == "Allow"
            assert all("*" not in action for action in statement["Action"])
            assert "*" not in statement["Resource"]
            if any(a.startswith(("sqs:", "dynamodb:")) for a in statement["Action"]):
                for resource in statement["Resource"]:
                    assert resource in stack_arns or resource.startswith(
                        outputs["TableArn"] + "/index/"
                    )


# In a stage that requires a key, it guards what creates, lists or cancels jobs; reading
# one job stays open (its unguessable id is the capability).
KEYED_ROUTES = {("/heavy", "post"), ("/jobs", "get"), ("/jobs/{job_id}/cancel", "post")}


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
    assert rehearsal.first_usage_plan["throttle"] == deploy.Throttle().as_api()
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


# --- tear down ---------------------------------------------------------------------------


def test_destroy_removes_everything_and_deploy_works_again(rehearsal: Rehearsal) -> None:
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
    assert rehearsal.client("iam").list_roles()["Roles"] == []
    stacks = rehearsal.client("cloudformation").list_stacks()["StackSummaries"]
    assert {s["StackStatus"] for s in stacks} <= {"DELETE_COMPLETE"}
    assert rehearsal.client("sqs").list_queues().get("QueueUrls", []) == []
    assert rehearsal.client("dynamodb").list_tables()["TableNames"] == []
    assert rehearsal.client("logs").describe_log_groups()["logGroups"] == []
    assert rehearsal.client("events").list_rules()["Rules"] == []  # scheduled functions


def test_the_working_tree_was_not_touched(
    rehearsal: Rehearsal, repository_state: tuple[str, bytes]
) -> None:
    assert _repository_state() == repository_state
    assert (rehearsal.project / ".chalice" / "deployed" / "prod.json").exists()
