"""Receives in flight, journalled per stage and function, so that a runner killed without
warning (SIGKILL, a crash, a closed terminal) does not strand what its receives took.

Why: a long poll (``WaitTimeSeconds`` up to 20) stays open in SQS, or in the emulator, after
the process that opened it is gone; a message that arrives meanwhile is received for
nobody and stays hidden for the queue's visibility timeout. On a FIFO queue every later
message of its group waits behind it (SQS Developer Guide, "FIFO queue delivery logic").
A runner that is stopped by a signal releases what it received itself (``sources``); one
that is killed cannot, so the next runner does it for it, with the one mechanism SQS
offers for a receive whose answer was lost: ``ReceiveRequestAttemptId`` (SQS API
Reference, ReceiveMessage: on a FIFO queue, a retry with the same id within 5 minutes
returns the same messages and receipt handles, even while they are hidden).

How:

- Before each ReceiveMessage on a FIFO queue the runner writes
  ``<project>/.chalice/event-sources/<stage>/<function>.receives/<attempt id>.json`` (the
  queue, the call's parameters, when it started, the runner's process id) and sends the
  same id as ``ReceiveRequestAttemptId``. The file is removed once the receive came back
  empty, or once what it returned was handed to an invocation or made visible again.
- A runner starting up (``recover``) takes the entries of runners that are no longer
  running, waits until each one's long poll has surely ended (its start + its wait + a
  margin), retries it with the same id (``WaitTimeSeconds=0``) and makes what comes back
  visible again (ChangeMessageVisibility 0 with the receipt handles it returned). A retry
  that SQS refuses (a message was modified since: it was deleted or its visibility
  changed, so someone settled it) or that returns nothing has nothing to take back.

What it costs the jobs behind, and the bounds: after a kill, the messages a receive took
for nobody are visible again at most ``wait + RECOVERY_MARGIN_SECONDS`` (22 s) after that
receive started, provided a runner starts again within ``ATTEMPT_WINDOW_SECONDS`` (5
minutes); a runner started later finds them back when their visibility timeout ends, as
after any crash on AWS. A message already handed to an invocation is never touched: it
comes back as the function left it (its own visibility change, else the queue's timeout),
as on AWS after a crashed execution environment. Standard queues have no attempt ids and
are not journalled: a message stranded there returns after its visibility timeout, and
nothing waits behind it. Against an SQS without attempt ids (moto as released, the
emulator's ``--stock-moto``) a retry is just a new receive, and what it returns is made
visible again at once: harmless, but it takes nothing back.

Entries are small JSON files written atomically (as ``mappings`` writes its state), one
per receive, so pollers never share a file; a live runner's entries are never touched by
another runner (its process id answers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .mappings import state_dir

log = logging.getLogger(__name__)

# SQS API Reference, ReceiveMessage: "You can use ReceiveRequestAttemptId only for 5
# minutes after a ReceiveMessage action."
ATTEMPT_WINDOW_SECONDS = 300.0
# How long after its wait a dead runner's long poll is taken to be over: the emulator
# answers within its wait; the margin covers the answer's way back and a loaded machine.
RECOVERY_MARGIN_SECONDS = 2.0
MAX_MESSAGES_PER_CALL = 10  # SQS's limit for ChangeMessageVisibilityBatch


@dataclass(frozen=True)
class Entry:
    """One ReceiveMessage call in flight, as journalled."""

    attempt_id: str
    queue_url: str
    max_messages: int
    wait_seconds: int
    started_at: float  # time.time() when the call was made
    pid: int  # the runner that made it


class ReceiveJournal:
    """The receives in flight of one function's event source, as files (see the module)."""

    def __init__(
        self,
        project_dir: Path,
        stage: str,
        function: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = state_dir(Path(project_dir), stage) / f"{function}.receives"
        self._clock = clock

    def begin(self, queue_url: str, max_messages: int, wait_seconds: int) -> str:
        """Journal a receive about to be made; its ReceiveRequestAttemptId."""
        entry = Entry(
            uuid.uuid4().hex, queue_url, max_messages, wait_seconds, self._clock(), os.getpid()
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(entry.attempt_id)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(asdict(entry)) + "\n")
        temporary.replace(path)  # a reader never sees half an entry
        return entry.attempt_id

    def end(self, attempt_ids: Iterable[str]) -> None:
        """Forget receives whose messages were invoked or released (or that found none)."""
        for attempt_id in attempt_ids:
            self._path(attempt_id).unlink(missing_ok=True)

    def orphaned(self) -> list[Entry]:
        """The entries of runners no longer running, oldest first. An unreadable entry
        (a crash mid-write leaves only a temporary file, so this is someone's mistake) is
        logged and removed: there is nothing to retry without its attempt id."""
        entries = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                entry = Entry(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as err:
                log.warning("%s: unreadable, removed: %s", path, err)
                path.unlink(missing_ok=True)
                continue
            if not _running(entry.pid):
                entries.append(entry)
        return sorted(entries, key=lambda e: e.started_at)

    def _path(self, attempt_id: str) -> Path:
        return self.directory / f"{attempt_id}.json"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is that process alive?
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def release(sqs: Any, queue_url: str, messages: Iterable[dict[str, Any]]) -> list[str]:
    """Make ``messages`` visible again (ChangeMessageVisibility 0 with their receipt
    handles, in batches of 10); the ids of those released. A failure is logged: that
    message returns when its visibility timeout ends instead."""
    batch = list(messages)
    released: list[str] = []
    for start in range(0, len(batch), MAX_MESSAGES_PER_CALL):
        chunk = batch[start : start + MAX_MESSAGES_PER_CALL]
        entries = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for n, m in enumerate(chunk)
        ]
        try:
            response = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as err:
            log.error("release failed: %s (back after the visibility timeout instead)", err)
            continue
        released += [chunk[int(s["Id"])]["MessageId"] for s in response.get("Successful", [])]
        for failure in response.get("Failed", []):
            log.error("release failed: %s (back after the visibility timeout instead)", failure)
    return released


def recover(
    journal: ReceiveJournal,
    sqs: Any,
    function: str,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
) -> int:
    """Take back what the receives of dead runners took (see the module); the number of
    messages made visible again. Waits (on ``stop``) until each receive's long poll has
    ended; returns early when ``stop`` is set, leaving the rest for the next start."""
    recovered = 0
    for entry in journal.orphaned():
        over_at = entry.started_at + entry.wait_seconds + RECOVERY_MARGIN_SECONDS
        if stop.wait(max(0.0, over_at - clock())):
            return recovered
        if clock() >= entry.started_at + ATTEMPT_WINDOW_SECONDS:
            log.warning(
                "%s: a receive of a stopped runner (pid %d) is older than %g s and cannot be "
                "retried: what it took returns when its visibility timeout ends",
                function, entry.pid, ATTEMPT_WINDOW_SECONDS,
            )  # fmt: skip
            journal.end([entry.attempt_id])
            continue
        try:
            response = sqs.receive_message(
                QueueUrl=entry.queue_url,
                MaxNumberOfMessages=entry.max_messages,
                WaitTimeSeconds=0,
                ReceiveRequestAttemptId=entry.attempt_id,
            )
        except ClientError as err:
            # Refused: a message was modified since (settled or released): nothing is ours.
            log.info("%s: nothing to take back from pid %d's receive: %s", function, entry.pid, err)
            journal.end([entry.attempt_id])
            continue
        except BotoCoreError as err:
            log.warning("%s: cannot retry pid %d's receive yet: %s", function, entry.pid, err)
            continue  # kept for the next start
        messages = response.get("Messages", [])
        released = release(sqs, entry.queue_url, messages)
        if messages:
            log.info(
                "recover function=%s records=%d ids=%s (received by stopped runner pid %d, "
                "never invoked: visible again)",
                function, len(released), ",".join(released), entry.pid,
            )  # fmt: skip
        recovered += len(released)
        if len(released) == len(messages):
            journal.end([entry.attempt_id])
    return recovered
