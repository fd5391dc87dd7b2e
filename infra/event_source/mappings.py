"""Enabling and disabling an event source mapping locally: UpdateEventSourceMapping's
``Enabled``, kept per stage and function in small files the runner re-reads.

On AWS, a disabled SQS mapping stops polling: messages wait in the queue, none is
received and none is lost, and an invocation already running finishes (Lambda Developer
Guide, "Using Lambda with Amazon SQS": UpdateEventSourceMapping, and the mapping's State
going Disabling -> Disabled). Locally the same happens per function:

- ``<project>/.chalice/event-sources/<stage>/<function>.json`` holds ``{"enabled": ...}``,
  written by whoever changes it (``set_enabled``, atomically); no file means enabled;
- the runner reads it before every receive; while disabled it receives nothing, and once
  no receive of the function is in flight it reports the state ``Disabled`` (or
  ``Enabled`` again) in ``<function>.state`` with its process id, so the caller can
  wait until the change took effect (``wait_for_state``), as AWS's State field tells.

It knows nothing about any particular app: any function served by the runner can be
disabled this way (``<function>`` is Chalice's name for it, the handler's name).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

STATE_DIR = Path(".chalice", "event-sources")
ENABLED, DISABLED = "Enabled", "Disabled"


def state_dir(project_dir: Path, stage: str) -> Path:
    return Path(project_dir) / STATE_DIR / stage


def set_enabled(project_dir: Path, stage: str, function: str, enabled: bool) -> Path:
    """Enable or disable ``function``'s event source; the file written."""
    path = state_dir(project_dir, stage) / f"{function}.json"
    _write_atomically(
        path, {"enabled": enabled, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    )
    return path


def is_enabled(project_dir: Path, stage: str, function: str) -> bool:
    """Whether ``function``'s event source is enabled (yes unless a file says otherwise;
    an unreadable file is read as enabled, AWS's default for a new mapping)."""
    try:
        text = (state_dir(project_dir, stage) / f"{function}.json").read_text()
        return json.loads(text).get("enabled", True) is not False
    except (OSError, ValueError, AttributeError):
        return True


def report_state(project_dir: Path, stage: str, function: str, state: str) -> None:
    """The runner's side: ``state`` (Enabled or Disabled) has taken effect."""
    _write_atomically(
        state_dir(project_dir, stage) / f"{function}.state",
        {"state": state, "pid": os.getpid()},
    )


def reported_state(project_dir: Path, stage: str, function: str) -> str | None:
    """The state a live runner reported for ``function``; None if no runner that is
    still running reported one."""
    try:
        text = (state_dir(project_dir, stage) / f"{function}.state").read_text()
        report = json.loads(text)
        os.kill(int(report["pid"]), 0)  # signal 0: is that process alive?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    state = report.get("state")
    return state if isinstance(state, str) else None


def wait_for_state(
    project_dir: Path,
    stage: str,
    function: str,
    state: str,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool | None:
    """Wait until a running runner reports ``state`` for ``function``: True when it did,
    False if it did not within ``timeout`` seconds, None if no runner is running (the
    next one starts in the state the file says)."""
    deadline = clock() + timeout
    while True:
        reported = reported_state(project_dir, stage, function)
        if reported is None:
            return None
        if reported == state:
            return True
        if clock() >= deadline:
            return False
        sleep(0.1)


def _write_atomically(path: Path, document: dict[str, object]) -> None:
    # A reader never sees half a file: write a sibling, then rename over.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document) + "\n")
    temporary.replace(path)


class MappingGate:
    """The runner's side of one function's mapping state, shared by its pollers.

    Each poller calls ``wait_until_enabled`` before every receive: it returns at once
    while the mapping is enabled; while disabled, it re-reads the file every
    ``recheck_seconds`` and returns when enabled again (True) or on ``stop`` (False).
    ``Disabled`` is reported once every poller of the function is waiting here, that is,
    when no receive of the function is in flight any more.
    """

    def __init__(
        self,
        project_dir: Path,
        stage: str,
        function: str,
        pollers: int = 1,
        recheck_seconds: float = 0.5,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._project_dir, self._stage, self._function = Path(project_dir), stage, function
        self._pollers = pollers
        self._recheck = recheck_seconds
        self._log = log or (lambda line: None)
        self._lock = threading.Lock()
        self._waiting = 0
        self._reported: str | None = None

    def wait_until_enabled(self, stop: threading.Event, burst: bool = False) -> bool:
        if self._enabled():
            return True
        with self._lock:
            self._waiting += 1
            if self._waiting == self._pollers:
                self._report(DISABLED, "disabled: receiving nothing until it is enabled")
        try:
            if burst:  # nothing to drain that it may receive
                return False
            while not stop.wait(self._recheck):
                if self._enabled():
                    return True
            return False
        finally:
            with self._lock:
                self._waiting -= 1

    def _enabled(self) -> bool:
        enabled = is_enabled(self._project_dir, self._stage, self._function)
        if enabled and self._reported != ENABLED:
            with self._lock:
                self._report(ENABLED, "enabled")
        return enabled

    def _report(self, state: str, line: str) -> None:
        # Called with the lock held.
        if self._reported == state:
            return
        report_state(self._project_dir, self._stage, self._function, state)
        if self._reported is not None or state == DISABLED:
            self._log(f"{self._function}: event source {line}")
        self._reported = state
