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
from collections.abc import Sequence
from http.server import HTTPServer
from typing import Any

from chalice.app import Chalice
from chalice.cli import create_local_server
from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalDevServer, RouteMatcher

# Chalice answers OPTIONS itself (its stand-in for API Gateway's CORS preflight).
CHALICE_ANSWERS = frozenset({"OPTIONS"})


class LocalApiRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, with Nagle off and a JSON 405 for undeclared methods."""

    # The standard library's switch: TCP_NODELAY on each connection (see the module doc).
    disable_nagle_algorithm = True

    def __init__(
        self,
        request: Any,
        client_address: Any,
        server: HTTPServer,
        app_object: Chalice,
        config: Config,
    ) -> None:
        # Set before the base __init__, which handles the connection's requests.
        self._routes = app_object.routes
        self._matcher = RouteMatcher(list(app_object.routes))
        super().__init__(request, client_address, server, app_object, config)

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


def use_handler(server: LocalDevServer) -> None:
    """Make ``server`` (not serving yet) build ``LocalApiRequestHandler``s.

    Chalice 1.34's ``LocalDevServer`` gives its HTTP server a ``functools.partial`` of
    ``ChaliceRequestHandler`` with the app and config; anything else means Chalice
    changed, and this raises ``RuntimeError`` rather than guess.
    """
    factory = server.server.RequestHandlerClass
    if not (isinstance(factory, functools.partial) and factory.func is ChaliceRequestHandler):
        raise RuntimeError(f"unexpected request handler factory in chalice local: {factory!r}")
    server.server.RequestHandlerClass = functools.partial(
        LocalApiRequestHandler, *factory.args, **factory.keywords
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
