"""A small HTTP client for measuring: timed requests, no retries hidden.

``requests`` costs a few hundred microseconds of client CPU per call, as much as the
/fast route itself; ``http.client`` costs a fraction of that, so what is timed is mostly
the server.

One connection per request by default, as curl makes them. A plain ``http.server``
handler (the blocking baseline in ``bench/blocking_server.py``) writes an answer's headers
and body in two sends without TCP_NODELAY, so on a kept-alive connection the body waits
for the client's delayed ACK (~40 ms): it would measure the kernel's timer, not the server.
The product's local API turns Nagle's algorithm off (``infra/local_api.py``), but fresh
connections keep every server in the comparison on the same footing.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

Response = tuple[int, bytes]


class HttpError(RuntimeError):
    """An answer with an unexpected status."""


class HttpClient:
    """Requests to one server: a new connection each (or, with ``keep_alive``, one kept
    open; see above why not by default). Not thread-safe: give each thread its own."""

    def __init__(self, url: str, keep_alive: bool = False, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.keep_alive = keep_alive
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request and read the whole answer. A kept-alive connection the server
        closed meanwhile is reopened once; any other failure raises."""
        headers = dict(headers or {})
        if not self.keep_alive:
            headers["Connection"] = "close"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2 or not self.keep_alive:
                    raise
                continue
            if not self.keep_alive or response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")

    def timed(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: int = 200,
    ) -> tuple[float, bytes]:
        """Seconds from sending the request to having read the whole answer, and the answer."""
        start = time.perf_counter()
        status, data = self.request(method, path, body, headers)
        elapsed = time.perf_counter() - start
        if status != expect:
            raise HttpError(f"{method} {path}: {status} {data[:200]!r}")
        return elapsed, data

    def json(self, method: str, path: str, payload: Any = None, expect: int = 200) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, data = self.request(method, path, body, headers)
        if status != expect:
            raise HttpError(f"{method} {path}: {status} {data[:200]!r}")
        return json.loads(data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
