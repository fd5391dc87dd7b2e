"""The installed `jobs` console script, as a user runs it, against a real local stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.emulator import free_port
from tests.e2e.conftest import Stack
from tests.speed import iterations_per_second

JOBS = Path(sys.executable).with_name("jobs")
# About a second of counting; and a job far longer than the test.
SHORT_N = iterations_per_second()  # about a second of work, measured
LONG_N = 10_000_000_000


def jobs(
    *argv: str, url: str, key: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    if not JOBS.is_file():
        pytest.fail(f"{JOBS} is missing: `make venv` installs the project (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if k not in ("JOBS_URL", "JOBS_API_KEY")}
    return subprocess.run(
        [str(JOBS), *argv],
        env={**env, "JOBS_URL": url, **({"JOBS_API_KEY": key} if key else {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_submit_status_list_cancel_watch(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()

    done = jobs("submit", str(SHORT_N), "--wait", url=stack.url)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{SHORT_N}\n", "")

    listed = jobs("--json", "list", "--status", "succeeded", url=stack.url)
    assert listed.returncode == 0
    (succeeded,) = json.loads(listed.stdout)["jobs"]
    assert succeeded["result"] == SHORT_N
    job_id = succeeded["job_id"]

    status = jobs("status", job_id, url=stack.url)
    assert status.returncode == 0
    assert "status      succeeded" in status.stdout.splitlines()
    assert f"result      {SHORT_N}" in status.stdout.splitlines()

    submitted = jobs("submit", str(LONG_N), url=stack.url)
    assert submitted.returncode == 0
    long_id = submitted.stdout.strip()
    stack.wait_for_job(long_id, lambda j: j["status"] == "running")

    table = jobs("list", "--limit", "5", url=stack.url)
    assert table.returncode == 0
    rows = [line.split() for line in table.stdout.splitlines()[2:]]
    assert [row[:2] for row in rows] == [[long_id, "running"], [job_id, "succeeded"]]

    cancelled = jobs("cancel", long_id, url=stack.url)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"cancelled {long_id}\n")

    watched = jobs("watch", long_id, url=stack.url)
    assert watched.returncode == 1
    assert watched.stdout.startswith("cancelled at ")
    assert jobs("status", long_id, url=stack.url).returncode == 1

    again = jobs("cancel", job_id, url=stack.url)  # it already succeeded
    assert again.returncode == 2
    assert again.stderr == "jobs: The job already succeeded; it cannot be cancelled.\n"


def test_watch_follows_a_job_to_success(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    job_id = jobs("submit", str(2 * SHORT_N), url=stack.url).stdout.strip()
    watched = jobs("watch", job_id, url=stack.url)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.startswith(f"succeeded: result {2 * SHORT_N} (queued ")
    assert "100%" in watched.stderr  # the progress bar's last state


def test_connection_refused_is_one_line_and_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = jobs("submit", "5", "--wait", url=url)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"jobs: cannot connect to {url}/: Connection refused\n"


@pytest.mark.parametrize("argv", [[], ["submit", "lots"], ["list", "--limit"], ["nope"]])
def test_bad_usage_is_one_line_and_exit_2(argv: list[str]) -> None:
    result = jobs(*argv, url=f"http://127.0.0.1:{free_port()}")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("jobs: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_kinds_submit_a_kind_list_by_kind_and_retry(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    kinds = jobs("kinds", url=stack.url)
    assert kinds.returncode == 0
    assert (
        "countPrimes" in kinds.stdout and "below: integer 2..10000000000 required" in kinds.stdout
    )

    done = jobs("submit", "countPrimes", "below=1_000", "--wait", url=stack.url)
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"count": 168}\n', "")

    listed = jobs("--json", "list", "--kind", "countPrimes", url=stack.url)
    (primes,) = json.loads(listed.stdout)["jobs"]
    assert primes["kind"] == "countPrimes" and primes["input"] == {"below": 1000}

    long_id = jobs("submit", "countPrimes", "below=1e10", url=stack.url).stdout.strip()
    assert jobs("cancel", long_id, url=stack.url).returncode == 0
    retried = jobs("--json", "retry", long_id, url=stack.url)
    assert retried.returncode == 0, retried.stderr
    again = json.loads(retried.stdout)
    assert again["retry_of"] == long_id and again["input"] == {"below": 10**10}
    refused = jobs("retry", primes["job_id"], url=stack.url)  # it succeeded
    assert refused.returncode == 2 and "only a failed or cancelled job" in refused.stderr


# --- a stage with keys: two clients and the operator -----------------------------------


def test_each_client_sees_only_its_own_jobs_and_the_operator_sees_all(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(keyed=True)
    alice, bob, operator = (stack.api_key(c) for c in ("alice", "bob", None))

    refused = jobs("list", url=stack.url)  # API Gateway's own 403, as the local API gives it
    assert refused.returncode == 2
    assert refused.stderr.startswith("jobs: Forbidden: this stage needs an API key")
    assert "make api-key STAGE=<stage> CLIENT=<name>" in refused.stderr

    # submit --wait reads the job (GET /jobs/{id}?wait=) with the key too.
    done = jobs("submit", str(SHORT_N), "--wait", url=stack.url, key=alice)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{SHORT_N}\n", "")
    (job,) = json.loads(jobs("--json", "list", url=stack.url, key=alice).stdout)["jobs"]
    assert job["client"] == "alice"
    assert jobs("list", url=stack.url, key=alice).stdout.splitlines()[2].split()[:3] == [
        job["job_id"], "succeeded", "alice"
    ]  # fmt: skip
    watched = jobs("watch", job["job_id"], url=stack.url, key=alice)
    assert watched.returncode == 0 and watched.stdout.startswith("succeeded: ")

    # Bob neither lists, reads, cancels nor retries alice's job: not found, as unknown ids.
    assert json.loads(jobs("--json", "list", url=stack.url, key=bob).stdout)["jobs"] == []
    for command in ("status", "watch", "cancel", "retry"):
        hidden = jobs(command, job["job_id"], url=stack.url, key=bob)
        assert hidden.returncode == 2, command
        assert hidden.stderr == (
            f"jobs: No job with id {job['job_id']!r}. (an API key finds its own client's jobs"
            " only)\n"
        ), command

    # The operator sees every client's jobs, and filters by client.
    bobs = jobs("submit", "countPrimes", "below=100", "--wait", url=stack.url, key=bob)
    assert bobs.returncode == 0, bobs.stderr
    every = json.loads(jobs("--json", "list", url=stack.url, key=operator).stdout)["jobs"]
    assert sorted(j["client"] for j in every) == ["alice", "bob"]
    only = json.loads(
        jobs("--json", "list", "--client", "bob", url=stack.url, key=operator).stdout
    )["jobs"]
    assert [j["client"] for j in only] == ["bob"]
    assert jobs("status", job["job_id"], url=stack.url, key=operator).returncode == 0

    unknown = jobs("list", url=stack.url, key="not-a-key-of-this-stage-0123456789")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("jobs: Forbidden: the API key was not accepted")
