"""`make run` for a LocalStack user: it finds their LocalStack where LocalStack's own
settings say it is, runs the whole service against it, and leaves it running when it
stops. An emulator on a free port stands in for the LocalStack (never 4566)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import localstack_client.session
import requests

from infra.emulator import free_port, port_is_free, start_emulator
from infra.run import PROJECT_DIR
from tests.processes import descendants, is_running
from tests.waiting import wait_for


def test_make_run_uses_the_localstack_that_localstack_host_names(tmp_path: Path) -> None:
    api_port, emulator_port = free_port(), free_port()
    with start_emulator() as localstack:
        shell = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        for name in ("EDGE_PORT", "USE_SSL"):
            shell.pop(name, None)
        shell["LOCALSTACK_HOST"] = f"127.0.0.1:{localstack.port}"
        log_path = tmp_path / "run.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "infra.run", "--port", str(api_port),
                 "--emulator-port", str(emulator_port)],
                cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=shell, start_new_session=True,
            )  # fmt: skip
            try:
                wait_for(
                    lambda: "heavy-jobs is running" in log_path.read_text(),
                    60,
                    lambda: log_path.read_text(),
                )
                output = log_path.read_text()
                assert f"using the AWS endpoint already answering at {localstack.url}" in output
                assert port_is_free(emulator_port)  # no moto of its own

                response = requests.post(
                    f"http://127.0.0.1:{api_port}/heavy", json={"n": 10}, timeout=30
                )
                assert response.status_code == 202, response.text
                job_id = response.json()["job_id"]
                # The user's LocalStack tooling sees the job in their LocalStack.
                session = localstack_client.session.Session(
                    localstack_host=shell["LOCALSTACK_HOST"]
                )
                tables = session.client("dynamodb").list_tables()["TableNames"]
                (table,) = [t for t in tables if t.startswith("heavy-jobs-local")]
                item = session.resource("dynamodb").Table(table).get_item(Key={"job_id": job_id})
                assert item["Item"]["job_id"] == job_id

                children = descendants(process.pid)
                process.send_signal(signal.SIGTERM)
                assert process.wait(30) == 0
                assert not [pid for pid in children if is_running(pid)]
            finally:
                if process.poll() is None:
                    # Asked first: run.py stops its children (each in a session of its
                    # own, out of reach of a signal to its group) before it exits.
                    process.terminate()
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait()
        # Not ours to stop: the user's LocalStack is still running.
        assert localstack.process is not None and localstack.process.poll() is None
