"""The API Gateway key adapter: a key's name by its id, read once per process."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib import connections
from chalicelib.api_keys import ApiKeys
from chalicelib.errors import StoreUnavailable


@pytest.fixture
def gateway(aws: dict[str, str]) -> Any:
    return boto3.client("apigateway")


def calls_of(keys: ApiKeys) -> list[str]:
    calls: list[str] = []
    keys._client.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
    return calls


def test_a_keys_name_is_read_once_per_key(gateway: Any) -> None:
    alice = gateway.create_api_key(name="heavy-jobs-local-alice", enabled=True)["id"]
    bob = gateway.create_api_key(name="heavy-jobs-local-bob", enabled=True)["id"]
    keys = connections.api_keys()
    calls = calls_of(keys)

    assert [keys.name_of(alice), keys.name_of(alice), keys.name_of(bob)] == [
        "heavy-jobs-local-alice",
        "heavy-jobs-local-alice",
        "heavy-jobs-local-bob",
    ]
    assert calls == ["GetApiKey", "GetApiKey"]


def test_a_key_api_gateway_does_not_know_is_none_and_not_remembered(gateway: Any) -> None:
    keys = connections.api_keys()
    calls = calls_of(keys)

    assert keys.name_of("no-such-key") is None
    assert keys.name_of("no-such-key") is None
    assert calls == ["GetApiKey", "GetApiKey"]  # a key made later is found


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "slow"}}, "Get"),
        EndpointConnectionError(endpoint_url="https://apigateway.us-east-1.amazonaws.com"),
    ],
    ids=["client-error", "connection-error"],
)
def test_any_other_failure_is_store_unavailable(aws: dict[str, str], error: Exception) -> None:
    class Failing:
        def get_api_key(self, **_: Any) -> Any:
            raise error

    with pytest.raises(StoreUnavailable, match="API Gateway GetApiKey failed"):
        ApiKeys(Failing()).name_of("some-key")
