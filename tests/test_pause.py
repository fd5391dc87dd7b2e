"""GET /jobs reports whether the worker is paused: the control item ``control#worker``
that `make pause`/`make resume` write (tests/infra: the rehearsal, tests/e2e: the local
stack), as documented in the OpenAPI document's JobList."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalice.test import Client

from chalicelib import connections
from chalicelib.config import Settings
from chalicelib.jobs import WORKER_ITEM, Job, iso_utc, utc_now
from chalicelib.openapi import document
from chalicelib.store import WorkerPause
from tests.chalicelib.test_config import REQUIRED


def listed(client: Client, query: str = "") -> dict[str, Any]:
    response = client.http.get(f"/jobs{query}")
    assert response.status_code == 200
    return dict(response.json_body)


def test_the_listing_says_whether_the_worker_is_paused(client: Client) -> None:
    table = connections.job_table()
    assert listed(client)["paused"] is False  # never paused: nothing recorded

    moment = utc_now() - timedelta(minutes=5)
    table.record_worker_paused(True, moment)

    assert table.worker_paused() == WorkerPause(paused=True, paused_at=iso_utc(moment))
    assert listed(client)["paused"] is True
    assert listed(client, "?status=queued&limit=1")["paused"] is True  # on every listing

    table.record_worker_paused(False, utc_now())

    assert table.worker_paused() == WorkerPause(paused=False)  # paused_at goes with it
    assert listed(client)["paused"] is False


def test_the_control_item_is_never_listed(client: Client, make_job: Any) -> None:
    job: Job = make_job(n=10)
    connections.job_table().record_worker_paused(True, utc_now())
    assert WORKER_ITEM.startswith("control#")
    assert [j["job_id"] for j in listed(client)["jobs"]] == [job.job_id]


def test_the_listing_schema_documents_paused(client: Client) -> None:
    schema = document(Settings.from_mapping(REQUIRED))["components"]["schemas"]["JobList"]
    body = listed(client)
    assert set(schema["properties"]) == set(body) == set(schema["required"])
    assert schema["properties"]["paused"]["type"] == "boolean"
