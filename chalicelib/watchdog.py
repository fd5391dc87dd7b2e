"""The run watchdog: ends a run whose job kind has gone silent, so the jobs behind it start.

A job kind must call ``ctx.report`` at least every JOBS_STALE_AFTER_SECONDS (the lease);
each report renews the lease and, every third of the lease, the run's message hold. A run
that hangs (a deadlock, a call that never returns) or simply stops reporting would
otherwise keep its invocation, the only one reserved concurrency 1 allows, until the
function's timeout (15 minutes): its message hold lapses after twice the lease, SQS
delivers the message again, and that invocation is throttled; on the one message group of
the FIFO job queue every job behind it waits for the timeout.

A daemon thread per run watches for signs of life: a ``ctx.report`` call started or
finished. A report in progress counts as alive throughout, since its checkpoint and hold
are AWS calls bounded by the worker's client timeouts (chalicelib.connections). Once the
kind has been silent for longer than the lease, the watchdog:

1. settles the job as a failed attempt, as if the run had raised (``Worker._after_failure``:
   released on the condition that this run still owns it, then retried through the delay
   queue after its backoff, or failed for good after JOBS_MAX_ATTEMPTS), with an error
   that says why;
2. deletes the run's message (DeleteMessage with the delivery's receipt handle), so the
   event source can deliver the next message of the group at once; a retry has its own
   message, sent through the delay queue;
3. ends the process (``os._exit``): a hung Python thread cannot be stopped, and the
   invocation would otherwise hold the function's one slot until its timeout. Lambda
   fails the invocation (``Runtime.ExitError``, "Runtime exited with error: exit status
   1": AWS Knowledge Center, "lambda-runtime-error"), and when a function crashes during
   the Invoke phase it resets the execution environment, initialising the runtime again
   for the next invocation (Lambda Developer Guide, "Understand the Lambda execution
   environment lifecycle"). The event source deletes nothing after a failed invocation
   ("Handling errors for an SQS event source in Lambda"), and the message is gone already.
   The local event source does the same: an instance whose process exits mid-invocation
   settles nothing, and the next invocation cold-starts a new one
   (infra/event_source/instances.py, settlement.py).

When step 1 is refused (the job was cancelled, or another run took it over meanwhile), the
watchdog only logs, deletes nothing (the job's message is not this run's to drop: another
run may be handling it) and ends the process; the message, once its hold lapses, is
acknowledged like any duplicate. When step 1 or 2 fails on AWS, the process still ends:
the message comes back when its hold lapses (at most twice the lease) and its delivery
takes the job over from its last checkpoint, as after any crash. A run without a delivery
(tests, direct calls) gets steps 1 and 3 only.

What each failure costs the jobs behind: a silent run holds them for the lease plus at
most two checks (about 32 s by default) and a cold start; when step 1 or 2 fails or is
refused, for the message hold (twice the lease) at most. Tested in
tests/chalicelib/test_watchdog.py and, on the local stack, tests/e2e/test_silent_run.py.

What it cannot catch: a kind that holds the GIL in C code for minutes (one long call into
a C extension that never releases it) starves this thread too; the invocation's timeout
is then the bound, as for a crash the code cannot see.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from chalicelib.config import STALE_AFTER
from chalicelib.errors import StoreUnavailable
from chalicelib.observability import job_logging, logger
from chalicelib.queue import Delivery

if TYPE_CHECKING:
    from chalicelib.worker import Outcome, Worker

Report = Callable[[float, Any], None]

# The watchdog checks a tenth of the lease apart, and at least this often: a silent run
# is ended at most two checks after its lease has run out.
MAX_CHECK_SECONDS = 1.0
# The process's exit status when the watchdog ends it (Lambda: "Runtime exited with error:
# exit status 1").
EXIT_STATUS = 1


def end_process(status: int) -> None:
    """Flush the logs and end the process at once, from any thread (``os._exit``: no
    cleanup handler runs, so none can wait on the hung thread). A test that runs jobs in
    its own process and lets one go silent replaces this (tests/chalicelib/test_watchdog.py)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def silence_error(silent_seconds: float, limit_seconds: float) -> str:
    """The job's error when the watchdog ended its run."""
    return (
        f"The run reported nothing for {math.ceil(silent_seconds)} s (more than "
        f"{STALE_AFTER}={limit_seconds:g}): it hung, or its kind does not report often enough."
    )


class Watchdog:
    """Watches one run from a daemon thread, between ``start`` and ``stop`` (or as a
    context manager); the kind's ``report`` goes through ``watching``.

    ``settle(error)`` settles the job as a failed attempt and says whether its write was
    accepted; ``delete()`` deletes the run's message (None: the run has no delivery);
    ``exit(status)`` ends the process. ``monotonic`` is the clock and ``wait(event,
    seconds)`` waits between checks (True once the watchdog is stopped): both injectable,
    as ``exit`` is, for tests.
    """

    def __init__(
        self,
        limit_seconds: float,
        settle: Callable[[str], bool],
        delete: Callable[[], None] | None,
        *,
        job_id: str,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
        exit: Callable[[int], None] = end_process,
        check_seconds: float | None = None,
    ) -> None:
        self.limit_seconds = limit_seconds
        self._job_id = job_id
        self._settle = settle
        self._delete = delete
        self._monotonic = monotonic
        self._wait = wait
        self._exit = exit
        self.check_seconds = (
            min(MAX_CHECK_SECONDS, limit_seconds / 10) if check_seconds is None else check_seconds
        )
        # Signs of life so far (each report call's start and end), and report calls in
        # progress. Only the watchdog's thread reads the clock: the run's never does.
        self._signs = 0
        self._reporting = 0
        self._stopped = threading.Event()
        # Held by a check, and by the whole of the end of a silent run: once that began,
        # ``stop`` waits for it (the process ends), so the run's own thread never settles
        # the job as well.
        self._lock = threading.Lock()
        self.fired = False
        # The thread runs in a copy of the run's context (its trace header).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._watch,), name=f"watchdog:{job_id}", daemon=True
        )

    # --- the run's side -----------------------------------------------------------------

    def watching(self, report: Report) -> Report:
        """``report`` as the kind calls it: each call is a sign of life when it starts
        and when it ends, and alive throughout."""

        def watched(progress: float, state: Any) -> None:
            self._sign(+1)
            try:
                report(progress, state)
            finally:
                self._sign(-1)

        return watched

    def _sign(self, entering: int) -> None:
        with self._lock:
            self._signs += 1
            self._reporting += entering

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the run ended) and wait for the thread; if the watchdog is
        ending the run, that first."""
        with self._lock:
            self._stopped.set()
        self._thread.join()

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the watchdog's thread ----------------------------------------------------------

    def _watch(self) -> None:
        """Check every ``check_seconds``. A sign of life is dated by the check that first
        sees it (the run's start by the first check), so a silent run is ended less
        than two checks after a lease of silence."""
        signs_seen, alive_at = -1, 0.0
        while not self._wait(self._stopped, self.check_seconds):
            with self._lock:
                if self._stopped.is_set():
                    return
                now = self._monotonic()
                if self._signs != signs_seen or self._reporting:
                    signs_seen, alive_at = self._signs, now
                    continue
                silent = now - alive_at
                if silent <= self.limit_seconds:
                    continue
                self.fired = True
                try:
                    with job_logging(self._job_id):  # this thread's lines name the job too
                        self._end_run(silent)
                finally:
                    self._exit(EXIT_STATUS)
                return

    def _end_run(self, silent: float) -> None:
        error = silence_error(silent, self.limit_seconds)
        logger.error("The run went silent; ending it", silent_seconds=round(silent, 1))
        try:
            settled = self._settle(error)
        except Exception:  # StoreUnavailable, or anything else: the process ends anyway
            logger.exception("Could not settle the silent run; its message comes back")
            return
        if not settled:
            logger.warning("The silent run's job was no longer this run's; left as it is")
            return
        if self._delete is None:
            return
        try:
            self._delete()
        except StoreUnavailable as error:
            logger.warning("Could not delete the silent run's message", reason=str(error))
        else:
            logger.info("Deleted the silent run's message")


@contextmanager
def watched_run(
    worker: Worker,
    job_id: str,
    delivery: Delivery | None,
    report: Report,
    settle: Callable[[str], Outcome],
) -> Iterator[Report]:
    """Watch the run of job ``job_id`` while the block runs; yields the ``report`` to give
    its kind. ``settle`` is the run's own failed-attempt path; its outcome says whether
    the job was settled (retrying or failed) or the write was refused."""
    # Imported here: chalicelib.worker imports this module.
    from chalicelib.worker import Outcome

    def settle_failed_attempt(error: str) -> bool:
        return settle(error) in (Outcome.RETRYING, Outcome.FAILED)

    delete = (
        None
        if delivery is None
        else functools.partial(worker.queue.delete, delivery.receipt_handle)
    )
    watchdog = Watchdog(
        worker.settings.stale_after_seconds,
        settle_failed_attempt,
        delete,
        job_id=job_id,
        monotonic=worker.monotonic,
        exit=end_process,  # looked up at each run: a test replaces it
    )
    with watchdog:
        yield watchdog.watching(report)
