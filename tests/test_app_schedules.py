"""Recurring schedules through the API (POST/GET/DELETE /schedules, pause, resume) on a
keyed stage, against moto's DynamoDB and EventBridge Scheduler, and the firing function:
each fire time submits one job, whatever is delivered."""

# ruff: noqa: F811 (the fixtures imported from tests.test_app_clients)
from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import connections, schedule_service
from chalicelib.clients import OPERATOR
from chalicelib.config import get_settings
from chalicelib.errors import StoreUnavailable
from chalicelib.scheduler import aws_name, target_input
from tests.test_app import JSON
from tests.test_app_clients import Call, Keys, app_module, keys  # noqa: F401


@pytest.fixture
def as_(client: Client, keys: Keys) -> Call:
    """``as_(holder, method, path, body=None)``: a request with ``holder``'s key."""

    def call(holder: str, method: str, path: str, body: Any = None) -> Any:
        keys.use(holder)
        raw = b"" if body is None else json.dumps(body).encode()
        return client.http.request(method, path, headers=JSON, body=raw)

    return call


NIGHTLY = {
    "name": "nightly",
    "kind": "heavyLoad",
    "input": {"n": 5},
    "schedule": "cron(0 2 * * ? *)",
    "timezone": "Europe/Paris",
}


def aws_schedule(client: str, name: str) -> dict[str, Any]:
    return boto3.client("scheduler").get_schedule(
        Name=aws_name(client, name), GroupName=get_settings().schedule_group
    )


def fire(app: Any, client: str, name: str, at: str) -> Any:
    return app.fire_schedule(json.loads(target_input(client, name, at)), None)


def jobs_of(as_: Call, holder: str) -> list[dict[str, Any]]:
    return list(as_(holder, "GET", "/jobs").json_body["jobs"])


def test_create_show_list_and_the_aws_schedule(as_: Call) -> None:
    created = as_("alice", "POST", "/schedules", NIGHTLY)
    assert created.status_code == 201, created.json_body
    body = created.json_body
    assert body["name"] == "nightly" and body["client"] == "alice"
    assert body["state"] == "enabled" and body["schedule"] == "cron(0 2 * * ? *)"
    assert body["next_fire_at"].endswith(":00:00.000Z")
    assert as_("alice", "GET", "/schedules/nightly").json_body == body
    assert as_("alice", "GET", "/schedules").json_body == {"schedules": [body]}

    remote = aws_schedule("alice", "nightly")
    assert remote["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert remote["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert remote["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert remote["State"] == "ENABLED"
    target = remote["Target"]
    assert json.loads(target["Input"]) == {
        "client": "alice",
        "schedule": "nightly",
        "scheduled_time": "<aws.scheduler.scheduled-time>",
    }
    assert target["Arn"].endswith("-fire_schedule") and "DeadLetterConfig" in target


def test_isolation_and_the_operator(as_: Call) -> None:
    as_("alice", "POST", "/schedules", NIGHTLY)
    # The same name is bob's own: names are per client.
    assert as_("bob", "POST", "/schedules", NIGHTLY).status_code == 201
    assert as_("bob", "POST", "/schedules", {**NIGHTLY, "name": "b"}).status_code == 201
    # Another client's schedule is 404 exactly like an unknown one.
    unknown = as_("alice", "GET", "/schedules/b")
    assert unknown.status_code == 404
    assert unknown.json_body == {
        "error": {"code": "schedule_not_found", "message": "No schedule named 'b'."}
    }
    assert [s["name"] for s in as_("alice", "GET", "/schedules").json_body["schedules"]] == [
        "nightly"
    ]
    # A client's ?client= is ignored; the operator's chooses.
    assert len(as_("alice", "GET", "/schedules?client=bob").json_body["schedules"]) == 1
    everyone = as_(OPERATOR, "GET", "/schedules").json_body["schedules"]
    assert [(s["client"], s["name"]) for s in everyone] == [
        ("alice", "nightly"),
        ("bob", "b"),
        ("bob", "nightly"),
    ]
    bobs = as_(OPERATOR, "GET", "/schedules?client=bob").json_body["schedules"]
    assert [s["name"] for s in bobs] == ["b", "nightly"]
    assert as_(OPERATOR, "GET", "/schedules/b?client=bob").status_code == 200
    assert as_(OPERATOR, "GET", "/schedules/b").status_code == 404


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"extra": 1}, "unknown_field"),
        ({"name": "no spaces"}, "invalid_name"),
        ({"name": "x" * 65}, "invalid_name"),
        ({"kind": "nope"}, "unknown_kind"),
        ({"input": {"n": -1}}, "invalid_input"),
        ({"input": {"m": 1}}, "invalid_input"),
        # An integer literal too long to parse is refused as too large, wherever it is.
        ({"input": {"n": 10**40}}, "invalid_input"),
        ({"kind": "nope", "input": {"deep": [{"x": 10**40}]}}, "unknown_kind"),
        ({"schedule": "cron(0 2 L * ? *)"}, "invalid_schedule"),
        ({"schedule": "rate(1 minutes)"}, "invalid_schedule"),
        ({"timezone": "Mars/Olympus"}, "invalid_timezone"),
    ],
)
def test_strict_validation(as_: Call, change: dict[str, Any], code: str) -> None:
    refused = as_("alice", "POST", "/schedules", {**NIGHTLY, **change})
    assert refused.status_code == 400
    assert refused.json_body["error"]["code"] == code


def test_a_repeated_create_is_safe_and_another_definition_conflicts(as_: Call) -> None:
    assert as_("alice", "POST", "/schedules", NIGHTLY).status_code == 201
    again = as_("alice", "POST", "/schedules", NIGHTLY)
    assert again.status_code == 200
    other = as_("alice", "POST", "/schedules", {**NIGHTLY, "schedule": "rate(1 hour)"})
    assert other.status_code == 409
    assert other.json_body["error"]["code"] == "schedule_exists"


def test_the_per_client_cap(as_: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_MAX_SCHEDULES_PER_CLIENT", "2")
    connections.reset()
    for name in ("a", "b"):
        assert as_("alice", "POST", "/schedules", {**NIGHTLY, "name": name}).status_code == 201
    over = as_("alice", "POST", "/schedules", {**NIGHTLY, "name": "c"})
    assert over.status_code == 409
    assert over.json_body["error"]["code"] == "too_many_schedules"
    assert as_("bob", "POST", "/schedules", {**NIGHTLY, "name": "c"}).status_code == 201
    as_("alice", "DELETE", "/schedules/a")
    assert as_("alice", "POST", "/schedules", {**NIGHTLY, "name": "c"}).status_code == 201


def test_a_failed_scheduler_call_leaves_no_record(
    as_: Call,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unavailable(self: Any, schedule: Any) -> None:
        raise StoreUnavailable("EventBridge Scheduler failed")

    with monkeypatch.context() as patched:
        patched.setattr(type(connections.scheduler()), "put", unavailable)
        assert as_("alice", "POST", "/schedules", NIGHTLY).status_code == 503
    assert as_("alice", "GET", "/schedules/nightly").status_code == 404


def test_delete_removes_both_and_is_404_after(as_: Call) -> None:
    as_("alice", "POST", "/schedules", NIGHTLY)
    assert as_("bob", "DELETE", "/schedules/nightly").status_code == 404
    assert as_("alice", "DELETE", "/schedules/nightly").status_code == 204
    with pytest.raises(boto3.client("scheduler").exceptions.ResourceNotFoundException):
        aws_schedule("alice", "nightly")
    assert as_("alice", "GET", "/schedules/nightly").status_code == 404
    assert as_("alice", "DELETE", "/schedules/nightly").status_code == 404


def test_pause_and_resume(as_: Call, app_module: Any) -> None:
    as_("alice", "POST", "/schedules", {**NIGHTLY, "schedule": "rate(1 hour)"})
    paused = as_("alice", "POST", "/schedules/nightly/pause")
    assert paused.status_code == 200
    assert paused.json_body["state"] == "paused" and paused.json_body["next_fire_at"] is None
    assert aws_schedule("alice", "nightly")["State"] == "DISABLED"
    # A fire EventBridge Scheduler still sends while paused makes no job.
    assert fire(app_module, "alice", "nightly", "2030-01-01T00:00:00Z") == {"job_id": None}
    resumed = as_("alice", "POST", "/schedules/nightly/resume")
    assert resumed.json_body["state"] == "enabled" and resumed.json_body["next_fire_at"]
    assert aws_schedule("alice", "nightly")["State"] == "ENABLED"
    # A fire missed while paused, delivered late, is skipped too.
    assert fire(app_module, "alice", "nightly", "2020-01-01T00:00:00Z") == {"job_id": None}
    assert jobs_of(as_, "alice") == []


def test_each_fire_time_submits_exactly_one_job(as_: Call, app_module: Any) -> None:
    as_("alice", "POST", "/schedules", NIGHTLY)
    first = fire(app_module, "alice", "nightly", "2030-01-01T01:00:00Z")
    again = fire(app_module, "alice", "nightly", "2030-01-01T01:00:00Z")  # delivered twice
    other = fire(app_module, "alice", "nightly", "2030-01-02T01:00:00Z")
    assert first["job_id"] and first == again and other["job_id"] != first["job_id"]
    jobs = jobs_of(as_, "alice")
    assert len(jobs) == 2
    assert {(job["client"], job["schedule"], job["kind"]) for job in jobs} == {
        ("alice", "nightly", "heavyLoad")
    }
    assert jobs_of(as_, "bob") == []


def test_a_fire_that_failed_and_is_retried_submits_once(
    as_: Call,
    app_module: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_("alice", "POST", "/schedules", NIGHTLY)
    real = schedule_service.submit_job

    def then_fail(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # the job is made, then the function fails
        raise StoreUnavailable("the function failed after submitting")

    with monkeypatch.context() as patched, pytest.raises(StoreUnavailable):
        patched.setattr(schedule_service, "submit_job", then_fail)
        fire(app_module, "alice", "nightly", "2030-01-01T01:00:00Z")
    retried = fire(app_module, "alice", "nightly", "2030-01-01T01:00:00Z")
    jobs = jobs_of(as_, "alice")
    assert [job["job_id"] for job in jobs] == [retried["job_id"]]


def test_a_fire_over_quota_makes_no_job_and_says_why(
    as_: Call,
    app_module: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBS_MAX_ACTIVE_PER_CLIENT", "1")
    connections.reset()
    as_("alice", "POST", "/schedules", NIGHTLY)
    assert fire(app_module, "alice", "nightly", "2030-01-01T01:00:00Z")["job_id"]
    assert fire(app_module, "alice", "nightly", "2030-01-02T01:00:00Z") == {"job_id": None}
    assert len(jobs_of(as_, "alice")) == 1
    error = as_("alice", "GET", "/schedules/nightly").json_body["last_error"]
    assert error.startswith("2030-01-02T01:00:00+00:00: Client 'alice' has 1 job(s)")


def test_a_fire_of_a_deleted_schedule_makes_no_job(as_: Call, app_module: Any) -> None:
    as_("alice", "POST", "/schedules", NIGHTLY)
    as_("alice", "DELETE", "/schedules/nightly")
    assert fire(app_module, "alice", "nightly", "2030-01-01T01:00:00Z") == {"job_id": None}
    assert jobs_of(as_, "alice") == []


def test_the_documented_schedule_is_the_representation(as_: Call) -> None:
    from chalicelib.openapi import document

    schema = document(get_settings())["components"]["schemas"]["Schedule"]
    body = as_("alice", "POST", "/schedules", NIGHTLY).json_body
    assert set(body) == set(schema["required"]) == set(schema["properties"])
