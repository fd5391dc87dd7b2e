"""Records that share the job table without being jobs (schedules, webhook endpoints and
their attempts): each under a key prefix of its own in the table's ``job_id``, none with a
job's index keys, so no listing, quota or sweep ever reads them.

``TableRecords`` is the reading and writing both stores do alike: a string set of one
item, many items by key (consistent BatchGetItem, 100 a call), many deletes (BatchWriteItem,
25 a call), each batch's unprocessed part retried a few times. Every failure is
StoreUnavailable, whose message names the operation and AWS's error code, never the
request's values (an endpoint's item holds its signing secrets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable

# DynamoDB's limits per call: BatchGetItem 100 keys, BatchWriteItem 25 requests.
BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25
# How often a batch's unprocessed part is sent again before the call gives up.
BATCH_TRIES = 5


def record_key(key: str) -> dict[str, dict[str, str]]:
    """The table key of the record ``key`` (its prefix included)."""
    return {"job_id": {"S": key}}


class TableRecords:
    """The job table, through a ``dynamodb`` client, for records that are not jobs."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    def _set(self, key: str, attribute: str) -> list[str]:
        """The string set ``attribute`` of the item ``key`` (empty when either is missing)."""
        item = self._call("get_item", Key=record_key(key), ConsistentRead=True).get("Item") or {}
        return list(item.get(attribute, {}).get("SS", []))

    def _get_many(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """The items of ``keys`` that exist, read consistently, in no particular order."""
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            pending: dict[str, Any] = {
                self.table_name: {
                    "Keys": [record_key(k) for k in keys[start : start + BATCH_GET_LIMIT]],
                    "ConsistentRead": True,
                }
            }
            for _ in range(BATCH_TRIES):
                if not pending:
                    break
                response = self._call_unscoped("batch_get_item", RequestItems=pending)
                items += response.get("Responses", {}).get(self.table_name, [])
                pending = response.get("UnprocessedKeys") or {}
            if pending:
                raise StoreUnavailable("DynamoDB BatchGetItem left keys unprocessed; retry")
        return items

    def _delete_many(self, keys: Sequence[str]) -> None:
        """Delete the items of ``keys`` (those missing are no error)."""
        for start in range(0, len(keys), BATCH_WRITE_LIMIT):
            pending: dict[str, Any] = {
                self.table_name: [
                    {"DeleteRequest": {"Key": record_key(k)}}
                    for k in keys[start : start + BATCH_WRITE_LIMIT]
                ]
            }
            for _ in range(BATCH_TRIES):
                if not pending:
                    break
                response = self._call_unscoped("batch_write_item", RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
            if pending:
                raise StoreUnavailable("DynamoDB BatchWriteItem left items unprocessed; retry")

    def _call(self, operation: str, **kwargs: Any) -> Any:
        return self._call_unscoped(operation, TableName=self.table_name, **kwargs)

    def _call_unscoped(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as error:
            code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
            raise StoreUnavailable(f"DynamoDB {operation} failed: {code}") from None
