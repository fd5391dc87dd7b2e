"""The local stack end to end: real processes (moto server, chalice local, the local
event source), real HTTP, real SQS and DynamoDB calls."""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from chalicelib.config import CLAIM_BACKOFF_CAP
from chalicelib.worker import MAX_DEAD_LETTER_REDRIVES
from infra.emulator import free_port, port_is_free
from infra.run import PROJECT_DIR
from tests.e2e.conftest import Stack
from tests.processes import descendants, is_running
from tests.speed import iterations_per_second
from tests.waiting import wait_for

# About a second of heavyLoad's counting on this machine, as busy as it is at the start of
# the run (measured, not assumed: tests/speed.py).
SECONDS_OF_WORK = iterations_per_second()


def test_job_lifecycle_over_http(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    n = 3 * SECONDS_OF_WORK
    accepted = requests.post(f"{stack.url}/heavy", json={"n": n}, timeout=10)
    assert accepted.status_code == 202
    location = accepted.headers["Location"]
    assert location.startswith(stack.url) and int(accepted.headers["Retry-After"]) >= 1

    seen: list[dict[str, object]] = []

    def finished() -> bool:
        seen.append(requests.get(location, timeout=10).json())
        return seen[-1]["status"] == "succeeded"

    wait_for(finished, 60, lambda: f"the job to succeed; saw {seen[-3:]}")

    statuses = [s["status"] for s in seen]
    assert "running" in statuses
    assert statuses.index("running") < statuses.index("succeeded")
    progress = [float(s["progress"]) for s in seen]  # type: ignore[arg-type]
    assert progress == sorted(progress) and progress[-1] == 1
    assert any(0 < p < 1 for p in progress)  # reported while it ran
    assert seen[-1]["result"] == n and seen[-1]["attempts"] == 1


def latencies(url: str, count: int) -> list[float]:
    session = requests.Session()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        assert session.get(url, timeout=5).status_code == 200
        samples.append(time.perf_counter() - start)
    return samples


def test_fast_stays_fast_while_a_heavy_job_runs(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    fast = f"{stack.url}/fast"
    latencies(fast, 50)  # warm up
    idle = latencies(fast, 300)

    job_id = stack.submit(50 * SECONDS_OF_WORK)["job_id"]  # far longer than the window
    stack.wait_for_job(job_id, lambda j: j["status"] == "running" and j["progress"] > 0)
    busy = latencies(fast, 300)
    assert stack.job(job_id)["status"] == "running"  # the job ran through the whole window

    # Same run, same machine: the busy median stays near the idle one. (A server that runs
    # the loop in its request handler would not answer at all until the job finished.)
    assert statistics.median(busy) < 3 * statistics.median(idle), (
        statistics.median(idle),
        statistics.median(busy),
    )
    requests.post(f"{stack.url}/jobs/{job_id}/cancel", timeout=10)


def test_handler_failures_are_redelivered_then_dead_lettered_and_the_job_failed(
    make_stack: Callable[..., Stack],
) -> None:
    # The worker function alone points at a table that does not exist: every invocation
    # raises, as when DynamoDB is unreachable. The DLQ consumer uses the real table. Each
    # failed claim hides its message for the claim backoff (2 s, then 4 s at the default
    # cap): capped at 1 s here, the four rounds of deliveries take seconds, not half a
    # minute; what the test counts is the same.
    stack = make_stack(
        environment={CLAIM_BACKOFF_CAP: "1"},
        functions={
            "process_job": {
                "lambda_timeout": 2,
                "environment_variables": {"JOBS_TABLE_NAME": "missing"},
            }
        },
        parameters={"VisibilityTimeoutSeconds": "2", "MaxReceiveCount": "2"},
    )
    job_id = stack.submit(10)["job_id"]

    failed = stack.wait_for_job(job_id, lambda j: j["status"] == "failed", timeout=180)

    assert "dead-lettered after" in failed["error"]
    # maxReceiveCount 2: two deliveries raised, then SQS moved the message to the DLQ. The
    # job never started, so the DLQ consumer sent it again, MAX_DEAD_LETTER_REDRIVES
    # times, before failing it: each time two more deliveries, each of which raised.
    deliveries = 2 * (1 + MAX_DEAD_LETTER_REDRIVES)
    assert stack.log.count("function=heavy-jobs-local-process_job") == deliveries
    assert stack.log.count("outcome=failed") == deliveries  # every one of them raised
    redriven = [
        line for line in stack.log.splitlines() if "Dead-lettered job never started" in line
    ]
    assert len(redriven) == MAX_DEAD_LETTER_REDRIVES
    assert failed["attempts"] == 0  # it never ran: no attempt was spent
    wait_for(lambda: stack.depth() == 0, 10, "the job queue to be empty")
    wait_for(lambda: stack.depth("DeadLetterQueueUrl") == 0, 10, "the DLQ to be empty")


def test_a_poison_message_does_not_stop_the_worker(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.send_raw("this is not json")
    stack.send_raw(json.dumps({"job_id": "6f9619ff-8b86-4011-b42d-00c04fc964ff"}))
    job_id = stack.submit(1000)["job_id"]

    assert stack.wait_for_job(job_id, lambda j: j["status"] == "succeeded")["result"] == 1000
    wait_for(lambda: stack.depth() == 0, 10, "the poison messages to be acknowledged")
    assert stack.depth("DeadLetterQueueUrl") == 0


def test_the_worker_runs_one_job_at_a_time(make_stack: Callable[..., Stack]) -> None:
    # A lease far longer than the jobs: the stack's 2-second one lets the run watchdog end
    # a run that a loaded machine starved of its heartbeat, and the job's retry would then
    # overlap the next job (by design: tests/e2e/test_silent_run.py). Here, one run each.
    stack = make_stack(environment={"JOBS_STALE_AFTER_SECONDS": "60"})
    ids = [stack.submit(SECONDS_OF_WORK // 2)["job_id"] for _ in range(3)]
    jobs = [stack.wait_for_job(i, lambda j: j["status"] == "succeeded") for i in ids]
    assert [j["attempts"] for j in jobs] == [1, 1, 1]

    spans = sorted((j["started_at"], j["finished_at"]) for j in jobs)
    for (_, earlier_end), (later_start, _) in itertools.pairwise(spans):
        assert earlier_end <= later_start  # ISO-8601 UTC strings sort in time order


def test_make_run_stops_everything_on_sigterm(tmp_path: Path) -> None:
    api_port, emulator_port = free_port(), free_port()
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.run", "--port", str(api_port),
         "--emulator-port", str(emulator_port)],
        cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: "heavy-jobs is running" in (tmp_path / "run.log").read_text(),
            60,
            lambda: (tmp_path / "run.log").read_text(),
        )
        assert requests.get(f"http://127.0.0.1:{api_port}/fast", timeout=5).status_code == 200
        children = descendants(process.pid)
        assert len(children) >= 3  # emulator, API, worker (and its instances)

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0

        assert not [pid for pid in children if is_running(pid)]
        assert port_is_free(api_port) and port_is_free(emulator_port)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_keep_alive_requests_are_not_held_back_by_nagle(make_stack: Callable[..., Stack]) -> None:
    """A kept-alive connection must not be slower than a fresh one (it was 44 ms vs 1.3 ms
    before the local API turned Nagle's algorithm off)."""
    stack = make_stack(worker=False)
    fast = f"{stack.url}/fast"
    session = requests.Session()

    def seconds(get: Callable[[str], requests.Response]) -> float:
        start = time.perf_counter()
        get(fast).raise_for_status()
        return time.perf_counter() - start

    seconds(session.get)  # warm up
    # Interleaved, in alternating order: load on the machine slows both alike.
    samples: dict[str, list[float]] = {"kept": [], "fresh": []}
    for round_ in range(100):
        pair = (("kept", session.get), ("fresh", requests.get))
        for name, get in pair if round_ % 2 else pair[::-1]:
            samples[name].append(seconds(get))
    kept_alive, fresh = (statistics.median(samples[k]) * 1000 for k in ("kept", "fresh"))
    assert kept_alive < 2 * fresh, (kept_alive, fresh)


def test_make_demo_runs_the_classic_experiment(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    result = subprocess.run(
        [sys.executable, "-m", "infra.demo", "--url", stack.url, "--n", str(SECONDS_OF_WORK)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"job succeeded: result {SECONDS_OF_WORK}" in result.stdout
    assert "/fast idle" in result.stdout and "/fast during job" in result.stdout


def test_make_demo_says_how_to_start_the_stack_when_none_answers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra.demo", "--url", f"http://127.0.0.1:{free_port()}"],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "make run" in result.stdout
