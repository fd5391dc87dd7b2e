"""The fault-injecting proxy the outage tests put in front of the emulator: each mode as
botocore sees it, and a rule that fails only the requests it picks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from moto.server import ThreadedMotoServer

from infra.emulator import endpoint_url, free_port
from tests.e2e.fault_proxy import FaultProxy, Mode

ATTEMPTS = 3


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield endpoint_url(port)
    server.stop()


@pytest.fixture
def proxies(emulator: str) -> Iterator[dict[str, FaultProxy]]:
    started = {service: FaultProxy(emulator, service).start() for service in ("sqs", "dynamodb")}
    yield started
    for proxy in started.values():
        proxy.stop()


def client(service: str, url: str, read_timeout: float = 5) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            connect_timeout=1,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
        ),
    )


def test_pass_forwards_every_request_and_records_it(proxies: dict[str, FaultProxy]) -> None:
    proxy = proxies["sqs"]
    sqs = client("sqs", proxy.url)
    url = sqs.create_queue(QueueName="passing")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")

    received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]

    assert [m["Body"] for m in received] == ["hello"]
    assert [s.request.operation for s in proxy.requests()] == [
        "CreateQueue",
        "SendMessage",
        "ReceiveMessage",
    ]
    assert {(s.outcome, s.status) for s in proxy.requests()} == {(Mode.PASS, 200)}
    (receive,) = proxy.requests("ReceiveMessage")
    assert b"hello" in receive.response and receive.answered_at is not None
    assert receive.answered_at >= receive.at


@pytest.mark.parametrize(
    ("service", "code"), [("dynamodb", "InternalServerError"), ("sqs", "InternalError")]
)
def test_errors_answer_the_services_error_after_botocores_retries(
    proxies: dict[str, FaultProxy], service: str, code: str
) -> None:
    proxy = proxies[service]
    aws = client(service, proxy.url)
    proxy.set_mode(Mode.ERRORS)

    with pytest.raises(ClientError) as raised:
        aws.list_tables() if service == "dynamodb" else aws.list_queues()

    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert len(list(proxy.requests(outcome=Mode.ERRORS))) == ATTEMPTS  # retried as transient
    proxy.set_mode(Mode.PASS)
    aws.list_tables() if service == "dynamodb" else aws.list_queues()  # and back


def test_down_resets_connections_new_and_kept_alive(proxies: dict[str, FaultProxy]) -> None:
    proxy = proxies["dynamodb"]
    dynamodb = client("dynamodb", proxy.url)
    dynamodb.list_tables()  # a kept-alive connection now sits in botocore's pool
    proxy.set_mode(Mode.DOWN)

    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        dynamodb.list_tables()
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        client("dynamodb", proxy.url).list_tables()  # a new client, new connections

    proxy.set_mode(Mode.PASS)
    assert "TableNames" in dynamodb.list_tables()


def test_hang_answers_nothing_until_the_mode_changes(proxies: dict[str, FaultProxy]) -> None:
    proxy = proxies["sqs"]
    proxy.set_mode(Mode.HANG)

    with pytest.raises(ReadTimeoutError):
        client("sqs", proxy.url, read_timeout=0.3).list_queues()

    assert len(list(proxy.requests(outcome=Mode.HANG))) == ATTEMPTS
    proxy.set_mode(Mode.PASS)
    client("sqs", proxy.url).list_queues()


def test_a_rule_fails_only_the_requests_it_picks(proxies: dict[str, FaultProxy]) -> None:
    proxy = proxies["sqs"]
    sqs = client("sqs", proxy.url)
    url = sqs.create_queue(QueueName="picked")["QueueUrl"]
    rule = proxy.fail_when(
        lambda r: r.operation == "SendMessage" and "job-7" in r.json().get("MessageBody", "")
    )

    sqs.send_message(QueueUrl=url, MessageBody='{"job_id": "job-6"}')
    with pytest.raises(ClientError):
        sqs.send_message(QueueUrl=url, MessageBody='{"job_id": "job-7"}')

    assert rule.matched == ATTEMPTS
    sent = [s.request.json()["MessageBody"] for s in proxy.requests("SendMessage", Mode.PASS)]
    assert sent == ['{"job_id": "job-6"}']
    proxy.clear_rules()
    sqs.send_message(QueueUrl=url, MessageBody='{"job_id": "job-7"}')


def test_a_rule_with_times_fails_that_many_requests_then_passes(
    proxies: dict[str, FaultProxy],
) -> None:
    proxy = proxies["sqs"]
    rule = proxy.fail_when(lambda r: r.operation == "ListQueues", times=ATTEMPTS)

    with pytest.raises(ClientError):
        client("sqs", proxy.url).list_queues()  # every attempt of the call fails
    client("sqs", proxy.url).list_queues()  # the next call passes

    assert rule.matched == ATTEMPTS
    assert [s.outcome for s in proxy.requests("ListQueues")] == [Mode.ERRORS] * ATTEMPTS + [
        Mode.PASS
    ]
