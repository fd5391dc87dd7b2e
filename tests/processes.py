"""What Linux says about processes, read from /proc: for tests that check that what
they started has stopped."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, None if there is no such
    process. (The name is in parentheses and may itself hold spaces or parentheses.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def process_state(pid: int) -> str | None:
    """The state letter (R, S, Z...), None if there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def is_running(pid: int) -> bool:
    """True unless the process is gone or a zombie (exited, only its parent's wait left)."""
    return process_state(pid) not in (None, "Z")


def child_pids(parent: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields and int(fields[1]) == parent:
                children.add(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """Children, their children, and so on."""
    found = set()
    for child in child_pids(pid):
        found |= {child, *descendants(child)}
    return found
