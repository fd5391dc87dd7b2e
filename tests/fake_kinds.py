"""Kinds for tests: a registered kind's declaration with another function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib.jobs import DEFAULT_KIND
from chalicelib.kinds import KINDS, Context, Kind


def kind_running(run: Callable[[Any, Context], Any], like: str = DEFAULT_KIND) -> Kind[Any, Any]:
    """The declaration of kind ``like`` (its input, result and estimate), running ``run``."""
    return replace(KINDS[like], run=run)
