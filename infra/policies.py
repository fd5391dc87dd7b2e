"""Least-privilege IAM policies for each function, from the stack's outputs.

``autogen_policy`` is off (Chalice's generator reads only app.py and would miss every call
made in chalicelib/), so each function gets a policy file naming exactly the actions its
code makes, on this stage's own table, queues and log group. The file names come from each
function's ``iam_policy_file`` in .chalice/config.json; the files are written when the
stage's stack is applied, because the ARNs carry the account and region.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.jobs import RECENT_INDEX, STATUS_INDEX

# handler -> [(actions, resources as stack output keys)]; "TableArn/index/..." name the
# table's indexes. Why each action:
GRANTS: dict[str, list[tuple[list[str], list[str]]]] = {
    "api_handler": [
        # PutItem (also inside TransactWriteItems): create a job and its Idempotency-Key
        # record; GetItem: read one; UpdateItem: cancel, or fail one it could not enqueue.
        (["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], ["TableArn"]),
        # Query: GET /jobs lists jobs through the indexes (never a scan).
        (["dynamodb:Query"], ["TableArn/index/status", "TableArn/index/recent"]),
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["QueueArn"]),
    ],
    "process_job": [
        (["dynamodb:GetItem", "dynamodb:UpdateItem"], ["TableArn"]),
        # Receive/Delete/GetQueueAttributes: the SQS event source polls with this role.
        # SendMessage: queue a job again to retry it or to continue after a checkpoint.
        (
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:SendMessage",
            ],
            ["QueueArn"],
        ),
    ],
    "process_dead_letters": [
        (["dynamodb:GetItem", "dynamodb:UpdateItem"], ["TableArn"]),
        (
            ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            ["DeadLetterQueueArn"],
        ),
    ],
    "recover_stalled_jobs": [
        (["dynamodb:Query"], ["TableArn/index/status"]),
        (["dynamodb:UpdateItem"], ["TableArn"]),
        (["sqs:GetQueueUrl", "sqs:SendMessage"], ["QueueArn"]),
    ],
}
LOG_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]


def lambda_function_name(app_name: str, stage: str, handler: str) -> str:
    """Chalice's naming: the API function is ``app-stage``, others ``app-stage-handler``."""
    return f"{app_name}-{stage}" if handler == "api_handler" else f"{app_name}-{stage}-{handler}"


def resource_arns(outputs: Mapping[str, str]) -> dict[str, str]:
    table = outputs["TableArn"]
    return {
        **outputs,
        "TableArn/index/status": f"{table}/index/{STATUS_INDEX}",
        "TableArn/index/recent": f"{table}/index/{RECENT_INDEX}",
    }


def policy_for(
    handler: str, app_name: str, stage: str, outputs: Mapping[str, str]
) -> dict[str, Any]:
    """The IAM policy document for one function of the stage."""
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
    return {"Version": "2012-10-17", "Statement": statements}
