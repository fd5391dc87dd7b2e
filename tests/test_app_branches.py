"""The API's rarer branches, each through what the client saw and what was
written: Idempotency-Key scoping on a stage without keys, the Idempotency-Key
transaction's failures, and a replay whose job is gone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from chalice.local import LambdaEventConverter
from chalice.test import Client

from chalicelib import connections, openapi
from chalicelib.config import Settings
from chalicelib.jobs import idempotency_record_id
from tests.chalicelib.test_config import REQUIRED
from tests.test_app import JSON, job_count, post_heavy, queue_depth


@pytest.fixture
def api_key_id(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str | None]]:
    """The API key id API Gateway puts in the request context (identity.apiKeyId) for a
    key-guarded route; set ``[0]`` before a request. chalice local sets none."""
    current: list[str | None] = [None]
    real = LambdaEventConverter.create_lambda_event

    def with_key(self: LambdaEventConverter, *args: Any, **kwargs: Any) -> Any:
        event = real(self, *args, **kwargs)
        if current[0] is not None:
            event["requestContext"]["identity"]["apiKeyId"] = current[0]
        return event

    monkeypatch.setattr(LambdaEventConverter, "create_lambda_event", with_key)
    yield current


def keyed(key: str) -> dict[str, str]:
    return {**JSON, "Idempotency-Key": key}


def transaction_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "TransactWriteItems")


@pytest.mark.parametrize(
    "error",
    [
        transaction_error("ProvisionedThroughputExceededException"),
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ],
    ids=["client-error", "connection-error"],
)
def test_an_idempotency_transaction_that_fails_is_a_503_and_writes_nothing(
    client: Client, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """JobTable.create_with_key: an AWS error other than a cancelled transaction (the key
    is taken) is StoreUnavailable: the client is told to retry; no job, no message."""

    def failing(**kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(connections.job_table()._client, "transact_write_items", failing)

    response = post_heavy(client, b'{"n": 5}', keyed("order-2"))

    assert response.status_code == 503
    assert response.json_body["error"]["code"] == "unavailable"
    assert job_count(aws) == 0 and queue_depth(aws) == 0


def test_a_key_whose_holder_vanished_meanwhile_is_a_503(
    client: Client, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """JobTable.create_with_key: the transaction was cancelled (the key was held) but the
    holder is gone when read (it expired and TTL deleted it in between): StoreUnavailable,
    so the client retries and then gets the free key, not a replay of nothing."""
    table = connections.job_table()
    real = table._client.transact_write_items

    def cancelled(**kwargs: Any) -> Any:
        raise transaction_error("TransactionCanceledException")

    monkeypatch.setattr(table._client, "transact_write_items", cancelled)
    refused = post_heavy(client, b'{"n": 5}', keyed("order-3"))
    monkeypatch.setattr(table._client, "transact_write_items", real)
    retried = post_heavy(client, b'{"n": 5}', keyed("order-3"))

    assert refused.status_code == 503
    assert refused.json_body["error"]["code"] == "unavailable"
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert queue_depth(aws) == 1


def test_a_replay_whose_job_is_missing_is_a_503_not_a_new_job(
    client: Client, aws: dict[str, str]
) -> None:
    """service._replay: the key's record names a job that no longer exists; the answer is
    503 (retry), never a 200/202 for a job the client cannot read, nor a second job."""
    first = post_heavy(client, b'{"n": 5}', keyed("order-4"))
    boto3.client("dynamodb").delete_item(
        TableName=aws["TableName"], Key={"job_id": {"S": first.json_body["job_id"]}}
    )

    replay = post_heavy(client, b'{"n": 5}', keyed("order-4"))

    assert replay.status_code == 503
    assert replay.json_body["error"]["code"] == "unavailable"
    assert job_count(aws) == 1  # the key's record only
    assert queue_depth(aws) == 1  # the first job's message only


def test_the_document_says_a_blank_body_is_no_body() -> None:
    """A whitespace-only body is answered as no body (tests/test_app.py); the document must
    not claim it is refused, or schema-driven clients and fuzzers read it as a 400."""
    settings = Settings.from_mapping(REQUIRED)
    body = openapi.document(settings, False)["paths"]["/heavy"]["post"]["requestBody"]
    assert body["required"] is False
    assert "only whitespace" in body["description"]
    assert str(settings.default_n) in body["description"]


def test_a_keys_record_is_stored_under_the_anonymous_scope_on_a_stage_without_keys(
    client: Client, aws: dict[str, str], api_key_id: list[str | None]
) -> None:
    """app._idempotency_key: on a stage without keys every caller is anonymous, so its
    records are under "anonymous" (the scope every earlier release used there, so they
    keep replaying after a deploy), whatever key id the context carries. A keyed stage
    scopes them by client name: tests/test_app_clients.py."""
    first = post_heavy(client, b'{"n": 5}', keyed("order-6"))
    api_key_id[0] = "client-a"
    again = post_heavy(client, b'{"n": 5}', keyed("order-6"))

    assert again.json_body["job_id"] == first.json_body["job_id"]
    record_id = idempotency_record_id("anonymous", "order-6")
    key = {"job_id": {"S": record_id}}
    assert "Item" in boto3.client("dynamodb").get_item(TableName=aws["TableName"], Key=key)
    assert job_count(aws) == 2  # one job, one key record
