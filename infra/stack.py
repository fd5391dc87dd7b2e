"""Apply infra/template.yaml as the stack of a Chalice stage, and feed its outputs to the app.

    python -m infra.stack apply --stage local

The same code applies the template to the local emulator (``make infra``) and to AWS
(``make deploy``): boto3's standard settings (``AWS_ENDPOINT_URL``, profile, region)
decide where. Applying is idempotent: the stack is created, updated, or left as it is.

The template's parameters come from ``.chalice/config.json`` (each consumer's timeout sets
its queue's visibility timeout) and from the code (the job queue's maxReceiveCount,
chalicelib.queue.MAX_RECEIVE_COUNT); its outputs go back into the stage's
``environment_variables`` there, with the stage's own name (``JOBS_STAGE``). Names are
declared once, in the template; the job table's indexes are declared in chalicelib/jobs.py
(``INDEXES``) and rendered into it here.

Updating a stage whose table has other indexes (one deployed by an older release) takes
several stack updates, because CloudFormation adds or deletes at most one global
secondary index per table update: first each missing index is added, one at a time (the
old ones stay, so the code still deployed keeps working), then each obsolete one is
deleted, one at a time. Then the table's items are brought to the current layout once
(``JobTable.migrate``, recorded in a control item of the table).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from chalice.app import SQSEventConfig
from chalice.cli.factory import CLIFactory
from chalice.config import Config

from chalicelib import config as settings
from chalicelib import events, jobs
from chalicelib.queue import MAX_RECEIVE_COUNT
from chalicelib.store import JobTable
from infra import encryption, lanes, policies

PROJECT_DIR = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "template.yaml"

# How stack waiters poll: every 2 s (boto3's default is 30 s), for up to 20 minutes.
WAITER_CONFIG = {"Delay": 2, "MaxAttempts": 600}

# Stack outputs -> the app's environment variables (the only mapping between the two).
OUTPUT_SETTINGS = {
    "QueueName": settings.QUEUE_NAME,
    "DeadLetterQueueName": settings.DEAD_LETTER_QUEUE_NAME,
    "DelayQueueName": settings.DELAY_QUEUE_NAME,
    "TableName": settings.TABLE_NAME,
    "ScheduleGroupName": settings.SCHEDULE_GROUP,
    "ScheduleTargetArn": settings.SCHEDULE_TARGET_ARN,
    "SchedulerRoleArn": settings.SCHEDULER_ROLE_ARN,
    "ScheduleDeadLetterQueueArn": settings.SCHEDULE_DEAD_LETTER_ARN,
    "JobEventBusName": settings.EVENT_BUS_NAME,
    "WebhookQueueName": settings.WEBHOOK_QUEUE_NAME,
}
# The template's table, whose indexes are rendered here.
TABLE_RESOURCE = "JobTable"
# Its key attribute (the template declares it; the indexes add theirs).
TABLE_KEY = {"AttributeName": "job_id", "AttributeType": "S"}


class StackError(RuntimeError):
    """The stack cannot be applied as asked; the message says why."""


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
    """Template parameters derived from the stage's function settings and the code.

    Each queue's visibility timeout is the timeout of the function that consumes it (1 x):
    Lambda refuses a mapping whose queue's visibility timeout is shorter than the function's
    timeout, and anything longer only makes a failure wait longer. On the job queue, a FIFO
    queue with one message group, a message whose invocation failed (an error, a timeout,
    an init error, a crashed sandbox) stays hidden for the visibility timeout and every job
    behind it waits as long (SQS Developer Guide, "FIFO queue delivery logic"). AWS's
    advice of 6 x the function's timeout (Lambda Developer Guide, "Using Lambda with Amazon
    SQS") leaves room for throttled batches to be retried on standard queues; a FIFO
    mapping sends a group's next batch only after the previous one ended, so reserved
    concurrency 1 never throttles the worker while each run keeps its message held
    (chalicelib.worker). The delay queue and the dead-letter queue lose nothing either
    way: see infra/template.yaml.
    """
    timeout_by_queue: dict[str, int] = {}
    for handler, queue in queue_consumers(config).items():
        timeout = config.scope(stage, handler).lambda_timeout or CHALICE_DEFAULT_TIMEOUT
        timeout_by_queue[queue] = max(timeout, timeout_by_queue.get(queue, 0))
    env = config.environment_variables

    def visibility(queue_setting: str) -> str:
        return str(timeout_by_queue[env[queue_setting]])

    return {
        "VisibilityTimeoutSeconds": visibility(settings.QUEUE_NAME),
        "DeadLetterVisibilityTimeoutSeconds": visibility(settings.DEAD_LETTER_QUEUE_NAME),
        "DelayVisibilityTimeoutSeconds": visibility(settings.DELAY_QUEUE_NAME),
        "WebhookVisibilityTimeoutSeconds": visibility(settings.WEBHOOK_QUEUE_NAME),
        "MaxReceiveCount": str(MAX_RECEIVE_COUNT),
        "ExpiryAttributeName": jobs.EXPIRES_AT,
        "JobEventSource": events.EVENT_SOURCE,
    }


# --- the template, with the table's indexes rendered in ------------------------------------


def load_template() -> dict[str, Any]:
    """infra/template.yaml as plain data (short-form tags such as !Sub expanded), with
    the job table's indexes rendered from chalicelib.jobs.INDEXES."""
    from cfnlint.decode import decode_str  # a dev dependency: only deploying needs it

    template, errors = decode_str(TEMPLATE.read_text())
    if errors:
        raise StackError(f"{TEMPLATE}: {errors}")
    return render(dict(json.loads(json.dumps(template))), wanted_indexes())


def index_definition(shape: jobs.IndexShape) -> dict[str, Any]:
    """A CloudFormation GlobalSecondaryIndexes entry for one of the code's indexes."""
    projection: dict[str, Any] = {"ProjectionType": "KEYS_ONLY"}
    if shape.projected:
        projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(shape.projected)}
    return {
        "IndexName": shape.name,
        "KeySchema": [
            {"AttributeName": shape.partition_key, "KeyType": "HASH"},
            {"AttributeName": shape.sort_key, "KeyType": "RANGE"},
        ],
        "Projection": projection,
    }


def wanted_indexes() -> list[Index]:
    """The indexes the code queries, with their key attributes' types."""
    return [
        Index(
            index_definition(shape),
            {shape.partition_key: "S", shape.sort_key: shape.sort_key_type},
        )
        for shape in jobs.INDEXES
    ]


class Index:
    """One global secondary index: its CloudFormation definition and key attribute types."""

    def __init__(self, definition: dict[str, Any], attribute_types: dict[str, str]) -> None:
        self.definition = definition
        self.attribute_types = attribute_types

    @property
    def name(self) -> str:
        return str(self.definition["IndexName"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Index)
            and _normalized(self.definition) == _normalized(other.definition)
            and self.attribute_types == other.attribute_types
        )

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Index({self.name})"


def _normalized(definition: Mapping[str, Any]) -> Any:
    projection = definition.get("Projection", {})
    return (
        definition["IndexName"],
        tuple((k["AttributeName"], k["KeyType"]) for k in definition["KeySchema"]),
        projection.get("ProjectionType"),
        tuple(sorted(projection.get("NonKeyAttributes", []))),
    )


def render(template: Mapping[str, Any], indexes: Sequence[Index]) -> dict[str, Any]:
    """``template`` with the job table's indexes (and their attribute definitions) set."""
    rendered = copy.deepcopy(dict(template))
    table = rendered["Resources"][TABLE_RESOURCE]["Properties"]
    types: dict[str, str] = {TABLE_KEY["AttributeName"]: TABLE_KEY["AttributeType"]}
    for index in indexes:
        types.update(index.attribute_types)
    table["AttributeDefinitions"] = [
        {"AttributeName": name, "AttributeType": kind} for name, kind in types.items()
    ]
    table["GlobalSecondaryIndexes"] = [copy.deepcopy(index.definition) for index in indexes]
    return rendered


def live_indexes(ddb: Any, table_name: str) -> list[Index] | None:
    """The indexes the table has now (DescribeTable), or None if there is no such table."""
    try:
        table = ddb.describe_table(TableName=table_name)["Table"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    indexes = []
    for described in table.get("GlobalSecondaryIndexes", []):
        projection = {"ProjectionType": described["Projection"]["ProjectionType"]}
        if described["Projection"].get("NonKeyAttributes"):
            projection["NonKeyAttributes"] = list(described["Projection"]["NonKeyAttributes"])
        definition = {
            "IndexName": described["IndexName"],
            "KeySchema": [
                {"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]}
                for k in described["KeySchema"]
            ],
            "Projection": projection,
        }
        keys = [k["AttributeName"] for k in described["KeySchema"]]
        indexes.append(Index(definition, {k: types[k] for k in keys}))
    return indexes


def index_steps(live: Sequence[Index], wanted: Sequence[Index]) -> list[list[Index]]:
    """The table's index lists, one per stack update, that lead from ``live`` to ``wanted``
    changing at most one index per update: first each missing index is added (the old
    ones kept), then each obsolete one deleted. At least one step (the wanted list), so
    the update carries the template's other changes. StackError if an index kept its
    name but changed shape (CloudFormation cannot; give it a new name)."""
    live_by_name = {index.name: index for index in live}
    wanted_names = {index.name for index in wanted}
    for index in wanted:
        if index.name in live_by_name and live_by_name[index.name] != index:
            raise StackError(f"index {index.name} exists with another shape: rename it")
    current = list(live)
    steps: list[list[Index]] = []
    for index in wanted:
        if index.name not in live_by_name:
            current = [*current, index]
            steps.append(current)
    for index in live:
        if index.name not in wanted_names:
            current = [i for i in current if i.name != index.name]
            steps.append(current)
    final = list(wanted)
    if steps:
        steps[-1] = final  # the same set, in the declared order
    return steps or [final]


def index_names(template: Mapping[str, Any]) -> list[str]:
    """The names of the job table's indexes in a (rendered) template."""
    table = template["Resources"][TABLE_RESOURCE]["Properties"]
    return [index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])]


def plan(cfn: Any, ddb: Any, name: str) -> list[dict[str, Any]]:
    """The templates to apply, in order, to bring stack ``name`` to infra/template.yaml."""
    template = load_template()
    wanted = wanted_indexes()
    live = None
    if stack_status(cfn, name) not in (None, "DELETE_COMPLETE"):
        table_name = outputs(cfn, name).get("TableName")
        live = live_indexes(ddb, table_name) if table_name else None
    steps = [wanted] if live is None else index_steps(live, wanted)
    return [render(template, step) for step in steps]


def apply(
    cfn: Any, name: str, parameters: Mapping[str, str], template_body: str | None = None
) -> dict[str, str]:
    """Create or update stack ``name`` with one template (by default infra/template.yaml
    with the code's indexes); wait for it; return its outputs."""
    body = template_body if template_body is not None else json.dumps(load_template())
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


def stage_environment(stage: str, stack_outputs: Mapping[str, str]) -> dict[str, str]:
    """What the stage's functions need in their environment: the outputs' names, and the
    stage's own name (the metrics' ``stage`` dimension, which its alarms watch)."""
    return {**environment_from_outputs(stack_outputs), settings.STAGE: stage}


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


def function_names(config: Config, stage: str) -> list[str]:
    """The Lambda function names Chalice gives the stage's functions, one per handler."""
    return [
        policies.lambda_function_name(config.app_name, stage, handler)
        for handler in handler_names(config)
    ]


def stage_key(config: Config, stage: str) -> str:
    """The stage's customer-managed KMS key (``kms_key_arn`` in its operations settings,
    infra/operations.py); "" when it names none. Read here, not passed in, so nothing that
    applies the stage's stack or writes its policies can leave the key out."""
    from infra.operations import StageOperations  # infra.operations imports this module

    return StageOperations.from_config(config, stage).kms_key_arn


def write_policies(
    config: Config, stage: str, stack_outputs: Mapping[str, str], project_dir: Path = PROJECT_DIR
) -> list[Path]:
    """Write each function's ``iam_policy_file`` (if the stage names one) from the outputs,
    with its use of the stage's KMS key if it names one."""
    kms_key_arn = stage_key(config, stage)
    written = []
    for handler in handler_names(config):
        scoped = config.scope(stage, handler)
        filename = scoped.iam_policy_file
        if not filename:
            continue
        path = project_dir / ".chalice" / filename
        document = policies.policy_for(
            handler,
            config.app_name,
            stage,
            stack_outputs,
            tracing=bool(scoped.xray_enabled),
            kms_key_arn=kms_key_arn,
        )
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    return written


def apply_stage(
    stage: str,
    project_dir: Path = PROJECT_DIR,
    cfn: Any = None,
    overrides: Mapping[str, str] | None = None,
    ddb: Any = None,
    scheduler: Any = None,
) -> dict[str, str]:
    """Apply the stage's stack, in as many updates as its table's indexes need; bring the
    table's items to the current layout; write the outputs into the stage's config and
    policies.

    ``overrides`` replace template parameters (tests shorten timeouts and receive counts).
    ``cfn``, ``ddb`` and ``scheduler`` are the clients to use (default: boto3's, in
    ``cfn``'s region).
    The stage's lanes are written into its config first (infra/lanes.py).
    A stage that names a KMS key (:func:`stage_key`) gets its table and queues encrypted
    with it, and policies that let each function use it (infra/encryption.py).
    """
    lanes.render(stage, project_dir)
    config = load_chalice_config(stage, project_dir)
    name = stack_name(config.app_name, stage)
    cfn = cfn or boto3.client("cloudformation")
    ddb = ddb or boto3.client("dynamodb", region_name=cfn.meta.region_name)
    parameters = {**parameters_for_stage(config, stage), **(overrides or {})}
    kms_key_arn = stage_key(config, stage)
    templates = [encryption.encrypt(t, kms_key_arn) for t in plan(cfn, ddb, name)]
    stack_outputs: dict[str, str] = {}
    for step, template in enumerate(templates, start=1):
        if len(templates) > 1:
            indexes = ", ".join(index_names(template))
            print(
                f"Updating stack {name}, step {step} of {len(templates)}: indexes {indexes}",
                flush=True,
            )
        stack_outputs = apply(cfn, name, parameters, json.dumps(template))
    scheduler = scheduler or boto3.client("scheduler", region_name=cfn.meta.region_name)
    ensure_schedule_group(scheduler, stack_outputs["ScheduleGroupName"])
    table = JobTable(ddb, stack_outputs["TableName"])
    if table.schema_version() < jobs.SCHEMA_VERSION:
        report = table.migrate()
        if report.scanned:  # a new table has nothing to say
            print(
                f"Job table {table.table_name}: items at layout version {jobs.SCHEMA_VERSION} "
                f"({report.rewritten} of {report.scanned} rewritten)",
                flush=True,
            )
        if report.unsettled:
            print(
                f"Job table {table.table_name}: {report.unsettled} of {report.scanned} items "
                "changed each time the migration read them and were left as they were; "
                "apply the stage again to finish the migration",
                file=sys.stderr,
                flush=True,
            )
    write_stage_environment(stage, stage_environment(stage, stack_outputs), project_dir)
    write_policies(config, stage, stack_outputs, project_dir)
    return stack_outputs


def ensure_schedule_group(scheduler: Any, name: str) -> None:
    """Make the stage's EventBridge Scheduler group unless it exists. On AWS the stack
    made it; the local emulator's CloudFormation skips that resource type, so the group
    is made here through the Scheduler API (moto implements it)."""
    try:
        scheduler.get_schedule_group(Name=name)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    # (moto's CreateScheduleGroup replaces a group of the same name, schedules and all.)
    scheduler.create_schedule_group(Name=name)


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
