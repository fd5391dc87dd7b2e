"""The run watchdog: a run whose kind stops reporting is settled as a failed attempt, its
message deleted and the process ended, so the jobs behind it start. Through Worker on moto
(a fake clock, a fake process exit), and the Watchdog alone (a scripted wait) for what a
run cannot easily show: a report in progress, and AWS failing while it ends a run."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib import connections, kinds, watchdog
from chalicelib.config import get_settings
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import Job, JobStatus, parse_message, to_message, utc_now
from chalicelib.kinds import Context
from chalicelib.queue import Delivery
from chalicelib.watchdog import EXIT_STATUS, Watchdog, silence_error
from chalicelib.worker import Outcome, Worker
from tests.fake_kinds import kind_running
from tests.waiting import wait_for

Receive = Callable[..., list[dict[str, Any]]]


class Clock:
    """A monotonic clock the test moves by hand, counting the watchdog thread's reads."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.watchdog_reads = 0

    def __call__(self) -> float:
        if threading.current_thread().name.startswith("watchdog:"):
            self.watchdog_reads += 1
        return self.now

    def after_next_check(self) -> None:
        """Return once the watchdog has looked at the clock again."""
        seen = self.watchdog_reads
        wait_for(lambda: self.watchdog_reads > seen, 10, "the watchdog's next check")


class Exits:
    """The process exit, faked: records the status instead of ending pytest."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.called = threading.Event()

    def __call__(self, status: int) -> None:
        self.statuses.append(status)
        self.called.set()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> Exits:
    fake = Exits()
    monkeypatch.setattr(watchdog, "end_process", fake)
    return fake


@pytest.fixture(autouse=True)
def _quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The watchdog checks a tenth of the lease apart, at most a second: sooner here.
    monkeypatch.setattr(watchdog, "MAX_CHECK_SECONDS", 0.01)


@pytest.fixture
def worker(aws: dict[str, str], clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Worker:
    # No backoff: a retry's message is on the delay queue at once.
    monkeypatch.setenv("JOBS_RETRY_BASE_SECONDS", "0")
    connections.reset()
    real = connections.worker()
    return Worker(real.table, real.queue, real.delay_queue, get_settings(), monotonic=clock)


@pytest.fixture
def delivered(worker: Worker, receive: Receive) -> Callable[[Job], Delivery]:
    """Factory: put the job's message on the job queue and receive it, as the event
    source does; its delivery has a real receipt handle."""

    def deliver(job: Job) -> Delivery:
        worker.queue.send(to_message(job), job.job_id)
        (message,) = receive()
        attributes = message["Attributes"]
        return Delivery(
            message["ReceiptHandle"],
            int(attributes["ApproximateReceiveCount"]),
            int(attributes["SentTimestamp"]),
        )

    return deliver


def silent_kind(clock: Clock, exits: Exits, before: Callable[[], None] = lambda: None) -> Any:
    """A kind that never reports: time passes beyond the lease while it hangs, until the
    (fake) exit; then it returns, as a real hung run never would."""

    def run(input: Any, ctx: Context) -> int:
        before()
        clock.after_next_check()  # the watchdog has seen the run start
        clock.now += get_settings().stale_after_seconds + 1
        assert exits.called.wait(10), "the watchdog did not end the run"
        return int(input.n)

    return kind_running(run)


def current(job: Job) -> Job:
    found = connections.job_table().get(job.job_id)
    assert found is not None
    return found


def watchdog_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("watchdog:")]


# --- through the worker ------------------------------------------------------------------


def test_a_silent_run_is_released_for_retry_its_message_deleted_and_the_process_ended(
    worker: Worker,
    delivered: Callable[[Job], Delivery],
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
    clock: Clock,
    exits: Exits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", silent_kind(clock, exits))
    job = make_job(n=10)
    delivery = delivered(job)

    worker.process_message(to_message(job), delivery)

    assert exits.statuses == [EXIT_STATUS]
    released = current(job)
    assert released.status is JobStatus.QUEUED and released.attempts == 1
    assert released.owner is None and released.error is None
    lease = get_settings().stale_after_seconds
    assert released.last_error == (
        f"The run reported nothing for {lease + 1} s (more than "
        f"JOBS_STALE_AFTER_SECONDS={lease}): it hung, or its kind does not report often enough."
    )
    # Retried through the delay queue, as a run that raised is.
    retries = receive(aws["DelayQueueUrl"], wait=5)
    assert [parse_message(m["Body"]).job_id for m in retries] == [job.job_id]
    # The run's own message is gone: the next message of the group can be delivered.
    assert worker.queue.counts().empty


def test_a_silent_runs_last_attempt_fails_the_job(
    worker: Worker,
    delivered: Callable[[Job], Delivery],
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
    clock: Clock,
    exits: Exits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds.KINDS, "heavyLoad", silent_kind(clock, exits))
    max_attempts = get_settings().max_attempts
    job = make_job(n=10, attempts=max_attempts - 1, last_error="RuntimeError: before")
    delivery = delivered(job)

    worker.process_message(to_message(job), delivery)

    assert exits.statuses == [EXIT_STATUS]
    failed = current(job)
    assert failed.status is JobStatus.FAILED and failed.attempts == max_attempts
    assert failed.error is not None
    assert failed.error.startswith("The run reported nothing for ")
    assert receive(aws["DelayQueueUrl"]) == []  # no retry
    assert worker.queue.counts().empty


def test_a_silent_run_whose_job_was_cancelled_meanwhile_only_ends_the_process(
    worker: Worker,
    delivered: Callable[[Job], Delivery],
    make_job: Callable[..., Job],
    receive: Receive,
    aws: dict[str, str],
    clock: Clock,
    exits: Exits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def cancel() -> None:
        connections.job_table().cancel(current(job), utc_now())

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", silent_kind(clock, exits, before=cancel))
    job = make_job(n=10)
    delivery = delivered(job)

    worker.process_message(to_message(job), delivery)

    assert exits.statuses == [EXIT_STATUS]
    cancelled = current(job)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.last_error is None
    assert receive(aws["DelayQueueUrl"]) == []
    # Not deleted: the write was refused, so the message is not the watchdog's to drop.
    assert worker.queue.counts().in_flight == 1


def test_a_run_that_reports_in_time_is_left_alone(
    worker: Worker,
    delivered: Callable[[Job], Delivery],
    make_job: Callable[..., Job],
    clock: Clock,
    exits: Exits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four leases of run time, with a report a little under every lease: no check
    ever sees a lease of silence."""
    lease = get_settings().stale_after_seconds
    watched: list[list[str]] = []

    def reporting(input: Any, ctx: Context) -> int:
        watched.append(watchdog_threads())
        for step in range(1, 6):
            clock.after_next_check()
            clock.now += 0.9 * lease
            clock.after_next_check()  # a check sees 0.9 of a lease of silence
            ctx.report(step / 5, step)
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(reporting))
    job = make_job(n=10)

    outcome = worker.process_message(to_message(job), delivered(job))

    assert watched == [[f"watchdog:{job.job_id}"]]  # it was watched
    assert outcome is Outcome.SUCCEEDED and exits.statuses == []
    assert current(job).status is JobStatus.SUCCEEDED


def test_a_run_that_finishes_stops_its_watchdog(
    worker: Worker,
    make_job: Callable[..., Job],
    clock: Clock,
    exits: Exits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watched: list[list[str]] = []

    def quick(input: Any, ctx: Context) -> int:
        watched.append(watchdog_threads())
        return int(input.n)

    monkeypatch.setitem(kinds.KINDS, "heavyLoad", kind_running(quick))
    job = make_job(n=10)

    assert worker.process_message(to_message(job)) is Outcome.SUCCEEDED

    assert watched == [[f"watchdog:{job.job_id}"]]
    assert watchdog_threads() == []
    clock.now += 100 * get_settings().stale_after_seconds
    assert not exits.called.wait(0.2)  # no watchdog is left to see the silence


# --- the watchdog alone ------------------------------------------------------------------


class Script:
    """The watchdog's wait: before each check, the next step; once out of steps, it stops
    (as if the run ended)."""

    def __init__(self, *steps: Callable[[], None]) -> None:
        self.steps = list(steps)

    def __call__(self, stopped: threading.Event, seconds: float) -> bool:
        if stopped.is_set() or not self.steps:
            return True
        self.steps.pop(0)()
        return False


class Calls:
    """Fakes for settle and delete, recording their calls."""

    def __init__(self, settled: bool = True, settle_error: Exception | None = None) -> None:
        self.settled, self.settle_error = settled, settle_error
        self.errors: list[str] = []
        self.deletes = 0
        self.delete_error: Exception | None = None

    def settle(self, error: str) -> bool:
        self.errors.append(error)
        if self.settle_error is not None:
            raise self.settle_error
        return self.settled

    def delete(self) -> None:
        self.deletes += 1
        if self.delete_error is not None:
            raise self.delete_error


LIMIT = 30.0


@pytest.fixture
def run_watchdog(clock: Clock) -> Iterator[Callable[..., Watchdog]]:
    """Factory: a started watchdog on ``clock``, running ``steps`` (then it stops)."""
    started: list[Watchdog] = []

    def run(
        calls: Calls, exits: Exits, *steps: Callable[[], None], delete: bool = True
    ) -> Watchdog:
        dog = Watchdog(
            LIMIT,
            calls.settle,
            calls.delete if delete else None,
            job_id="job-1",
            monotonic=clock,
            wait=Script(*steps),
            exit=exits,
        )
        started.append(dog)
        dog.start()
        dog._thread.join(10)
        return dog

    yield run
    for dog in started:
        dog.stop()


def later(clock: Clock, seconds: float) -> Callable[[], None]:
    def step() -> None:
        clock.now += seconds

    return step


def nothing() -> None:
    pass


def test_silence_is_measured_from_the_first_check_and_must_exceed_the_lease(
    run_watchdog: Callable[..., Watchdog], clock: Clock
) -> None:
    calls, exits = Calls(), Exits()
    # First check: the run's start; then exactly a lease of silence, then a little more.
    dog = run_watchdog(calls, exits, nothing, later(clock, LIMIT), later(clock, 0.5))
    assert dog.fired and exits.statuses == [EXIT_STATUS]
    assert calls.errors == [silence_error(LIMIT + 0.5, LIMIT)]
    assert "reported nothing for 31 s (more than JOBS_STALE_AFTER_SECONDS=30)" in calls.errors[0]
    assert calls.deletes == 1


def test_a_report_in_progress_is_alive_throughout(
    run_watchdog: Callable[..., Watchdog], clock: Clock
) -> None:
    """A report's save can take a while (AWS calls, bounded by the client timeouts): the
    run is alive while it lasts, however long that is."""
    calls, exits = Calls(), Exits()
    entered, release = threading.Event(), threading.Event()

    def slow_save(progress: float, state: Any) -> None:
        entered.set()
        release.wait(10)

    reporter = threading.Thread(target=lambda: dog.watching(slow_save)(0.5, 1))

    def start_report() -> None:
        reporter.start()
        entered.wait(10)

    def end_report() -> None:
        release.set()
        reporter.join(10)

    steps = Script(start_report, later(clock, 3 * LIMIT), later(clock, 3 * LIMIT), end_report)
    dog = Watchdog(
        LIMIT, calls.settle, calls.delete, job_id="job-2", monotonic=clock, wait=steps, exit=exits
    )
    with dog:
        dog._thread.join(10)

    assert not dog.fired and exits.statuses == [] and calls.errors == []


def test_a_settle_that_fails_on_aws_still_ends_the_process_and_keeps_the_message(
    run_watchdog: Callable[..., Watchdog], clock: Clock
) -> None:
    calls, exits = Calls(settle_error=StoreUnavailable("DynamoDB UpdateItem failed")), Exits()
    run_watchdog(calls, exits, nothing, later(clock, LIMIT + 1))
    assert len(calls.errors) == 1 and exits.statuses == [EXIT_STATUS]
    assert calls.deletes == 0  # the message comes back after its hold, for a take-over


def test_a_delete_that_fails_still_ends_the_process(
    run_watchdog: Callable[..., Watchdog], clock: Clock
) -> None:
    calls, exits = Calls(), Exits()
    calls.delete_error = StoreUnavailable("SQS delete_message failed")
    run_watchdog(calls, exits, nothing, later(clock, LIMIT + 1))
    assert calls.deletes == 1 and exits.statuses == [EXIT_STATUS]


def test_a_run_without_a_delivery_is_settled_and_ended(
    run_watchdog: Callable[..., Watchdog], clock: Clock
) -> None:
    calls, exits = Calls(), Exits()
    run_watchdog(calls, exits, nothing, later(clock, LIMIT + 1), delete=False)
    assert len(calls.errors) == 1 and calls.deletes == 0 and exits.statuses == [EXIT_STATUS]
