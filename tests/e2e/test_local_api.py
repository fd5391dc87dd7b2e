"""infra.local_api over real HTTP: a method a known path does not declare is a JSON 405 in
the API's error shape with an Allow header; everything else is Chalice's answer as before.
(On AWS, API Gateway answers such a request 403 itself: see infra/local_api.py.)"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from tests.e2e.conftest import Stack

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
