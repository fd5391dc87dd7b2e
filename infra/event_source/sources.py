"""Event sources: the triggers that turn outside events into invocations of one function.

``SQSEventSource`` is Lambda's SQS event source mapping (poll, invoke, settle);
``ScheduleEventSource`` is an EventBridge schedule rule with a ``rate(...)`` expression.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .event import sqs_event
from .instances import FunctionRuntime, Invocation, RuntimeClosed
from .mappings import MappingGate
from .receives import ReceiveJournal, recover, release
from .settings import ScheduleSourceSettings, SQSSourceSettings
from .settlement import InvocationStatus, Settlement, settle_batch

log = logging.getLogger(__name__)


MAX_MESSAGES_PER_RECEIVE = 10  # SQS's limit for ReceiveMessage and DeleteMessageBatch
MAX_WAIT_SECONDS = 20  # SQS's longest long poll, and what Lambda's pollers use


class SourceError(RuntimeError):
    """An event source cannot start (missing queue, invalid settings); the message says why."""


class EventSource(Protocol):
    """A trigger that turns outside events into invocations of one function.

    ``prepare`` resolves what the source needs (a queue's URL, a schedule) and raises
    ``SourceError`` when it cannot; ``run`` delivers events until ``stop`` is set or, in
    burst mode, until it has nothing left to deliver.
    """

    runtime: FunctionRuntime

    def describe(self) -> str: ...

    def prepare(self) -> None: ...

    def run(self, stop: threading.Event, burst: bool) -> None: ...


ReceiveFn = Callable[[int, int], list[dict[str, Any]]]


def collect_batch(
    receive: ReceiveFn,
    batch_size: int,
    window_seconds: float,
    poll_seconds: int,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Gather one batch as Lambda's poller does.

    ``receive(max_messages, wait_seconds)`` is one ReceiveMessage call. The first is a long
    poll of ``poll_seconds``; an empty answer ends the batch (empty). With a batching
    window, receiving goes on until the batch holds ``batch_size`` messages or
    ``window_seconds`` have passed since the first ones arrived, or ``stop`` is set (the
    runner is shutting down); without one, the first answer is the batch. No call asks for
    more than 10 messages (SQS's limit).
    """
    batch = receive(min(batch_size, MAX_MESSAGES_PER_RECEIVE), poll_seconds)
    if not batch or window_seconds <= 0:
        return batch
    deadline = clock() + window_seconds
    while len(batch) < batch_size and not (stop is not None and stop.is_set()):
        remaining = deadline - clock()
        if remaining <= 0:
            break
        wanted = min(batch_size - len(batch), MAX_MESSAGES_PER_RECEIVE)
        # Long polls return as soon as a message arrives, so rounding up costs nothing
        # when messages flow and at most a second of lateness when they do not.
        batch += receive(wanted, min(poll_seconds, math.ceil(remaining)))
    return batch


class SQSEventSource:
    """Lambda's SQS event source mapping for one function: poll, invoke, settle.

    Stopping (``stop`` set): no receive starts; an open one is let finish, and whatever a
    receive returned that was not handed to an invocation is made visible again at once
    (``receives.release``), so the next runner starts with it. On a FIFO queue with a
    ``journal``, each receive is journalled until its messages are invoked or released,
    and ``run`` first takes back what the receives of a killed runner took
    (``receives.recover``, in a thread of its own).
    """

    def __init__(
        self,
        settings: SQSSourceSettings,
        runtime: FunctionRuntime,
        sqs: Any,
        region: str,
        poll_seconds: int = MAX_WAIT_SECONDS,
        gate: MappingGate | None = None,
        journal: ReceiveJournal | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self._sqs = sqs
        self._region = region
        self._poll_seconds = poll_seconds
        # The mapping's Enabled state (see .mappings); None: always enabled.
        self._gate = gate
        self._journal = journal  # receives in flight (see .receives); FIFO queues only
        self._recovery: threading.Thread | None = None
        self._queue_url = ""
        self._queue_arn = ""
        self._visibility_seconds = 0  # the queue's default visibility timeout
        self._stop = threading.Event()

    def describe(self) -> str:
        s = self.settings
        f = s.function
        return (
            f"{f.name} ({f.function_name}) <- SQS {self._queue_arn or s.queue or s.queue_arn}: "
            f"batch {s.batch_size}, window {s.batching_window_seconds} s, "
            f"concurrency {f.concurrency}, timeout {f.timeout_seconds} s, memory {f.memory_size} MB"
        )

    def prepare(self) -> None:
        """Resolve the queue's URL and ARN; refuse what CreateEventSourceMapping refuses.

        Raises ``SourceError`` if the queue does not exist or cannot be reached, or if the
        function's timeout exceeds the queue's visibility timeout.
        """
        name, owner = self._queue_name_and_owner()
        request: dict[str, str] = {"QueueName": name}
        if owner:
            request["QueueOwnerAWSAccountId"] = owner
        try:
            self._queue_url = self._sqs.get_queue_url(**request)["QueueUrl"]
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self._queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"]
            )["Attributes"]
        except (BotoCoreError, ClientError) as err:
            raise SourceError(f"{self.settings.function.name}: queue {name!r}: {err}") from err
        self._queue_arn = attributes["QueueArn"]
        if not self._queue_arn.endswith(".fifo"):
            self._journal = None  # ReceiveRequestAttemptId applies only to FIFO queues
        visibility = self._visibility_seconds = int(attributes["VisibilityTimeout"])
        timeout = self.settings.function.timeout_seconds
        if timeout > visibility:
            raise SourceError(
                f"{self.settings.function.name}: queue visibility timeout: {visibility} "
                f"seconds is less than function timeout: {timeout} seconds (AWS refuses "
                f"this event source mapping too)"
            )
        window = self.settings.batching_window_seconds
        if window > 0 and window + timeout > visibility:
            log.warning(
                "%s: batching window + function timeout (%d s) exceed the queue's visibility "
                "timeout (%d s): AWS would extend visibility to %d s, this runner does not, "
                "so messages may be delivered twice",
                self.settings.function.name,
                window + timeout,
                visibility,
                window + timeout + 30,
            )

    def _queue_name_and_owner(self) -> tuple[str, str | None]:
        if self.settings.queue:
            return self.settings.queue, None
        arn = self.settings.queue_arn or ""
        parts = arn.split(":")  # arn:aws:sqs:<region>:<account>:<name>
        if len(parts) != 6 or parts[2] != "sqs":
            raise SourceError(f"{self.settings.function.name}: not an SQS queue ARN: {arn!r}")
        return parts[5], parts[4]

    def run(self, stop: threading.Event, burst: bool) -> None:
        """Poll and dispatch until ``stop``; in burst mode, until the queue is drained.

        Receives only while holding a free slot of the function, so never more batches
        than it can run at once. Transient AWS errors are logged and retried after 1 s.
        Returns once stopped and its open receive has come back (what it returned is
        released, not invoked).
        """
        self._stop = stop
        if self.runtime.function.concurrency == 0:
            log.warning("%s: concurrency 0: throttled, not polling", self.runtime.function.name)
            return
        self._start_recovery(stop)
        while not stop.is_set():
            if not self._may_receive(stop, burst):
                return
            if not self.runtime.reserve(timeout=0.25):
                continue
            attempts: list[str] = []
            try:
                batch = self._next_batch(attempts)
            except (BotoCoreError, ClientError) as err:
                self.runtime.release()
                log.warning("%s: receive failed: %s; retrying", self.settings.function.name, err)
                stop.wait(1.0)
                continue
            if batch and not stop.is_set():
                threading.Thread(
                    target=self._invoke_and_settle_holding_slot,
                    args=(batch, attempts),
                    name=f"invoke:{self.settings.function.name}",
                    daemon=True,
                ).start()
                continue
            self.runtime.release()
            if batch:  # received as the runner stops: never invoked, so visible again
                self._release(batch, attempts, "shutdown")
            if burst and not batch and self.runtime.busy == 0 and not self.recovering:
                return

    @property
    def recovering(self) -> bool:
        """Whether it is still taking back what a killed runner's receives took."""
        return self._recovery is not None and self._recovery.is_alive()

    def _start_recovery(self, stop: threading.Event) -> None:
        if self._journal is None or self._recovery is not None:
            return
        self._recovery = threading.Thread(
            target=recover,
            args=(self._journal, self._sqs, self.runtime.function.function_name, stop),
            name=f"recover:{self.settings.function.name}",
            daemon=True,
        )
        self._recovery.start()

    def _release(self, batch: list[dict[str, Any]], attempts: Sequence[str], why: str) -> None:
        """Make a batch that no invocation received visible again; forget its receives
        once that is done (else the next start retries them)."""
        released = release(self._sqs, self._queue_url, batch)
        log.info(
            "release function=%s records=%d ids=%s (%s: never invoked, visible again)",
            self.runtime.function.function_name, len(released), ",".join(released), why,
        )  # fmt: skip
        if self._journal is not None and len(released) == len(batch):
            self._journal.end(attempts)

    def _may_receive(self, stop: threading.Event, burst: bool) -> bool:
        """Wait while the mapping is disabled; False if stopped meanwhile (or, in burst
        mode, disabled: nothing it may receive is left to drain)."""
        return self._gate is None or self._gate.wait_until_enabled(stop, burst)

    def _next_batch(self, attempts: list[str]) -> list[dict[str, Any]]:
        """One batch (``collect_batch``); the attempt ids of the receives that returned
        its messages are appended to ``attempts``."""

        def receive(max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
            return self._receive(max_messages, wait_seconds, attempts)

        return collect_batch(
            receive,
            self.settings.batch_size,
            self.settings.batching_window_seconds,
            self._poll_seconds,
            stop=self._stop,
        )

    def _receive(
        self, max_messages: int, wait_seconds: int, attempts: list[str]
    ) -> list[dict[str, Any]]:
        request: dict[str, Any] = {}
        if self._journal is not None:
            request["ReceiveRequestAttemptId"] = self._journal.begin(
                self._queue_url, max_messages, wait_seconds
            )
        try:
            response = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                **request,
            )
        except Exception:
            self._end_receive(request, [])
            raise
        messages: list[dict[str, Any]] = response.get("Messages", [])
        self._end_receive(request, messages)
        if messages and request:
            attempts.append(request["ReceiveRequestAttemptId"])
        return messages

    def _end_receive(self, request: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        # A receive that returned nothing has nothing to take back: forget it.
        if self._journal is not None and request and not messages:
            self._journal.end([request["ReceiveRequestAttemptId"]])

    def _invoke_and_settle_holding_slot(
        self, batch: list[dict[str, Any]], attempts: Sequence[str]
    ) -> None:
        """Invoke and settle with the slot reserved before the receive; free it after."""
        self._invoke_and_settle(batch, attempts, release_when_returned=False)

    def _invoke_and_settle(
        self,
        batch: list[dict[str, Any]],
        attempts: Sequence[str],
        release_when_returned: bool,
        throttles: int | None = None,
    ) -> None:
        """Invoke with one batch (the caller holds a slot), delete what the outcome allows,
        log one line; the slot is freed in any case, as soon as the invocation returns
        when ``release_when_returned`` (Lambda frees the concurrency before it deletes),
        else after settling. ``throttles`` (aws mode) is logged with the line.

        From here on the batch belongs to the invocation: its receives are forgotten, and
        nothing makes its messages visible again (a failed or interrupted invocation
        leaves them to the queue's visibility timeout, or to whatever visibility the
        function gave them), unless the runtime was shut down before any instance got it.
        """
        ids = [m["MessageId"] for m in batch]
        name = self.runtime.function.function_name
        held = True
        if self._journal is not None:
            self._journal.end(attempts)
        try:
            invocation = self.runtime.invoke(sqs_event(batch, self._queue_arn, self._region))
            if release_when_returned:
                held = False
                self.runtime.release()
            if self._stop.is_set():
                log.info(
                    "%s: interrupted by shutdown; %d message(s) return to the queue", name, len(ids)
                )
                return
            result = invocation.result
            if result.status is InvocationStatus.TIMED_OUT:
                log.error("%s %s %s", name, invocation.request_id, result.error)
            settlement = settle_batch(result, ids)
            deleted = self._delete(batch, settlement.delete)
            line = _invocation_line(name, ids, invocation, settlement, deleted)
            if throttles is not None:
                line += f" throttles={throttles}"
            log.info("%s", line)
        except RuntimeClosed:
            self._release(batch, [], "shutdown")  # no instance ever had it
        except Exception:
            if self._stop.is_set():
                return  # the runtime was shut down under us; nothing was deleted
            log.exception("%s: invocation of %d message(s) broke the runner", name, len(ids))
        finally:
            if held:
                self.runtime.release()

    def _delete(self, batch: list[dict[str, Any]], ids: Sequence[str]) -> int:
        """DeleteMessageBatch for ``ids``; returns how many were deleted, logs the rest."""
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in batch}
        entries = [{"Id": str(n), "ReceiptHandle": handles[i]} for n, i in enumerate(ids)]
        deleted = 0
        for chunk in _chunks(entries, MAX_MESSAGES_PER_RECEIVE):
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=chunk)
            except (BotoCoreError, ClientError) as err:
                # As on AWS, an undeleted message simply comes back after its visibility
                # timeout.
                log.error("%s: delete failed: %s", self.settings.function.name, err)
                continue
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.error("%s: delete failed: %s", self.settings.function.name, failure)
        return deleted


def scheduled_event(rule_arn: str, region: str, moment: float) -> dict[str, Any]:
    """EventBridge's "Scheduled Event", as it invokes a function on a schedule rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": rule_arn.split(":")[4],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment)),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class ScheduleEventSource:
    """An EventBridge schedule rule for one function: invoke it every period."""

    def __init__(
        self,
        settings: ScheduleSourceSettings,
        runtime: FunctionRuntime,
        region: str,
        account: str,
        period_override: float | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self._region = region
        # Chalice names the rule after the function it triggers.
        self._rule_arn = f"arn:aws:events:{region}:{account}:rule/{settings.function.function_name}"
        self._period = period_override or settings.period_seconds

    def describe(self) -> str:
        f = self.settings.function
        every = f"every {self._period:g} s"
        if self._period != self.settings.period_seconds:
            every += f" (shortened from {self.settings.expression})"
        return f"{f.name} ({f.function_name}) <- schedule {self.settings.expression}: {every}"

    def prepare(self) -> None:
        """Nothing to resolve: a schedule needs no AWS resource to exist locally."""

    def run(self, stop: threading.Event, burst: bool) -> None:
        """Invoke once per period until ``stop``; a schedule has nothing to drain in burst
        mode. A run that finds every slot busy is skipped, as a throttled one would be."""
        if burst:
            return
        while not stop.wait(self._period):
            if not self.runtime.reserve(timeout=0):
                log.warning(
                    "%s: still running; this period is skipped", self.settings.function.name
                )
                continue
            threading.Thread(
                target=self._invoke, name=f"invoke:{self.settings.function.name}", daemon=True
            ).start()

    def _invoke(self) -> None:
        name = self.runtime.function.function_name
        try:
            invocation = self.runtime.invoke(
                scheduled_event(self._rule_arn, self._region, time.time())
            )
            result = invocation.result
            log.info(
                "invoke function=%s request_id=%s schedule=%r status=%s duration_ms=%.0f%s",
                name,
                invocation.request_id,
                self.settings.expression,
                result.status.value,
                invocation.duration_ms,
                f" error={result.error!r}" if result.error else "",
            )
        except Exception:
            log.exception("%s: scheduled invocation broke the runner", name)
        finally:
            self.runtime.release()


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def _invocation_line(
    function_name: str,
    ids: Sequence[str],
    invocation: Invocation,
    settlement: Settlement,
    deleted: int,
) -> str:
    start = "warm"
    if invocation.cold_start:
        init = "-" if invocation.init_ms is None else f"{invocation.init_ms:.0f}"
        start = f"cold init_ms={init}"
    line = (
        f"invoke function={function_name} request_id={invocation.request_id} "
        f"records={len(ids)} ids={','.join(ids)} outcome={settlement.outcome.value} "
        f"deleted={deleted} duration_ms={invocation.duration_ms:.0f} start={start}"
    )
    if settlement.reason:
        line += f" reason={settlement.reason!r}"
    return line
