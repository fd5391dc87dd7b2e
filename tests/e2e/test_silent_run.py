"""A run that hangs, on the local stack as real processes: the run watchdog ends it after
the lease (2 s here), so the job queued behind it starts in seconds, not after the
function's timeout (900 s), and the silent job is retried, then failed with the reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from chalicelib.config import Settings
from tests.e2e.conftest import FAST_SETTINGS, Stack
from tests.e2e.test_faults import log_records, put_job, started
from tests.waiting import wait_for

# A kind module added to the copied project: it sleeps far past the lease, never reporting.
SILENT_KIND = """
import time

from chalicelib.kinds import Kind
from chalicelib.kinds.heavy_load import Input


def hang(input, ctx):
    time.sleep(600)
    return 0


KIND = Kind("hang", "Never reports.", Input, hang, int, lambda input, settings: 1)
"""

# Far below the function's timeout: the lease, a cold start and the emulator's calls, on a
# loaded machine.
STARTS_WITHIN_SECONDS = 30


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_a_silent_run_does_not_hold_the_jobs_behind_it(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(extra_files={"chalicelib/kinds/hang.py": SILENT_KIND})
    silent_id = put_job(stack, "hang", 10)
    behind_id = stack.submit(1000)["job_id"]

    behind = stack.wait_for_job(
        behind_id, lambda j: j["status"] == "succeeded", timeout=STARTS_WITHIN_SECONDS
    )
    assert behind["attempts"] == 1 and behind["result"] == 1000
    assert seconds_between(behind["created_at"], behind["started_at"]) < STARTS_WITHIN_SECONDS

    failed = stack.wait_for_job(silent_id, lambda j: j["status"] == "failed", timeout=30)
    lease = FAST_SETTINGS["JOBS_STALE_AFTER_SECONDS"]
    assert failed["error"].startswith("The run reported nothing for ")
    assert f"(more than JOBS_STALE_AFTER_SECONDS={lease}): it hung" in failed["error"]
    assert failed["attempts"] == Settings.max_attempts  # the stage keeps the default
    # Each attempt's process was ended by the watchdog; the local event source settled
    # nothing for it (its message was deleted already) and cold-started the next.
    assert [r["attempt"] for r in started(stack, silent_id)] == [1, 2, 3]
    ended = [r for r in log_records(stack) if r["message"] == "The run went silent; ending it"]
    assert len(ended) == 3
    wait_for(
        lambda: stack.log.count("Runtime exited with error: exit status 1") == 3,
        10,
        lambda: f"three failed invocations in the log:\n{stack.log[-4000:]}",
    )
