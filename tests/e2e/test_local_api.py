"""infra.local_api over real HTTP: a method a known path does not declare is a JSON 405 in
the API's error shape with an Allow header; everything else is Chalice's answer as before.
(On AWS, API Gateway answers such a request 403 itself: see infra/local_api.py.)

On a keyed stage (``JOBS_REQUIRE_API_KEY=true make run``) the job routes are guarded as
API Gateway guards them, with the keys ``make api-key STAGE=local [CLIENT=]`` makes in
the stack's emulator; the open routes stay open; every event names the address and stage.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

from chalicelib.jobs import CONTROL_PREFIX
from tests.e2e.conftest import API_KEY_HEADER, Stack

# Methods no path of the API declares (QUERY and FOO have no handler in http.server at
# all: without infra.local_api they were a 501 HTML page), and three that some path does.
UNDECLARED_EVERYWHERE = ["TRACE", "PUT", "DELETE", "PATCH", "QUERY", "FOO"]
SOMETIMES_DECLARED = ["GET", "POST", "HEAD"]


def request(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection.request(method, path, body=body)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def assert_fits(value: Any, schema: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A small check of ``value`` against an object schema of the document: exactly the
    properties it declares, all required ones, strings where it says string."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
    if schema["type"] == "object":
        assert isinstance(value, dict) and set(value) == set(schema["properties"])
        assert set(schema["required"]) <= set(value)
        for name, item in value.items():
            assert_fits(item, schema["properties"][name], schemas)
    else:
        assert schema["type"] == "string" and isinstance(value, str) and value


def test_undeclared_methods_on_known_paths_are_a_json_405_with_allow(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(worker=False)
    address = urlparse(stack.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    document = json.loads(request(connection, "GET", "/openapi.json")[2])
    schemas = document["components"]["schemas"]
    checked = 0
    for template, operations in document["paths"].items():
        path = template.replace("{job_id}", str(uuid.uuid4()))
        declared = sorted(method.upper() for method in operations)
        for method in UNDECLARED_EVERYWHERE + SOMETIMES_DECLARED:
            if method in declared:
                continue
            # A body too: the next request on this keep-alive connection must still parse.
            status, headers, body = request(connection, method, path, b'{"n": 1}')
            assert (status, headers["Allow"]) == (405, ", ".join(declared)), (method, path)
            assert headers["Content-Type"] == "application/json"
            if method == "HEAD":
                assert body == b""  # a response to HEAD carries no body
                continue
            error = json.loads(body)
            assert_fits(error, {"$ref": "#/components/schemas/Error"}, schemas)
            assert error["error"]["code"] == "method_not_allowed"
            checked += 1
    assert checked >= len(document["paths"]) * len(UNDECLARED_EVERYWHERE)

    # Declared methods, unknown paths and OPTIONS are answered as before.
    assert request(connection, "GET", "/fast")[:1] == (200,)
    status, _, body = request(connection, "TRACE", "/no/such/path")
    assert (status, json.loads(body)) == (403, {"message": "Missing Authentication Token"})
    assert request(connection, "OPTIONS", "/fast")[0] == 200
    connection.close()


# A copy's app.py gains two routes that answer the request context the app was given: one
# keyed as the job routes are on a keyed stage, one open.
PROBE_ROUTES = """

@app.route("/probe/keyed", methods=["GET"], api_key_required=True)
def probe_keyed() -> dict[str, object]:
    return dict(app.current_request.context)


@app.route("/probe/open", methods=["GET"])
def probe_open() -> dict[str, object]:
    return dict(app.current_request.context)
"""
# Routes API Gateway guards on a keyed stage, and those that stay open to anyone.
KEYED_ROUTES = [("GET", "/jobs"), ("POST", "/jobs"), ("POST", "/heavy"), ("GET", "/probe/keyed")]
OPEN_ROUTES = ["/", "/fast", "/kinds", "/openapi.json", "/probe/open"]
BODIES = {"/jobs": {"kind": "heavyLoad", "input": {"n": 1000}}, "/heavy": {"n": 1000}}


@pytest.fixture
def keyed(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(keyed=True, worker=False, extra_files={"app.py": PROBE_ROUTES})


def call(stack: Stack, method: str, path: str, key: str | None = None) -> requests.Response:
    headers = {} if key is None else {API_KEY_HEADER: key}
    body = BODIES.get(path) if method == "POST" else None
    return requests.request(method, f"{stack.url}{path}", json=body, headers=headers, timeout=30)


def assert_forbidden(response: requests.Response) -> None:
    assert (response.status_code, response.json()) == (403, {"message": "Forbidden"})


def test_a_keyed_stack_refuses_job_routes_without_a_valid_key_and_creates_nothing(
    keyed: Stack,
) -> None:
    alice = keyed.api_key("alice")
    key = keyed.client("apigateway").get_api_keys(nameQuery="heavy-jobs-local-alice")["items"][0]
    keyed.client("apigateway").update_api_key(
        apiKey=key["id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}]
    )
    for method, path in KEYED_ROUTES:
        for given in (None, "", "not-a-key", alice):  # alice's key is disabled now
            assert_forbidden(call(keyed, method, path, given))
    items = keyed.client("dynamodb").scan(TableName=keyed.outputs["TableName"])["Items"]
    assert [i for i in items if not i["job_id"]["S"].startswith(CONTROL_PREFIX)] == []


def test_a_key_from_make_api_key_reaches_the_app_with_its_id(keyed: Stack) -> None:
    alice = keyed.api_key("alice")
    assert keyed.api_key("alice") == alice  # made once
    operator = keyed.api_key()
    assert operator != alice
    ids = {
        key["value"]: key["id"]
        for key in keyed.client("apigateway").get_api_keys(includeValues=True)["items"]
    }

    for value in (alice, operator):
        for method, path in KEYED_ROUTES:
            response = call(keyed, method, path, value)
            assert response.status_code in (200, 202), (method, path, response.text)
        identity = call(keyed, "GET", "/probe/keyed", value).json()["identity"]
        assert (identity["apiKeyId"], identity["apiKey"]) == (ids[value], value)


def test_a_keyed_stack_keeps_its_open_routes_open_and_names_its_address_and_stage(
    keyed: Stack,
) -> None:
    for path in OPEN_ROUTES:
        assert call(keyed, "GET", path).status_code == 200, path
    context = call(keyed, "GET", "/probe/open").json()
    assert context["domainName"] == keyed.url.removeprefix("http://")
    assert context["stage"] == "local"
    assert context["path"] == "/probe/open"
    keyed_context = call(keyed, "GET", "/probe/keyed", keyed.api_key()).json()
    assert (keyed_context["domainName"], keyed_context["stage"]) == (context["domainName"], "local")


def test_the_stack_helpers_send_the_key_they_are_given(keyed: Stack) -> None:
    keyed.key = keyed.api_key("carol")
    job = keyed.submit(1000)
    assert keyed.job(job["job_id"])["job_id"] == job["job_id"]
