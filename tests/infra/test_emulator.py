"""Tests for infra.emulator: a real moto server per test on a free port (never 4566 or 8000),
real boto3 calls against it, and the process and port checked after it stops."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.emulator import (
    DEFAULT_PORT,
    EmulatorError,
    EmulatorHandle,
    default_port,
    endpoint_answers,
    ensure_emulator,
    free_port,
    port_is_free,
    start_emulator,
    wait_until,
)

IMPORT_ROOT = Path(__file__).resolve().parents[2]  # holds the `infra` package
RESERVED_PORTS = {DEFAULT_PORT, 8000}  # a developer's emulator and `chalice local`


def client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_free_port_avoids_the_developers_ports() -> None:
    assert free_port() not in RESERVED_PORTS


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[EmulatorHandle]:
    """One server for the tests that only need an endpoint that answers."""
    with start_emulator() as handle:
        yield handle


def test_a_started_emulator_serves_real_aws_calls(shared_emulator: EmulatorHandle) -> None:
    assert shared_emulator.owned
    assert shared_emulator.port not in RESERVED_PORTS
    assert shared_emulator.url == f"http://127.0.0.1:{shared_emulator.port}"

    sqs = client("sqs", shared_emulator.url)
    url = sqs.create_queue(QueueName="emulator-test")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert [m["Body"] for m in received["Messages"]] == ["hello"]

    dynamodb = client("dynamodb", shared_emulator.url)
    dynamodb.create_table(
        TableName="emulator-test",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert "emulator-test" in dynamodb.list_tables()["TableNames"]


class _NotAws(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"<html>not here</html>")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    """Something that answers HTTP on a port, but not like AWS."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotAws)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_endpoint_answers_only_for_an_aws_compatible_endpoint(
    shared_emulator: EmulatorHandle, plain_http_server: str
) -> None:
    assert endpoint_answers(shared_emulator.url)
    assert not endpoint_answers(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    assert not endpoint_answers(plain_http_server, timeout=0.5)


def test_ensure_emulator_reuses_an_endpoint_that_answers(shared_emulator: EmulatorHandle) -> None:
    handle = ensure_emulator(shared_emulator.port)

    assert not handle.owned
    assert handle.url == shared_emulator.url
    handle.stop()  # not ours: stopping it leaves the server alone
    assert endpoint_answers(shared_emulator.url)


def test_ensure_emulator_starts_one_when_nothing_answers() -> None:
    port = free_port()
    with ensure_emulator(port) as handle:
        assert handle.owned
        assert endpoint_answers(handle.url)
    assert not endpoint_answers(handle.url, timeout=0.5)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_stop_leaves_no_process_and_frees_the_port() -> None:
    handle = start_emulator()
    assert handle.process is not None
    pid = handle.process.pid

    handle.stop()
    handle.stop()  # idempotent

    assert handle.process.returncode == 0  # a clean exit on SIGTERM, not a kill
    assert not Path(f"/proc/{pid}").exists()
    assert port_is_free(handle.port)


def test_sigterm_stops_the_server_cleanly_without_a_traceback(tmp_path: Path) -> None:
    output_path = tmp_path / "emulator.log"
    with output_path.open("wb") as output:
        handle = start_emulator(output=output)
        ready = f"ready at {handle.url}"
        assert wait_until(lambda: ready in output_path.read_text(), 5)
        handle.stop()
    assert handle.process is not None and handle.process.returncode == 0
    assert output_path.read_text().endswith("emulator: stopped\n")
    assert "Traceback" not in output_path.read_text()


def test_start_emulator_refuses_a_port_that_is_taken() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(EmulatorError, match="taken"):
            start_emulator(sock.getsockname()[1])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "infra.emulator", *args],
        check=False,  # the exit status is what these tests look at
        cwd=IMPORT_ROOT,  # `-m` looks in the working directory first
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_reuses_an_endpoint_that_already_answers(shared_emulator: EmulatorHandle) -> None:
    reused = run_cli("--port", str(shared_emulator.port))
    assert reused.returncode == 0
    assert f"already answers at {shared_emulator.url}" in reused.stdout

    refused = run_cli("--port", str(shared_emulator.port), "--no-reuse")
    assert refused.returncode == 1


def test_cli_refuses_a_port_held_by_something_else(plain_http_server: str) -> None:
    result = run_cli("--port", plain_http_server.rsplit(":", 1)[1])
    assert result.returncode == 1
    assert "does not answer like AWS" in result.stderr


def test_cli_serves_on_the_port_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT), EMULATOR_PORT=str(port))
    with (tmp_path / "out.log").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.emulator"],
            cwd=IMPORT_ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )
        handle = EmulatorHandle(port, process)  # so that stop() waits for the port
        try:
            assert wait_until(lambda: endpoint_answers(handle.url, timeout=0.5), 15)
        finally:
            process.send_signal(signal.SIGINT)
            handle.stop()
    assert process.returncode == 0


def test_default_port_comes_from_the_environment() -> None:
    assert default_port({}) == DEFAULT_PORT
    assert default_port({"EMULATOR_PORT": "4999"}) == 4999
    with pytest.raises(ValueError, match="EMULATOR_PORT"):
        default_port({"EMULATOR_PORT": "nope"})
