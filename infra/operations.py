"""Operating a deployed stage: alarms, dashboard, log retention, access logs, backups, pause.

What ``make deploy`` adds around the app once ``chalice deploy`` has run, and what ``make
package`` merges into the SAM template:

- the stack ``<app>-<stage>-ops`` (infra/operations.yaml): the alarm topic (with an optional
  e-mail subscription, ``ALARM_EMAIL``), the alarms, the CloudWatch dashboard and the REST
  API's access log group. Its parameters are the project's names, never typed again: the
  state stack's outputs, the stage's name, the functions Chalice deploys,
  chalicelib.observability's metrics;
- the retention of every function's log group, and the REST API stage's access log setting
  and default method throttling (all through the API: Lambda, not a stack, owns the log
  groups; Chalice owns the stage);
- the state stack's ``PointInTimeRecovery`` parameter;
- pausing and resuming the worker: its SQS event source mapping disabled or enabled;
- the stage's customer-managed KMS key, if it names one (``kms_key_arn``): the operations
  stack's topic and access log group, and through the API the functions' log groups and
  environment (infra/encryption.py says what else it encrypts, and where).

Per-stage values live with the stage's other settings, under ``"operations"`` in the stage of
``.chalice/config.json`` (Chalice ignores keys it does not know); :class:`StageOperations`
declares the defaults.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from chalice.config import Config

from chalicelib import config as settings
from chalicelib.observability import NAMESPACE, SERVICE, Metric
from infra import encryption, policies, stack
from infra.deploy.event_stream import FAILED_QUEUE_OUTPUT

TEMPLATE = Path(__file__).resolve().parent / "operations.yaml"
# The key of a stage in .chalice/config.json that holds StageOperations' overrides.
CONFIG_KEY = "operations"
# infra/operations.yaml's parameter for the address subscribed to the alarms.
ALARM_EMAIL_PARAMETER = "AlarmEmail"
# The state stack's parameter for DynamoDB point-in-time recovery ("true"/"false").
POINT_IN_TIME_RECOVERY = "PointInTimeRecovery"
# The values CloudWatch Logs accepts for a retention (PutRetentionPolicy's retentionInDays).
RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip
# One JSON line per API request; $context.requestId is the id API Gateway returns to the
# client (x-amzn-requestid) and passes to the function, so a request can be followed.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "extendedRequestId": "$context.extendedRequestId",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "path": "$context.path",
        "resourcePath": "$context.resourcePath",
        "status": "$context.status",
        "responseLength": "$context.responseLength",
        "integrationLatency": "$context.integrationLatency",
        "sourceIp": "$context.identity.sourceIp",
        "apiKeyId": "$context.identity.apiKeyId",
        "errorMessage": "$context.error.message",
    },
    separators=(",", ":"),
)


class OperationsError(Exception):
    """A stage's operations settings are wrong, or the worker's event source is missing."""


@dataclass(frozen=True)
class StageOperations:
    """How a deployed stage is operated; each stage may override any field in config.json."""

    # Days every function's log group and the API's access log keep their lines.
    log_retention_days: int = 30
    # DynamoDB point-in-time recovery of the job table (35 days of restorable history).
    point_in_time_recovery: bool = False
    # The job queue's alarm: its oldest message is older than this.
    oldest_message_alarm_seconds: int = 3600
    # The REST API stage's default method throttling (MethodSettings "*/*"): the steady
    # requests per second, and the burst above it, that API Gateway lets through to each
    # method of the stage, from all callers together, keyed or not ("Throttle requests to
    # your REST APIs for better throughput in API Gateway"); beyond them it answers 429
    # without invoking the API. Each key's usage plan (access.Throttle, 5/s) is a share
    # of this, so 10/s lets two clients at their full rate use one route at once, and
    # keeps the open routes (/, /fast, /kinds, /openapi.json) from being a free way to
    # run the API function. prod raises it for its several clients (.chalice/config.json).
    method_throttle_rate_limit: float = 10.0
    method_throttle_burst_limit: int = 20
    # A customer-managed KMS key's ARN, in the stage's region: the table, the queues, the
    # alarm topic, the log groups and the functions' environment are encrypted with it,
    # and every role may use it for exactly what its calls need (infra/encryption.py,
    # infra/policies.py; docs/encryption.md says what its key policy must allow). Empty:
    # AWS-owned and AWS-managed keys, SSE-SQS on the queues.
    kms_key_arn: str = ""

    @classmethod
    def from_config(cls, config: Config, stage: str) -> StageOperations:
        """The stage's values: defaults, overridden by ``stages.<stage>.operations``."""
        stage_config = config.config_from_disk.get("stages", {}).get(stage, {})
        overrides = stage_config.get(CONFIG_KEY, {})
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(overrides) - set(known)
        if unknown:
            raise OperationsError(
                f"stages.{stage}.{CONFIG_KEY} in .chalice/config.json: unknown "
                f"{', '.join(sorted(unknown))} (known: {', '.join(known)})"
            )
        values = cls(**overrides)
        values.validate(f"stages.{stage}.{CONFIG_KEY}")
        return values

    def validate(self, where: str) -> None:
        if self.log_retention_days not in RETENTION_DAYS:
            raise OperationsError(
                f"{where}.log_retention_days: {self.log_retention_days} is not a CloudWatch "
                f"Logs retention ({', '.join(map(str, RETENTION_DAYS))})"
            )
        if not isinstance(self.point_in_time_recovery, bool):
            raise OperationsError(f"{where}.point_in_time_recovery must be true or false")
        if not isinstance(self.oldest_message_alarm_seconds, int) or (
            self.oldest_message_alarm_seconds < 60
        ):
            raise OperationsError(f"{where}.oldest_message_alarm_seconds must be >= 60")
        rate = self.method_throttle_rate_limit
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1e6:
            raise OperationsError(f"{where}.method_throttle_rate_limit must be a number > 0")
        burst = self.method_throttle_burst_limit
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise OperationsError(f"{where}.method_throttle_burst_limit must be an integer >= 1")
        try:
            encryption.check_key_arn(self.kms_key_arn, f"{where}.kms_key_arn")
        except encryption.KeyArnError as error:
            raise OperationsError(str(error)) from None

    def method_settings(self) -> dict[str, Any]:
        """The stage's default method throttling as a CloudFormation MethodSetting (of
        AWS::ApiGateway::Stage, and of AWS::Serverless::Api): every resource and method."""
        return {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": self.method_throttle_rate_limit,
            "ThrottlingBurstLimit": self.method_throttle_burst_limit,
        }


def ops_stack_name(app_name: str, stage: str) -> str:
    return f"{stack.stack_name(app_name, stage)}-ops"


def worker_handler(config: Config) -> str:
    """The handler the job queue triggers (the one with reserved concurrency 1)."""
    job_queue = config.environment_variables[settings.QUEUE_NAME]
    consumers = [h for h, queue in stack.queue_consumers(config).items() if queue == job_queue]
    if len(consumers) != 1:
        raise OperationsError(f"expected one consumer of {job_queue}, found {consumers}")
    return consumers[0]


# --- the operations stack ------------------------------------------------------------------


# The state stack's queues that no function consumes (the job events' failure queue, the
# webhooks queue's dead-letter queue) are not in the app's environment: their names are
# read from infra/template.yaml, the one place that declares them, as the stack makes them.


def state_queue_name(template: Mapping[str, Any], logical_id: str, stack_name: str) -> str:
    """The name of infra/template.yaml's queue ``logical_id`` in the stack ``stack_name``:
    its QueueName, with the stack's name put in as CloudFormation does. OperationsError if
    the queue names itself otherwise (CloudFormation would make up its name, or resolve a
    parameter this cannot)."""
    declared = template["Resources"][logical_id]["Properties"].get("QueueName")
    text = declared.get("Fn::Sub") if isinstance(declared, dict) else declared
    if not isinstance(text, str) or "${" in text.replace("${AWS::StackName}", ""):
        raise OperationsError(
            f"{stack.TEMPLATE.name}: {logical_id}'s QueueName {declared!r} is not text and "
            "the stack's name"
        )
    return text.replace("${AWS::StackName}", stack_name)


def _attribute_of(value: Any) -> str:
    """The resource a template value ``!GetAtt <resource>.<attribute>`` refers to."""
    logical_id, _ = value["Fn::GetAtt"]
    return str(logical_id)


def events_failed_queue_name(template: Mapping[str, Any], stack_name: str) -> str:
    """The queue the table stream's mapping describes a batch it gave up on in: the one
    whose ARN the state stack's output FAILED_QUEUE_OUTPUT gives the deploy (infra/deploy/
    event_stream.py)."""
    output = template["Outputs"][FAILED_QUEUE_OUTPUT]["Value"]
    return state_queue_name(template, _attribute_of(output), stack_name)


def dead_letter_queue_name(template: Mapping[str, Any], stack_name: str, queue_name: str) -> str:
    """The dead-letter queue of the stack's queue named ``queue_name``: the target of that
    queue's RedrivePolicy. OperationsError if the template declares no such queue (the
    stage's environment names a queue of another stack) or it has no dead-letter queue."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::SQS::Queue":
            continue
        if state_queue_name(template, logical_id, stack_name) != queue_name:
            continue
        redrive = resource["Properties"].get("RedrivePolicy")
        if redrive is None:
            raise OperationsError(f"{queue_name} ({logical_id}) has no dead-letter queue")
        target = _attribute_of(redrive["deadLetterTargetArn"])
        return state_queue_name(template, target, stack_name)
    raise OperationsError(f"{stack.TEMPLATE.name} makes no queue {queue_name} in {stack_name}")


def parameters(
    config: Config, stage: str, values: StageOperations, alarm_email: str = ""
) -> dict[str, str]:
    """infra/operations.yaml's parameters for the stage, all from the project's own names:
    the stage's environment, and for the queues the app never names, the state template.
    OperationsError (before any stack is touched) if the two disagree on a queue."""
    env = config.environment_variables
    state_stack = stack.stack_name(config.app_name, stage)
    try:
        state_template = stack.load_template()
    except stack.StackError as error:
        raise OperationsError(str(error)) from None
    return {
        "JobQueueName": env[settings.QUEUE_NAME],
        "DeadLetterQueueName": env[settings.DEAD_LETTER_QUEUE_NAME],
        "JobEventsFailedQueueName": events_failed_queue_name(state_template, state_stack),
        "WebhookDeadLetterQueueName": dead_letter_queue_name(
            state_template, state_stack, env[settings.WEBHOOK_QUEUE_NAME]
        ),
        "WorkerFunctionName": policies.lambda_function_name(
            config.app_name, stage, worker_handler(config)
        ),
        "FunctionNamePrefix": stack.stack_name(config.app_name, stage),
        # A CommaDelimitedList: the dashboard's errors and throttles widget shows each.
        "FunctionNames": ",".join(stack.function_names(config, stage)),
        "ApiName": config.app_name,  # Chalice names the REST API after the app
        "ApiStageName": config.api_gateway_stage,
        "MetricNamespace": NAMESPACE,
        "MetricService": SERVICE,
        # What the stage's functions read (chalicelib.config), written there from the stage's
        # name: the alarm and the dashboard watch this stage's metrics and no other's.
        "MetricStage": env[settings.STAGE],
        "AcceptedMetric": Metric.ACCEPTED,
        "StartedMetric": Metric.STARTED,
        "SucceededMetric": Metric.SUCCEEDED,
        "FailedMetric": Metric.FAILED,
        "CancelledMetric": Metric.CANCELLED,
        "QueueWaitMetric": Metric.QUEUE_WAIT,
        "RunDurationMetric": Metric.RUN_DURATION,
        "OldestMessageAlarmSeconds": str(values.oldest_message_alarm_seconds),
        "AccessLogRetentionDays": str(values.log_retention_days),
        ALARM_EMAIL_PARAMETER: alarm_email,
    }


def apply_operations(
    cfn: Any, name: str, stack_parameters: Mapping[str, str], kms_key_arn: str = ""
) -> dict[str, str]:
    """Create or update the operations stack ``name``; its outputs. With ``kms_key_arn``
    its topic and access log group are encrypted with that key; without, the template is
    applied as it is written."""
    return stack.apply(cfn, name, stack_parameters, template_body(kms_key_arn))


def template_body(kms_key_arn: str = "") -> str:
    """infra/operations.yaml as the stack is given it: as written, or with the stage's key."""
    if not kms_key_arn:
        return TEMPLATE.read_text()
    from cfnlint.decode import decode_str  # a dev dependency: only deploying needs it

    template, errors = decode_str(TEMPLATE.read_text())
    if errors:
        raise OperationsError(f"{TEMPLATE}: {errors}")
    return json.dumps(encryption.encrypt(json.loads(json.dumps(template)), kms_key_arn))


def state_stack_parameters(values: StageOperations, declared: Mapping[str, Any]) -> dict[str, str]:
    """Overrides of the state stack's parameters (infra/template.yaml) for the stage.

    Only parameters the template declares: CloudFormation rejects any other. A stage asking
    for point-in-time recovery from a template without the parameter gets a warning on
    stderr, not a silent no.
    """
    if POINT_IN_TIME_RECOVERY in declared:
        return {POINT_IN_TIME_RECOVERY: str(values.point_in_time_recovery).lower()}
    if values.point_in_time_recovery:
        print(
            f"warning: the stage asks for point-in-time recovery, but {stack.TEMPLATE.name} "
            f"declares no {POINT_IN_TIME_RECOVERY} parameter: the job table has none",
            file=sys.stderr,
        )
    return {}


# --- log groups and the API stage ------------------------------------------------------------


def log_group_name(function: str) -> str:
    """The log group Lambda writes a function's output to (its roles allow only this one)."""
    return f"/aws/lambda/{function}"


def set_log_retention(logs: Any, functions: list[str], days: int, kms_key_arn: str = "") -> None:
    """Give each function's log group ``days`` of retention, creating the group if missing,
    and the stage's key (none: the group's key is removed, if it has one).

    Lambda creates a function's group on its first run, with no retention (kept forever)
    and no key; creating it now lets both apply from the first line. CloudWatch Logs
    encrypts a group's lines with the key from the moment it is associated; older lines
    stay under the key they were written with (CloudWatch Logs User Guide, "Encrypt log
    data in CloudWatch Logs using AWS Key Management Service").
    """
    for function in functions:
        group = log_group_name(function)
        created = {"kmsKeyId": kms_key_arn} if kms_key_arn else {}
        try:
            logs.create_log_group(logGroupName=group, **created)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
            _set_log_group_key(logs, group, kms_key_arn)
        logs.put_retention_policy(logGroupName=group, retentionInDays=days)


def _set_log_group_key(logs: Any, group: str, kms_key_arn: str) -> None:
    """Associate ``kms_key_arn`` with an existing group, or disassociate its key if none."""
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    current = next((g.get("kmsKeyId", "") for g in described if g["logGroupName"] == group), "")
    if current == kms_key_arn:
        return
    if kms_key_arn:
        logs.associate_kms_key(logGroupName=group, kmsKeyId=kms_key_arn)
    else:
        logs.disassociate_kms_key(logGroupName=group)


def set_function_key(lambda_client: Any, functions: list[str], kms_key_arn: str) -> list[str]:
    """Encrypt each function's environment with ``kms_key_arn`` (none: Lambda's own key);
    the functions changed.

    ``chalice deploy`` has no setting for the key and leaves a function's KMSKeyArn as it
    finds it (UpdateFunctionConfiguration changes only what it is given), so this runs
    after it, and only on functions whose key differs: a stage without a key makes no call
    that changes anything. Each change is waited for (the function accepts no other update
    meanwhile). The function's role needs kms:Decrypt on the key, or every invocation
    fails with KMSAccessDeniedException (Lambda API Reference, "Invoke": errors);
    infra/policies.py grants it.
    """
    changed = []
    for function in functions:
        current = lambda_client.get_function_configuration(FunctionName=function)
        if (current.get("KMSKeyArn") or "") == kms_key_arn:
            continue
        lambda_client.update_function_configuration(FunctionName=function, KMSKeyArn=kms_key_arn)
        lambda_client.get_waiter("function_updated_v2").wait(
            FunctionName=function, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
        )
        changed.append(function)
    return changed


def log_group_arn(arn: str) -> str:
    """A log group's ARN as API Gateway takes it: without the ``:*`` CloudFormation adds."""
    return arn.removesuffix(":*")


def enable_access_logs(apigw: Any, api_id: str, stage: str, destination_arn: str) -> None:
    """Point the REST API's stage's access log at ``destination_arn``, one JSON line each."""
    apigw.update_stage(
        restApiId=api_id,
        stageName=stage,
        patchOperations=[
            {
                "op": "replace",
                "path": "/accessLogSettings/destinationArn",
                "value": log_group_arn(destination_arn),
            },
            {"op": "replace", "path": "/accessLogSettings/format", "value": ACCESS_LOG_FORMAT},
        ],
    )


def set_method_throttling(apigw: Any, api_id: str, stage: str, values: StageOperations) -> None:
    """Give every method of the REST API's stage ``values``' default throttling (the stage's
    ``*/*`` method settings; a method's own settings, none here, would override them)."""
    limits = {
        "rateLimit": f"{values.method_throttle_rate_limit:g}",
        "burstLimit": str(values.method_throttle_burst_limit),
    }
    apigw.update_stage(
        restApiId=api_id,
        stageName=stage,
        patchOperations=[
            {"op": "replace", "path": f"/*/*/throttling/{name}", "value": value}
            for name, value in limits.items()
        ],
    )


# API Gateway writes access logs with one role per account and region (its account settings);
# AWS's managed policy for it. The role is the account's, not a stage's: destroy keeps it.
API_GATEWAY_LOGS_ROLE = "apigateway-cloudwatch-logs"
API_GATEWAY_LOGS_POLICY = (
    "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
)


def ensure_api_gateway_logging_role(iam: Any, apigw: Any) -> str:
    """The account's API Gateway CloudWatch role, created and set if there is none; its ARN.

    API Gateway refuses access logging on any stage until the account names this role
    (API Gateway Developer Guide, "Set up CloudWatch logging for REST APIs").
    """
    current = apigw.get_account().get("cloudwatchRoleArn")
    if current:
        return str(current)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "apigateway.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    try:
        role = iam.create_role(
            RoleName=API_GATEWAY_LOGS_ROLE,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="Lets API Gateway write this account's access and execution logs",
        )["Role"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        role = iam.get_role(RoleName=API_GATEWAY_LOGS_ROLE)["Role"]
    iam.attach_role_policy(RoleName=API_GATEWAY_LOGS_ROLE, PolicyArn=API_GATEWAY_LOGS_POLICY)
    apigw.update_account(
        patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role["Arn"]}]
    )
    print(f"Set API Gateway's CloudWatch role for this account and region: {role['Arn']}")
    return str(role["Arn"])


# --- pausing the worker ------------------------------------------------------------------------


def event_source_mappings(lambda_client: Any, function: str) -> list[dict[str, Any]]:
    """The event source mappings of ``function`` (by name).

    Filtered here rather than with the FunctionName parameter: AWS accepts a name or an ARN
    there, but moto matches only the form given at creation (Chalice gives the ARN).
    """
    mappings: list[dict[str, Any]] = []
    for page in lambda_client.get_paginator("list_event_source_mappings").paginate():
        mappings += [
            m
            for m in page["EventSourceMappings"]
            if m["FunctionArn"].endswith(f":function:{function}")
        ]
    return mappings


def set_worker_enabled(lambda_client: Any, function: str, enabled: bool) -> list[str]:
    """Enable or disable every SQS event source of ``function``; the mappings' UUIDs.

    Disabled, the mapping receives nothing: messages wait in the queue (kept 14 days) and
    none is lost; a job running now finishes its invocation. Enabling resumes in order.
    OperationsError if the function has no mapping (the stage is not deployed).
    """
    mappings = event_source_mappings(lambda_client, function)
    if not mappings:
        raise OperationsError(f"{function} has no event source mapping: deploy the stage first")
    for mapping in mappings:
        lambda_client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=enabled)
    return [m["UUID"] for m in mappings]
