"""The OpenAPI document stays true to the app: same routes, same job fields."""

from __future__ import annotations

from typing import Any

from chalice.test import Client

from chalicelib.config import Settings
from chalicelib.jobs import Job, utc_now
from chalicelib.openapi import document


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
    doc = document(Settings.from_mapping({"JOBS_TABLE_NAME": "t", "JOBS_QUEUE_NAME": "q"}))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes


def test_job_schema_is_the_job_representation() -> None:
    doc = document(Settings.from_mapping({"JOBS_TABLE_NAME": "t", "JOBS_QUEUE_NAME": "q"}))
    job = Job.new(n=1, now=utc_now()).to_api()
    schema = doc["components"]["schemas"]["Job"]
    assert set(schema["properties"]) == set(job) == set(schema["required"])


def test_cap_on_n_is_the_stages_setting() -> None:
    settings = Settings.from_mapping(
        {"JOBS_TABLE_NAME": "t", "JOBS_QUEUE_NAME": "q", "JOBS_MAX_N": "99", "JOBS_DEFAULT_N": "9"}
    )
    body = document(settings)["paths"]["/heavy"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["n"]["maximum"] == 99
