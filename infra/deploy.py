"""Deploy a Chalice stage to AWS, tear it down, or package it for a pipeline.

    python -m infra.deploy deploy  --stage dev    # stack, then `chalice deploy`, then API key
    python -m infra.deploy destroy --stage dev    # API key, `chalice delete`, then the stack
    python -m infra.deploy package --stage prod   # out/prod/: SAM template + deployment.zip
    python -m infra.deploy api-key --stage prod   # print the stage's API key value

Where it deploys is whatever boto3's standard settings say (``AWS_PROFILE``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, credentials, ``AWS_ENDPOINT_URL``); nothing here
assumes the local emulator. Every command is idempotent: re-running ``deploy`` updates the
stage in place, re-running ``destroy`` deletes whatever is left.

What a stage is made of, and who owns it:

- the stack ``<app>-<stage>`` (infra/template.yaml: queue, dead-letter queue, job table),
  applied by :func:`infra.stack.apply_stage`, which also writes its outputs into the stage's
  ``environment_variables`` and the per-function IAM policy files;
- the functions, their roles, the SQS event source and the REST API: ``chalice deploy``,
  recorded by Chalice in ``.chalice/deployed/<stage>.json``;
- for a stage whose ``environment_variables`` set ``JOBS_REQUIRE_API_KEY=true``: a usage
  plan (throttled) on the REST API's stage, an API key and the key's membership of the plan,
  all named ``<app>-<stage>`` and managed here.

``destroy`` deletes all of it, the job table and the dead-letter queue included: job records
are results of recomputable jobs that expire after ``JOBS_RETENTION_DAYS`` anyway.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import py_compile
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
from botocore.exceptions import ClientError, WaiterError
from chalice.config import Config

from chalicelib import config as settings
from infra import policies, stack

PROJECT_DIR = stack.PROJECT_DIR
# Where `package` writes the generated merge templates, in the project (build/ is ignored).
MERGE_DIR = Path("infra", "build")
# What Chalice packages into a function: its documented project layout.
CHALICE_PROJECT_FILES = ("app.py", "requirements.txt", "chalicelib", "vendor")
# Chalice's logical id for the REST API in `chalice package` output.
CHALICE_REST_API_ID = "RestAPI"
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


class DeployError(Exception):
    """A deployment step failed in a way the message explains; no traceback needed."""


@dataclass(frozen=True)
class Throttle:
    """Request limits of a stage's usage plan, per API key.

    The worker runs one job at a time and a job takes seconds to minutes, so a client that
    submits faster than about one job a second only makes the queue longer.
    """

    # Steady-state requests per second.
    rate_limit: float = 1.0
    # Requests allowed at once above the steady rate (the token bucket's size).
    burst_limit: int = 5

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


def function_names(config: Config, stage: str) -> list[str]:
    """The Lambda function names Chalice gives the stage's functions."""
    return [
        policies.lambda_function_name(config.app_name, stage, h)
        for h in stack.handler_names(config)
    ]


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


def apply_stack(cfn: Any, config: Config, stage: str, project_dir: Path) -> dict[str, str]:
    """Apply the stage's stack (infra.stack); DeployError with the reasons if it fails."""
    name = resource_name(config, stage)
    clear_failed_creation(cfn, name)
    print(f"Applying stack {name}", flush=True)
    try:
        return stack.apply_stage(stage, project_dir, cfn)
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


def remove_api_access(apigw: Any, name: str) -> None:
    """Delete usage plan ``name`` (its keys and stages first) and API key ``name``.

    API Gateway refuses to delete a plan that still has API stages, and a REST API's stage
    should not be deleted while a plan points at it: so this runs before ``chalice delete``.
    """
    plan = find_usage_plan(apigw, name)
    if plan is not None:
        for member in _pages(apigw, "get_usage_plan_keys", usagePlanId=plan["id"]):
            apigw.delete_usage_plan_key(usagePlanId=plan["id"], keyId=member["id"])
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


def deploy(stage: str, throttle: Throttle, project_dir: Path = PROJECT_DIR) -> None:
    """Apply the stack, ``chalice deploy``, then the API key if the stage requires one."""
    config = stack.load_chalice_config(stage, project_dir)
    check_deployable(config, stage)
    apply_stack(boto3.client("cloudformation"), config, stage, project_dir)
    run_chalice(["deploy", "--stage", stage], project_dir)
    # Reloaded: Chalice has just recorded the REST API it deployed.
    config = stack.load_chalice_config(stage, project_dir)
    if not requires_api_key(config):
        return
    api = deployed_api_stage(config, stage)
    if api is None:
        raise DeployError(f"chalice recorded no REST API for stage {stage}")
    name = resource_name(config, stage)
    ensure_api_access(boto3.client("apigateway"), name, api, throttle)
    print(
        f"Usage plan {name} ({throttle.rate_limit:g} req/s, burst {throttle.burst_limit}) "
        f"and API key {name} on {api.url}\n"
        f"  key: make api-key STAGE={stage}"
    )


def destroy(stage: str, project_dir: Path = PROJECT_DIR) -> None:
    """Delete the stage: API key and usage plan, ``chalice delete``, logs, then the stack.

    Each step removes what points at the next: the usage plan points at the REST API's
    stage, the functions and their event source at the stack's queue and table. The job
    table and the dead-letter queue, with their data, go with the stack.
    """
    config = stack.load_chalice_config(stage, project_dir)
    name = resource_name(config, stage)
    remove_api_access(boto3.client("apigateway"), name)
    run_chalice(["delete", "--stage", stage], project_dir)
    delete_log_groups(boto3.client("logs"), function_names(config, stage))
    if delete_stack(boto3.client("cloudformation"), name):
        print(f"Deleted stack {name} (queue, dead-letter queue, job table and its data)")


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


def api_key(stage: str, project_dir: Path = PROJECT_DIR) -> str:
    """The value of the stage's API key; DeployError if the stage has none."""
    config = stack.load_chalice_config(stage, project_dir)
    if not requires_api_key(config):
        raise DeployError(f"stage {stage} requires no API key ({settings.REQUIRE_API_KEY})")
    name = resource_name(config, stage)
    key = find_api_key(boto3.client("apigateway"), name)
    if key is None:
        raise DeployError(f"no API key {name}: deploy the stage first")
    return str(key["value"])


def package(
    stage: str, throttle: Throttle, project_dir: Path = PROJECT_DIR, out_dir: Path | None = None
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
    merge_file.write_text(json.dumps(merge_template(config, stage, template, throttle), indent=2))
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


def load_template() -> dict[str, Any]:
    """infra/template.yaml as plain data, short-form tags (!Sub, !GetAtt) expanded and the
    job table's indexes rendered in (infra.stack.load_template)."""
    try:
        return stack.load_template()
    except stack.StackError as error:
        raise DeployError(str(error)) from None


def merge_template(
    config: Config, stage: str, template: Mapping[str, Any], throttle: Throttle
) -> dict[str, Any]:
    """The ``--merge-template`` for the stage: infra/template.yaml's stack, ready to merge.

    Resources are named after the stage's stack (``heavy-jobs-dev-queue``), not after
    whatever stack a pipeline deploys the package as, because those names are the ones in
    the stage's ``environment_variables``. Parameter defaults are the values ``make deploy``
    passes. A stage that requires an API key also gets its usage plan, key and membership.
    """
    name = resource_name(config, stage)
    merged: dict[str, Any] = {
        key: _resolve_stack_name(value, name)
        for key, value in template.items()
        if key not in ("AWSTemplateFormatVersion", "Description")
    }
    for parameter, default in stack.parameters_for_stage(config, stage).items():
        merged["Parameters"][parameter]["Default"] = default
    if requires_api_key(config):
        merged["Resources"].update(api_access_resources(name, throttle))
        merged["Outputs"]["ApiKeyId"] = {"Value": {"Ref": "ApiKey"}}
    return merged


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
    parser.add_argument("command", choices=["deploy", "destroy", "package", "api-key"])
    parser.add_argument("--stage", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy":
            deploy(args.stage, Throttle.from_mapping(os.environ))
        elif args.command == "destroy":
            destroy(args.stage)
        elif args.command == "package":
            out_dir = package(args.stage, Throttle.from_mapping(os.environ))
            print(f"Packaged stage {args.stage} in {out_dir}")
        else:
            print(api_key(args.stage))
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
