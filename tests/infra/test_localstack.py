"""The LocalStack path: where `make run` looks for a user's LocalStack (LocalStack's own
variables, by localstack-client's rules), and LocalStack users' tooling
(``localstack_client.session``) driving the embedded emulator. Emulators run on free
ports, never 4566."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import localstack_client.config
import localstack_client.session
import pytest

from infra import stack
from infra.emulator import (
    EmulatorHandle,
    endpoint_url,
    ensure_emulator,
    free_port,
    localstack_endpoint,
    port_is_free,
    start_emulator,
)
from infra.run import Services, copy_app

LOCALSTACK_VARIABLES = ("LOCALSTACK_HOST", "EDGE_PORT", "USE_SSL", "AWS_ENDPOINT_URL")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:4999"}, None),  # not a LocalStack setting
        ({"LOCALSTACK_HOST": "localstack:4566"}, "http://localstack:4566"),
        ({"LOCALSTACK_HOST": "localstack"}, "http://localstack:4566"),
        ({"LOCALSTACK_HOST": ":4510"}, "http://localhost:4510"),
        ({"LOCALSTACK_HOST": "h:4510", "USE_SSL": "1"}, "https://h:4510"),
        ({"LOCALSTACK_HOST": "h:4510", "USE_SSL": "true"}, "https://h:4510"),
        ({"LOCALSTACK_HOST": "h:4510", "USE_SSL": "0"}, "http://h:4510"),
        # EDGE_PORT, LocalStack's port before LOCALSTACK_HOST carried one:
        ({"EDGE_PORT": "4510"}, "http://localhost:4510"),
        ({"LOCALSTACK_HOST": "h", "EDGE_PORT": "4510"}, "http://h:4510"),
        ({"LOCALSTACK_HOST": "h:4566", "EDGE_PORT": "4510"}, "http://h:4566"),
    ],
)
def test_localstack_endpoint_follows_localstacks_variables(
    environ: dict[str, str], expected: str | None
) -> None:
    assert localstack_endpoint(environ) == expected


@pytest.mark.parametrize(
    ("environ", "variable"),
    [({"LOCALSTACK_HOST": "h:port"}, "LOCALSTACK_HOST"), ({"EDGE_PORT": "x"}, "EDGE_PORT")],
)
def test_an_unusable_value_is_refused_by_name(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        localstack_endpoint(environ)


@pytest.mark.parametrize(
    "settings",
    [
        {"LOCALSTACK_HOST": "localstack:4510"},
        {"LOCALSTACK_HOST": "localstack"},
        {"LOCALSTACK_HOST": ":4511", "USE_SSL": "true"},
        {"LOCALSTACK_HOST": "10.0.0.2:4566", "USE_SSL": "1"},
    ],
)
def test_the_endpoint_is_the_one_localstack_client_uses(
    settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in LOCALSTACK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert localstack_endpoint() == localstack_client.config.get_service_endpoint("sqs")


@pytest.fixture(scope="module")
def localstack() -> Iterator[EmulatorHandle]:
    """Stands in for a user's LocalStack: an emulator on a free port, started elsewhere."""
    with start_emulator() as handle:
        yield handle


@pytest.fixture
def localstack_settings(localstack: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell of a LocalStack user whose LocalStack listens on that port."""
    for name in LOCALSTACK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCALSTACK_HOST", f"127.0.0.1:{localstack.port}")


@pytest.mark.usefixtures("localstack_settings")
def test_localstack_client_sessions_drive_the_embedded_emulator(tmp_path: Path) -> None:
    # As LocalStack users' scripts do: a localstack_client session, no endpoint passed.
    session = localstack_client.session.Session()

    # The project's own stack, applied through that session (to a copy of the project,
    # whose config receives the outputs).
    project = copy_app(tmp_path / "project")
    outputs = stack.apply_stage(
        "local",
        project,
        cfn=session.client("cloudformation"),
        ddb=session.client("dynamodb"),
        scheduler=session.client("scheduler"),
    )

    sqs: Any = session.client("sqs")
    # The job queue is FIFO: every message names its group and deduplication id.
    sqs.send_message(
        QueueUrl=outputs["QueueUrl"],
        MessageBody="hello",
        MessageGroupId="test",
        MessageDeduplicationId="hello-1",
    )
    received = sqs.receive_message(QueueUrl=outputs["QueueUrl"], WaitTimeSeconds=1)
    assert [m["Body"] for m in received["Messages"]] == ["hello"]
    table = session.resource("dynamodb").Table(outputs["TableName"])
    table.put_item(Item={"job_id": "j1", "status": "queued"})
    assert table.get_item(Key={"job_id": "j1"})["Item"]["status"] == "queued"


def test_ensure_emulator_reuses_localstack_when_nothing_answers_on_the_port(
    localstack: EmulatorHandle,
) -> None:
    port = free_port()

    handle = ensure_emulator(port, fallback=localstack.url)

    assert (handle.owned, handle.url, handle.port) == (False, localstack.url, localstack.port)
    assert port_is_free(port)  # nothing was started
    handle.stop()  # not ours: a no-op
    assert localstack.process is not None and localstack.process.poll() is None


def test_the_emulator_port_is_tried_first(localstack: EmulatorHandle) -> None:
    with start_emulator() as ours:
        handle = ensure_emulator(ours.port, fallback=localstack.url)
        assert (handle.owned, handle.url) == (False, ours.url)


def test_a_localstack_that_does_not_answer_means_moto_is_started() -> None:
    port = free_port()
    with ensure_emulator(port, fallback=endpoint_url(free_port())) as handle:
        assert handle.owned and handle.url == endpoint_url(port)
    assert port_is_free(port)


def test_services_send_every_process_to_the_localstack_they_found(
    localstack: EmulatorHandle,
) -> None:
    services = Services(emulator_port=free_port(), localstack=localstack.url)
    try:
        services.start_emulator()
        assert services.endpoint == localstack.url
        assert services.environment()["AWS_ENDPOINT_URL"] == localstack.url
    finally:
        services.stop_all()
    assert localstack.process is not None and localstack.process.poll() is None
