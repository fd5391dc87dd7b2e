"""Speed-ups of moto's in-memory SQS and DynamoDB, and of its server, for the embedded
emulator.

moto answers many calls by walking every message of a queue or every item of a table
(its own comments say so), so the local stack slows down as a backlog grows: at 10,000
queued jobs a SendMessage, a ReceiveMessage or a 20-item index query costs hundreds of
times what it costs at an empty queue. These modules replace exactly those walks with
indexes maintained as the data changes, keeping moto's answers:

    sqs.py       per-queue index: messages by state (ready, in flight, delayed), by
                 receipt handle, FIFO message groups, and the deduplication window;
                 queue attribute names converted once, not at each of the five
                 reads a batch entry makes
    dynamodb.py  per-GSI sorted partitions, kept up to date on every write; transactions
                 that undo what they wrote instead of copying whole tables; an item's
                 size checked in one pass, not once per attribute
    server.py    what the server redid for every request or event though it never
                 changes: moto's own directory listed to route each request, and an
                 EventBridge target's input paths parsed (a new parser each) per event

``apply()`` patches moto's classes in the calling process; ``infra.emulator`` calls it in
its own process, before moto's server starts, so nothing else (chalicelib, the tests'
in-process ``mock_aws``) is affected. ``revert()`` restores moto as released (tests use it
to run the same assertions on both). Both are idempotent.

The patches depend on moto's internals, so they are pinned to one release:
``apply()`` raises ``UnsupportedMotoVersion`` on any other. Upgrading moto means reading
the functions named in each module's docstring again, then moving the pin.
"""

from __future__ import annotations

import logging
import threading

import moto

from infra.moto_speedups import dynamodb, server, sqs
from infra.moto_speedups.patching import Patches

PINNED_MOTO_VERSION = "5.2.5"

log = logging.getLogger("infra.moto_speedups")


class UnsupportedMotoVersion(RuntimeError):
    """The installed moto is not the release these speed-ups were written against."""


_lock = threading.Lock()
_patches: Patches | None = None


def check_version(version: str | None = None) -> None:
    """Raise ``UnsupportedMotoVersion`` unless ``version`` (default: moto's) is the pin."""
    found = moto.__version__ if version is None else version
    if found != PINNED_MOTO_VERSION:
        raise UnsupportedMotoVersion(
            f"infra.moto_speedups patches moto {PINNED_MOTO_VERSION}'s internals, but moto "
            f"{found} is installed. Re-read the patched functions (see the docstrings of "
            "infra/moto_speedups/sqs.py and dynamodb.py) against that release, then move "
            "PINNED_MOTO_VERSION; or run the emulator with --stock-moto."
        )


def apply() -> None:
    """Patch moto's SQS and DynamoDB models in this process (idempotent).

    Raises ``UnsupportedMotoVersion`` before changing anything if moto is not the pin.
    """
    global _patches
    check_version()
    with _lock:
        if _patches is not None:
            return
        patches = Patches()
        sqs.apply(patches)
        dynamodb.apply(patches)
        server.apply(patches)
        _patches = patches
    log.info(
        "moto %s speed-ups applied (SQS and DynamoDB indexes, request routing, event paths)",
        PINNED_MOTO_VERSION,
    )


def revert() -> None:
    """Restore moto as released (idempotent). State made while patched is handed back in
    moto's own form (queues get their message list back; table indexes are dropped)."""
    global _patches
    with _lock:
        if _patches is None:
            return
        _patches.revert()
        sqs.forget()
        dynamodb.forget()
        _patches = None


def applied() -> bool:
    """Whether the speed-ups are active in this process."""
    return _patches is not None
