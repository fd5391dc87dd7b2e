"""``chalice local --no-autoreload``, with Nagle's algorithm off on its connections.

    python -m infra.local_api --project-dir . --stage local --host 127.0.0.1 --port 8000

Chalice's local server (``BaseHTTPRequestHandler``) writes a response's headers and body
in separate sends. On a keep-alive connection, the second small send then waits for the
client to acknowledge the first, and clients delay that acknowledgement (40 ms on Linux):
every request after a connection's first took 44 ms here, against 1.3 ms on a fresh
connection (measured with requests, 200 calls each). Browsers, the dashboard and
``requests.Session`` all keep connections alive. The standard library's own switch,
``StreamRequestHandler.disable_nagle_algorithm``, sets TCP_NODELAY on each connection.

A method a known path does not declare (``TRACE /fast``, ``DELETE /heavy``, any token)
is answered 405 with an ``Allow`` header naming the path's methods and a JSON body in the
API's error shape (``{"error": {"code": "method_not_allowed", "message": ...}}``). Left to
itself, ``chalice local`` answers such a request 501 with an HTML page (a method its
handler has no ``do_<METHOD>`` for) or 405 in Chalice's own error shape (one it has).
On AWS, API Gateway never passes such a request to the function: it answers 403
``{"message": "Missing Authentication Token"}``, as for an unknown path (AWS Knowledge
Center, "api-gateway-authentication-token-errors"); locally an unknown path still gets
that 403, from Chalice. ``OPTIONS`` stays Chalice's (its stand-in for CORS preflight).

A route the app declares with ``api_key_required=True`` (every ``/jobs`` route when the
app is imported with ``JOBS_REQUIRE_API_KEY=true``: ``JOBS_REQUIRE_API_KEY=true make run``)
is guarded as API Gateway guards it: the request's ``x-api-key`` header (API Gateway's
default key source, "Choose an API key source in API Gateway") must be the value of an
enabled API key in the emulator's API Gateway that is a member of the stage's usage plan
(``<app>-<stage>``, the plan ``make api-key STAGE=local`` makes, as ``make deploy`` makes it
on AWS): API Gateway accepts a key only through a usage plan of the stage ("Usage plans
and API keys for REST APIs in API Gateway"). Without one, the request is answered 403
``{"message":"Forbidden"}`` and the app is not invoked; with one, the event carries the
key in ``requestContext.identity`` (``apiKeyId``, ``apiKey``). Keys are read from the
emulator on every keyed request (GetApiKeys, GetUsagePlans: 16 ms added to a request's
median here, with 22 keys, on a loaded 2-core machine), so a key made or disabled while
the server runs counts at once. The plan's throttling is not imitated.
On every request, keyed or not, ``requestContext.domainName`` is the ``host:port`` this
server answers on and ``requestContext.stage`` the Chalice stage, as API Gateway sets its
own domain name and stage there.

Everything else is Chalice's: the same ``create_local_server`` that ``chalice local``
calls, the same config and stage loading, the same request handling.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import Chalice
from chalice.cli import create_local_server
from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    ForbiddenError,
    LocalDevServer,
    LocalGateway,
    LocalGatewayException,
    RouteMatcher,
)

# Chalice answers OPTIONS itself (its stand-in for API Gateway's CORS preflight).
CHALICE_ANSWERS = frozenset({"OPTIONS"})
# The header API Gateway reads a key from (its default API key source, HEADER).
API_KEY_HEADER = "x-api-key"
# API Gateway's own answer to a keyed request without a valid key.
FORBIDDEN_BODY = b'{"message":"Forbidden"}'


class KeyStoreUnavailable(LocalGatewayException):
    """The emulator's API Gateway did not answer: API Gateway's answer to its own failure."""

    CODE = 500


@dataclass(frozen=True)
class ApiKey:
    """An accepted key: what API Gateway puts in ``requestContext.identity``."""

    id: str
    value: str


class StageKeys:
    """The keys API Gateway accepts on one stage: enabled, and in the stage's usage plan.

    Read from the emulator's API Gateway on every call (GetApiKeys, then GetUsagePlans for
    the key), so keys made, disabled or removed while the server runs count at once. The
    client is made on first use: a stage without keyed routes never needs one.
    """

    def __init__(self, plan_name: str | Callable[[], str], apigw: Any = None) -> None:
        # A callable names the plan on first use: see stage_plan.
        self._plan_name = plan_name
        self._apigw = apigw
        self._lock = threading.Lock()

    def _client(self) -> Any:
        with self._lock:
            if self._apigw is None:
                self._apigw = boto3.client("apigateway")  # AWS_ENDPOINT_URL: the emulator
            return self._apigw

    def accepted(self, value: str) -> ApiKey | None:
        """The enabled key whose value is ``value``, if it is in the stage's usage plan;
        else None. KeyStoreUnavailable if the emulator does not answer: the request is
        answered 500 and nothing is submitted; jobs already queued run as before."""
        if not value:
            return None
        apigw = self._client()
        try:
            for page in apigw.get_paginator("get_api_keys").paginate(includeValues=True):
                for key in page.get("items", []):
                    matches = key.get("value") == value and key.get("enabled")
                    if matches and self._in_plan(apigw, key["id"]):
                        return ApiKey(id=key["id"], value=value)
        except (BotoCoreError, ClientError) as error:
            body = json.dumps({"message": f"Internal server error: {error}"}).encode()
            raise KeyStoreUnavailable({}, body) from None
        return None

    def _in_plan(self, apigw: Any, key_id: str) -> bool:
        plans = apigw.get_paginator("get_usage_plans").paginate(keyId=key_id)
        return any(plan.get("name") == self.plan_name for page in plans for plan in page["items"])

    @property
    def plan_name(self) -> str:
        if callable(self._plan_name):
            self._plan_name = self._plan_name()
        return self._plan_name


def stage_plan(config: Config) -> Callable[[], str]:
    """The name of ``config``'s stage's usage plan (the stage's resource name, as
    ``make deploy`` names it), found when a keyed route is first called.

    Not at import: infra.deploy imports the project's chalicelib, and this server also
    serves projects whose chalicelib is another release's (the benchmark's previous
    release), which must start as long as none of their routes needs a key."""

    def name() -> str:
        from infra.deploy.chalice_project import resource_name

        return resource_name(config, config.chalice_stage)

    return name


class LocalApiGateway(LocalGateway):
    """Chalice's stand-in for API Gateway, with API Gateway's key check and its
    ``domainName`` and ``stage`` in every event's request context."""

    def __init__(
        self, app_object: Chalice, config: Config, domain_name: str, keys: StageKeys
    ) -> None:
        super().__init__(app_object, config)
        self._domain_name = domain_name
        self._keys = keys

    def _generate_lambda_event(
        self, method: str, path: str, headers: dict[str, Any], body: bytes | None
    ) -> dict[str, Any]:
        event: dict[str, Any] = super()._generate_lambda_event(method, path, headers, body)
        context = event["requestContext"]
        context["domainName"] = self._domain_name
        context["stage"] = self._config.chalice_stage
        view = self._app_object.routes[context["resourcePath"]].get(method)
        if view is not None and view.api_key_required:
            key = self._keys.accepted(event["headers"].get(API_KEY_HEADER, ""))
            if key is None:
                raise ForbiddenError({"x-amzn-ErrorType": "ForbiddenException"}, FORBIDDEN_BODY)
            context["identity"].update(apiKeyId=key.id, apiKey=key.value)
        return event


class LocalApiRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, with Nagle off, a JSON 405 for undeclared methods, and
    API Gateway's key check and request context (:class:`LocalApiGateway`)."""

    # The standard library's switch: TCP_NODELAY on each connection (see the module doc).
    disable_nagle_algorithm = True

    def __init__(
        self,
        request: Any,
        client_address: Any,
        server: HTTPServer,
        app_object: Chalice,
        config: Config,
        domain_name: str,
        keys: StageKeys,
    ) -> None:
        # Set before BaseHTTPRequestHandler's __init__, which handles the connection's
        # requests; ChaliceRequestHandler's would only set a plain LocalGateway.
        self._routes = app_object.routes
        self._matcher = RouteMatcher(list(app_object.routes))
        self.local_gateway = LocalApiGateway(app_object, config, domain_name, keys)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if hasattr(self, f"do_{self.command}"):
            return True
        # BaseHTTPRequestHandler would answer a method it has no do_<METHOD> for (TRACE,
        # QUERY, any token) with 501 and an HTML page. Answer it here as any other, and
        # return False: the request is answered, there is nothing to dispatch.
        self._handle()
        return False

    def _handle(self) -> None:
        allowed = self.declared_methods(self.path)
        if allowed is None or self.command in allowed or self.command in CHALICE_ANSWERS:
            self._generic_handle()  # Chalice's own handling (its 403 for unknown paths)
        else:
            self._method_not_allowed(allowed)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def declared_methods(self, path: str) -> list[str] | None:
        """The methods the app declares for ``path``'s route, or None for no route."""
        try:
            route = self._matcher.match_route(path).route
        except ValueError:
            return None
        return sorted(self._routes[route])

    def _method_not_allowed(self, allowed: list[str]) -> None:
        self._parse_payload()  # read the body, so a keep-alive connection stays in step
        body = json.dumps(
            {
                "error": {
                    "code": "method_not_allowed",
                    "message": f"{self.command} is not allowed here. Allowed: "
                    f"{', '.join(allowed)}.",
                }
            }
        ).encode()
        self.send_response(405)
        self.send_header("Allow", ", ".join(allowed))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # a response to HEAD has no body
            self.wfile.write(body)


def use_handler(server: LocalDevServer, keys: StageKeys | None = None) -> None:
    """Make ``server`` (not serving yet) build ``LocalApiRequestHandler``s, which name the
    address ``server`` answers on as the domain and accept ``keys`` on keyed routes (by
    default the keys of the usage plan of the stage ``server`` serves).

    Chalice 1.34's ``LocalDevServer`` gives its HTTP server a ``functools.partial`` of
    ``ChaliceRequestHandler`` with the app and config; anything else means Chalice
    changed, and this raises ``RuntimeError`` rather than guess.
    """
    factory = server.server.RequestHandlerClass
    if not (isinstance(factory, functools.partial) and factory.func is ChaliceRequestHandler):
        raise RuntimeError(f"unexpected request handler factory in chalice local: {factory!r}")
    port = server.server.server_address[1]  # the bound port, also when asked for port 0
    if not callable(getattr(LocalGateway, "_generate_lambda_event", None)):
        raise RuntimeError("chalice local's LocalGateway has no _generate_lambda_event to extend")
    if keys is None:
        keys = StageKeys(stage_plan(factory.keywords["config"]))
    keywords = {**factory.keywords, "domain_name": f"{server.host}:{port}", "keys": keys}
    server.server.RequestHandlerClass = functools.partial(
        LocalApiRequestHandler, *factory.args, **keywords
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--stage", default="local")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    # As `chalice local` sets up its process, minus boto's per-call INFO chatter.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    for noisy in ("botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    factory = CLIFactory(os.path.abspath(args.project_dir), environ=os.environ)
    server = create_local_server(factory, args.host, args.port, args.stage)
    use_handler(server)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()  # prints "Serving on ..." itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
