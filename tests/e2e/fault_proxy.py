"""A fault-injecting HTTP proxy in front of one AWS service's endpoint, for outage tests.

The local stack keeps its state in one emulator process: stopping it to simulate an outage
would lose every queue and table. Instead each service the stack's processes use gets a
``FaultProxy`` on a free port, and the processes reach the service through it (boto3's
service-specific endpoint settings, ``AWS_ENDPOINT_URL_SQS`` and
``AWS_ENDPOINT_URL_DYNAMODB``, which take precedence over ``AWS_ENDPOINT_URL``: AWS SDKs and
Tools Reference Guide, "Service-specific endpoints"). The test switches the proxy,
while the stack runs, between:

- ``Mode.PASS``: every request is forwarded to the emulator and its answer relayed.
- ``Mode.DOWN``: every new connection, and every request on a kept-alive one, is reset
  (TCP RST), as by an unreachable endpoint: botocore retries, then raises
  ``EndpointConnectionError`` or ``ConnectionClosedError``.
- ``Mode.ERRORS``: every request is answered HTTP 500 with the error body the service's
  protocol uses (``InternalServerError`` for DynamoDB, ``InternalError`` for SQS); botocore
  retries it as a transient error, then raises ``ClientError``.
- ``Mode.HANG``: requests are read and never answered (the client's read timeout ends
  them); the connection is reset when the mode changes or the proxy stops.

A rule (``fail_when``) fails only the requests a predicate picks (e.g. the SendMessage
whose body names one job), whatever the mode; the proxy records every request it saw
(``seen``) and how it answered, so a test can count what reached the service.

A request already forwarded when the mode changes completes: a fault applies to the
requests that arrive after it, so a message the emulator handed out is never lost on the
way back (which would hide it for its queue's whole visibility timeout and make the test
depend on the instant the fault began).
"""

from __future__ import annotations

import http.client
import json
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
# Headers that describe one hop, not the message: never relayed.
HOP_BY_HOP = frozenset(
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"]
)
# How long the proxy waits on the emulator for one answer (a long poll is at most 20 s).
UPSTREAM_TIMEOUT_SECONDS = 60.0
# The error each service's protocol returns for a failure on its side (HTTP 500): the
# JSON protocol's "__type" names it, and botocore's standard retry mode retries any 500.
SERVICE_ERRORS = {
    "dynamodb": "com.amazonaws.dynamodb.v20120810#InternalServerError",
    "sqs": "com.amazonaws.sqs#InternalError",
}
ERROR_STATUS = 500


class Mode(StrEnum):
    PASS = "pass"
    DOWN = "down"
    ERRORS = "errors"
    HANG = "hang"


@dataclass(frozen=True)
class Request:
    """One request the proxy received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def operation(self) -> str:
        """The API operation: from X-Amz-Target (JSON protocols, e.g. ``SendMessage``), else
        the query protocol's Action parameter; "" when neither names one."""
        target = self.headers.get("x-amz-target", "")
        if target:
            return target.rpartition(".")[2]
        query = parse_qs(urlsplit(self.path).query)
        if not query and self.body:
            query = parse_qs(self.body.decode(errors="replace"))
        return query.get("Action", [""])[0]

    def json(self) -> dict[str, Any]:
        """The body as JSON ({} when it is not a JSON object)."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Seen:
    """A request and how the proxy answered it: ``pass`` (relayed with the emulator's
    ``status`` and ``response`` body) or the fault it met."""

    at: float  # time.time() when it arrived
    request: Request
    outcome: Mode
    status: int | None = None
    response: bytes = b""
    # time.time() when the emulator's answer came back, to be relayed at once (a long poll's end)
    answered_at: float | None = None


@dataclass
class Rule:
    """Requests for which ``predicate`` holds meet ``fault`` instead of the proxy's mode,
    the first ``times`` of them if given (then the rule lets them pass)."""

    predicate: Callable[[Request], bool]
    fault: Mode
    times: int | None = None
    matched: int = 0

    def applies(self, request: Request) -> bool:
        return (self.times is None or self.matched < self.times) and self.predicate(request)


@dataclass
class FaultProxy:
    """A threaded HTTP proxy on a free port of 127.0.0.1, forwarding to ``upstream``."""

    upstream: str  # e.g. http://127.0.0.1:4566
    service: str  # a key of SERVICE_ERRORS: which error body ERRORS mode answers with
    mode: Mode = Mode.PASS
    seen: list[Seen] = field(default_factory=list)
    _rules: list[Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)
    _server: socketserver.ThreadingTCPServer | None = None
    _thread: threading.Thread | None = None
    _connections: set[socket.socket] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.service not in SERVICE_ERRORS:
            raise ValueError(f"no error body known for service {self.service!r}")
        self._changed = threading.Condition(self._lock)

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not started"
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = _Server((HOST, 0), Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"fault-proxy:{self.service}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and reset every connection still open (hung ones included)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._changed:
            self._server = None
            connections = list(self._connections)
            self._changed.notify_all()
        for connection in connections:
            _reset(connection)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- switching, from the test ----------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        with self._changed:
            self.mode = mode
            self._changed.notify_all()

    def fail_when(
        self,
        predicate: Callable[[Request], bool],
        fault: Mode = Mode.ERRORS,
        times: int | None = None,
    ) -> Rule:
        """Fail the requests ``predicate`` picks with ``fault`` (the first ``times`` of
        them, if given), until ``clear_rules``."""
        rule = Rule(predicate, fault, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._changed:
            self._rules.clear()
            self._changed.notify_all()

    def requests(self, operation: str | None = None, outcome: Mode | None = None) -> Iterator[Seen]:
        """What the proxy saw, oldest first, of one operation and outcome if given."""
        with self._lock:
            seen = list(self.seen)
        for entry in seen:
            if operation is not None and entry.request.operation != operation:
                continue
            if outcome is not None and entry.outcome is not outcome:
                continue
            yield entry

    # --- the handler's side ------------------------------------------------------------

    def _fault_for(self, request: Request) -> Mode:
        with self._lock:
            for rule in self._rules:
                if rule.applies(request):
                    rule.matched += 1
                    return rule.fault
            return self.mode

    def _record(self, entry: Seen) -> None:
        with self._lock:
            self.seen.append(entry)

    def _hang(self, request: Request) -> None:
        """Wait while ``request`` would still hang (mode or rule), or until the proxy stops."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    self._server is None
                    or (self.mode is not Mode.HANG and not self._rules_hang(request))
                )
            )

    def _rules_hang(self, request: Request) -> bool:
        return any(r.fault is Mode.HANG and r.predicate(request) for r in self._rules)

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def error_body(self) -> bytes:
        return json.dumps({"__type": SERVICE_ERRORS[self.service], "message": "injected"}).encode()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for a client that went away (a stopped process, a reset), loud otherwise."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # An unreachable endpoint: the connection is reset before a byte is read.
        if self.owner.mode is Mode.DOWN:
            _reset(request)
            return False
        return True


def _reset(connection: socket.socket) -> None:
    """Close with RST, as a refused or dropped connection looks to the client."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    owner: FaultProxy
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, open_=False)
            if self._upstream is not None:
                self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads ``seen`` instead."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        arrived = time.time()
        fault = self.owner._fault_for(request)
        if fault is Mode.DOWN:
            self.owner._record(Seen(arrived, request, fault))
            self.close_connection = True
            _reset(self.connection)
            return
        if fault is Mode.ERRORS:
            self.owner._record(Seen(arrived, request, fault, ERROR_STATUS))
            self._answer(
                ERROR_STATUS,
                [("Content-Type", "application/x-amz-json-1.0"),
                 ("x-amzn-ErrorType", SERVICE_ERRORS[self.owner.service].rpartition("#")[2])],
                self.owner.error_body(),
            )  # fmt: skip
            return
        if fault is Mode.HANG:
            self.owner._record(Seen(arrived, request, fault))
            self.owner._hang(request)
            self.close_connection = True
            _reset(self.connection)
            return
        status, headers, body = self._forward(request)
        # Recorded before the answer leaves: it reached the emulator (even if its client
        # has gone), and a client that reads ``seen`` once its call returned finds it there.
        self.owner._record(Seen(arrived, request, Mode.PASS, status, body, time.time()))
        self._answer(status, headers, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    def _forward(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        if self._upstream is None:
            parts = urlsplit(self.owner.upstream)
            self._upstream = http.client.HTTPConnection(
                parts.hostname or HOST, parts.port, timeout=UPSTREAM_TIMEOUT_SECONDS
            )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            self._upstream.request(request.method, request.path, request.body, headers)
            response = self._upstream.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self._upstream.close()
            self._upstream = None
            raise
        relayed = [
            (k, v)
            for k, v in response.getheaders()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
        ]
        return response.status, relayed, body

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
