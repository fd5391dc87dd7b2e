"""SQS: one index per queue, so that no call walks the queue.

What moto 5.2.5 walks (``moto/sqs/models.py``), and what replaces it here:

- ``Queue.attributes``, read two or three times by every SendMessage (for
  ContentBasedDeduplication), computes the three approximate counts, each a pass over
  every message. Here the counts are kept as messages change state.
- ``Queue.attributes`` also turns each of its twenty-odd attribute names from CamelCase
  into a Python name (``camelcase_to_underscores``, a character-by-character loop) on
  every read, and each entry of a FIFO SendMessageBatch reads it five times (moto
  validates the batch's entries, then ``send_message`` validates each again and looks up
  ContentBasedDeduplication): 1 to 2 ms an entry here, half or more of a
  SendMessageBatch, where SQS answers a batch of 10 in about one SendMessage's time.
  Here each name's conversion is remembered (a pure function of the name: the same
  answers).
- ``SQSBackend.receive_message`` iterates ``Queue.messages`` (a new list of every visible
  message, "this can become very inefficient", says moto) and checks the retention period
  through ``Queue.attributes`` for each message it returns. Here ready messages wait in a
  heap ordered by send order (one heap per message group on a FIFO queue, plus a heap of
  the groups that may deliver), and in-flight and delayed messages in heaps ordered by
  the moment they become ready.
- ``Queue.add_message`` on a FIFO queue compares the deduplication id with every message.
  Here a dictionary holds the ids sent in the last 5 minutes.
- ``Queue.delete_message`` and ``SQSBackend.change_message_visibility`` look for the
  receipt handle in every message's history; here a dictionary maps handles to messages.
- A long poll re-evaluates ``Queue.messages`` at every wake-up (at least once a second),
  and wakes at once whenever the queue has a visible message, deliverable or not: on a
  FIFO queue whose only group is in flight (the job queue while the worker runs a job),
  every open long poll (the local event source's extra pollers in ``aws`` mode) spins,
  rescanning the whole queue. Here a long poll sleeps until a message is *deliverable*
  (visible, and on a FIFO queue its group not in flight): woken by a send, a visibility
  change or a delete that makes one so, or at the moment the next visibility timeout or
  delay ends; never by polling.

Patched: ``Queue._messages`` (a property over the index: moto's own code that assigns the
list, like PurgeQueue, rebuilds it), ``Queue.messages``, the three
``Queue.approximate_number_of_messages*`` properties, ``Queue.add_message``,
``Queue.delete_message``, ``Queue.wait_for_messages``, ``SQSBackend.receive_message`` and
``SQSBackend.change_message_visibility``, and ``camelcase_to_underscores`` as
``moto.sqs.models`` calls it (memoized). Everything else (validation, SendMessage,
batches, attributes, responses) is moto's own code, calling these.

The answers are moto's, call for call, except where moto departs from SQS and SQS's rule
costs no more than moto's (each is tested):

- FIFO deduplication: an id stays taken for 5 minutes after its message was sent, even
  once that message is deleted. SQS Developer Guide, "Amazon SQS FIFO queue key terms":
  "Amazon SQS continues tracking the deduplication ID even after the message has been
  received and deleted." moto forgets the id with its message. With
  ``DeduplicationScope=messageGroup`` ids are scoped to their group.
- A message older than the queue's retention period is deleted when a receive reaches
  it, as SQS deletes such messages; moto marked it received and ended the receive there.
- A long poll returns as soon as a visibility timeout or a delay ends, as on SQS; moto
  noticed within a second.
- A FIFO group is blocked by any in-flight message of the group, whatever made it
  invisible (moto counted only messages hidden by a receive).

One SQS behaviour moto 5.2.5 lacks is added (``SQSResponse.receive_message`` is wrapped to
read the parameter): a FIFO queue's ``ReceiveRequestAttemptId``, as the SQS API Reference
(ReceiveMessage) states it. A receive that names one is remembered for 5 minutes with what
it returned; a retry with the same id within those minutes returns the same messages with
the same receipt handles, even while they are hidden, and resets their visibility timeout
(to the retry's, else the queue's); the receive count does not rise. The retry is possible
only "if none of the messages have been modified (deleted or had their visibility
changes)": otherwise it is refused with InvalidParameterValue (as ElasticMQ, another SQS
emulator, refuses it). After the 5 minutes the id is forgotten and a retry is a new
receive; on a standard queue the parameter is ignored ("applies only to FIFO queues").
The local event source relies on it to take back, after a crash, what its last receives
took (``infra/event_source/receives.py``).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import weakref
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from moto.sqs import models as sqs_models
from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid
from moto.sqs.responses import SQSResponse

from infra.moto_speedups.patching import Patches

# SQS's deduplication interval (moto's DEDUPLICATION_TIME_IN_SECONDS), in milliseconds.
DEDUPLICATION_MS = sqs_models.DEDUPLICATION_TIME_IN_SECONDS * 1000
# The longest a message may stay invisible, counted as moto counts it (from its send).
MAX_VISIBILITY_MS = 43200 * 1000

READY = "ready"  # visible and not delayed: a receive may return it
IN_FLIGHT = "in_flight"  # received (or made invisible) and its visibility timeout not over
DELAYED = "delayed"  # sent with a delay that has not passed yet

_INDEX = "_speedup_index"  # the queue's QueueIndex, in the queue's __dict__
_SEED = "_speedup_seed"  # messages assigned before the queue had its lock (Queue.__init__)
_ATTEMPTS = "_speedup_attempts"  # FIFO: ReceiveRequestAttemptId -> _Attempt, oldest first

# The ReceiveRequestAttemptId of the ReceiveMessage request this thread is serving, if any:
# set by the wrapped SQSResponse.receive_message, read by _receive_message.
_attempt_id: ContextVar[str | None] = ContextVar("receive_request_attempt_id", default=None)

# Queues given an index while patched, so that revert() can hand them back to moto.
_indexed: weakref.WeakSet[Any] = weakref.WeakSet()


def _now_ms() -> float:
    # Looked up at each call, so a test that replaces moto's clock moves ours too.
    now: float = sqs_models.unix_time_millis()  # type: ignore[attr-defined]
    return now


def _now_s() -> float:
    now: float = sqs_models.unix_time()  # type: ignore[attr-defined]
    return now


@dataclass(eq=False)
class _Slot:
    seq: int  # the message's place in the queue: the order it was added in
    state: str
    epoch: int = 0  # bumped each time it becomes ready; heap entries carry the epoch
    group: str = ""  # FIFO: the message group whose order it keeps


Entry = tuple[int, int, Any]  # (seq, epoch, message): a ready message in a heap


class QueueIndex:
    """The messages of one queue, by state, with the counts SQS reports.

    Every method expects the queue's lock (``Queue._messages_lock``) to be held and the
    current time, in moto's milliseconds, to be passed in where the state depends on it.
    Heaps are cleaned lazily: an entry that no longer matches its message's state (the
    message moved on, or was deleted) is dropped when it reaches the top.
    """

    def __init__(self, fifo: bool, dedup: dict[tuple[str | None, str], float] | None = None):
        self.fifo = fifo
        self._order = itertools.count()
        self._tiebreak = itertools.count()
        self.slots: dict[Any, _Slot] = {}  # every message; insertion order is queue order
        self.by_handle: dict[str, Any] = {}  # every receipt handle a message has had
        self.in_flight = 0
        self.delayed = 0
        self._hidden: list[tuple[float, int, Any]] = []  # (visible_at, tiebreak, message)
        self._delays: list[tuple[float, int, Any]] = []  # (delayed_until, tiebreak, message)
        self._ready: list[Entry] = []  # standard queue: ready messages
        self._groups: dict[str, list[Entry]] = {}  # FIFO: ready messages per group
        self._group_in_flight: dict[str, int] = {}
        self._available: list[tuple[int, int, str]] = []  # FIFO: (head seq, tiebreak, group)
        # FIFO deduplication: (scope, id) -> sent timestamp, and the same in send order.
        self.dedup: dict[tuple[str | None, str], float] = dedup if dedup is not None else {}
        self._dedup_order: deque[tuple[float, tuple[str | None, str]]] = deque(
            sorted((sent, key) for key, sent in self.dedup.items())
        )

    # --- counts -------------------------------------------------------------------------

    @property
    def ready(self) -> int:
        return len(self.slots) - self.in_flight - self.delayed

    # --- adding and removing --------------------------------------------------------------

    def add(self, message: Any, now: float) -> None:
        """Put ``message`` at the end of the queue, in the state its timestamps give."""
        seq = next(self._order)
        slot = _Slot(seq, READY, group=message.group_id or f"\0{seq}")
        self.slots[message] = slot
        for handle in message.all_receipt_handles:
            if handle is not None:
                self.by_handle[handle] = message
        if message.visible_at >= now:  # moto: visible only once now > visible_at
            self._hide(message, slot)
        elif now < message.delayed_until:
            self._delay(message, slot)
        else:
            self._make_ready(message, slot)

    def remove(self, message: Any) -> None:
        """Take ``message`` out of the queue (deleted, dead-lettered or expired)."""
        slot = self.slots.pop(message)
        for handle in message.all_receipt_handles:
            if handle is not None:
                self.by_handle.pop(handle, None)
        if slot.state == IN_FLIGHT:
            self._leave_in_flight(slot)
        elif slot.state == DELAYED:
            self.delayed -= 1
        elif self.fifo:
            self._offer(slot.group)  # it may have been its group's head

    def messages(self) -> list[Any]:
        return list(self.slots)

    def is_duplicate(self, message: Any, per_group: bool) -> bool:
        """FIFO: True if the message's deduplication id was sent in the last 5 minutes;
        otherwise record it and return False."""
        sent = float(message.sent_timestamp)
        while self._dedup_order and sent - self._dedup_order[0][0] >= DEDUPLICATION_MS:
            then, old = self._dedup_order.popleft()
            if self.dedup.get(old) == then:
                del self.dedup[old]
        key = (message.group_id if per_group else None, message.deduplication_id)
        previous = self.dedup.get(key)
        if previous is not None and sent - previous < DEDUPLICATION_MS:
            return True
        self.dedup[key] = sent
        self._dedup_order.append((sent, key))
        return False

    # --- time -------------------------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """Move the messages whose visibility timeout or delay ended by ``now`` to ready."""
        while self._hidden and self._hidden[0][0] < now:
            visible_at, _, message = heapq.heappop(self._hidden)
            slot = self.slots.get(message)
            if slot is None or slot.state != IN_FLIGHT or message.visible_at != visible_at:
                continue
            self._surface(message, slot, now)
        while self._delays and self._delays[0][0] <= now:
            _, _, message = heapq.heappop(self._delays)
            slot = self.slots.get(message)
            if slot is None or slot.state != DELAYED:
                continue
            self.delayed -= 1
            self._make_ready(message, slot)

    def next_change(self) -> float | None:
        """When (moto milliseconds) the next in-flight or delayed message may become ready."""
        times = [heap[0][0] for heap in (self._hidden, self._delays) if heap]
        return min(times) if times else None

    def visibility_changed(self, message: Any, now: float) -> bool:
        """Follow a ChangeMessageVisibility of ``message``; True if it is ready now."""
        slot = self.slots[message]
        if message.visible_at >= now:
            if slot.state != IN_FLIGHT:
                if slot.state == DELAYED:
                    self.delayed -= 1
                self._hide(message, slot)
            else:
                heapq.heappush(self._hidden, (message.visible_at, next(self._tiebreak), message))
            return False
        if slot.state == IN_FLIGHT:
            self._surface(message, slot, now)
        return slot.state == READY

    # --- receiving --------------------------------------------------------------------------

    def deliverable(self) -> bool:
        """Whether a receive now would find a message (refresh first)."""
        if self.fifo:
            return self._top_available(set()) is not None
        return self._clean_top(self._ready) is not None

    def take(
        self,
        count: int,
        visibility_timeout: int,
        max_receive_count: int | None,
        retention_ms: float,
        now: float,
    ) -> tuple[list[Any], list[Any]]:
        """Receive up to ``count`` messages in queue order, as moto's receive_message does.

        Returns the messages received (already marked received, in flight for
        ``visibility_timeout`` seconds) and those taken out to be dead-lettered (received
        ``max_receive_count`` times already; they leave the index here). A message past
        the retention period is dropped. On a FIFO queue a group with a message in flight
        delivers nothing; a group free when the receive starts may deliver several
        messages, in order.
        """
        self.refresh(now)
        received: list[Any] = []
        dead: list[Any] = []
        still_ready: list[Any] = []  # received with no visibility timeout: ready after this
        local: list[tuple[int, int, str]] = []  # FIFO groups this receive may go on with
        local_groups: set[str] = set()
        while len(received) < count:
            if self.fifo:
                group = self._next_group(local, local_groups)
                if group is None:
                    break
                _, _, message = heapq.heappop(self._groups[group])
            else:
                if self._clean_top(self._ready) is None:
                    break
                _, _, message = heapq.heappop(self._ready)
            slot = self.slots[message]
            if max_receive_count is not None and message.approximate_receive_count >= (
                max_receive_count
            ):
                self.remove(message)
                dead.append(message)
            elif message.sent_timestamp + retention_ms <= now:
                self.remove(message)
            else:
                message.mark_received(visibility_timeout=visibility_timeout)
                self.by_handle[message.receipt_handle] = message
                if message.visible_at >= now:
                    self._hide(message, slot)
                else:
                    still_ready.append(message)
                received.append(message)
            if self.fifo:
                head = self._clean_top(self._groups.get(slot.group, []))
                if head is not None:
                    heapq.heappush(local, (head[0], next(self._tiebreak), slot.group))
                local_groups.add(slot.group)
        for message in still_ready:
            self._make_ready(message, self.slots[message])
        for group in local_groups:
            self._offer(group)
        return received, dead

    # --- state changes --------------------------------------------------------------------

    def _hide(self, message: Any, slot: _Slot) -> None:
        slot.state = IN_FLIGHT
        self.in_flight += 1
        if self.fifo:
            self._group_in_flight[slot.group] = self._group_in_flight.get(slot.group, 0) + 1
        heapq.heappush(self._hidden, (message.visible_at, next(self._tiebreak), message))

    def _delay(self, message: Any, slot: _Slot) -> None:
        slot.state = DELAYED
        self.delayed += 1
        heapq.heappush(self._delays, (message.delayed_until, next(self._tiebreak), message))

    def _surface(self, message: Any, slot: _Slot, now: float) -> None:
        """An in-flight message became visible again."""
        self._leave_in_flight(slot)
        if now < message.delayed_until:
            self._delay(message, slot)
        else:
            self._make_ready(message, slot)

    def _leave_in_flight(self, slot: _Slot) -> None:
        self.in_flight -= 1
        if self.fifo:
            left = self._group_in_flight[slot.group] - 1
            if left:
                self._group_in_flight[slot.group] = left
            else:
                del self._group_in_flight[slot.group]
                self._offer(slot.group)

    def _make_ready(self, message: Any, slot: _Slot) -> None:
        slot.state = READY
        slot.epoch += 1
        entry = (slot.seq, slot.epoch, message)
        if self.fifo:
            heapq.heappush(self._groups.setdefault(slot.group, []), entry)
            self._offer(slot.group)
        else:
            heapq.heappush(self._ready, entry)

    # --- heaps ------------------------------------------------------------------------------

    def _valid(self, entry: Entry) -> bool:
        _, epoch, message = entry
        slot = self.slots.get(message)
        return slot is not None and slot.state == READY and slot.epoch == epoch

    def _clean_top(self, heap: list[Entry]) -> Entry | None:
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _head(self, group: str) -> Entry | None:
        heap = self._groups.get(group)
        if heap is None:
            return None
        head = self._clean_top(heap)
        if head is None:
            del self._groups[group]  # so that many short-lived groups leave nothing behind
        return head

    def _offer(self, group: str) -> None:
        """Make ``group`` eligible for receives if nothing of it is in flight."""
        if group in self._group_in_flight:
            return
        head = self._head(group)
        if head is not None:
            heapq.heappush(self._available, (head[0], next(self._tiebreak), group))

    def _top_available(self, skip: set[str]) -> tuple[int, int, str] | None:
        while self._available:
            seq, _, group = self._available[0]
            if group not in skip and group not in self._group_in_flight:
                head = self._head(group)
                if head is not None and head[0] == seq:
                    return self._available[0]
            heapq.heappop(self._available)
        return None

    def _next_group(self, local: list[tuple[int, int, str]], local_groups: set[str]) -> str | None:
        """The group whose head comes first in the queue: among the groups free when the
        receive started, and those it has already taken from."""
        while local:
            head = self._head(local[0][2])
            if head is not None and head[0] == local[0][0]:
                break
            heapq.heappop(local)
        top = self._top_available(local_groups)
        if local and (top is None or local[0][0] < top[0]):
            return heapq.heappop(local)[2]
        if top is not None:
            return heapq.heappop(self._available)[2]
        return None


# --- the queue's index ---------------------------------------------------------------------


def index_of(queue: Any) -> QueueIndex:
    """The queue's index, built on first use (hold the queue's lock)."""
    index: QueueIndex | None = queue.__dict__.get(_INDEX)
    fifo = bool(queue.fifo_queue)
    if index is not None and index.fifo == fifo:
        return index
    if index is not None:
        messages, dedup = index.messages(), index.dedup
    else:
        # Messages set in Queue.__init__, or the list of a queue made before apply().
        seed = queue.__dict__.pop(_SEED, None)
        messages = seed if seed is not None else queue.__dict__.pop("_messages", [])
        dedup = None
    index = QueueIndex(fifo, dedup)
    now = _now_ms()
    for message in messages:
        index.add(message, now)
    queue.__dict__[_INDEX] = index
    _indexed.add(queue)
    return index


def _get_messages(queue: Any) -> list[Any]:
    lock = queue.__dict__.get("_messages_lock")
    if lock is None:
        return list(queue.__dict__.get(_SEED, []))
    with lock:
        return index_of(queue).messages()


def _set_messages(queue: Any, messages: list[Any]) -> None:
    """``queue._messages = [...]``: moto's __init__ (before the queue has its lock) and
    PurgeQueue. The index is rebuilt from the list; the deduplication window stays."""
    lock = queue.__dict__.get("_messages_lock")
    if lock is None:
        queue.__dict__.pop(_INDEX, None)
        queue.__dict__[_SEED] = list(messages)
        return
    with lock:
        old: QueueIndex | None = queue.__dict__.get(_INDEX)
        index = QueueIndex(bool(queue.fifo_queue), old.dedup if old is not None else None)
        now = _now_ms()
        for message in messages:
            index.add(message, now)
        queue.__dict__[_INDEX] = index
        _indexed.add(queue)
        lock.notify_all()


def _count(attribute: str) -> property:
    def get(queue: Any) -> int:
        with queue._messages_lock:
            index = index_of(queue)
            index.refresh(_now_ms())
            value: int = getattr(index, attribute)
            return value

    return property(get)


def _visible_messages(queue: Any) -> list[Any]:
    with queue._messages_lock:
        index = index_of(queue)
        index.refresh(_now_ms())
        return [m for m, slot in index.slots.items() if slot.state == READY]


# --- sending ------------------------------------------------------------------------------


def _add_message(queue: Any, message: Any) -> None:
    """Queue.add_message: FIFO deduplication, then the end of the queue; then moto's
    Lambda event source mappings, as moto runs them."""
    _add(queue, message, deduplicate=True)


def _add(queue: Any, message: Any, deduplicate: bool) -> None:
    with queue._messages_lock:
        index = index_of(queue)
        if (
            deduplicate
            and queue.fifo_queue
            and (queue.content_based_deduplication or message.deduplication_id)
            and index.is_duplicate(message, queue.deduplication_scope == "messageGroup")
        ):
            return  # accepted, never delivered
        index.add(message, _now_ms())
        queue._messages_lock.notify_all()
    _run_event_source_mappings(queue)


def _run_event_source_mappings(queue: Any) -> None:
    # moto's own code (Queue.add_message), unchanged: an enabled mapping is invoked here.
    for arn, esm in queue.lambda_event_source_mappings.items():
        if not esm.enabled:
            continue
        backend = sqs_models.sqs_backends[queue.account_id][queue.region]
        messages = backend.receive_message(
            queue.name,
            esm.batch_size,
            queue.receive_message_wait_time_seconds,
            queue.visibility_timeout,
        )
        from moto.awslambda.utils import get_backend

        result = get_backend(queue.account_id, queue.region).send_sqs_batch(
            arn, messages, queue.queue_arn
        )
        if result:
            for m in messages:
                backend.delete_message(queue.name, m.receipt_handle)  # type: ignore[arg-type]
        else:
            for m in messages:
                backend.change_message_visibility(
                    queue.name,
                    m.receipt_handle,  # type: ignore[arg-type]
                    visibility_timeout=0,
                )


# --- receiving ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Attempt:
    """What a FIFO receive that named a ReceiveRequestAttemptId returned."""

    at: float  # moto milliseconds, when it answered
    received: list[tuple[Any, str, float]]  # (message, receipt handle, visible_at) each


def _attempts(queue: Any) -> dict[str, _Attempt]:
    """The queue's remembered attempts, oldest first, those older than 5 minutes dropped
    (hold the queue's lock)."""
    attempts: dict[str, _Attempt] = queue.__dict__.setdefault(_ATTEMPTS, {})
    now = _now_ms()
    while attempts:
        oldest = next(iter(attempts))
        if now - attempts[oldest].at < DEDUPLICATION_MS:
            break
        del attempts[oldest]
    return attempts


def _repeat(queue: Any, attempt_id: str, visibility_timeout: int) -> list[Any] | None:
    """The messages a remembered attempt returned, their visibility timeout reset; None if
    ``attempt_id`` names no attempt of the last 5 minutes (hold the queue's lock).

    Raises ``InvalidParameterValue`` if one of them was modified since: deleted, its
    visibility changed, or received again (its visibility timeout ended first).
    """
    attempt = _attempts(queue).get(attempt_id)
    if attempt is None:
        return None
    index = index_of(queue)
    for message, handle, visible_at in attempt.received:
        slot = index.slots.get(message)
        if (
            slot is None
            or slot.state != IN_FLIGHT
            or message.receipt_handle != handle
            or message.visible_at != visible_at
        ):
            raise InvalidParameterValue(
                f"ReceiveRequestAttemptId {attempt_id}: message {message.id} has been "
                "modified since that receive (deleted, its visibility changed or received "
                "again); the attempt cannot be retried"
            )
    now = _now_ms()
    for n, (message, handle, _) in enumerate(attempt.received):
        message.change_visibility(visibility_timeout)
        index.visibility_changed(message, now)
        attempt.received[n] = (message, handle, message.visible_at)
    return [message for message, _, _ in attempt.received]


def _remember(queue: Any, attempt_id: str, received: list[Any]) -> None:
    """Remember what the attempt returned (hold the queue's lock)."""
    attempts = _attempts(queue)
    attempts.pop(attempt_id, None)  # re-inserted last: the dict stays oldest first
    attempts[attempt_id] = _Attempt(
        _now_ms(), [(m, m.receipt_handle, m.visible_at) for m in received]
    )


def _filtered_copies(messages: list[Any], names: list[str]) -> list[Any]:
    copies = []
    for message in messages:
        # A copy, as moto returns: filtering attributes must not change the message.
        copy = deepcopy(message)
        sqs_models._filter_message_attributes(copy, names)
        copies.append(copy)
    return copies


def _response_receive_message(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQSResponse.receive_message, with the request's ReceiveRequestAttemptId made known
    to the backend's receive (moto's reads no such parameter)."""

    def receive_message(self: Any) -> Any:
        token = _attempt_id.set(self._get_param("ReceiveRequestAttemptId") or None)
        try:
            return original(self)
        finally:
            _attempt_id.reset(token)

    return receive_message


def _receive_message(
    backend: Any,
    queue_name: str,
    count: int,
    wait_seconds_timeout: int,
    visibility_timeout: int,
    message_attribute_names: list[str] | None = None,
) -> list[Any]:
    """SQSBackend.receive_message: up to ``count`` messages, waiting up to
    ``wait_seconds_timeout`` seconds for the first; copies, attributes filtered."""
    names = message_attribute_names or []
    queue = backend.get_queue(queue_name)
    lock = queue._messages_lock
    attempt_id = _attempt_id.get() if queue.fifo_queue else None
    if attempt_id is not None:
        with lock:
            repeated = _repeat(queue, attempt_id, visibility_timeout)
            if repeated is not None:
                return _filtered_copies(repeated, names)
    deadline = _now_s() + wait_seconds_timeout
    while True:
        with lock:
            index = index_of(queue)
            redrive = queue.redrive_policy if queue.dead_letter_queue is not None else None
            received, dead = index.take(
                count,
                visibility_timeout,
                redrive["maxReceiveCount"] if redrive else None,
                queue.message_retention_period * 1000,
                _now_ms(),
            )
            copies = _filtered_copies(received, names)
            if attempt_id is not None and (copies or not wait_seconds_timeout):
                _remember(queue, attempt_id, received)
        for message in dead:
            _add(queue.dead_letter_queue, message, deduplicate=False)
        if copies or not wait_seconds_timeout:
            return copies
        with lock:
            now = _now_ms()
            index = index_of(queue)
            index.refresh(now)
            if index.deliverable():
                continue
            remaining = deadline - _now_s()
            if remaining <= 0:
                if attempt_id is not None:
                    _remember(queue, attempt_id, [])
                return []
            # No periodic re-check: whatever makes a message deliverable either notifies
            # the lock (add, visibility change, delete, purge) or is the passing of time,
            # bounded here by the next visibility timeout or delay to end.
            timeout = remaining
            change = index.next_change()
            if change is not None:
                timeout = min(timeout, max((change - now) / 1000, 0.001))
            lock.wait(timeout)


def _wait_for_messages(queue: Any, timeout: float) -> None:
    """Queue.wait_for_messages: until a message is deliverable, or ``timeout`` seconds."""
    with queue._messages_lock:
        index = index_of(queue)
        index.refresh(_now_ms())
        if not index.deliverable():
            queue._messages_lock.wait(timeout)


# --- deleting and hiding ------------------------------------------------------------------


def _delete_message(queue: Any, receipt_handle: str) -> None:
    """Queue.delete_message: any handle the message ever had deletes it; deleting twice
    is fine; a handle never seen is ReceiptHandleIsInvalid (all as moto)."""
    if receipt_handle in queue.deleted_messages:
        return
    with queue._messages_lock:
        index = index_of(queue)
        message = index.by_handle.get(receipt_handle)
        if message is None:
            raise ReceiptHandleIsInvalid()
        index.remove(message)
        queue.deleted_messages.update(message.all_receipt_handles)
        if index.deliverable():  # e.g. it freed its FIFO group: wake the long polls
            queue._messages_lock.notify_all()


def _change_message_visibility(
    backend: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
) -> None:
    """SQSBackend.change_message_visibility, with moto's checks and errors."""
    queue = backend.get_queue(queue_name)
    with queue._messages_lock:
        index = index_of(queue)
        message = index.by_handle.get(receipt_handle)
        if message is None:
            raise ReceiptHandleIsInvalid
        given = _now_ms() + int(visibility_timeout) * 1000
        if given - message.sent_timestamp > MAX_VISIBILITY_MS:
            raise InvalidParameterValue(
                f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. "
                "Reason: Total VisibilityTimeout for the message is beyond the limit "
                "[43200 seconds]"
            )
        message.change_visibility(visibility_timeout)
        if index.visibility_changed(message, _now_ms()):
            queue._messages_lock.notify_all()


# --- attribute names ----------------------------------------------------------------------

# Queue.attributes converts the same few dozen names over and over; a client may name
# others (SetQueueAttributes), so the memory is bounded.
NAME_CACHE_SIZE = 1024


# --- applying ---------------------------------------------------------------------------------


def apply(patches: Patches) -> None:
    convert = sqs_models.camelcase_to_underscores  # type: ignore[attr-defined]
    remembered = functools.lru_cache(maxsize=NAME_CACHE_SIZE)(convert)
    patches.replace(sqs_models, "camelcase_to_underscores", remembered)
    queue_class, backend_class = sqs_models.Queue, sqs_models.SQSBackend
    patches.add(queue_class, "_messages", property(_get_messages, _set_messages))
    patches.replace(queue_class, "messages", property(_visible_messages))
    patches.replace(queue_class, "approximate_number_of_messages", _count("ready"))
    patches.replace(queue_class, "approximate_number_of_messages_not_visible", _count("in_flight"))
    patches.replace(queue_class, "approximate_number_of_messages_delayed", _count("delayed"))
    patches.replace(queue_class, "add_message", _add_message)
    patches.replace(queue_class, "delete_message", _delete_message)
    patches.replace(queue_class, "wait_for_messages", _wait_for_messages)
    patches.replace(backend_class, "receive_message", _receive_message)
    patches.replace(backend_class, "change_message_visibility", _change_message_visibility)
    patches.replace(
        SQSResponse, "receive_message", _response_receive_message(SQSResponse.receive_message)
    )


def forget() -> None:
    """Hand every indexed queue back to moto's own form (after the patches are reverted)."""
    for queue in list(_indexed):
        lock = queue.__dict__.get("_messages_lock")
        if lock is None:
            continue
        with lock:
            queue.__dict__.pop(_ATTEMPTS, None)
            index: QueueIndex | None = queue.__dict__.pop(_INDEX, None)
            if index is None:
                continue
            queue.__dict__["_messages"] = index.messages()
            queue.__dict__["_pending_messages"] = {
                m for m, slot in index.slots.items() if slot.state == IN_FLIGHT
            }
    _indexed.clear()
