"""Package a stage for a pipeline: a SAM template and deployment.zip in ``out/<stage>/``.

:func:`package` (``make package STAGE=``) runs ``chalice package`` on a staged copy of the
project whose IAM policies refer to the packaged stack's own queues and table by
CloudFormation reference (:func:`stage_project`), with a ``--merge-template``
(:func:`merge_template`, written to ``infra/build/merge-<stage>.json``) that adds
infra/template.yaml's stack, infra/operations.yaml's operations, the names ``make deploy``
gives the functions and their recursion setting, the SQS mappings' maximum concurrency
(infra/deploy/sqs_scaling.py), the REST API's access log and default
method throttling, and for a stage that requires an API key
its usage plan and key (:func:`api_access_resources`, access.py's twin in CloudFormation).
:func:`add_bytecode` then adds compiled modules to the zip for faster cold starts.

Calls ``chalice package`` (chalice_project.py), infra.stack, infra.operations and
infra.policies; needs no AWS account, only the package index for requirements.txt. What a
failure leaves behind: DeployError (a stage not for AWS, a clash between the two templates,
``chalice package`` failing) after the merge template and part of ``out/<stage>/`` may
have been written; nothing in AWS, and the staged copy is removed. Running it again writes
them anew.
"""

from __future__ import annotations

import compileall
import json
import os
import py_compile
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from chalice.config import Config
from chalice.utils import to_cfn_resource_name

from infra import encryption, operations, policies, stack
from infra.deploy import event_stream, sqs_scaling
from infra.deploy.access import Throttle
from infra.deploy.chalice_project import (
    PROJECT_DIR,
    RECURSIVE_LOOP_ALLOW,
    DeployError,
    check_deployable,
    load_template,
    looping_handlers,
    requires_api_key,
    resource_name,
    run_chalice,
    sent_queue_outputs,
)

# Where `package` writes the generated merge templates, in the project (build/ is ignored).
MERGE_DIR = Path("infra", "build")
# What Chalice packages into a function: its documented project layout.
CHALICE_PROJECT_FILES = ("app.py", "requirements.txt", "chalicelib", "vendor")
# Chalice's logical ids in `chalice package` output: the REST API, and the function behind
# it (every other function's id is its handler's name, CamelCased: see function_logical_id).
CHALICE_REST_API_ID = "RestAPI"
CHALICE_API_HANDLER_ID = "APIHandler"
# The type `chalice package` gives every function.
SAM_FUNCTION = "AWS::Serverless::Function"
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


def function_logical_id(handler: str) -> str:
    """The logical id ``chalice package`` gives a handler's function in the SAM template."""
    return CHALICE_API_HANDLER_ID if handler == API_HANDLER else to_cfn_resource_name(handler)


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
    the names ``make deploy`` gives them and their SQS mappings the maximum concurrency it
    gives them, and a stage that requires an API key also gets its
    usage plan, key and membership. A stage that names a KMS key gets it on every resource
    that stores data (infra/encryption.py), the functions' environment included: Chalice
    has no setting for that key, so the merge template gives it.
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
    merged = encryption.encrypt(merged, values.kms_key_arn)
    _name_functions(merged, config, stage, values.kms_key_arn)
    _refer_to_schedule_arns(merged, config)
    _configure_event_stream(merged)
    _cap_sqs_scaling(merged, config, stage)
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
    its parameters defaulting to the stage's values, and the REST API's access log and
    default method throttling."""
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
            # What `make deploy` sets after `chalice deploy` (operations.set_method_throttling).
            "MethodSettings": [values.method_settings()],
        }
    }


def _name_functions(
    merged: dict[str, Any], config: Config, stage: str, kms_key_arn: str = ""
) -> None:
    """Give each function the name ``make deploy`` gives it, which its role's log permission
    names (left to CloudFormation, the name would be generated and its logs denied), let
    the functions in the SQS -> Lambda -> SQS loop recurse (see RECURSIVE_LOOP_ALLOW), and
    encrypt their environment with the stage's key if it names one."""
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
        if kms_key_arn:
            properties.update(encryption.key_properties(SAM_FUNCTION, kms_key_arn))
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


def _refer_to_schedule_arns(merged: dict[str, Any], config: Config) -> None:
    """The settings that hold an ARN (the schedules' target, role and dead-letter queue):
    in every function's environment, the stack's own expression for it instead of the
    ARN ``make deploy`` wrote into the stage's config, so the package names no account."""
    variables = {
        env: merged["Outputs"][key]["Value"]
        for key, env in stack.OUTPUT_SETTINGS.items()
        if key.endswith("Arn")
    }
    for handler in stack.handler_names(config):
        properties = merged["Resources"][function_logical_id(handler)]["Properties"]
        properties["Environment"] = {"Variables": dict(variables)}


def _configure_event_stream(merged: dict[str, Any]) -> None:
    """The job table stream's mapping: the stack's own stream, bisect on error, bounded
    retries, the failure queue and partial batch responses (infra/deploy/event_stream.py),
    merged over the DynamoDB event ``chalice package`` writes."""
    outputs = merged["Outputs"]
    properties = merged["Resources"][function_logical_id(event_stream.HANDLER)]["Properties"]
    properties["Events"] = {
        event_stream.event_logical_id(): {
            "Properties": event_stream.package_event(
                outputs[event_stream.STREAM_OUTPUT]["Value"],
                outputs[event_stream.FAILED_QUEUE_OUTPUT]["Value"],
            )
        }
    }


def _cap_sqs_scaling(merged: dict[str, Any], config: Config, stage: str) -> None:
    """Each capped SQS handler's event (the webhook deliveries'): at most its reserved
    concurrency of invocations at once (infra/deploy/sqs_scaling.py), merged over the SQS
    event ``chalice package`` writes."""
    for handler, events in sqs_scaling.package_events(config, stage).items():
        properties = merged["Resources"][function_logical_id(handler)]["Properties"]
        properties.setdefault("Events", {}).update(events)


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
    # The outputs as the merged stack has them: named after the stage's stack (a schedule
    # group's ARN names it), not after the stack a pipeline deploys the package as.
    outputs = _resolve_stack_name(template["Outputs"], resource_name(config, stage))
    placeholders, references = _output_placeholders({"Outputs": outputs})
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
    # An ARN of the stage's region and account, or of its region only (API Gateway's carry
    # no account).
    if len(arn) == 6 and arn[3] == ANY_REGION and arn[4] in (ANY_ACCOUNT, ""):
        account = "${AWS::AccountId}" if arn[4] else ""
        anywhere = ["${AWS::Partition}", arn[2], "${AWS::Region}", account, arn[5]]
        return {"Fn::Sub": ":".join(["arn", *anywhere])}
    return resource


def _sub_variable(expression: Mapping[str, Any]) -> str:
    """``{"Fn::GetAtt": ["JobTable", "Arn"]}`` as ``${JobTable.Arn}`` (and Ref likewise)."""
    if "Fn::GetAtt" in expression:
        return "${" + ".".join(expression["Fn::GetAtt"]) + "}"
    if "Ref" in expression:
        return "${" + str(expression["Ref"]) + "}"
    raise DeployError(f"cannot refer to output {expression} inside an ARN")
