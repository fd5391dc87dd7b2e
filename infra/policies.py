"""Least-privilege IAM policies for each function, from the stack's outputs.

``autogen_policy`` is off (Chalice's generator reads only app.py and would miss every call
made in chalicelib/), so each function gets a policy file naming exactly the actions its
code makes, on this stage's own table, queue and log group. The file names come from each
function's ``iam_policy_file`` in .chalice/config.json; the files are written when the
stage's stack is applied, because the ARNs carry the account and region.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What each function's code calls, and why.
TABLE_ACTIONS = {
    # PutItem: create a job; GetItem: read one; UpdateItem: fail a job it could not enqueue.
    "api_handler": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
    # GetItem: classify a duplicate message; UpdateItem: every status change.
    "process_job": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
}
QUEUE_ACTIONS = {
    "api_handler": ["sqs:GetQueueUrl", "sqs:SendMessage"],
    # The SQS event source polls with the function's role.
    "process_job": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
}
LOG_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]


def lambda_function_name(app_name: str, stage: str, handler: str) -> str:
    """Chalice's naming: the API function is ``app-stage``, others ``app-stage-handler``."""
    return f"{app_name}-{stage}" if handler == "api_handler" else f"{app_name}-{stage}-{handler}"


def policy_for(
    handler: str, app_name: str, stage: str, outputs: Mapping[str, str]
) -> dict[str, Any]:
    """The IAM policy document for one function of the stage."""
    _, _, _, region, account, _ = outputs["QueueArn"].split(":", 5)
    function = lambda_function_name(app_name, stage, handler)
    log_group = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{function}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "JobTable",
                "Effect": "Allow",
                "Action": TABLE_ACTIONS[handler],
                "Resource": [outputs["TableArn"]],
            },
            {
                "Sid": "JobQueue",
                "Effect": "Allow",
                "Action": QUEUE_ACTIONS[handler],
                "Resource": [outputs["QueueArn"]],
            },
            {
                "Sid": "OwnLogs",
                "Effect": "Allow",
                "Action": LOG_ACTIONS,
                "Resource": [log_group, f"{log_group}:*"],
            },
        ],
    }
