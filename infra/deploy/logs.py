"""The stage's functions' CloudWatch log groups, deleted with the stage.

Lambda creates ``/aws/lambda/<function>`` on a function's first run and nothing deletes it
with the function, so ``destroy`` does, after ``chalice delete`` (lifecycle.py). Their
retention is set on deploy by infra.operations.set_log_retention.

Calls CloudWatch Logs only. A log group already gone is skipped; any other error stops
with the groups after it left in place, and running ``destroy`` again deletes them.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


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
