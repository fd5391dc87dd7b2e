"""Deploy a Chalice stage to AWS, tear it down, or package it for a pipeline.

    python -m infra.deploy deploy  --stage dev    # stack, then `chalice deploy`, then API key
    python -m infra.deploy destroy --stage dev    # API key, `chalice delete`, then the stack
    python -m infra.deploy package --stage prod   # out/prod/: SAM template + deployment.zip
    python -m infra.deploy api-key --stage prod [--client alice]  # print a key (per client)
    python -m infra.deploy pause   --stage prod   # the worker stops taking jobs (none lost)
    python -m infra.deploy resume  --stage prod   # and takes them again, in order

Where it deploys is whatever boto3's standard settings say (``AWS_PROFILE``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, credentials, ``AWS_ENDPOINT_URL``); nothing here
assumes the local emulator. Every command is idempotent: re-running ``deploy`` updates the
stage in place, re-running ``destroy`` deletes whatever is left.

What a stage is made of, and who owns it:

- the stack ``<app>-<stage>`` (infra/template.yaml: queues, job table), applied by
  :func:`infra.stack.apply_stage`, which also writes its outputs into the stage's
  ``environment_variables`` and the per-function IAM policy files;
- the functions, their roles, the SQS event sources, the schedule and the REST API:
  ``chalice deploy``, recorded by Chalice in ``.chalice/deployed/<stage>.json``, a record
  kept in AWS between runs (infra/deploy_state.py) so any clone can deploy and destroy;
- the recursion setting of the functions in the SQS -> Lambda -> SQS loop, and operations
  (infra/operations.py: alarms, dashboard, log retention, access logs, stack ``-ops``);
- for a stage whose ``environment_variables`` set ``JOBS_REQUIRE_API_KEY=true``: a usage
  plan (throttled per key) on the REST API's stage, an API key and the key's membership of
  the plan, all named ``<app>-<stage>``, and per-client keys ``<app>-<stage>-<client>``.

Before creating anything, ``deploy`` checks the account can give the worker its reserved
concurrency. ``destroy`` deletes all of it, the job table and the dead-letter queue included:
job records are results of recomputable jobs that expire after ``JOBS_RETENTION_DAYS`` anyway.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, WaiterError
from chalice.config import Config
from chalice.utils import to_cfn_resource_name

from chalicelib import config as settings
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import utc_now
from chalicelib.store import JobTable
from infra import deploy_state, emulator, operations, policies, run, stack
from infra.event_source import mappings

PROJECT_DIR = stack.PROJECT_DIR
# Where `package` writes the generated merge templates, in the project (build/ is ignored).
MERGE_DIR = Path("infra", "build")
# What Chalice packages into a function: its documented project layout.
CHALICE_PROJECT_FILES = ("app.py", "requirements.txt", "chalicelib", "vendor")
# Chalice's logical ids in `chalice package` output: the REST API, and the function behind
# it (every other function's id is its handler's name, CamelCased: see function_logical_id).
CHALICE_REST_API_ID = "RestAPI"
CHALICE_API_HANDLER_ID = "APIHandler"
API_HANDLER = "api_handler"
# `chalice package` builds AWS clients it never calls: they need a region (the template
# only says ${AWS::Region}) and look for credentials, on EC2's metadata service last. So
# packaging sets a region when none is configured and skips that network lookup.
PACKAGE_FALLBACK_REGION = "us-east-1"
PACKAGE_ENVIRONMENT = {
    "AWS_EC2_METADATA_DISABLED": "true",
    # Chalice imports the app before zipping it: keep the .pyc files out of the package.
    "PYTHONDONTWRITEBYTECODE": "1",
}
# What stands for the region and account in ARNs built for the package (see _reference).
ANY_REGION, ANY_ACCOUNT = "REGION", "ACCOUNT"
# A stack in this state is a failed first creation: it holds nothing and cannot be updated.
FAILED_CREATION = "ROLLBACK_COMPLETE"

# Environment variables that override the usage plan's throttling (one place they are spelled).
RATE_LIMIT = "API_RATE_LIMIT"
BURST_LIMIT = "API_BURST_LIMIT"
# The deploy parameter that subscribes an address to the stage's alarms.
ALARM_EMAIL = "ALARM_EMAIL"

# Lambda keeps this much of the account's concurrency for functions without a reservation:
# a reservation may take "the Unreserved account concurrency value that is shown, minus 100"
# (Lambda Developer Guide, "Configuring reserved concurrency for a function").
MIN_UNRESERVED_CONCURRENCY = 100
# What to ask AWS for when that is too little: Service Quotas, AWS Lambda.
CONCURRENCY_QUOTA = "Concurrent executions"
CONCURRENCY_QUOTA_CODE = "L-B99A9384"
# Continuations and retries are SQS -> Lambda -> SQS loops by design. Lambda stops such a
# chain after about 16 invocations unless the function's recursive loop detection is set
# to Allow (Lambda Developer Guide, "Use Lambda recursive loop detection to prevent infinite
# loops"; API PutFunctionRecursionConfig; SAM/CloudFormation property RecursiveLoop).
RECURSIVE_LOOP_ALLOW = "Allow"


# The stage `make run` serves on this machine: its worker is the local event source.
LOCAL_STAGE = run.LOCAL_STAGE
# How long `make pause STAGE=local` waits for the local event source to take it up: a
# receive in flight (a long poll of up to 20 s) returns first.
LOCAL_MAPPING_WAIT_SECONDS = 30.0


class DeployError(Exception):
    """A deployment step failed in a way the message explains; no traceback needed."""


@dataclass(frozen=True)
class Throttle:
    """Request limits of a stage's usage plan, per API key.

    The worker runs one job at a time and a job takes seconds to minutes, so a client that
    submits faster than about one job a second only makes the queue longer.
    """

    # Steady-state requests per second, per key. A dashboard tab polls GET /jobs with the key
    # at most once a second (less when idle), and a CLI at the same time submits, lists or
    # cancels now and then (`jobs watch` reads GET /jobs/{id}, which needs no key): 5/s keeps
    # both inside the budget. Give each further client its own key (make api-key CLIENT=...).
    rate_limit: float = 5.0
    # Requests allowed at once above the steady rate (the token bucket's size): a script
    # submitting a small batch, or a page opening with its first reads.
    burst_limit: int = 10

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Throttle:
        """Defaults overridden by ``API_RATE_LIMIT`` / ``API_BURST_LIMIT``; DeployError if bad."""
        try:
            throttle = cls(
                rate_limit=float(env.get(RATE_LIMIT) or cls.rate_limit),
                burst_limit=int(env.get(BURST_LIMIT) or cls.burst_limit),
            )
        except ValueError as error:
            raise DeployError(f"{RATE_LIMIT} / {BURST_LIMIT}: {error}") from None
        if not 0 < throttle.rate_limit < math.inf or throttle.burst_limit < 1:
            raise DeployError(f"{RATE_LIMIT} must be > 0 and {BURST_LIMIT} >= 1: {throttle}")
        return throttle

    def as_api(self) -> dict[str, Any]:
        return {"rateLimit": self.rate_limit, "burstLimit": self.burst_limit}


@dataclass(frozen=True)
class ApiStage:
    """A deployed REST API's stage, as Chalice recorded it."""

    api_id: str
    stage: str
    url: str

    @property
    def key(self) -> str:
        """The ``apiId:stage`` form usage-plan patch operations use."""
        return f"{self.api_id}:{self.stage}"


# --- reading the Chalice project ----------------------------------------------------------


def resource_name(config: Config, stage: str) -> str:
    """The name of everything this module creates for the stage: the stage's stack name."""
    return stack.stack_name(config.app_name, stage)


def requires_api_key(config: Config) -> bool:
    """Whether the stage's routes require an API key: its ``environment_variables``, read
    by the same rule app.py applies to them at import."""
    return settings.api_key_required(config.environment_variables)


def check_deployable(config: Config, stage: str) -> None:
    """Raise DeployError unless every function of the stage has its own IAM policy file.

    ``autogen_policy`` is off, so a stage without ``iam_policy_file`` (``local``) is not
    meant for AWS: ``chalice deploy`` would fail after the stack was already created.
    """
    for handler in stack.handler_names(config):
        if not config.scope(stage, handler).iam_policy_file:
            raise DeployError(
                f"stage {stage!r} sets no iam_policy_file for {handler} in "
                ".chalice/config.json: it is not a stage for AWS"
            )


def function_logical_id(handler: str) -> str:
    """The logical id ``chalice package`` gives a handler's function in the SAM template."""
    return CHALICE_API_HANDLER_ID if handler == API_HANDLER else to_cfn_resource_name(handler)


def sent_queue_outputs() -> set[str]:
    """The state stack's outputs (queue ARNs) that some function of the app sends to."""
    return {
        resource
        for grants in policies.GRANTS.values()
        for actions, resources in grants
        if "sqs:SendMessage" in actions
        for resource in resources
    }


def looping_handlers(config: Config, sent_queue_names: set[str]) -> list[str]:
    """The SQS handlers in an SQS -> Lambda -> SQS loop: those triggered by a queue the app's
    own functions send to (the worker's queue: continuations and retries; on a design with a
    delay queue, its forwarder too). A dead-letter queue's consumer is not: SQS feeds it."""
    return sorted(
        h for h, queue in stack.queue_consumers(config).items() if queue in sent_queue_names
    )


def check_account_concurrency(lambda_client: Any, config: Config, stage: str) -> None:
    """DeployError unless the account can give the stage's functions their reservations.

    Lambda refuses a reservation that would leave less than MIN_UNRESERVED_CONCURRENCY
    unreserved, and new accounts often have a quota of 10 or 50. Reservations the stage's
    functions already hold (a re-deploy) count as available. Called before anything is
    created, so a refused account ends with nothing half-made.
    """
    wanted = {
        policies.lambda_function_name(config.app_name, stage, handler): reserved
        for handler in stack.handler_names(config)
        if (reserved := config.scope(stage, handler).reserved_concurrency) is not None
    }
    if not wanted:
        return
    limits = lambda_client.get_account_settings()["AccountLimit"]
    unreserved = int(limits["UnreservedConcurrentExecutions"])
    held = sum(_reserved_concurrency(lambda_client, function) for function in wanted)
    needed = sum(wanted.values())
    if unreserved + held - needed >= MIN_UNRESERVED_CONCURRENCY:
        return
    total = int(limits.get("ConcurrentExecutions", unreserved))
    functions = ", ".join(f"{f} ({n})" for f, n in wanted.items())
    raise DeployError(
        f"this account and region cannot reserve concurrency for {functions}: "
        f"{unreserved + held} of its {total} concurrent executions are unreserved, and Lambda "
        f"keeps {MIN_UNRESERVED_CONCURRENCY} unreserved, so {needed + MIN_UNRESERVED_CONCURRENCY}"
        f" are needed. Nothing was created. Ask AWS for more: Service Quotas > AWS Lambda > "
        f'"{CONCURRENCY_QUOTA}" ({CONCURRENCY_QUOTA_CODE}), e.g. `aws service-quotas '
        f"request-service-quota-increase --service-code lambda --quota-code "
        f"{CONCURRENCY_QUOTA_CODE} --desired-value 1000`"
    )


def _reserved_concurrency(lambda_client: Any, function: str) -> int:
    """The concurrency ``function`` reserves now; 0 if it reserves none or does not exist."""
    try:
        answer = lambda_client.get_function_concurrency(FunctionName=function)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return 0
        raise
    return int(answer.get("ReservedConcurrentExecutions") or 0)


def function_exists(lambda_client: Any, function: str) -> bool:
    try:
        lambda_client.get_function(FunctionName=function)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True


def allow_recursion(lambda_client: Any, functions: list[str]) -> None:
    """Set each function's recursive loop detection to Allow (see RECURSIVE_LOOP_ALLOW)."""
    for function in functions:
        lambda_client.put_function_recursion_config(
            FunctionName=function, RecursiveLoop=RECURSIVE_LOOP_ALLOW
        )
        print(f"Recursive loop detection of {function}: {RECURSIVE_LOOP_ALLOW}")


def restore_deploy_state(
    ssm: Any, lambda_client: Any, config: Config, stage: str, project_dir: Path
) -> str:
    """Put Chalice's record of the stage where it reads it (infra/deploy_state.py).

    DeployError, before anything changes, if the stage's functions exist but no record is
    found. A local record of a stage whose functions are all gone (destroyed from another
    clone) is stale and removed, so Chalice starts afresh.
    """
    name = resource_name(config, stage)
    source = deploy_state.restore(ssm, name, project_dir, stage)
    existing = [f for f in stack.function_names(config, stage) if function_exists(lambda_client, f)]
    try:
        deploy_state.check_known(source, existing, stage)
    except deploy_state.MissingDeployState as error:
        raise DeployError(str(error)) from None
    if source == "local" and not existing:
        deploy_state.record_path(project_dir, stage).unlink()
        return "none"
    if source != "none":
        print(f"Deploy record of stage {stage}: from {'AWS' if source == 'aws' else 'this clone'}")
    return source


def deployed_api_stage(config: Config, stage: str) -> ApiStage | None:
    """The REST API Chalice deployed for the stage, from ``.chalice/deployed/<stage>.json``."""
    try:
        values = config.deployed_resources(stage).resource_values("rest_api")
    except ValueError:  # Chalice's "Resource does not exist"
        return None
    return ApiStage(values["rest_api_id"], config.api_gateway_stage, values["rest_api_url"])


def run_chalice(args: list[str], project_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """Run this virtualenv's ``chalice`` on ``project_dir``; DeployError if it fails."""
    # The chalice next to this Python: the virtualenv's, not whichever is first on PATH.
    chalice = Path(sys.executable).parent / "chalice"
    if not chalice.exists():
        raise DeployError(f"no {chalice}: run this with the project's virtualenv (make venv)")
    command = [str(chalice), "--project-dir", str(project_dir), *args]
    print("$ chalice " + " ".join(args), flush=True)
    result = subprocess.run(command, env=None if env is None else dict(env), check=False)
    if result.returncode != 0:
        raise DeployError(f"chalice {args[0]} failed with exit status {result.returncode}")


# --- the stack ---------------------------------------------------------------------------


def clear_failed_creation(cfn: Any, name: str) -> bool:
    """Delete stack ``name`` if its first creation failed; True if it did.

    Such a stack (ROLLBACK_COMPLETE) holds no resources but blocks every update, so
    without this a deploy that failed once (e.g. SQS refusing a queue name deleted less than
    60 s ago) would fail forever.
    """
    if stack.stack_status(cfn, name) != FAILED_CREATION:
        return False
    print(f"Deleting stack {name}: its creation failed earlier and it holds nothing")
    delete_stack(cfn, name)
    return True


def delete_stack(cfn: Any, name: str) -> bool:
    """Delete stack ``name`` and wait until it is gone; False if there was none."""
    if stack.stack_status(cfn, name) in (None, "DELETE_COMPLETE"):
        return False
    cfn.delete_stack(StackName=name)
    cfn.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig=stack.WAITER_CONFIG)
    return True


def stack_parameter(cfn: Any, name: str, key: str) -> str | None:
    """The value stack ``name`` was last given for parameter ``key``; None if no such stack."""
    if stack.stack_status(cfn, name) in (None, "DELETE_COMPLETE"):
        return None
    (described,) = cfn.describe_stacks(StackName=name)["Stacks"]
    values = {p["ParameterKey"]: p.get("ParameterValue") for p in described.get("Parameters", [])}
    return values.get(key)


def failure_reasons(cfn: Any, name: str) -> list[str]:
    """Why the stack's resources failed, from its events, oldest first."""
    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except ClientError:
        return []
    return [
        f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', e['ResourceStatus'])}"
        for e in reversed(events)
        if str(e["ResourceStatus"]).endswith("_FAILED")
    ]


def apply_stack(
    cfn: Any,
    config: Config,
    stage: str,
    project_dir: Path,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Apply the stage's stack (infra.stack); DeployError with the reasons if it fails."""
    name = resource_name(config, stage)
    clear_failed_creation(cfn, name)
    print(f"Applying stack {name}", flush=True)
    try:
        return stack.apply_stage(stage, project_dir, cfn, overrides)
    except WaiterError as error:
        reasons = "; ".join(failure_reasons(cfn, name)) or str(error)
        raise DeployError(f"stack {name} failed: {reasons}") from None


def apply_operations_stack(
    cfn: Any,
    config: Config,
    stage: str,
    values: operations.StageOperations,
    alarm_email: str | None,
) -> dict[str, str]:
    """Apply the stage's operations stack (infra/operations.yaml); its outputs.

    ``alarm_email`` None (ALARM_EMAIL not given) keeps the address the stack has, so a
    deploy without it does not unsubscribe anyone; "" removes it.
    """
    name = operations.ops_stack_name(config.app_name, stage)
    clear_failed_creation(cfn, name)
    print(f"Applying stack {name}", flush=True)
    if alarm_email is None:
        alarm_email = stack_parameter(cfn, name, operations.ALARM_EMAIL_PARAMETER) or ""
    parameters = operations.parameters(config, stage, values, alarm_email)
    try:
        return operations.apply_operations(cfn, name, parameters)
    except WaiterError as error:
        reasons = "; ".join(failure_reasons(cfn, name)) or str(error)
        raise DeployError(f"stack {name} failed: {reasons}") from None


# --- usage plan and API key --------------------------------------------------------------


def _pages(apigw: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in apigw.get_paginator(operation).paginate(**kwargs):
        yield from page.get("items", [])


def find_usage_plan(apigw: Any, name: str) -> dict[str, Any] | None:
    """The usage plan named ``name``; DeployError if there are several."""
    return _single(name, "usage plans", [p for p in _pages(apigw, "get_usage_plans")])


def find_api_key(apigw: Any, name: str) -> dict[str, Any] | None:
    """The API key named ``name``, with its value; DeployError if there are several."""
    # nameQuery matches prefixes: keep exact names only.
    keys = _pages(apigw, "get_api_keys", nameQuery=name, includeValues=True)
    return _single(name, "API keys", list(keys))


def _single(name: str, kind: str, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    matches = [item for item in items if item.get("name") == name]
    if len(matches) > 1:
        ids = ", ".join(item["id"] for item in matches)
        raise DeployError(f"several {kind} are named {name} ({ids}): delete the extras")
    return matches[0] if matches else None


def _number(value: float) -> str:
    """A patch value: API Gateway takes numbers as strings ("1", "2.5")."""
    return f"{value:g}"


def ensure_usage_plan(apigw: Any, name: str, api: ApiStage, throttle: Throttle) -> str:
    """Create or update usage plan ``name``: only ``api``'s stage, ``throttle``; its id."""
    plan = find_usage_plan(apigw, name)
    if plan is None:
        created = apigw.create_usage_plan(
            name=name,
            description=f"Throttles requests made with API key {name}",
            apiStages=[{"apiId": api.api_id, "stage": api.stage}],
            throttle=throttle.as_api(),
        )
        return str(created["id"])
    operations = []
    current = plan.get("throttle", {})
    for field, value in throttle.as_api().items():
        if float(current.get(field, -1)) != float(value):
            operations.append(
                {"op": "replace", "path": f"/throttle/{field}", "value": _number(value)}
            )
    stages = {f"{s['apiId']}:{s['stage']}" for s in plan.get("apiStages", [])}
    # A stage of another API is left from a REST API that was deleted and re-created.
    operations += [{"op": "remove", "path": "/apiStages", "value": s} for s in stages - {api.key}]
    if api.key not in stages:
        operations.append({"op": "add", "path": "/apiStages", "value": api.key})
    if operations:
        apigw.update_usage_plan(usagePlanId=plan["id"], patchOperations=operations)
    return str(plan["id"])


def ensure_api_key(apigw: Any, name: str) -> dict[str, Any]:
    """The enabled API key named ``name``, created if missing (AWS generates the value)."""
    key = find_api_key(apigw, name)
    if key is None:
        return dict(apigw.create_api_key(name=name, enabled=True))
    if not key.get("enabled"):
        apigw.update_api_key(
            apiKey=key["id"],
            patchOperations=[{"op": "replace", "path": "/enabled", "value": "true"}],
        )
    return key


def ensure_plan_key(apigw: Any, plan_id: str, key_id: str) -> None:
    """Put the API key in the usage plan unless it is there already."""
    members = {k["id"] for k in _pages(apigw, "get_usage_plan_keys", usagePlanId=plan_id)}
    if key_id not in members:
        apigw.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")


def ensure_api_access(apigw: Any, name: str, api: ApiStage, throttle: Throttle) -> dict[str, Any]:
    """Usage plan, API key and plan membership for ``api``, all idempotent; the key."""
    plan_id = ensure_usage_plan(apigw, name, api, throttle)
    key = ensure_api_key(apigw, name)
    ensure_plan_key(apigw, plan_id, key["id"])
    return key


# A client's name, as it appears in its key's name (<app>-<stage>-<client>).
CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def client_key_name(name: str, client: str) -> str:
    """The name of a client's own API key in the stage's plan; DeployError if ``client`` is
    not 1-64 letters, digits, ``-`` or ``_``."""
    if not CLIENT_NAME.fullmatch(client):
        raise DeployError(f"client {client!r}: use 1-64 letters, digits, '-' or '_'")
    return f"{name}-{client}"


def ensure_client_key(apigw: Any, name: str, client: str) -> dict[str, Any]:
    """Client ``client``'s own key in usage plan ``name``, created if missing.

    Usage plans throttle each key separately, so every client with its own key has the
    plan's whole rate: a dashboard left open somewhere cannot starve a CLI elsewhere.
    """
    plan = find_usage_plan(apigw, name)
    if plan is None:
        raise DeployError(f"no usage plan {name}: deploy the stage first")
    key = ensure_api_key(apigw, client_key_name(name, client))
    ensure_plan_key(apigw, plan["id"], key["id"])
    return key


def remove_api_access(apigw: Any, name: str) -> None:
    """Delete usage plan ``name`` (its keys and stages first), API key ``name`` and the
    clients' keys (``name-<client>``, members of the plan; a key of that form outside the
    plan is someone else's and stays).

    API Gateway refuses to delete a plan that still has API stages, and a REST API's stage
    should not be deleted while a plan points at it: so this runs before ``chalice delete``.
    """
    plan = find_usage_plan(apigw, name)
    if plan is not None:
        for member in _pages(apigw, "get_usage_plan_keys", usagePlanId=plan["id"]):
            apigw.delete_usage_plan_key(usagePlanId=plan["id"], keyId=member["id"])
            if str(member.get("name", "")).startswith(f"{name}-"):
                apigw.delete_api_key(apiKey=member["id"])
                print(f"Deleted API key {member['name']}")
        stages = [f"{s['apiId']}:{s['stage']}" for s in plan.get("apiStages", [])]
        if stages:
            apigw.update_usage_plan(
                usagePlanId=plan["id"],
                patchOperations=[
                    {"op": "remove", "path": "/apiStages", "value": s} for s in stages
                ],
            )
        apigw.delete_usage_plan(usagePlanId=plan["id"])
        print(f"Deleted usage plan {name}")
    key = find_api_key(apigw, name)
    if key is not None:
        apigw.delete_api_key(apiKey=key["id"])
        print(f"Deleted API key {name}")


# --- commands ----------------------------------------------------------------------------


def deploy(
    stage: str,
    throttle: Throttle,
    project_dir: Path = PROJECT_DIR,
    alarm_email: str | None = None,
) -> None:
    """Check the account, apply the stack, ``chalice deploy``, then operations and API key.

    Chalice's record of the stage is restored from AWS first and saved back after, so the
    same command works from any clone (infra/deploy_state.py).
    """
    config = stack.load_chalice_config(stage, project_dir)
    check_deployable(config, stage)
    values = operations.StageOperations.from_config(config, stage)
    state_parameters = operations.state_stack_parameters(values, load_template()["Parameters"])
    name = resource_name(config, stage)
    lambda_client, ssm = boto3.client("lambda"), boto3.client("ssm")
    check_account_concurrency(lambda_client, config, stage)
    restore_deploy_state(ssm, lambda_client, config, stage, project_dir)
    cfn = boto3.client("cloudformation")
    outputs = apply_stack(cfn, config, stage, project_dir, state_parameters)
    try:
        run_chalice(["deploy", "--stage", stage], project_dir)
    finally:  # whatever Chalice recorded, even after a later step failed
        if deploy_state.save(ssm, name, project_dir, stage):
            print(f"Saved the deploy record in {deploy_state.parameter_name(name)}")
    # Reloaded: Chalice has just recorded the REST API it deployed.
    config = stack.load_chalice_config(stage, project_dir)
    sent_to = {outputs[key].rsplit(":", 1)[-1] for key in sent_queue_outputs()}
    allow_recursion(
        lambda_client,
        [
            policies.lambda_function_name(config.app_name, stage, h)
            for h in looping_handlers(config, sent_to)
        ],
    )
    operations.set_log_retention(
        boto3.client("logs"), stack.function_names(config, stage), values.log_retention_days
    )
    ops_outputs = apply_operations_stack(cfn, config, stage, values, alarm_email)
    alarm_email = stack_parameter(
        cfn, operations.ops_stack_name(config.app_name, stage), operations.ALARM_EMAIL_PARAMETER
    )
    api = deployed_api_stage(config, stage)
    if api is None:
        raise DeployError(f"chalice recorded no REST API for stage {stage}")
    apigw = boto3.client("apigateway")
    operations.ensure_api_gateway_logging_role(boto3.client("iam"), apigw)
    operations.enable_access_logs(apigw, api.api_id, api.stage, ops_outputs["AccessLogGroupArn"])
    print(
        f"Alarms notify {ops_outputs['AlarmTopicArn']}"
        + (f" ({alarm_email}: confirm the e-mail AWS sends)" if alarm_email else "")
        + f"; dashboard {ops_outputs['DashboardName']}; logs kept "
        f"{values.log_retention_days} days"
    )
    if not requires_api_key(config):
        return
    ensure_api_access(apigw, name, api, throttle)
    print(
        f"Usage plan {name} ({throttle.rate_limit:g} req/s, burst {throttle.burst_limit} per "
        f"key) and API key {name} on {api.url}\n"
        f"  key: make api-key STAGE={stage}   a client's own: make api-key STAGE={stage} "
        "CLIENT=<name>"
    )


def destroy(stage: str, project_dir: Path = PROJECT_DIR) -> None:
    """Delete the stage: API keys and usage plan, operations, ``chalice delete``, logs, stack.

    Each step removes what points at the next: the usage plan points at the REST API's
    stage, the functions and their event sources at the stack's queues and table. The job
    table and the dead-letter queue, with their data, go with the stack.
    """
    config = stack.load_chalice_config(stage, project_dir)
    name = resource_name(config, stage)
    lambda_client, ssm = boto3.client("lambda"), boto3.client("ssm")
    restore_deploy_state(ssm, lambda_client, config, stage, project_dir)
    remove_api_access(boto3.client("apigateway"), name)
    cfn = boto3.client("cloudformation")
    ops_name = operations.ops_stack_name(config.app_name, stage)
    if delete_stack(cfn, ops_name):
        print(f"Deleted stack {ops_name} (alarms, their topic, dashboard, access log)")
    run_chalice(["delete", "--stage", stage], project_dir)
    deploy_state.forget(ssm, name)
    delete_log_groups(boto3.client("logs"), stack.function_names(config, stage))
    if delete_stack(cfn, name):
        print(f"Deleted stack {name} (queue, dead-letter queue, job table and its data)")


def set_paused(stage: str, paused: bool, project_dir: Path = PROJECT_DIR) -> str:
    """Pause (disable) or resume (enable) the worker's event source, then record it in the
    job table's ``control#worker`` item, which the API reports; what was switched.

    Paused, queued jobs wait in the queue and none is lost; the job running now finishes
    its invocation (a continuation or retry waits like the rest). On AWS the event source
    is the function's SQS mapping (UpdateEventSourceMapping). The local stage's is the
    local event source's mapping state (infra/event_source/mappings.py): the runner of a
    running ``make run`` takes it up within a long poll, and this waits until it did.
    """
    config = stack.load_chalice_config(stage, project_dir)
    handler = operations.worker_handler(config)
    if stage == LOCAL_STAGE:
        switched = _set_local_worker_enabled(project_dir, stage, handler, enabled=not paused)
        dynamodb = _local_client("dynamodb")
    else:
        switched = policies.lambda_function_name(config.app_name, stage, handler)
        try:
            operations.set_worker_enabled(boto3.client("lambda"), switched, enabled=not paused)
        except operations.OperationsError as error:
            raise DeployError(str(error)) from None
        dynamodb = boto3.client("dynamodb")
    table = JobTable(dynamodb, config.environment_variables[settings.TABLE_NAME])
    try:
        table.record_worker_paused(paused, utc_now())
    except StoreUnavailable as error:
        if stage == LOCAL_STAGE:  # no emulator: `make run` records it when it starts
            return f"{switched}; not recorded in the job table (is `make run` running?)"
        message = f"{switched} switched, but not recorded in the job table: {error}"
        raise DeployError(message) from None
    return switched


def _set_local_worker_enabled(project_dir: Path, stage: str, handler: str, enabled: bool) -> str:
    mappings.set_enabled(project_dir, stage, handler, enabled)
    state = mappings.ENABLED if enabled else mappings.DISABLED
    # A disable takes effect once the receive in flight returns: at most a long poll.
    took = mappings.wait_for_state(
        project_dir, stage, handler, state, timeout=LOCAL_MAPPING_WAIT_SECONDS
    )
    if took is False:
        raise DeployError(f"the local event source did not report {state} for {handler}")
    where = "local event source" if took else "local event source, when it starts"
    return f"{handler} ({where})"


def _local_client(service: str) -> Any:
    """A client for the local stage's emulator: AWS_ENDPOINT_URL, else where `make run`
    starts one; dummy credentials when none are configured (emulators take any)."""
    session = boto3.session.Session()
    credentials = {}
    if session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return session.client(
        service,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL")
        or emulator.endpoint_url(emulator.default_port()),
        region_name=session.region_name or run.DEFAULT_REGION,
        # An emulator answers at once or is not running: do not retry for long.
        config=BotoConfig(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 2}),
        **credentials,
    )


def delete_log_groups(logs: Any, functions: list[str]) -> None:
    """Delete the functions' CloudWatch log groups (Lambda creates them; nobody deletes them)."""
    for function in functions:
        try:
            logs.delete_log_group(logGroupName=f"/aws/lambda/{function}")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        else:
            print(f"Deleted log group /aws/lambda/{function}")


def api_key(stage: str, project_dir: Path = PROJECT_DIR, client: str | None = None) -> str:
    """The value of the stage's API key, or of ``client``'s own key (created on first use);
    DeployError if the stage requires no key or is not deployed."""
    config = stack.load_chalice_config(stage, project_dir)
    if not requires_api_key(config):
        raise DeployError(f"stage {stage} requires no API key ({settings.REQUIRE_API_KEY})")
    name = resource_name(config, stage)
    apigw = boto3.client("apigateway")
    if client is not None:
        created = ensure_client_key(apigw, name, client)
        found = find_api_key(apigw, created["name"])  # the value, whichever way it was made
        return str((found or created)["value"])
    key = find_api_key(apigw, name)
    if key is None:
        raise DeployError(f"no API key {name}: deploy the stage first")
    return str(key["value"])


def package(
    stage: str,
    throttle: Throttle,
    project_dir: Path = PROJECT_DIR,
    out_dir: Path | None = None,
    alarm_email: str = "",
) -> Path:
    """Write the stage's SAM template and deployment.zip to ``out/<stage>/``; the dir.

    Needs no AWS account, only the package index for requirements.txt (pip's PIP_INDEX_URL
    or PIP_FIND_LINKS can redirect it): the queue, dead-letter queue and table are merged
    in from infra/template.yaml, and the IAM policies refer to them by CloudFormation
    reference instead of by the ARNs ``make deploy`` writes into the policy files.
    """
    config = stack.load_chalice_config(stage, project_dir)
    check_deployable(config, stage)
    out_dir = out_dir or project_dir / "out" / stage
    template = load_template()
    merge_file = project_dir / MERGE_DIR / f"merge-{stage}.json"
    merge_file.parent.mkdir(parents=True, exist_ok=True)
    merged = merge_template(config, stage, template, throttle, alarm_email)
    merge_file.write_text(json.dumps(merged, indent=2))
    env = {**os.environ, **PACKAGE_ENVIRONMENT}
    if not boto3.session.Session().region_name:
        env["AWS_DEFAULT_REGION"] = PACKAGE_FALLBACK_REGION
    with tempfile.TemporaryDirectory(prefix=f"package-{stage}-") as staging:
        staged = stage_project(config, stage, template, project_dir, Path(staging))
        args = ["package", "--stage", stage, "--pkg-format", "cloudformation"]
        run_chalice([*args, "--merge-template", str(merge_file), str(out_dir)], staged, env)
    add_bytecode(out_dir / "deployment.zip")
    return out_dir


# --- packaging helpers -------------------------------------------------------------------


def add_bytecode(zip_path: Path) -> int:
    """Add compiled bytecode for every module of a deployment zip; return how many.

    Chalice zips sources only, and Lambda's task root is read-only, so without this every
    cold start compiles app.py, chalicelib, chalice and Powertools from source: importing
    the entry point took 1.76 x ``import boto3`` from the zip, 1.18 x with bytecode
    (``make bench``, figure 6). The bytecode is unchecked-hash (PEP 552): valid whatever
    file times the unzip gives. It is this interpreter's (Chalice targets its version).
    """
    with tempfile.TemporaryDirectory(prefix="bytecode-") as scratch:
        root = Path(scratch)
        with zipfile.ZipFile(zip_path) as archive:
            modes = {info.filename: info.external_attr for info in archive.infolist()}
            archive.extractall(root)
        before = set(root.rglob("*.pyc"))
        compileall.compile_dir(
            root, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
        )
        added = sorted(set(root.rglob("*.pyc")) - before)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                name = path.relative_to(root).as_posix()
                info = zipfile.ZipInfo.from_file(path, name)
                info.external_attr = modes.get(name, 0o644 << 16)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    return len(added)


def load_template(path: Path | None = None) -> dict[str, Any]:
    """A template as plain data, short-form tags (!Sub, !GetAtt) expanded. By default
    infra/template.yaml, with the job table's indexes rendered in (infra.stack.load_template)."""
    if path is None:
        try:
            return stack.load_template()
        except stack.StackError as error:
            raise DeployError(str(error)) from None
    from cfnlint.decode import decode_str  # a dev dependency: only deploying needs it

    template, errors = decode_str(path.read_text())
    if errors:
        raise DeployError(f"{path}: {errors}")
    return dict(json.loads(json.dumps(template)))


def merge_template(
    config: Config,
    stage: str,
    template: Mapping[str, Any],
    throttle: Throttle,
    alarm_email: str = "",
) -> dict[str, Any]:
    """The ``--merge-template`` for the stage: infra/template.yaml's stack, ready to merge.

    Resources are named after the stage's stack (``heavy-jobs-dev-queue``), not after
    whatever stack a pipeline deploys the package as, because those names are the ones in
    the stage's ``environment_variables``. Parameter defaults are the values ``make deploy``
    passes. Operations (infra/operations.yaml) are merged in the same way, the functions get
    the names ``make deploy`` gives them, and a stage that requires an API key also gets its
    usage plan, key and membership.
    """
    name = resource_name(config, stage)
    values = operations.StageOperations.from_config(config, stage)
    merged: dict[str, Any] = {
        key: _resolve_stack_name(value, name)
        for key, value in template.items()
        if key not in ("AWSTemplateFormatVersion", "Description")
    }
    defaults = {
        **stack.parameters_for_stage(config, stage),
        **operations.state_stack_parameters(values, template["Parameters"]),
    }
    for parameter, default in defaults.items():
        merged["Parameters"][parameter]["Default"] = default
    _merge_operations(merged, config, stage, values, alarm_email)
    _name_functions(merged, config, stage)
    if requires_api_key(config):
        merged["Resources"].update(api_access_resources(name, throttle))
        merged["Outputs"]["ApiKeyId"] = {"Value": {"Ref": "ApiKey"}}
    return merged


def _merge_operations(
    merged: dict[str, Any],
    config: Config,
    stage: str,
    values: operations.StageOperations,
    alarm_email: str,
) -> None:
    """Add infra/operations.yaml (named as ``make deploy`` names its stack) to ``merged``,
    its parameters defaulting to the stage's values, and the REST API's access log."""
    ops = load_template(operations.TEMPLATE)
    ops_name = operations.ops_stack_name(config.app_name, stage)
    for section in ("Parameters", "Conditions", "Resources", "Outputs"):
        part = _resolve_stack_name(ops.get(section, {}), ops_name)
        clash = set(part) & set(merged.get(section, {}))
        if clash:
            raise DeployError(f"{operations.TEMPLATE.name} and the stack both declare {clash}")
        merged.setdefault(section, {}).update(part)
    for parameter, default in operations.parameters(config, stage, values, alarm_email).items():
        merged["Parameters"][parameter]["Default"] = default
    merged["Resources"][CHALICE_REST_API_ID] = {
        "Properties": {
            "AccessLogSetting": {
                "DestinationArn": {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]},
                "Format": operations.ACCESS_LOG_FORMAT,
            },
            # `chalice deploy` turns on the stage's X-Ray tracing with the stage's "xray"
            # setting (CreateDeployment tracingEnabled) and `chalice package` gives the
            # functions Tracing: Active, but leaves the API's TracingEnabled out.
            "TracingEnabled": bool(config.scope(stage, API_HANDLER).xray_enabled),
        }
    }


def _name_functions(merged: dict[str, Any], config: Config, stage: str) -> None:
    """Give each function the name ``make deploy`` gives it, which its role's log permission
    names (left to CloudFormation, the name would be generated and its logs denied), and let
    the functions in the SQS -> Lambda -> SQS loop recurse (see RECURSIVE_LOOP_ALLOW)."""
    resources = merged["Resources"]
    sent_to = set()
    for key in sent_queue_outputs():  # GetAtt <queue>.Arn -> that queue's resolved name
        logical_id, _ = merged["Outputs"][key]["Value"]["Fn::GetAtt"]
        sent_to.add(resources[logical_id]["Properties"]["QueueName"])
    looping = set(looping_handlers(config, sent_to))
    for handler in stack.handler_names(config):
        properties: dict[str, Any] = {
            "FunctionName": policies.lambda_function_name(config.app_name, stage, handler)
        }
        if handler in looping:
            properties["RecursiveLoop"] = RECURSIVE_LOOP_ALLOW
        resources.setdefault(function_logical_id(handler), {})["Properties"] = properties


def api_access_resources(name: str, throttle: Throttle) -> dict[str, Any]:
    """CloudFormation for what :func:`ensure_api_access` does through the API."""
    return {
        "ApiUsagePlan": {
            "Type": "AWS::ApiGateway::UsagePlan",
            "Properties": {
                "UsagePlanName": name,
                # SAM's reference to the stage it creates for the API.
                "ApiStages": [
                    {
                        "ApiId": {"Ref": CHALICE_REST_API_ID},
                        "Stage": {"Ref": f"{CHALICE_REST_API_ID}.Stage"},
                    }
                ],
                "Throttle": {
                    "RateLimit": throttle.rate_limit,
                    "BurstLimit": throttle.burst_limit,
                },
            },
        },
        "ApiKey": {
            "Type": "AWS::ApiGateway::ApiKey",
            "Properties": {"Name": name, "Enabled": True},
        },
        "ApiUsagePlanKey": {
            "Type": "AWS::ApiGateway::UsagePlanKey",
            "Properties": {
                "KeyId": {"Ref": "ApiKey"},
                "KeyType": "API_KEY",
                "UsagePlanId": {"Ref": "ApiUsagePlan"},
            },
        },
    }


def _resolve_stack_name(node: Any, name: str) -> Any:
    """``node`` with every ``AWS::StackName`` (in !Sub and !Ref) replaced by ``name``."""
    if isinstance(node, list):
        return [_resolve_stack_name(item, name) for item in node]
    if not isinstance(node, dict):
        return node
    if node == {"Ref": "AWS::StackName"}:
        return name
    if isinstance(node.get("Fn::Sub"), str):
        text = node["Fn::Sub"].replace("${AWS::StackName}", name)
        return {"Fn::Sub": text} if "${" in text else text
    return {key: _resolve_stack_name(value, name) for key, value in node.items()}


def stage_project(
    config: Config, stage: str, template: Mapping[str, Any], project_dir: Path, staging: Path
) -> Path:
    """A copy of the Chalice project whose policy files use CloudFormation references.

    The policy files in the project hold the ARNs of the deployed stack (written by
    ``make deploy``) or do not exist yet; the copy's point at the packaged stack's own
    queue and table, so the package works in any account and region.
    """
    for entry in CHALICE_PROJECT_FILES:
        source = project_dir / entry
        if source.is_dir():
            shutil.copytree(source, staging / entry, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, staging / entry)
    (staging / ".chalice").mkdir()
    shutil.copy2(project_dir / ".chalice" / "config.json", staging / ".chalice" / "config.json")
    placeholders, references = _output_placeholders(template)
    for path in stack.write_policies(config, stage, placeholders, staging):
        document = json.loads(path.read_text())
        for statement in document["Statement"]:
            statement["Resource"] = [_reference(r, references) for r in statement["Resource"]]
        path.write_text(json.dumps(document, indent=2) + "\n")
    return staging


def _output_placeholders(template: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Stand-in ARNs for the template's outputs, and what each stands for.

    infra.policies builds policies from stack outputs (ARNs, whose region and account also
    name the log groups); given these stand-ins it builds the package's policies, and
    :func:`_reference` swaps each stand-in back for its output's CloudFormation expression.
    """
    placeholders = {
        key: f"arn:aws:{key}:{ANY_REGION}:{ANY_ACCOUNT}:{key}" for key in template["Outputs"]
    }
    references = {placeholders[k]: output["Value"] for k, output in template["Outputs"].items()}
    return placeholders, references


def _reference(resource: str, references: Mapping[str, Any]) -> Any:
    """A policy's resource for the package: a stand-in output, or an ARN in any account."""
    for placeholder, expression in references.items():
        if resource == placeholder:
            return expression
        if resource.startswith(placeholder + "/"):  # e.g. a table's index: TableArn/index/x
            return {"Fn::Sub": _sub_variable(expression) + resource[len(placeholder) :]}
    arn = resource.split(":", 5)
    if len(arn) == 6 and arn[3:5] == [ANY_REGION, ANY_ACCOUNT]:
        anywhere = ["${AWS::Partition}", arn[2], "${AWS::Region}", "${AWS::AccountId}", arn[5]]
        return {"Fn::Sub": ":".join(["arn", *anywhere])}
    return resource


def _sub_variable(expression: Mapping[str, Any]) -> str:
    """``{"Fn::GetAtt": ["JobTable", "Arn"]}`` as ``${JobTable.Arn}`` (and Ref likewise)."""
    if "Fn::GetAtt" in expression:
        return "${" + ".".join(expression["Fn::GetAtt"]) + "}"
    if "Ref" in expression:
        return "${" + str(expression["Ref"]) + "}"
    raise DeployError(f"cannot refer to output {expression} inside an ARN")


# --- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", choices=["deploy", "destroy", "package", "api-key", "pause", "resume"]
    )
    parser.add_argument("--stage", required=True)
    parser.add_argument("--client", help="api-key: this client's own key (created if missing)")
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy":
            given = os.environ.get(ALARM_EMAIL)  # unset: keep the stage's current address
            alarm_email = None if given is None else given.strip()
            deploy(args.stage, Throttle.from_mapping(os.environ), alarm_email=alarm_email)
        elif args.command == "destroy":
            destroy(args.stage)
        elif args.command == "package":
            alarm_email = os.environ.get(ALARM_EMAIL, "").strip()
            out_dir = package(
                args.stage, Throttle.from_mapping(os.environ), alarm_email=alarm_email
            )
            print(f"Packaged stage {args.stage} in {out_dir}")
        elif args.command in ("pause", "resume"):
            switched = set_paused(args.stage, paused=args.command == "pause")
            state = "paused: jobs wait in the queue" if args.command == "pause" else "resumed"
            print(f"{switched}: {state}")
        else:
            print(api_key(args.stage, client=args.client or None))
    except (DeployError, operations.OperationsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
