"""The baseline the service exists to beat: a server that runs the loop in its handler.

    python -m bench.blocking_server --port P [--threaded]

A benchmark-only stand-in for the classic blocking example, never a route of the
product. ``GET /fast`` answers ``{"message": "I'm fast"}``; ``POST /heavy?n=N`` counts to
N in the request handler (``bench.loop.count``, the same loop) and then answers.

- default: one request at a time (``http.server.HTTPServer``, HTTP/1.0): the classic
  blocking server, where /fast waits for the whole loop.
- ``--threaded``: a thread per connection (HTTP/1.1 keep-alive), as ``chalice local``
  serves: /fast is answered while the loop runs, but shares the interpreter's GIL with it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs, urlsplit

from bench.loop import count


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/fast":
            self._answer(200, {"message": "I'm fast"})
        else:
            self._answer(404, {"message": "not found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if url.path != "/heavy":
            self._answer(404, {"message": "not found"})
            return
        n = int(parse_qs(url.query).get("n", ["0"])[0])
        self._answer(200, {"result": count(n)})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would cost more than /fast itself


class KeepAliveHandler(Handler):
    protocol_version = "HTTP/1.1"


def serve(port: int, threaded: bool) -> None:
    server: HTTPServer
    if threaded:
        server = ThreadingHTTPServer(("127.0.0.1", port), KeepAliveHandler)
        server.daemon_threads = True
    else:
        server = HTTPServer(("127.0.0.1", port), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.blocking_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threaded", action="store_true")
    args = parser.parse_args(argv)
    serve(args.port, args.threaded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
