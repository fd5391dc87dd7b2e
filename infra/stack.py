"""Apply infra/template.yaml as the stack of a Chalice stage, and feed its outputs to the app.

    python -m infra.stack apply --stage local

The same code applies the template to the local emulator (``make infra``) and to AWS
(``make deploy``): boto3's standard settings (``AWS_ENDPOINT_URL``, profile, region)
decide where. Applying is idempotent: the stack is created, updated, or left as it is.

The template's parameters come from ``.chalice/config.json`` (the worker's timeout sets
the queue's visibility timeout); its outputs go back into the stage's
``environment_variables`` there. Names are declared once, in the template.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from chalice.app import SQSEventConfig
from chalice.cli.factory import CLIFactory
from chalice.config import Config

from chalicelib import config as settings
from chalicelib import jobs
from infra import policies

PROJECT_DIR = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "template.yaml"

# How stack waiters poll: every 2 s (boto3's default is 30 s), for up to 20 minutes.
WAITER_CONFIG = {"Delay": 2, "MaxAttempts": 600}

# AWS guidance for an SQS-triggered function: visibility timeout >= 6 x function timeout.
VISIBILITY_TIMEOUT_FACTOR = 6

# Stack outputs -> the app's environment variables (the only mapping between the two).
OUTPUT_SETTINGS = {
    "QueueName": settings.QUEUE_NAME,
    "DeadLetterQueueName": settings.DEAD_LETTER_QUEUE_NAME,
    "TableName": settings.TABLE_NAME,
}


def stack_name(app_name: str, stage: str) -> str:
    return f"{app_name}-{stage}"


def load_chalice_config(stage: str, project_dir: Path = PROJECT_DIR) -> Config:
    """The stage's Chalice config, read as the chalice CLI reads it.

    Like the CLI, loading the app puts the stage's environment variables in os.environ
    first (app.py reads the queue name at import).
    """
    factory = CLIFactory(str(project_dir), environ=os.environ)
    return factory.create_config_obj(chalice_stage_name=stage)


def queue_consumers(config: Config) -> dict[str, str]:
    """handler name -> queue name, for every SQS handler the app declares."""
    return {
        source.name: source.queue
        for source in config.chalice_app.event_sources
        if isinstance(source, SQSEventConfig) and source.queue is not None
    }


# Chalice's default function timeout, when config.json sets none.
CHALICE_DEFAULT_TIMEOUT = 60


def parameters_for_stage(config: Config, stage: str) -> dict[str, str]:
    """Template parameters derived from the stage's function settings: each queue's
    visibility timeout is 6 x the timeout of the function that consumes it."""
    timeout_by_queue: dict[str, int] = {}
    for handler, queue in queue_consumers(config).items():
        timeout = config.scope(stage, handler).lambda_timeout or CHALICE_DEFAULT_TIMEOUT
        timeout_by_queue[queue] = max(timeout, timeout_by_queue.get(queue, 0))
    env = config.environment_variables

    def visibility(queue_setting: str) -> str:
        return str(VISIBILITY_TIMEOUT_FACTOR * timeout_by_queue[env[queue_setting]])

    return {
        "VisibilityTimeoutSeconds": visibility(settings.QUEUE_NAME),
        "DeadLetterVisibilityTimeoutSeconds": visibility(settings.DEAD_LETTER_QUEUE_NAME),
        "ExpiryAttributeName": jobs.EXPIRES_AT,
        "StatusIndexName": jobs.STATUS_INDEX,
        "RecentIndexName": jobs.RECENT_INDEX,
        "ListedAttributeName": jobs.LISTED,
    }


def apply(
    cfn: Any, name: str, parameters: Mapping[str, str], template_body: str | None = None
) -> dict[str, str]:
    """Create or update stack ``name``; wait for it; return its outputs."""
    body = template_body if template_body is not None else TEMPLATE.read_text()
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
    if stack_status(cfn, name) not in (None, "DELETE_COMPLETE"):
        try:
            cfn.update_stack(StackName=name, TemplateBody=body, Parameters=params)
        except ClientError as error:
            if "No updates are to be performed" not in str(error):
                raise
        else:
            cfn.get_waiter("stack_update_complete").wait(StackName=name, WaiterConfig=WAITER_CONFIG)
    else:
        cfn.create_stack(StackName=name, TemplateBody=body, Parameters=params)
        cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig=WAITER_CONFIG)
    return outputs(cfn, name)


def outputs(cfn: Any, name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def environment_from_outputs(stack_outputs: Mapping[str, str]) -> dict[str, str]:
    return {env: stack_outputs[key] for key, env in OUTPUT_SETTINGS.items()}


def write_stage_environment(
    stage: str, environment: Mapping[str, str], project_dir: Path = PROJECT_DIR
) -> bool:
    """Merge ``environment`` into the stage's environment_variables; True if it changed.

    The file is only rewritten when a value differs, so re-applying an unchanged stack
    leaves the working tree (and ``chalice local``'s autoreload) alone.
    """
    path = project_dir / ".chalice" / "config.json"
    data = json.loads(path.read_text())
    current = (
        data.setdefault("stages", {}).setdefault(stage, {}).setdefault("environment_variables", {})
    )
    if all(current.get(k) == v for k, v in environment.items()):
        return False
    current.update(environment)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return True


def stack_status(cfn: Any, name: str) -> str | None:
    """The stack's status, or None if there is no such stack."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    return str(stacks[0]["StackStatus"]) if stacks else None


def handler_names(config: Config) -> list[str]:
    """Every function Chalice deploys for the app: routes, event handlers, plain lambdas."""
    app = config.chalice_app
    return [
        *(["api_handler"] if app.routes else []),
        *(source.name for source in app.event_sources),
        *(function.name for function in app.pure_lambda_functions),
    ]


def write_policies(
    config: Config, stage: str, stack_outputs: Mapping[str, str], project_dir: Path = PROJECT_DIR
) -> list[Path]:
    """Write each function's ``iam_policy_file`` (if the stage names one) from the outputs."""
    written = []
    for handler in handler_names(config):
        filename = config.scope(stage, handler).iam_policy_file
        if not filename:
            continue
        path = project_dir / ".chalice" / filename
        document = policies.policy_for(handler, config.app_name, stage, stack_outputs)
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    return written


def apply_stage(
    stage: str,
    project_dir: Path = PROJECT_DIR,
    cfn: Any = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Apply the stage's stack; write its outputs into the stage's config and policies.

    ``overrides`` replace template parameters (tests shorten timeouts and receive counts).
    """
    config = load_chalice_config(stage, project_dir)
    name = stack_name(config.app_name, stage)
    cfn = cfn or boto3.client("cloudformation")
    parameters = {**parameters_for_stage(config, stage), **(overrides or {})}
    stack_outputs = apply(cfn, name, parameters)
    write_stage_environment(stage, environment_from_outputs(stack_outputs), project_dir)
    write_policies(config, stage, stack_outputs, project_dir)
    return stack_outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["apply"])
    parser.add_argument("--stage", default="local")
    args = parser.parse_args(argv)
    stack_outputs = apply_stage(args.stage)
    for key, value in sorted(stack_outputs.items()):
        print(f"  {key:<20} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
