"""The ``aws`` mode of the SQS event source: pollers that receive whether or not the
function can run, and the throttling that follows (see ``modes`` for the sources).

Each of a mapping's pollers loops: receive a batch (long poll), invoke the function
with it, settle it. An invocation that finds every instance slot of the function busy
is *throttled*: the poller keeps the batch (its messages stay in flight) and retries it
on the ``ThrottleBackoff`` curve until the batch's visibility timeout runs out, then
drops it. SQS makes the messages visible again at that moment, and the next receive
raises their receive count, so the queue's redrive policy can move a message that never
ran to the dead-letter queue. A poller holding a batch receives nothing else, so at
most ``pollers`` batches are in flight per mapping.

"The message's timestamp exceeds your queue's visibility timeout" is read as: the
batch has been in flight for the queue's visibility timeout since it was received,
the moment SQS would hand its messages to another receive anyway; a retry after that
would race that receive.

FIFO queues need nothing of their own here: SQS never returns a message of a message
group while another of the group is in flight, so each group has at most one batch in
flight and a group's messages reach the function in order (what Lambda relies on too).
With one message group, the mapping's extra pollers find nothing to receive, and
nothing is throttled.

Not modelled: the scaling steps (up by 300 pollers a minute, down to 2 at low traffic),
the reduction of concurrency after function errors, and throttles of scheduled
(asynchronous) invocations, which run as in ``exact`` mode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .instances import FunctionRuntime
from .mappings import MappingGate
from .modes import DEFAULT_POLLERS, ThrottleBackoff
from .receives import ReceiveJournal
from .settings import SQSSourceSettings
from .sources import MAX_WAIT_SECONDS, SQSEventSource

log = logging.getLogger(__name__)


class PollingSQSEventSource(SQSEventSource):
    """Lambda's SQS event source mapping as AWS documents it: ``pollers`` pollers that
    receive regardless of the function's concurrency, throttling, backoff, release."""

    def __init__(
        self,
        settings: SQSSourceSettings,
        runtime: FunctionRuntime,
        sqs: Any,
        region: str,
        poll_seconds: int = MAX_WAIT_SECONDS,
        pollers: int = DEFAULT_POLLERS,
        backoff: ThrottleBackoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        gate: MappingGate | None = None,
        journal: ReceiveJournal | None = None,
    ) -> None:
        super().__init__(settings, runtime, sqs, region, poll_seconds, gate, journal)
        if pollers < 1:
            raise ValueError(f"pollers must be at least 1, got {pollers}")
        self._pollers = pollers
        self._backoff = backoff or ThrottleBackoff()
        self._clock = clock
        self._lock = threading.Lock()
        self._held = 0  # batches received and not yet settled or dropped
        # Batches to release once every poller's receive has ended (see run).
        self._unreleased: list[tuple[list[dict[str, Any]], list[str]]] = []

    def describe(self) -> str:
        queue = self.settings.queue or self.settings.queue_arn or ""
        fifo = "FIFO (one batch in flight per message group), " if queue.endswith(".fifo") else ""
        b = self._backoff
        return (
            f"{super().describe()}; mode aws: {fifo}{self._pollers} pollers, throttled "
            f"batches retried after {b.first:g} s x{b.factor:g} up to {b.maximum:g} s "
            f"until the visibility timeout"
        )

    @property
    def held(self) -> int:
        """Batches in flight in this mapping: invoking, or throttled and backing off."""
        with self._lock:
            return self._held

    def run(self, stop: threading.Event, burst: bool) -> None:
        """Run the pollers until ``stop``; in burst mode, until each of them received
        nothing while no batch was in flight (a dropped batch is not waited for).

        Once stopped, returns when every poller has: an open receive is let finish, and
        a batch held but not invoked (just received, or throttled and backing off) is
        made visible again once no receive is open any more (released earlier, another
        poller's open receive would take it again, raising its receive count)."""
        self._stop = stop
        self._start_recovery(stop)
        threads = [
            threading.Thread(
                target=self._poll,
                args=(stop, burst),
                name=f"poller:{self.settings.function.name}:{n}",
                daemon=True,  # one blocked in a long poll is abandoned at shutdown
            )
            for n in range(self._pollers)
        ]
        for thread in threads:
            thread.start()
        while not stop.is_set() and any(t.is_alive() for t in threads):
            stop.wait(0.1)
        for thread in threads:
            thread.join()  # the runner bounds how long it waits for this (run_sources)
        with self._lock:
            unreleased, self._unreleased = self._unreleased, []
        for batch, receives in unreleased:
            super()._release(batch, receives, "shutdown")

    def _release(self, batch: list[dict[str, Any]], attempts: Sequence[str], why: str) -> None:
        if not self._stop.is_set():
            super()._release(batch, attempts, why)
            return
        with self._lock:
            self._unreleased.append((batch, list(attempts)))

    def _poll(self, stop: threading.Event, burst: bool) -> None:
        while not stop.is_set():
            if not self._may_receive(stop, burst):
                return
            attempts: list[str] = []
            try:
                batch = self._next_batch(attempts)
            except (BotoCoreError, ClientError) as err:
                log.warning("%s: receive failed: %s; retrying", self.settings.function.name, err)
                stop.wait(1.0)
                continue
            if not batch:
                if burst and self.held == 0 and not self.recovering:
                    return
                continue
            received = self._clock()
            with self._lock:
                self._held += 1
            try:
                self._deliver(batch, attempts, received, stop)
            finally:
                with self._lock:
                    self._held -= 1

    def _deliver(
        self,
        batch: list[dict[str, Any]],
        receives: list[str],
        received: float,
        stop: threading.Event,
    ) -> None:
        """Invoke with ``batch`` as soon as a slot is free at one of its attempts: at once,
        then at each retry the backoff allows before the visibility timeout; else drop it
        when the visibility timeout ends. Stopped before an invocation took it: release
        it (``receives``: the attempt ids of the receives that returned it)."""
        attempts = [0.0, *self._backoff.retry_offsets(self._visibility_seconds)]
        for throttles, offset in enumerate(attempts):
            if stop.is_set() or stop.wait(max(0.0, received + offset - self._clock())):
                self._release(batch, receives, "shutdown")
                return
            if self.runtime.reserve(timeout=0):
                self._invoke_and_settle(
                    batch, receives, release_when_returned=True, throttles=throttles
                )
                return
            retry = (
                f"retry in {attempts[throttles + 1] - offset:g} s"
                if throttles + 1 < len(attempts)
                else "no retry before the visibility timeout"
            )
            log.info("%s", _batch_line("throttle", self.runtime, batch, throttles + 1, retry))
        if stop.wait(max(0.0, received + self._visibility_seconds - self._clock())):
            self._release(batch, receives, "shutdown")
            return
        if self._journal is not None:
            self._journal.end(receives)  # visible again by now: nothing to take back
        log.info(
            "%s",
            _batch_line(
                "release",
                self.runtime,
                batch,
                len(attempts),
                f"visibility timeout ({self._visibility_seconds} s) reached: dropped, "
                f"back to the queue",
            ),
        )


def _batch_line(
    what: str, runtime: FunctionRuntime, batch: Sequence[dict[str, Any]], throttles: int, note: str
) -> str:
    ids = ",".join(m["MessageId"] for m in batch)
    counts = ",".join(m.get("Attributes", {}).get("ApproximateReceiveCount", "?") for m in batch)
    return (
        f"{what} function={runtime.function.function_name} records={len(batch)} ids={ids} "
        f"receive_counts={counts} throttles={throttles} ({note})"
    )
