"""The OpenAPI document stays true to the app: same routes, same job fields."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from chalice.test import Client

from chalicelib.config import Auth, Settings
from chalicelib.jobs import Job, utc_now
from chalicelib.kinds import KINDS
from chalicelib.openapi import KEYED_OPERATIONS, document
from chalicelib.requests import BATCH_ITEM_FIELDS, MAX_BATCH_JOBS
from tests.chalicelib.test_config import REQUIRED


def test_document_is_served(client: Client) -> None:
    response = client.http.get("/openapi.json")
    assert response.status_code == 200
    assert response.json_body["openapi"].startswith("3.")


def test_paths_and_methods_are_exactly_the_apps_routes(app_module: Any) -> None:
    routes = {
        (path, method.lower())
        for path, methods in app_module.app.routes.items()
        for method in methods
    }
    doc = document(Settings.from_mapping(REQUIRED))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes


def test_job_schema_is_the_job_representation() -> None:
    doc = document(Settings.from_mapping(REQUIRED))
    job = Job.new(n=1, now=utc_now()).to_api()
    schema = doc["components"]["schemas"]["Job"]
    assert set(job) == set(schema["required"])
    retried = Job.new(n=1, now=utc_now(), retry_of=str(uuid.uuid4())).to_api()
    assert set(schema["properties"]) == set(retried) == set(job) | {"retry_of"}


def test_cap_on_n_is_the_stages_setting() -> None:
    settings = Settings.from_mapping({**REQUIRED, "JOBS_MAX_N": "99", "JOBS_DEFAULT_N": "9"})
    body = document(settings)["paths"]["/heavy"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["n"]["maximum"] == 99


def test_a_stage_that_requires_a_key_documents_where(app_module: Any) -> None:
    settings = Settings.from_mapping(REQUIRED)
    keyed = document(settings, auth=Auth.API_KEY)
    secured = {
        (path, method)
        for path, ops in keyed["paths"].items()
        for method, op in ops.items()
        if op.get("security") == [{"api_key": []}]
    }
    routes_with_key = {
        (path, method.lower())
        for path, methods in app_module.app.routes.items()
        for method, entry in methods.items()
        if entry.api_key_required
    }
    assert secured == set(KEYED_OPERATIONS)
    # The local stage requires none; the app's decorators and the document agree on which.
    assert routes_with_key == set()
    assert "securitySchemes" not in document(settings)["components"]


def test_app_guards_exactly_the_documented_operations(monkeypatch: Any) -> None:
    import importlib
    import sys

    monkeypatch.setenv("JOBS_REQUIRE_API_KEY", "true")
    monkeypatch.setenv("JOBS_QUEUE_NAME", "q")
    monkeypatch.setenv("JOBS_DEAD_LETTER_QUEUE_NAME", "dlq")
    monkeypatch.setenv("JOBS_DELAY_QUEUE_NAME", "delay")
    monkeypatch.setenv("JOBS_WEBHOOK_QUEUE_NAME", "webhooks")
    monkeypatch.delitem(sys.modules, "app", raising=False)
    keyed_app = importlib.import_module("app")
    guarded = {
        (path, method.lower())
        for path, methods in keyed_app.app.routes.items()
        for method, entry in methods.items()
        if entry.api_key_required
    }
    assert guarded == set(KEYED_OPERATIONS)


def test_the_kind_filter_lists_the_registered_kinds() -> None:
    from chalicelib.kinds import KINDS
    from chalicelib.service import LISTING_PARAMETERS

    parameters = document(Settings.from_mapping(REQUIRED))["paths"]["/jobs"]["get"]["parameters"]
    (kind,) = [p for p in parameters if p["name"] == "kind"]
    assert kind["in"] == "query" and kind["schema"]["enum"] == sorted(KINDS)
    assert {p["name"] for p in parameters} == set(LISTING_PARAMETERS)


def test_the_cursor_the_document_allows_is_what_the_api_accepts(
    client: Client, make_job: Callable[..., Job]
) -> None:
    """A cursor is a value the API returned as `next`, never empty: the document says so
    (minLength 1), and the API refuses an empty one (400) rather than reading it as none."""
    doc = client.http.get("/openapi.json").json_body
    (cursor,) = [p for p in doc["paths"]["/jobs"]["get"]["parameters"] if p["name"] == "cursor"]
    assert cursor["schema"] == {"type": "string", "minLength": 1}

    empty = client.http.get("/jobs?limit=1&cursor=")
    assert empty.status_code == 400
    assert empty.json_body["error"]["code"] == "invalid_cursor"

    for _ in range(2):
        make_job()
    next_cursor = client.http.get("/jobs?limit=1").json_body["next"]
    assert len(next_cursor) >= cursor["schema"]["minLength"]
    assert client.http.get(f"/jobs?limit=1&cursor={next_cursor}").status_code == 200


def test_post_jobs_has_one_schema_per_kind_discriminated_by_kind() -> None:
    from chalicelib.kinds import KINDS

    settings = Settings.from_mapping({**REQUIRED, "JOBS_MAX_N": "99", "JOBS_DEFAULT_N": "9"})
    doc = document(settings)
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/JobRequest"}
    request = schemas["JobRequest"]
    assert request["discriminator"]["propertyName"] == "kind"
    assert set(request["discriminator"]["mapping"]) == set(KINDS)
    assert len(request["oneOf"]) == len(KINDS)
    for name, kind in KINDS.items():
        variant = schemas[request["discriminator"]["mapping"][name].rsplit("/", 1)[-1]]
        assert variant["properties"]["kind"] == {"type": "string", "enum": [name]}
        declared = kind.input_schema(settings)
        assert variant["properties"]["input"]["properties"] == declared["properties"]
        assert ("input" in variant["required"]) == bool(declared["required"])
    assert schemas["heavyLoadRequest"]["properties"]["input"]["properties"]["n"]["maximum"] == 99
    assert "countPrimes" in schemas["Kind"]["properties"]["kind"]["enum"]


def test_the_kinds_and_retry_operations_are_documented() -> None:
    paths = document(Settings.from_mapping(REQUIRED))["paths"]
    assert paths["/kinds"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KindList"
    }
    retry = paths["/jobs/{job_id}/retry"]["post"]["responses"]
    assert {"202", "404", "409"} <= set(retry)
    assert set(retry["202"]["headers"]) == {"Location", "Retry-After"}


def test_the_document_declares_clients_isolation_and_quotas() -> None:
    settings = Settings.from_mapping(REQUIRED)
    paths = document(settings)["paths"]
    assert "client" in document(settings)["components"]["schemas"]["Job"]["required"]
    (client,) = [p for p in paths["/jobs"]["get"]["parameters"] if p["name"] == "client"]
    assert client["in"] == "query" and "invalid_client" in client["description"]
    for path in ("/jobs/{job_id}", "/jobs/{job_id}/cancel", "/jobs/{job_id}/retry"):
        (operation,) = paths[path].values()
        assert "another client's" in operation["responses"]["404"]["description"]
    for path, method in (("/heavy", "post"), ("/jobs", "post"), ("/jobs/{job_id}/retry", "post")):
        quota = paths[path][method]["responses"]["429"]
        assert "quota_exceeded" in quota["description"]
        assert "Retry-After" in quota["headers"]

    keyed = document(settings, auth=Auth.API_KEY)["paths"]
    for path, method in KEYED_OPERATIONS:
        responses = keyed[path][method]["responses"]
        assert "unknown_key" in responses["403"]["description"]
        assert "429" in responses
    assert "quota_exceeded" in keyed["/jobs"]["post"]["responses"]["429"]["description"]


def test_the_batch_route_documents_its_items_limits_and_per_item_results() -> None:
    doc = document(Settings.from_mapping(REQUIRED))
    operation = doc["paths"]["/jobs/batch"]["post"]
    assert set(operation["responses"]) >= {"207", "400", "413"}
    schemas = doc["components"]["schemas"]
    jobs = schemas["BatchRequest"]["properties"]["jobs"]
    assert (jobs["minItems"], jobs["maxItems"]) == (1, MAX_BATCH_JOBS)
    # Each kind's item is its POST /jobs body plus when and an Idempotency-Key.
    for name in KINDS:
        item = schemas[f"{name}RequestBatchItem"]
        body = schemas[f"{name}Request"]
        assert set(item["properties"]) == set(body["properties"]) | set(BATCH_ITEM_FIELDS)
        assert item["additionalProperties"] is False
    assert set(BATCH_ITEM_FIELDS) >= {"kind", "input", "run_at", "idempotency_key"}
