"""`jobs schedules list|show|create|delete|pause|resume` against a scripted API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli.conftest import Answer, FakeApi
from tests.cli.test_main import KINDS, jobs  # noqa: F401

# ruff: noqa: F811 - jobs is a fixture, redefined by name as pytest fixtures are


def schedule(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "nightly",
        "kind": "countPrimes",
        "input": {"below": 1000},
        "schedule": "cron(0 2 * * ? *)",
        "timezone": "Europe/Paris",
        "state": "enabled",
        "client": "alice",
        "created_at": "2026-12-01T00:00:00.000Z",
        "next_fire_at": "2026-12-07T01:00:00.000Z",
        **overrides,
    }


def test_list_is_a_table_and_passes_the_client(jobs: Any, fake_api: FakeApi) -> None:
    paused = schedule(name="hourly", schedule="rate(1 hour)", timezone="UTC", state="paused")
    fake_api.on("GET", "/schedules", (200, {"schedules": [schedule(), paused]}))
    result = jobs("schedules", "list", "--client", "alice")
    assert result.code == 0 and fake_api.requests[0].query == {"client": "alice"}
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "NAME", "CLIENT", "KIND", "SCHEDULE", "TIMEZONE", "STATE", "NEXT", "FIRE"
    ]  # fmt: skip
    assert lines[2].split() == [
        "nightly", "alice", "countPrimes", "cron(0", "2", "*", "*", "?", "*)", "Europe/Paris",
        "enabled", "2026-12-07", "01:00:00Z",
    ]  # fmt: skip
    # A paused schedule does not fire: no next fire time.
    assert lines[3].split()[-3:] == ["UTC", "paused", "-"]
    assert json.loads(jobs("schedules", "list", "--json").out) == {
        "schedules": [schedule(), paused]
    }


def test_an_empty_list_says_so(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/schedules", (200, {"schedules": []}))
    result = jobs("schedules", "list")
    assert (result.code, result.out) == (0, "no schedules\n")
    assert fake_api.requests[0].query == {}


def test_show_one_schedule(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/schedules/nightly", (200, schedule()))
    lines = jobs("schedules", "show", "nightly").out.splitlines()
    assert "expression  cron(0 2 * * ? *)" in lines and "timezone    Europe/Paris" in lines
    assert "next fire   2026-12-07 01:00:00Z" in lines and "input       below=1000" in lines
    assert json.loads(jobs("--json", "schedules", "show", "nightly").out) == schedule()


def test_create_reads_fields_as_submit_does_and_wraps_the_expression(
    jobs: Any, fake_api: FakeApi
) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    fake_api.on("POST", "/schedules", (201, schedule()))
    result = jobs(
        "schedules", "create", "nightly", "countPrimes", "below=1e3",
        "--cron", "0 2 * * ? *", "--timezone", "Europe/Paris",
    )  # fmt: skip
    assert (result.code, result.out) == (0, "enabled nightly: next fire 2026-12-07 01:00:00Z\n")
    assert fake_api.calls("POST", "/schedules")[0].json() == {
        "name": "nightly",
        "kind": "countPrimes",
        "input": {"below": 1000},
        "schedule": "cron(0 2 * * ? *)",
        "timezone": "Europe/Paris",
    }
    # A rate; an expression already written as EventBridge writes it is not wrapped twice;
    # no --timezone leaves it to the API (UTC).
    jobs("schedules", "create", "often", "demo", "--rate", "rate(15 minutes)")
    assert fake_api.calls("POST", "/schedules")[1].json() == {
        "name": "often",
        "kind": "demo",
        "input": {},
        "schedule": "rate(15 minutes)",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nightly", "countPrimes", "below=5"],
         "one of the arguments --cron --rate is required"),
        (["nightly", "countPrimes", "below=5", "--cron", "x", "--rate", "y"],
         "argument --rate: not allowed with argument --cron"),
        (["nightly", "countPrimes", "below=x", "--rate", "1 hour"],
         "below: not a whole number: 'x'"),
        (["nightly", "abc", "--rate", "1 hour"], "no kind 'abc'; kinds: countPrimes, demo"),
    ],
)  # fmt: skip
def test_create_usage_errors_are_one_line_and_create_nothing(
    jobs: Any, fake_api: FakeApi, argv: list[str], message: str
) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    result = jobs("schedules", "create", *argv)
    assert result.code == 2 and result.err.count("\n") == 1
    assert result.err.startswith(f"jobs: {message}")
    assert fake_api.calls("POST", "/schedules") == []


@pytest.mark.parametrize(("action", "state"), [("pause", "paused"), ("resume", "enabled")])
def test_pause_and_resume(jobs: Any, fake_api: FakeApi, action: str, state: str) -> None:
    fake_api.on("POST", f"/schedules/nightly/{action}", (200, schedule(state=state)))
    result = jobs("schedules", action, "nightly", "--client", "alice")
    assert result.code == 0
    assert result.out == (
        "paused nightly\n" if state == "paused"
        else "enabled nightly: next fire 2026-12-07 01:00:00Z\n"
    )  # fmt: skip
    assert fake_api.requests[0].query == {"client": "alice"}


def test_delete(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("DELETE", "/schedules/nightly", Answer(204, ""))
    result = jobs("schedules", "delete", "nightly")
    assert (result.code, result.out) == (0, "deleted nightly\n")
    assert [r.method for r in fake_api.requests] == ["DELETE"]


def test_a_name_is_one_path_segment(jobs: Any, fake_api: FakeApi) -> None:
    jobs("schedules", "show", "../jobs")
    assert fake_api.requests[0].path == "/schedules/..%2Fjobs"


def test_an_unknown_schedule_is_one_line_that_says_what_to_do(jobs: Any, fake_api: FakeApi) -> None:
    error = {"code": "schedule_not_found", "message": "No schedule named 'x'."}
    fake_api.on("DELETE", "/schedules/x", Answer(404, {"error": error}))
    result = jobs("schedules", "delete", "x", env={"JOBS_API_KEY": "k"})
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "jobs: No schedule named 'x'. (an API key finds its own client's schedules only)\n"
    )


@pytest.mark.parametrize(
    "argv",
    [["list"], ["show", "nightly"], ["delete", "nightly"], ["pause", "nightly"],
     ["create", "nightly", "demo", "--rate", "1 hour"]],
)  # fmt: skip
def test_every_schedules_request_sends_the_key(
    jobs: Any, fake_api: FakeApi, argv: list[str]
) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    fake_api.on("GET", "/schedules", (200, {"schedules": []}))
    fake_api.on("GET", "/schedules/nightly", (200, schedule()))
    fake_api.on("DELETE", "/schedules/nightly", Answer(204, ""))
    fake_api.on("POST", "/schedules/nightly/pause", (200, schedule(state="paused")))
    fake_api.on("POST", "/schedules", (201, schedule()))
    assert jobs("schedules", *argv, "--api-key", "k1").code == 0
    assert [r.headers.get("x-api-key") for r in fake_api.requests] == ["k1"] * len(
        fake_api.requests
    )
