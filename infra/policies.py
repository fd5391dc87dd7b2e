"""Least-privilege IAM policies for each function, from the stack's outputs.

``autogen_policy`` is off (Chalice's generator reads only app.py and would miss every call
made in chalicelib/), so each function gets a policy file naming exactly the actions its
code makes, on this stage's own table, queues and log group, and, on a stage that names a
customer-managed KMS key, exactly the KMS actions those calls need on that key
(:func:`key_actions`). The
file names come from each function's ``iam_policy_file`` in .chalice/config.json; the
files are written when the stage's stack is applied, because the ARNs carry the account
and region.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.jobs import (
    ACTIVE,
    INDEXES,
    LATER,
    LIST_ALL,
    LIST_BY_CLIENT,
    LIST_BY_CLIENT_KIND,
    LIST_BY_CLIENT_KIND_STATUS,
    LIST_BY_CLIENT_STATUS,
    LIST_BY_KIND,
    LIST_BY_KIND_STATUS,
    LIST_BY_STATUS,
    PENDING,
    IndexShape,
)


def _index(shape: IndexShape) -> str:
    """The resource key of one of the table's indexes (see resource_arns)."""
    return f"TableArn/index/{shape.name}"


_LISTING_INDEXES = [
    _index(s)
    for s in (
        LIST_ALL,
        LIST_BY_STATUS,
        LIST_BY_KIND,
        LIST_BY_KIND_STATUS,
        LIST_BY_CLIENT,
        LIST_BY_CLIENT_STATUS,
        LIST_BY_CLIENT_KIND,
        LIST_BY_CLIENT_KIND_STATUS,
    )
]
# API Gateway's API keys of the account and region: a key's id is not known before it is
# made, so the grant names the key collection's children (GetApiKey only: apigateway:GET).
API_KEYS = "ApiKeysArn"
# The stage's EventBridge Scheduler schedules: every schedule of its group (an output).
SCHEDULES = "SchedulesArn"
# The event source mapping polls with the function's role.
_POLL = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]

# handler -> [(actions, resources as stack output keys)]; "TableArn/index/..." name the
# table's indexes. Why each action:
GRANTS: dict[str, list[tuple[list[str], list[str]]]] = {
    "api_handler": [
        # PutItem (also inside TransactWriteItems): create a job and its Idempotency-Key
        # record; GetItem: read one; UpdateItem: cancel, or fail one it could not enqueue,
        # in a transaction with DeleteItem, which releases that job's Idempotency-Key;
        # BatchGetItem: read a listing's page; BatchWriteItem: create the jobs of a
        # POST /jobs/batch.
        (
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:BatchGetItem",
                "dynamodb:BatchWriteItem",
            ],
            ["TableArn"],
        ),
        # Query: GET /jobs lists jobs through the listing indexes (never a scan), and a
        # submission reads its client's active jobs (the quota).
        (["dynamodb:Query"], [*_LISTING_INDEXES, _index(ACTIVE)]),
        # GetApiKey: the name of a request's API key says which client calls.
        (["apigateway:GET"], [API_KEYS]),
        # SendMessage also grants SendMessageBatch (a batch's messages): no action of its
        # own exists (Amazon SQS Developer Guide, "Amazon SQS batch actions").
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["QueueArn"]),
        # A job due within SQS's longest delay waits in the delay queue from its submission.
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["DelayQueueArn"]),
        # POST/DELETE /schedules, pause, resume: the user schedule's EventBridge Scheduler
        # schedule, in the stage's group only; PassRole: each names the role the
        # Scheduler assumes to invoke the firing function.
        (
            [
                "scheduler:CreateSchedule",
                "scheduler:UpdateSchedule",
                "scheduler:DeleteSchedule",
                "scheduler:GetSchedule",
            ],
            [SCHEDULES],
        ),
        (["iam:PassRole"], ["SchedulerRoleArn"]),
    ],
    "fire_schedule": [
        # GetItem: the schedule's record; PutItem, in a transaction: the fire's job and its
        # Idempotency-Key record; UpdateItem: the schedule's last_error, or a job it could
        # not enqueue, failed with DeleteItem of its key (as the API's submission).
        (
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ],
            ["TableArn"],
        ),
        # Query: the client's active jobs (its quota).
        (["dynamodb:Query"], [_index(ACTIVE)]),
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["QueueArn"]),
    ],
    "process_job": [
        # UpdateItem: claim, checkpoint, finish or release a job, raise the watermark.
        (["dynamodb:GetItem", "dynamodb:UpdateItem"], ["TableArn"]),
        # SendMessage: continue a job; ChangeMessageVisibility: hold the run's message,
        # or let a message whose claim failed come back soon.
        (
            [*_POLL, "sqs:GetQueueUrl", "sqs:SendMessage", "sqs:ChangeMessageVisibility"],
            ["QueueArn"],
        ),
        # A retry waits out its backoff in the delay queue.
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["DelayQueueArn"]),
    ],
    "forward_delayed": [
        (_POLL, ["DelayQueueArn"]),
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["QueueArn"]),
        # A job's message that came back before its run_at is delayed again.
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["DelayQueueArn"]),
    ],
    "process_dead_letters": [
        (["dynamodb:GetItem", "dynamodb:UpdateItem"], ["TableArn"]),
        (_POLL, ["DeadLetterQueueArn"]),
        # A job that never started is sent again.
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["QueueArn"]),
    ],
    "publish_job_events": [
        # The event source mapping reads the job table's stream with the function's role
        # (Lambda Developer Guide, "Using AWS Lambda with Amazon DynamoDB": execution role
        # permissions), and sends a batch it gave up on to its on-failure queue with it too.
        (
            [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            ],
            ["TableStreamArn"],
        ),
        (["events:PutEvents"], ["JobEventBusArn"]),
        (["sqs:SendMessage"], ["JobEventsFailedQueueArn"]),
    ],
    "deliver_webhooks": [
        # GetItem: an endpoint, its client's ids; BatchGetItem: its client's endpoints;
        # UpdateItem: record an attempt (and trim the recent ones).
        (["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem"], ["TableArn"]),
        # Events in; each delivery's next attempt (or its next hop) sent back delayed.
        ([*_POLL, "sqs:GetQueueUrl", "sqs:SendMessage"], ["WebhookQueueArn"]),
    ],
    "recover_stalled_jobs": [
        # Query: lost jobs (pending index), running jobs (status index); BatchGetItem: read
        # the running ones; GetItem: the watermark; UpdateItem: re-drive.
        (["dynamodb:Query"], [_index(PENDING), _index(LIST_BY_STATUS)]),
        (["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem"], ["TableArn"]),
        # GetQueueAttributes: is the job queue empty?
        (["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"], ["QueueArn"]),
        # The release of jobs that run later: Query the later index, UpdateItem (above)
        # takes each out of it, SendMessage delays it until its time.
        (["dynamodb:Query"], [_index(LATER)]),
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["DelayQueueArn"]),
    ],
}
LOG_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
# With active tracing (the stage's "xray" setting), Lambda sends the function's trace
# segments with the function's role: it needs these two actions (Lambda Developer Guide,
# "Visualize Lambda function invocations using AWS X-Ray": the AWSXRayDaemonWriteAccess
# permissions). X-Ray defines no resource types for them (Service Authorization Reference,
# "Actions, resources, and condition keys for AWS X-Ray"), so their resource is "*".
XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]


# What a function does with the stage's KMS key (infra/encryption.py), on that key only.
# Every function decrypts: Lambda decrypts the function's environment with the function's
# role at each cold start (Lambda API Reference, "Invoke": KMSAccessDeniedException when
# it may not); SQS decrypts a received message's data key with the receiver's
# permission, and the event source mapping receives with the function's role (SQS
# Developer Guide, "Key management": a consumer needs kms:Decrypt); DynamoDB decrypts the
# table key for each principal that reads or writes items, with that principal's
# permission, and asks again after five minutes, so a revoked grant takes effect (DynamoDB
# Developer Guide, "Encryption at rest: How it works", table keys). The table key itself
# is made and re-encrypted by DynamoDB under the grants it creates when the stage is
# deployed, with the deployer's permission (docs/encryption.md): no function needs
# Encrypt, ReEncrypt or CreateGrant.
KMS_DECRYPT = "kms:Decrypt"
# A sender asks KMS for the data key that encrypts its messages (SQS Developer Guide, "Key
# management": a producer needs kms:GenerateDataKey and kms:Decrypt).
KMS_GENERATE_DATA_KEY = "kms:GenerateDataKey"
SEND_MESSAGE = "sqs:SendMessage"
# The Sid of a policy's statement on the stage's key.
KEY_STATEMENT = "StageKey"


def key_actions(handler: str) -> list[str]:
    """The KMS actions ``handler``'s function needs on the stage's key: decrypt always,
    a data key if it sends to a queue (derived from GRANTS, never listed twice)."""
    sends = any(SEND_MESSAGE in actions for actions, _ in GRANTS[handler])
    return [KMS_DECRYPT, *([KMS_GENERATE_DATA_KEY] if sends else [])]


def lambda_function_name(app_name: str, stage: str, handler: str) -> str:
    """Chalice's naming: the API function is ``app-stage``, others ``app-stage-handler``."""
    return f"{app_name}-{stage}" if handler == "api_handler" else f"{app_name}-{stage}-{handler}"


def resource_arns(outputs: Mapping[str, str]) -> dict[str, str]:
    table = outputs["TableArn"]
    _, partition, _, region, _, _ = outputs["QueueArn"].split(":", 5)
    # API Gateway's ARNs carry no account ("Actions, resources, and condition keys for
    # Amazon API Gateway Management": arn:${Partition}:apigateway:${Region}::/apikeys/${ApiKeyId}).
    api_keys = f"arn:{partition}:apigateway:{region}::/apikeys/*"
    return {
        **outputs,
        **{_index(s): f"{table}/index/{s.name}" for s in INDEXES},
        API_KEYS: api_keys,
    }


def policy_for(
    handler: str,
    app_name: str,
    stage: str,
    outputs: Mapping[str, str],
    tracing: bool = False,
    kms_key_arn: str = "",
) -> dict[str, Any]:
    """The IAM policy document for one function of the stage (``tracing``: the function's
    active tracing is on, so it may write trace segments; ``kms_key_arn``: the stage's
    customer-managed key, which it may use for :func:`key_actions` only)."""
    _, _, _, region, account, _ = outputs["QueueArn"].split(":", 5)
    function = lambda_function_name(app_name, stage, handler)
    log_group = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{function}"
    arns = resource_arns(outputs)
    statements = [
        {
            "Sid": f"Grant{index}",
            "Effect": "Allow",
            "Action": actions,
            "Resource": [arns[key] for key in resources],
        }
        for index, (actions, resources) in enumerate(GRANTS[handler])
    ]
    statements.append(
        {
            "Sid": "OwnLogs",
            "Effect": "Allow",
            "Action": LOG_ACTIONS,
            "Resource": [log_group, f"{log_group}:*"],
        }
    )
    if kms_key_arn:
        statements.append(
            {
                "Sid": KEY_STATEMENT,
                "Effect": "Allow",
                "Action": key_actions(handler),
                "Resource": [kms_key_arn],
            }
        )
    if tracing:
        statements.append(
            {"Sid": "OwnTraces", "Effect": "Allow", "Action": XRAY_ACTIONS, "Resource": ["*"]}
        )
    return {"Version": "2012-10-17", "Statement": statements}
