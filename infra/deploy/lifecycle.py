"""Deploy and destroy a stage: the steps, their order, and the stacks they apply.

:func:`deploy` (``make deploy STAGE=``), every step idempotent:

1. check the stage is one for AWS, its KMS key (if it names one) is in the stage's region
   (:func:`check_key_region`) and the account can give its functions their reserved
   concurrency (:func:`check_account_concurrency`);
2. restore Chalice's record of the stage from SSM (:func:`restore_deploy_state`, state.py);
3. apply the stack ``<app>-<stage>`` (infra/template.yaml through infra.stack: queues, job
   table, encrypted with the stage's key if it names one; :func:`apply_stack`);
4. ``chalice deploy`` (functions, roles, event sources, schedule, REST API), then save
   Chalice's record to SSM whether it succeeded or not;
5. give the job table stream's mapping what Chalice cannot (bisect on error, bounded
   retries, the on-failure queue, partial batch responses: infra/deploy/event_stream.py),
   cap each standard queue's mapping at its function's reserved concurrency, so a burst
   is not throttled into the dead-letter queue (infra/deploy/sqs_scaling.py),
   let the functions in the SQS -> Lambda -> SQS loop recurse (:func:`allow_recursion`),
   encrypt their environment with the stage's key (or Lambda's own, without one) and set
   their log groups' retention and key (infra.operations);
6. apply the operations stack ``<app>-<stage>-ops`` (infra/operations.yaml: alarms,
   dashboard, access log; :func:`apply_operations_stack`), point the REST API's stage
   at its access log and give its methods the stage's default throttling;
7. for a stage that requires an API key, its usage plan and key (access.py).

:func:`destroy` (``make destroy STAGE=``) takes the stage apart the other way, each step
removing what points at the next: the API keys and usage plan (access.py), the operations
stack, ``chalice delete``, Chalice's record in SSM, the functions' log groups (logs.py),
then the stack, with the queue, the dead-letter queue and the job table and their data.

What a failure leaves behind: steps 1 and 2 stop with DeployError before anything is
created or changed. A stack that fails to apply is rolled back by CloudFormation and the
DeployError gives its resources' reasons; a failed first creation (FAILED_CREATION) holds
nothing, and the next deploy deletes it first (:func:`clear_failed_creation`). A failure
from step 4 on leaves the functions deployed and recorded without the later steps' settings;
running ``deploy`` again completes them. No step of ``deploy`` deletes the queue or the job
table, so a failed deploy loses no job: queued jobs stay in the queue. A failed ``destroy``
leaves what its later steps would have deleted, and running it again deletes what is left.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError
from chalice.config import Config

from chalicelib import config as settings
from infra import encryption, lanes, operations, policies, stack
from infra.deploy import event_stream, sqs_scaling, state
from infra.deploy.access import ApiStage, Throttle, ensure_api_access, remove_api_access
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
from infra.deploy.logs import delete_log_groups

# Lambda keeps this much of the account's concurrency for functions without a reservation:
# a reservation may take "the Unreserved account concurrency value that is shown, minus 100"
# (Lambda Developer Guide, "Configuring reserved concurrency for a function").
MIN_UNRESERVED_CONCURRENCY = 100
# What to ask AWS for when that is too little: Service Quotas, AWS Lambda.
CONCURRENCY_QUOTA = "Concurrent executions"
CONCURRENCY_QUOTA_CODE = "L-B99A9384"
# A stack in this state is a failed first creation: it holds nothing and cannot be updated.
FAILED_CREATION = "ROLLBACK_COMPLETE"


def check_account_concurrency(lambda_client: Any, config: Config, stage: str) -> None:
    """DeployError unless the account can give the stage's functions their reservations.

    Lambda refuses a reservation that would leave less than MIN_UNRESERVED_CONCURRENCY
    unreserved, and new accounts often have a quota of 10 or 50. Every reservation the
    stage declares counts: the worker's 1, the webhook deliveries' 5 and the API's (its
    ceiling: held requests such as ``?wait=`` cannot take more of the account than that), so
    dev needs 100 + 1 + 5 + 10 = 116 unreserved and prod 126. Reservations the stage's
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
    """Put Chalice's record of the stage where it reads it (infra/deploy/state.py).

    DeployError, before anything changes, if the stage's functions exist but no record is
    found. A local record of a stage whose functions are all gone (destroyed from another
    clone) is stale and removed, so Chalice starts afresh.
    """
    name = resource_name(config, stage)
    source = state.restore(ssm, name, project_dir, stage)
    existing = [f for f in stack.function_names(config, stage) if function_exists(lambda_client, f)]
    try:
        state.check_known(source, existing, stage)
    except state.MissingDeployState as error:
        raise DeployError(str(error)) from None
    if source == "local" and not existing:
        state.record_path(project_dir, stage).unlink()
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


def check_key_region(kms_key_arn: str, region: str) -> None:
    """DeployError, before anything is created, if the stage's key is in another region:
    every service here takes a key of its own region only."""
    if kms_key_arn and encryption.key_region(kms_key_arn) != region:
        raise DeployError(
            f"the stage's kms_key_arn {kms_key_arn} is in {encryption.key_region(kms_key_arn)}"
            f", the stage deploys to {region}: name a key of {region}. Nothing was created."
        )


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
        return operations.apply_operations(cfn, name, parameters, values.kms_key_arn)
    except WaiterError as error:
        reasons = "; ".join(failure_reasons(cfn, name)) or str(error)
        raise DeployError(f"stack {name} failed: {reasons}") from None


# --- commands ----------------------------------------------------------------------------


def deploy(
    stage: str,
    throttle: Throttle,
    project_dir: Path = PROJECT_DIR,
    alarm_email: str | None = None,
) -> None:
    """Check the account, apply the stack, ``chalice deploy``, then operations and API key.

    Chalice's record of the stage is restored from AWS first and saved back after, so the
    same command works from any clone (infra/deploy/state.py).
    """
    lanes.render(stage, project_dir)  # so the account check counts the worker's N
    config = stack.load_chalice_config(stage, project_dir)
    check_deployable(config, stage)
    values = operations.StageOperations.from_config(config, stage)
    state_parameters = operations.state_stack_parameters(values, load_template()["Parameters"])
    name = resource_name(config, stage)
    lambda_client, ssm = boto3.client("lambda"), boto3.client("ssm")
    check_key_region(values.kms_key_arn, lambda_client.meta.region_name)
    check_account_concurrency(lambda_client, config, stage)
    restore_deploy_state(ssm, lambda_client, config, stage, project_dir)
    cfn = boto3.client("cloudformation")
    outputs = apply_stack(cfn, config, stage, project_dir, state_parameters)
    # The table stream's mapping needs its ARN when Chalice imports app.py
    # (chalicelib.config.table_stream_arn_at_import).
    stream = {settings.TABLE_STREAM_ARN: outputs[event_stream.STREAM_OUTPUT]}
    try:
        run_chalice(["deploy", "--stage", stage], project_dir, {**os.environ, **stream})
    finally:  # whatever Chalice recorded, even after a later step failed
        if state.save(ssm, name, project_dir, stage):
            print(f"Saved the deploy record in {state.parameter_name(name)}")
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
    publisher = policies.lambda_function_name(config.app_name, stage, event_stream.HANDLER)
    if not event_stream.configure(lambda_client, publisher, outputs):
        raise DeployError(f"chalice made no mapping of {publisher} on the job table's stream")
    print(f"Stream mapping of {publisher}: bisect on error, retries bounded, failures queued")
    for handler, limit in sqs_scaling.configure(lambda_client, config, stage).items():
        function = policies.lambda_function_name(config.app_name, stage, handler)
        print(f"SQS mapping of {function}: at most {limit} at once, its reserved concurrency")
    functions = stack.function_names(config, stage)
    for function in operations.set_function_key(lambda_client, functions, values.kms_key_arn):
        print(f"Environment of {function}: {values.kms_key_arn or 'encrypted by Lambda'}")
    operations.set_log_retention(
        boto3.client("logs"), functions, values.log_retention_days, values.kms_key_arn
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
    operations.set_method_throttling(apigw, api.api_id, api.stage, values)
    print(
        f"Alarms notify {ops_outputs['AlarmTopicArn']}"
        + (f" ({alarm_email}: confirm the e-mail AWS sends)" if alarm_email else "")
        + f"; dashboard {ops_outputs['DashboardName']}; logs kept "
        f"{values.log_retention_days} days; every method of {api.url} throttled at "
        f"{values.method_throttle_rate_limit:g} req/s, burst {values.method_throttle_burst_limit}"
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
    state.forget(ssm, name)
    delete_log_groups(boto3.client("logs"), stack.function_names(config, stage))
    if delete_stack(cfn, name):
        print(f"Deleted stack {name} (queue, dead-letter queue, job table and its data)")
