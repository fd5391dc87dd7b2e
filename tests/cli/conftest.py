"""A scripted stand-in for the API on a loopback port: the CLI's real HTTP code runs
against it, and every request it made can be checked afterwards."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Recorded:
    method: str
    path: str  # as sent, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes
    target: str = ""  # the request line's target as sent: the path and the raw query

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    body: Any  # a dict or list is sent as JSON, a str as text/html
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeApi:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    answers: dict[tuple[str, str], deque[Answer]] = field(default_factory=dict)

    def on(self, method: str, path: str, *answers: Answer | tuple[int, Any]) -> None:
        """Answer ``method path`` with these, in turn; the last one is repeated."""
        self.answers[(method, path)] = deque(
            a if isinstance(a, Answer) else Answer(*a) for a in answers
        )

    def next_answer(self, method: str, path: str) -> Answer:
        queue = self.answers.get((method, path))
        if not queue:  # as API Gateway answers an unknown route
            return Answer(403, {"message": "Missing Authentication Token"})
        return queue.popleft() if len(queue) > 1 else queue[0]

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


def _handler(fake: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            fake.requests.append(
                Recorded(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                    target=self.path,
                )
            )
            answer = fake.next_answer(self.command, parts.path)
            is_text = isinstance(answer.body, str)
            payload = (answer.body if is_text else json.dumps(answer.body)).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "text/html" if is_text else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serving() -> Iterator[FakeApi]:
    """A FakeApi answering on a free loopback port until the block ends."""
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    with serving() as fake:
        yield fake


@pytest.fixture
def elsewhere() -> Iterator[FakeApi]:
    """A second server, on another port: another origin, where a redirect may point."""
    with serving() as fake:
        yield fake
