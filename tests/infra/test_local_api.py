"""infra.local_api's hook into chalice local, and the API key check it adds: a route the app
declares with ``api_key_required`` is answered as API Gateway answers it, from the keys of
the stage's usage plan as they are at each request; every event names the server's address
and the stage. (The real app on a live stack: tests/e2e/test_local_api.py.)"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests
from chalice.app import Chalice
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalDevServer
from moto import mock_aws

from infra.deploy.access import Throttle, ensure_api_key, ensure_plan_key, ensure_usage_plan
from infra.local_api import API_KEY_HEADER, LocalApiRequestHandler, StageKeys, use_handler
from infra.run import PROJECT_DIR
from tests.infra.conftest import DEAD_END

STAGE = "local"
PLAN = "toy-local"


def toy_app() -> tuple[Chalice, list[str]]:
    """A keyed and an open route, each answering the request context it was given; the
    list records every invocation."""
    app = Chalice(app_name="toy")
    invoked: list[str] = []

    @app.route("/")
    def index() -> dict[str, str]:
        return {}

    @app.route("/keyed", methods=["GET", "POST"], api_key_required=True)
    def keyed() -> dict[str, Any]:
        invoked.append("keyed")
        return dict(app.current_request.context)

    @app.route("/open")
    def open_route() -> dict[str, Any]:
        invoked.append("open")
        return dict(app.current_request.context)

    return app, invoked


@pytest.fixture
def server() -> Iterator[LocalDevServer]:
    config = Config(chalice_stage="dev", user_provided_params={"app_name": "toy"})
    dev_server = LocalDevServer(toy_app()[0], config, "127.0.0.1", 0)
    yield dev_server
    dev_server.server.server_close()


def test_the_server_builds_the_projects_handler_with_chalices_arguments(
    server: LocalDevServer,
) -> None:
    before = server.server.RequestHandlerClass
    assert isinstance(before, functools.partial) and before.func is ChaliceRequestHandler

    use_handler(server)

    after = server.server.RequestHandlerClass
    assert isinstance(after, functools.partial) and after.func is LocalApiRequestHandler
    assert before.keywords.items() <= after.keywords.items()  # the same app and config
    port = server.server.server_address[1]
    assert after.keywords["domain_name"] == f"127.0.0.1:{port}"
    assert after.keywords["keys"].plan_name == "toy-dev"  # <app>-<stage>, Config's stage dev
    assert LocalApiRequestHandler.disable_nagle_algorithm is True


def test_an_unexpected_handler_factory_is_refused(server: LocalDevServer) -> None:
    server.server.RequestHandlerClass = ChaliceRequestHandler
    with pytest.raises(RuntimeError, match="unexpected request handler factory"):
        use_handler(server)


# --- the key check, over real HTTP, against API Gateway in moto ---------------------------


@dataclass
class Live:
    url: str
    domain: str
    apigw: Any
    plan_id: str
    invoked: list[str]

    def key(self, name: str, value: str | None = None, in_plan: bool = True) -> dict[str, Any]:
        """An enabled key (with ``value``, else a generated one), in the stage's plan."""
        if value is not None:
            key = dict(self.apigw.create_api_key(name=name, enabled=True, value=value))
        else:
            key = ensure_api_key(self.apigw, name)
        if in_plan:
            ensure_plan_key(self.apigw, self.plan_id, key["id"])
        return key

    def get(self, path: str, key: str | None = None) -> requests.Response:
        headers = {} if key is None else {API_KEY_HEADER: key}
        return requests.get(f"{self.url}{path}", headers=headers, timeout=10)


def serve(keys: StageKeys, invoked_app: tuple[Chalice, list[str]]) -> Iterator[LocalDevServer]:
    app, _ = invoked_app
    dev_server = LocalDevServer(app, Config(chalice_stage=STAGE), "127.0.0.1", 0)
    use_handler(dev_server, keys)
    thread = threading.Thread(target=dev_server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield dev_server
    finally:
        dev_server.shutdown()
        thread.join(timeout=10)
        dev_server.server.server_close()


@pytest.fixture
def live() -> Iterator[Live]:
    with mock_aws():
        apigw = boto3.client("apigateway", region_name="us-east-1")
        plan_id = ensure_usage_plan(apigw, PLAN, None, Throttle())
        app = toy_app()
        for dev_server in serve(StageKeys(PLAN, apigw), app):
            port = dev_server.server.server_address[1]
            yield Live(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", apigw, plan_id, app[1])


def assert_forbidden(response: requests.Response) -> None:
    """API Gateway's own refusal, not the app's error shape."""
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"


def test_a_keyed_route_without_a_valid_key_is_forbidden_and_the_app_is_not_invoked(
    live: Live,
) -> None:
    disabled = live.key("toy-local-disabled")
    live.apigw.update_api_key(
        apiKey=disabled["id"],
        patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}],
    )
    outside = live.key("toy-local-outside", in_plan=False)
    for key in (None, "", "not-a-key", disabled["value"], outside["value"]):
        assert_forbidden(live.get("/keyed", key))
    response = requests.post(f"{live.url}/keyed", json={}, timeout=10)
    assert_forbidden(response)
    assert live.invoked == []


def test_a_key_of_the_stages_plan_reaches_the_app_with_its_id_and_value(live: Live) -> None:
    key = live.key("toy-local-alice")

    response = live.get("/keyed", key["value"])

    assert response.status_code == 200
    context = response.json()
    assert context["identity"]["apiKeyId"] == key["id"]
    assert context["identity"]["apiKey"] == key["value"]
    assert context["domainName"] == live.domain
    assert context["stage"] == STAGE
    assert context["path"] == "/keyed"  # Chalice's, as before
    assert live.invoked == ["keyed"]


def test_keys_made_or_disabled_while_serving_count_at_once(live: Live) -> None:
    value = "a-key-made-later-0123456789"
    assert_forbidden(live.get("/keyed", value))

    key = live.key("toy-local-later", value=value)
    assert live.get("/keyed", value).status_code == 200

    live.apigw.update_api_key(
        apiKey=key["id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}]
    )
    assert_forbidden(live.get("/keyed", value))


def test_an_open_route_needs_no_key_and_names_the_domain_and_stage(live: Live) -> None:
    response = live.get("/open")

    assert response.status_code == 200
    context = response.json()
    assert context["domainName"] == live.domain
    assert context["stage"] == STAGE
    assert "apiKeyId" not in context["identity"]


def test_an_unreachable_key_store_is_a_500_and_the_app_is_not_invoked() -> None:
    apigw = boto3.client(
        "apigateway",
        endpoint_url=DEAD_END,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=boto3.session.Config(retries={"total_max_attempts": 1}),
    )
    app = toy_app()
    for dev_server in serve(StageKeys(PLAN, apigw), app):
        port = dev_server.server.server_address[1]
        response = requests.get(
            f"http://127.0.0.1:{port}/keyed", headers={API_KEY_HEADER: "k"}, timeout=30
        )
        assert response.status_code == 500
        assert response.json()["message"].startswith("Internal server error")
    assert app[1] == []


def test_the_local_api_imports_none_of_the_projects_code() -> None:
    """The local API also serves another release's project (the benchmark's previous
    release, whose chalicelib differs): importing it must not import chalicelib, which
    infra.deploy would do; only a keyed route looks up the stage's plan, then."""
    probe = (
        "import sys, infra.local_api; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('chalicelib', 'app')))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
    )
    assert ran.stdout.strip() == "[]"
