"""Unit tests for infra.event_source.settings: a project's functions, read through Chalice."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.event_source import DEFAULT_CONCURRENCY, effective_concurrency, load_project
from tests.infra.event_source.toy import STAGE, toy_config, write_toy_project


@pytest.mark.parametrize(
    ("reserved", "maximum", "expected"),
    [(None, None, DEFAULT_CONCURRENCY), (1, None, 1), (0, None, 0), (5, 2, 2), (None, 3, 3)],
)
def test_effective_concurrency(reserved: int | None, maximum: int | None, expected: int) -> None:
    assert effective_concurrency(reserved, maximum) == expected


@pytest.fixture
def isolated_app_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test import a project's `app` module in-process and leave no trace of it."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(os, "environ", dict(os.environ))
    previous = sys.modules.pop("app", None)
    yield
    sys.modules.pop("app", None)
    if previous is not None:
        sys.modules["app"] = previous


@pytest.mark.usefixtures("isolated_app_import")
def test_load_project_reads_every_setting_through_chalice(tmp_path: Path) -> None:
    config = toy_config("queue-a", "queue-b", tmp_path / "records.jsonl")
    config["stages"][STAGE]["lambda_functions"]["handle_b"]["reserved_concurrency"] = 4
    project_dir = write_toy_project(tmp_path / "toy", config)

    project = load_project(str(project_dir), STAGE)

    by_name = {s.function.name: s for s in project.sqs_sources}
    a, b = by_name["handle_a"], by_name["handle_b"]
    assert (a.queue, a.batch_size, b.queue, b.batch_size) == ("queue-a", 1, "queue-b", 10)
    assert (a.function.handler, b.function.handler) == ("app.handle_a", "app.on_queue_b")
    assert a.function.function_name == "toy-dev-handle_a"
    assert (a.function.concurrency, b.function.concurrency) == (1, 4)
    assert (a.function.timeout_seconds, a.function.memory_size) == (1, 256)
    assert b.function.memory_size == 512
    assert a.function.environment["TOY_FUNCTION_VAR"] == "only-a"
    assert "TOY_FUNCTION_VAR" not in b.function.environment
    assert b.function.environment["TOY_STAGE_VAR"] == "from-stage"
    (tick,) = project.schedule_sources
    assert (tick.function.name, tick.function.handler) == ("tick", "app.tick")
    assert (tick.expression, tick.period_seconds) == ("rate(1 minute)", 60)
    assert project.not_emulated == []
