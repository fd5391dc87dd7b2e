"""The webhook endpoints' records, in the job table beside the jobs and the schedules.

Item layout (none carries a job's index keys, so no listing or quota reads them)::

    webhook#<id>                one endpoint: client url events secret created_at
                                previous_secret previous_until rotated_at
    webhook-attempts#<id>       the number its last delivery attempt got (``seq``, an
                                atomic counter) expires_at
    webhook-attempt#<id>#<slot> one attempt, in slot seq % RECENT_ATTEMPTS: seq event_id
                                event_type attempted_at attempt delivered status_code
                                error expires_at
    webhooks#<client>           the client's endpoint ids (a string set, ``ids``)
    control#webhook-clients     the clients that ever had an endpoint (``clients``)

The attempts are a ring of ``RECENT_ATTEMPTS`` small items per endpoint, apart from the
endpoint so that recording one never rewrites the item that holds the secrets. Recording
one costs two writes of under 1 KB whatever the history, 1 WRU each (DynamoDB bills a
write by the larger of the item's size before and after: "Read/write capacity mode",
DynamoDB Developer Guide): the counter's ADD gives the attempt its number, then its slot
is overwritten. Reading them is one consistent BatchGetItem of the slots. Every attempt
item expires (``expires_at``, the table's TTL attribute) ``ATTEMPT_RETENTION`` after its
write, and the counter a day after its last attempt; deleting an endpoint deletes its
counter and slots, and an attempt recorded while it is deleted expires, so nothing of a
deleted endpoint stays forever.

The per-client cap is enforced by the transaction that adds an id: the ids set must be
smaller than the cap, so concurrent creates cannot overshoot.

Failure costs: no job waits for these items (deliveries run in a function of their own).
A DynamoDB error raises StoreUnavailable: the API answers 503, and a delivery's message
comes back after its visibility timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import CONTROL_PREFIX, EXPIRES_AT, _parse_iso, iso_utc, utc_now
from chalicelib.table_records import TableRecords, record_key
from chalicelib.webhooks.endpoints import Attempt, Endpoint

ENDPOINT_PREFIX = "webhook#"
COUNTER_PREFIX = "webhook-attempts#"
ATTEMPT_PREFIX = "webhook-attempt#"
IDS_PREFIX = "webhooks#"
CLIENTS_ITEM = CONTROL_PREFIX + "webhook-clients"
# How many attempts GET /webhooks/{id}/deliveries shows (the newest): the ring's slots.
RECENT_ATTEMPTS = 50
# How long an attempt is shown (and kept) after it was recorded: far beyond the 25.7 hours
# an event's retries span.
ATTEMPT_RETENTION = timedelta(days=30)
# The counter outlives every attempt it numbered by this much, whatever the clocks of the
# writers that raced on it: a counter that starts again from 1 finds only expired slots.
_COUNTER_MARGIN = timedelta(days=1)
# The attempt's number in the ring (on the counter: the last number given).
_SEQ = "seq"


class TooManyEndpoints(Exception):
    """The client already has its cap of endpoints."""


class WebhookTable(TableRecords):
    def __init__(self, client: Any, table_name: str, now: Callable[[], datetime] = utc_now) -> None:
        super().__init__(client, table_name)
        # When attempts are written and read: their expiry, and which ones have expired.
        self._now = now

    def create(self, endpoint: Endpoint, cap: int) -> None:
        """Write ``endpoint`` and add its id to its client's, in one transaction.
        TooManyEndpoints if the client has ``cap`` already, StoreUnavailable if DynamoDB
        fails."""
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": _to_item(endpoint),
                            # A new id: never overwrite (a uuid4 collision fails loudly).
                            "ConditionExpression": "attribute_not_exists(job_id)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": record_key(IDS_PREFIX + endpoint.client),
                            "UpdateExpression": "ADD ids :id",
                            # Fewer than the cap before this one: concurrent creates each
                            # see the set as their transaction leaves it.
                            "ConditionExpression": "attribute_not_exists(ids) OR size(ids) < :cap",
                            "ExpressionAttributeValues": {
                                ":id": {"SS": [endpoint.endpoint_id]},
                                ":cap": {"N": str(cap)},
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": record_key(CLIENTS_ITEM),
                            "UpdateExpression": "ADD clients :client",
                            "ExpressionAttributeValues": {":client": {"SS": [endpoint.client]}},
                        }
                    },
                ]
            )
        except ClientError as error:
            reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            if reasons[1:2] == ["ConditionalCheckFailed"]:
                raise TooManyEndpoints() from error
            raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB TransactWriteItems failed: {error}") from error

    def get(self, endpoint_id: str) -> Endpoint | None:
        item = self._call(
            "get_item", Key=record_key(ENDPOINT_PREFIX + endpoint_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else _from_item(item)

    def listing(self, client: str | None) -> list[Endpoint]:
        """``client``'s endpoints, or every client's (None), by client and creation."""
        clients = [client] if client is not None else self._set(CLIENTS_ITEM, "clients")
        keys = [
            ENDPOINT_PREFIX + endpoint_id
            for owner in sorted(clients)
            for endpoint_id in sorted(self._set(IDS_PREFIX + owner, "ids"))
        ]
        endpoints = [_from_item(item) for item in self._get_many(keys)]
        return sorted(endpoints, key=lambda e: (e.client, e.created_at, e.endpoint_id))

    def delete(self, endpoint: Endpoint) -> None:
        """Delete the endpoint's attempts, then the endpoint, its counter and its id in
        one transaction; one already gone changes nothing. StoreUnavailable if DynamoDB
        fails: the endpoint then still exists (perhaps without its attempts), and deleting
        it again finishes. An attempt recorded while this runs stays, unreachable (its
        endpoint is gone), until it expires."""
        # The slots go first, by BatchWriteItem: in the transaction, their 50 deletes would
        # cost 2 WRU each instead of 1, and exceed the 25 actions moto takes (AWS takes
        # 100). Until the transaction succeeds, a retry finds the endpoint and finishes.
        self._delete_many([_slot_key(endpoint.endpoint_id, s) for s in range(RECENT_ATTEMPTS)])
        self._call_unscoped(
            "transact_write_items",
            TransactItems=[
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": record_key(ENDPOINT_PREFIX + endpoint.endpoint_id),
                    }
                },
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": record_key(COUNTER_PREFIX + endpoint.endpoint_id),
                    }
                },
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": record_key(IDS_PREFIX + endpoint.client),
                        "UpdateExpression": "DELETE ids :id",
                        "ExpressionAttributeValues": {":id": {"SS": [endpoint.endpoint_id]}},
                    }
                },
            ],
        )

    def set_secrets(self, endpoint: Endpoint) -> bool:
        """Record the endpoint's secrets after a rotation; False if it was deleted
        meanwhile (nothing is written: a rotation never recreates an endpoint)."""
        assert endpoint.previous_secret is not None and endpoint.previous_until is not None
        assert endpoint.rotated_at is not None
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=record_key(ENDPOINT_PREFIX + endpoint.endpoint_id),
                UpdateExpression=(
                    "SET secret = :secret, previous_secret = :previous, "
                    "previous_until = :until, rotated_at = :rotated"
                ),
                # Only an endpoint that still exists.
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeValues={
                    ":secret": {"S": endpoint.secret},
                    ":previous": {"S": endpoint.previous_secret},
                    ":until": {"S": iso_utc(endpoint.previous_until)},
                    ":rotated": {"S": iso_utc(endpoint.rotated_at)},
                },
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return False
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {code}") from None
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {type(error).__name__}") from None
        return True

    def record_attempt(self, endpoint_id: str, attempt: Attempt) -> None:
        """Record ``attempt`` as the endpoint's newest: the counter gives it the next
        number, and it overwrites the slot of the attempt ``RECENT_ATTEMPTS`` before it.
        Concurrent attempts get distinct numbers; one whose write comes so late that its
        slot already holds a newer attempt is dropped (it is no longer among the newest).
        StoreUnavailable if DynamoDB fails."""
        now = self._now()
        response = self._call(
            "update_item",
            Key=record_key(COUNTER_PREFIX + endpoint_id),
            UpdateExpression=f"ADD {_SEQ} :one SET {EXPIRES_AT} = :expires",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":expires": {
                    "N": str(int((now + ATTEMPT_RETENTION + _COUNTER_MARGIN).timestamp()))
                },
            },
            ReturnValues="UPDATED_NEW",
        )
        seq = int(response["Attributes"][_SEQ]["N"])
        values = {
            **_attempt_item(attempt),
            _SEQ: {"N": str(seq)},
            EXPIRES_AT: {"N": str(int((now + ATTEMPT_RETENTION).timestamp()))},
        }
        # Every attribute by placeholder ("error" is one of DynamoDB's reserved words);
        # the optional ones this attempt lacks are removed, not left from the slot's
        # previous attempt.
        names = [*values, *(f.name for f in fields(Attempt) if f.name not in values)]
        update = "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(values)))
        if len(names) > len(values):
            update += " REMOVE " + ", ".join(f"#a{i}" for i in range(len(values), len(names)))
        try:
            # An UpdateItem that writes the whole slot, as a PutItem would at the same cost:
            # the delivery function needs no PutItem grant (which would let it create jobs).
            self._client.update_item(
                TableName=self.table_name,
                Key=record_key(_slot_key(endpoint_id, seq % RECENT_ATTEMPTS)),
                UpdateExpression=update,
                # Never over a newer attempt (a slow writer), but over an expired one of
                # any number (the counter expired with it and counts from 1 again).
                ConditionExpression="attribute_not_exists(#seq) OR #seq < :seq OR #exp <= :now",
                ExpressionAttributeNames={
                    "#seq": _SEQ,
                    "#exp": EXPIRES_AT,
                    **{f"#a{i}": name for i, name in enumerate(names)},
                },
                ExpressionAttributeValues={
                    ":seq": {"N": str(seq)},
                    ":now": {"N": str(int(now.timestamp()))},
                    **{f":a{i}": value for i, value in enumerate(values.values())},
                },
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {code}") from None
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB UpdateItem failed: {type(error).__name__}") from None

    def attempts(self, endpoint_id: str) -> list[Attempt]:
        """The endpoint's recent attempts (at most ``RECENT_ATTEMPTS``, none expired),
        newest first: one consistent BatchGetItem of its slots. StoreUnavailable if
        DynamoDB fails."""
        now = self._now().timestamp()
        items = self._get_many([_slot_key(endpoint_id, s) for s in range(RECENT_ATTEMPTS)])
        live = [item for item in items if int(item[EXPIRES_AT]["N"]) > now]
        live.sort(key=lambda item: int(item[_SEQ]["N"]), reverse=True)
        return [_from_attempt_item(item) for item in live]


def _slot_key(endpoint_id: str, slot: int) -> str:
    return f"{ATTEMPT_PREFIX}{endpoint_id}#{slot}"


def _to_item(endpoint: Endpoint) -> dict[str, dict[str, Any]]:
    item: dict[str, dict[str, Any]] = {
        "job_id": {"S": ENDPOINT_PREFIX + endpoint.endpoint_id},
        "endpoint_id": {"S": endpoint.endpoint_id},
        "client": {"S": endpoint.client},
        "url": {"S": endpoint.url},
        "events": {"L": [{"S": t} for t in endpoint.events]},
        "secret": {"S": endpoint.secret},
        "created_at": {"S": iso_utc(endpoint.created_at)},
    }
    if endpoint.previous_secret is not None and endpoint.previous_until is not None:
        item["previous_secret"] = {"S": endpoint.previous_secret}
        item["previous_until"] = {"S": iso_utc(endpoint.previous_until)}
    if endpoint.rotated_at is not None:
        item["rotated_at"] = {"S": iso_utc(endpoint.rotated_at)}
    return item


def _from_item(item: dict[str, dict[str, Any]]) -> Endpoint:
    def optional(name: str) -> str | None:
        value = item.get(name, {}).get("S")
        return None if value is None else str(value)

    until, rotated = optional("previous_until"), optional("rotated_at")
    return Endpoint(
        endpoint_id=item["endpoint_id"]["S"],
        client=item["client"]["S"],
        url=item["url"]["S"],
        events=tuple(e["S"] for e in item["events"]["L"]),
        secret=item["secret"]["S"],
        created_at=_parse_iso(item["created_at"]["S"]),
        previous_secret=optional("previous_secret"),
        previous_until=None if until is None else _parse_iso(until),
        rotated_at=None if rotated is None else _parse_iso(rotated),
    )


def _attempt_item(attempt: Attempt) -> dict[str, dict[str, Any]]:
    item: dict[str, dict[str, Any]] = {
        "event_id": {"S": attempt.event_id},
        "event_type": {"S": attempt.event_type},
        "attempted_at": {"S": iso_utc(attempt.attempted_at)},
        "attempt": {"N": str(attempt.attempt)},
        "delivered": {"BOOL": attempt.delivered},
    }
    if attempt.status_code is not None:
        item["status_code"] = {"N": str(attempt.status_code)}
    if attempt.error is not None:
        item["error"] = {"S": attempt.error}
    return item


def _from_attempt_item(item: dict[str, dict[str, Any]]) -> Attempt:
    status = item.get("status_code", {}).get("N")
    return Attempt(
        event_id=item["event_id"]["S"],
        event_type=item["event_type"]["S"],
        attempted_at=_parse_iso(item["attempted_at"]["S"]),
        attempt=int(item["attempt"]["N"]),
        status_code=None if status is None else int(status),
        delivered=item["delivered"]["BOOL"],
        error=item.get("error", {}).get("S"),
    )
