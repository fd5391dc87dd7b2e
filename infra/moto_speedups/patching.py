"""Replacing attributes of classes, and putting them back exactly."""

from __future__ import annotations

from typing import Any

_ABSENT = object()


class Patches:
    """Attributes replaced on classes, in order, with what each one was before."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def replace(self, owner: Any, name: str, new: Any) -> Any:
        """Set ``owner.name = new``; return the attribute it replaces (for delegating).

        Raises ``AttributeError`` if ``owner`` has no such attribute: a patch written for
        an attribute that a new release renamed must fail, not add a dead one.
        """
        original = getattr(owner, name)
        self._set(owner, name, new)
        return original

    def add(self, owner: Any, name: str, new: Any) -> None:
        """Give ``owner`` a class attribute it does not have (e.g. a property standing in
        for an instance attribute). Raises ``AttributeError`` if it already has one."""
        if hasattr(owner, name):
            raise AttributeError(f"{owner.__name__}.{name} already exists")
        self._set(owner, name, new)

    def _set(self, owner: Any, name: str, new: Any) -> None:
        self._saved.append((owner, name, owner.__dict__.get(name, _ABSENT)))
        setattr(owner, name, new)

    def revert(self) -> None:
        """Undo every replacement, newest first; an inherited attribute is inherited again."""
        for owner, name, before in reversed(self._saved):
            if before is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, before)
        self._saved.clear()
