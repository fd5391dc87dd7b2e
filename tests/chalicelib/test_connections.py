"""The boto3 clients' bounds: a submission's AWS calls finish or fail inside
the API function's timeout, so the job is never left half-submitted by a killed
invocation; the bound is checked against .chalice/config.json, and the calls counted.
Likewise the worker's out-of-time path fits its timeout margin, at most 15% of the
worker's timeout."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections
from chalicelib.config import OUT_OF_TIME_CALLS, TIMEOUT_MARGIN, Settings
from chalicelib.errors import StoreUnavailable
from chalicelib.store import JobTable
from infra import stack
from tests.conftest import STAGE

# botocore's standard retry mode (botocore/retries/standard.py): before retry i (1-based)
# it sleeps at most min(2^(i-1) s, 20 s) (throttling), plus up to 5 s when the service
# sends x-amz-retry-after.
STANDARD_MAX_BACKOFF, RETRY_AFTER_EXTRA = 20, 5
# The settings every stage must give (values irrelevant here).
REQUIRED = {
    "JOBS_TABLE_NAME": "t",
    "JOBS_QUEUE_NAME": "q.fifo",
    "JOBS_DELAY_QUEUE_NAME": "d",
    "JOBS_STAGE": "local",
}


def worst_call_seconds(config: Any) -> float:
    """The longest one call can take under ``config``: every attempt connects and reads
    to its timeout, and sleeps the longest backoff before the next."""
    attempts = config.retries["total_max_attempts"]
    backoff = sum(
        min(2 ** (i - 1), STANDARD_MAX_BACKOFF) + RETRY_AFTER_EXTRA for i in range(1, attempts)
    )
    return float(attempts * (config.connect_timeout + config.read_timeout) + backoff)


def test_a_submissions_worst_case_fits_the_api_functions_timeout() -> None:
    config = stack.load_chalice_config(STAGE)
    api_timeout = config.scope(STAGE, "api_handler").lambda_timeout
    client_config = connections.API_CLIENT_CONFIG
    assert client_config.retries["mode"] == "standard"

    worst = connections.SUBMISSION_CALLS * worst_call_seconds(client_config)

    # With room for the rest of the invocation (the app's own work, a cold start's import).
    assert worst <= api_timeout - 5, (worst, api_timeout)
    # boto3's defaults (60 s reads, retried) would not fit even one call.
    assert worst_call_seconds(SimpleNamespace(
        retries={"total_max_attempts": 3}, connect_timeout=60, read_timeout=60
    )) > api_timeout  # fmt: skip


def test_the_timeout_margin_covers_the_out_of_time_path_within_15_percent() -> None:
    """Once a run is out of time it makes OUT_OF_TIME_CALLS calls on the worker's clients
    (tests/chalicelib/test_lane_bounds.py counts them); the default margin must cover
    their worst case, so Lambda never stops an invocation mid-continuation, and stay at
    most 15% of the worker's timeout as deployed."""
    config = stack.load_chalice_config(STAGE)
    worker_timeout = config.scope(STAGE, "process_job").lambda_timeout
    client_config = connections.WORKER_CLIENT_CONFIG
    assert client_config.retries["mode"] == "standard"

    worst = OUT_OF_TIME_CALLS * worst_call_seconds(client_config)
    margin = Settings.timeout_margin_seconds

    assert worst <= margin <= 0.15 * worker_timeout, (worst, margin, worker_timeout)
    assert Settings.from_mapping(REQUIRED).timeout_margin_seconds == margin
    # The override stays (tests set a small one).
    assert Settings.from_mapping({**REQUIRED, TIMEOUT_MARGIN: "2"}).timeout_margin_seconds == 2


def test_the_clients_are_built_with_their_bounds(aws: dict[str, str]) -> None:
    api = connections.job_table()._client.meta.config
    assert (api.connect_timeout, api.read_timeout) == (
        connections.API_CLIENT_CONFIG.connect_timeout,
        connections.API_CLIENT_CONFIG.read_timeout,
    )
    assert api.retries == connections.API_CLIENT_CONFIG.retries
    assert connections.job_queue()._client.meta.config.retries == api.retries
    worker = connections.worker()
    for client in (worker.table._client, worker.queue._client, worker.delay_queue._client):
        assert client.meta.config.read_timeout == connections.WORKER_CLIENT_CONFIG.read_timeout
        assert (
            client.meta.config.connect_timeout == connections.WORKER_CLIENT_CONFIG.connect_timeout
        )
        assert client.meta.config.retries == connections.WORKER_CLIENT_CONFIG.retries


@pytest.fixture
def counted_calls(aws: dict[str, str]) -> Iterator[list[str]]:
    """Every AWS call the API's clients make; SendMessage fails (as SQS stalling would)."""
    calls: list[str] = []

    def record(model: Any, **_: Any) -> Any:
        calls.append(model.name)
        if model.name == "SendMessage":
            error = {"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}
            return SimpleNamespace(status_code=503, headers={}), error
        return None

    for client in (connections.job_table()._client, connections.job_queue()._client):
        client.meta.events.register("before-call", record)
    yield calls


@pytest.mark.parametrize("keyed", [False, True])
def test_the_worst_case_submission_makes_the_counted_calls(
    client: Client, counted_calls: list[str], keyed: bool
) -> None:
    headers = {"Content-Type": "application/json"}
    if keyed:
        headers["Idempotency-Key"] = "order-7"

    response = client.http.post("/heavy", headers=headers, body=b'{"n": 5}')

    assert response.status_code == 503
    create = "TransactWriteItems" if keyed else "PutItem"
    fail = "TransactWriteItems"  # fail the job and release its key in one transaction
    # A cold start: the client's quota is read, and the queue's URL is looked up once,
    # before the first send. On a keyed stage, the key's name is read first (GetApiKey,
    # once per key and cold start; counted by test_app_clients.py).
    assert counted_calls == ["Query", create, "GetQueueUrl", "SendMessage", fail]
    assert len(counted_calls) + 1 == connections.SUBMISSION_CALLS


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server that accepts connections and never answers; its URL and connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_hung_call_ends_at_the_read_timeout_after_the_bounded_attempts(
    silent_server: tuple[str, list[socket.socket]],
) -> None:
    url, accepted = silent_server
    client = boto3.client(
        "dynamodb", endpoint_url=url, config=connections.API_CLIENT_CONFIG, region_name="us-east-1"
    )
    with pytest.raises(StoreUnavailable, match="Read timeout"):
        JobTable(client, "jobs").get("6f9619ff-8b86-4011-b42d-00c04fc964ff")
    # One connection per attempt: boto3's defaults would have made several, 60 s each.
    assert len(accepted) == connections.API_CLIENT_CONFIG.retries["total_max_attempts"]


def test_the_api_functions_timeout_is_read_from_the_config_file() -> None:
    """The bound above is checked against what the stage deploys, not a copy of it."""
    raw = json.loads((stack.PROJECT_DIR / ".chalice" / "config.json").read_text())
    timeout = raw["lambda_functions"]["api_handler"]["lambda_timeout"]
    assert stack.load_chalice_config(STAGE).scope(STAGE, "api_handler").lambda_timeout == timeout
