"""The schedules' records, in the job table beside the jobs.

Item layout (none carries a job's index keys, so no listing or quota reads them)::

    schedule#<sha256(client, name)>   one schedule: name client kind input expression
                                      timezone state created_at resumed_at last_error
    schedules#<client>                the client's schedule names (a string set, ``names``)
    control#schedule-clients          the clients that ever had a schedule (``clients``)

A client's listing reads its names item and then its schedules (BatchGetItem); the
operator's reads the clients item first. The per-client cap is enforced by the same
transaction that adds a name: the names set must be smaller than the cap, so concurrent
creates cannot overshoot it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import CONTROL_PREFIX, _parse_iso, iso_utc
from chalicelib.schedules import Schedule
from chalicelib.table_records import TableRecords, record_key

SCHEDULE_PREFIX = "schedule#"
NAMES_PREFIX = "schedules#"
CLIENTS_ITEM = CONTROL_PREFIX + "schedule-clients"


class ScheduleExists(Exception):
    """Another schedule already has this client and name."""


class TooManySchedules(Exception):
    """The client already has its cap of schedules."""


def schedule_key(client: str, name: str) -> str:
    digest = hashlib.sha256(f"{client}\0{name}".encode()).hexdigest()
    return SCHEDULE_PREFIX + digest


class ScheduleTable(TableRecords):
    def create(self, schedule: Schedule, cap: int) -> None:
        """Write ``schedule`` and add its name to its client's, in one transaction.
        ScheduleExists if the client has a schedule of that name, TooManySchedules if it
        has ``cap`` already (cap 0: no cap), StoreUnavailable if DynamoDB fails."""
        names_key = NAMES_PREFIX + schedule.client
        add_name: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": record_key(names_key),
            "UpdateExpression": "ADD #names :name",
            "ExpressionAttributeNames": {"#names": "names"},
            "ExpressionAttributeValues": {":name": {"SS": [schedule.name]}},
        }
        if cap:
            add_name["ConditionExpression"] = "attribute_not_exists(#names) OR size(#names) < :cap"
            add_name["ExpressionAttributeValues"][":cap"] = {"N": str(cap)}
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": _to_item(schedule),
                            "ConditionExpression": "attribute_not_exists(job_id)",
                        }
                    },
                    {"Update": add_name},
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": record_key(CLIENTS_ITEM),
                            "UpdateExpression": "ADD clients :client",
                            "ExpressionAttributeValues": {":client": {"SS": [schedule.client]}},
                        }
                    },
                ]
            )
        except ClientError as error:
            reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            if reasons[:1] == ["ConditionalCheckFailed"]:
                raise ScheduleExists() from error
            if reasons[1:2] == ["ConditionalCheckFailed"]:
                raise TooManySchedules() from error
            raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error

    def get(self, client: str, name: str) -> Schedule | None:
        item = self._call(
            "get_item", Key=record_key(schedule_key(client, name)), ConsistentRead=True
        ).get("Item")
        return None if item is None else _from_item(item)

    def listing(self, client: str | None) -> list[Schedule]:
        """``client``'s schedules, or every client's (None), sorted by client and name."""
        clients = [client] if client is not None else self._set(CLIENTS_ITEM, "clients")
        keys = [
            schedule_key(owner, name)
            for owner in sorted(clients)
            for name in sorted(self._set(NAMES_PREFIX + owner, "names"))
        ]
        schedules = [_from_item(item) for item in self._get_many(keys)]
        return sorted(schedules, key=lambda s: (s.client, s.name))

    def delete(self, client: str, name: str) -> None:
        """Delete the schedule and its name; deleting one that is gone changes nothing."""
        self._call_unscoped(
            "transact_write_items",
            TransactItems=[
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": record_key(schedule_key(client, name)),
                    }
                },
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": record_key(NAMES_PREFIX + client),
                        "UpdateExpression": "DELETE #names :name",
                        "ExpressionAttributeNames": {"#names": "names"},
                        "ExpressionAttributeValues": {":name": {"SS": [name]}},
                    }
                },
            ],
        )

    def set_state(self, schedule: Schedule) -> None:
        """Record the schedule's state and resume time (it must still exist)."""
        self._call(
            "update_item",
            Key=record_key(schedule_key(schedule.client, schedule.name)),
            UpdateExpression="SET #state = :state, resumed_at = :resumed",
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":state": {"S": schedule.state},
                ":resumed": {"S": iso_utc(schedule.resumed_at)},
            },
        )

    def record_error(self, client: str, name: str, error: str | None) -> None:
        """Record why the last fire made no job (None: it made one). A schedule deleted
        meanwhile is left deleted."""
        update = "REMOVE last_error" if error is None else "SET last_error = :error"
        request: dict[str, Any] = {
            "Key": record_key(schedule_key(client, name)),
            "UpdateExpression": update,
            "ConditionExpression": "attribute_exists(job_id)",
        }
        if error is not None:
            request["ExpressionAttributeValues"] = {":error": {"S": error}}
        try:
            self._client.update_item(TableName=self.table_name, **request)
        except ClientError as failure:
            if failure.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise StoreUnavailable(f"DynamoDB UpdateItem failed: {failure}") from failure
        except BotoCoreError as failure:
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {failure}") from failure


def _to_item(schedule: Schedule) -> dict[str, dict[str, Any]]:
    item: dict[str, dict[str, Any]] = {
        "job_id": {"S": schedule_key(schedule.client, schedule.name)},
        "name": {"S": schedule.name},
        "client": {"S": schedule.client},
        "kind": {"S": schedule.kind},
        "input": {"S": json.dumps(schedule.input, separators=(",", ":"))},
        "expression": {"S": schedule.expression},
        "timezone": {"S": schedule.timezone},
        "state": {"S": schedule.state},
        "created_at": {"S": iso_utc(schedule.created_at)},
        "resumed_at": {"S": iso_utc(schedule.resumed_at)},
    }
    if schedule.last_error is not None:
        item["last_error"] = {"S": schedule.last_error}
    return item


def _from_item(item: dict[str, dict[str, Any]]) -> Schedule:
    return Schedule(
        name=item["name"]["S"],
        client=item["client"]["S"],
        kind=item["kind"]["S"],
        input=json.loads(item["input"]["S"]),
        expression=item["expression"]["S"],
        timezone=item["timezone"]["S"],
        state=item["state"]["S"],
        created_at=_parse(item["created_at"]["S"]),
        resumed_at=_parse(item["resumed_at"]["S"]),
        last_error=item.get("last_error", {}).get("S"),
    )


def _parse(text: str) -> datetime:
    return _parse_iso(text)
