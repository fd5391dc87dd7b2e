"""``jobs listen``: a local webhook receiver, for development against ``make run``.

It listens on a loopback port, registers that address as a webhook endpoint (POST
/webhooks; only the local stage delivers to loopback), verifies each delivery's signature
with ``standardwebhooks`` (an unsigned or wrongly signed one is answered 400 and not
shown), prints each event as it arrives, and deletes its endpoint when it stops (Ctrl-C,
or ``stop`` set). Deliveries are at least once: a repeated ``webhook-id`` is acknowledged
and not printed again.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from jobs_cli.client import Api

# How many webhook-ids are remembered to drop repeats.
SEEN_IDS = 10_000


class Receiver(http.server.ThreadingHTTPServer):
    """The loopback server: verifies each POST with ``secret`` (set once registered) and
    hands each new event to ``show``."""

    daemon_threads = True

    def __init__(self, port: int, show: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.show = show
        self.secret: str | None = None
        self.seen: dict[str, None] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def receive(self, body: bytes, headers: dict[str, str]) -> int:
        """The status to answer a delivery with."""
        if self.secret is None:
            return 503  # not registered yet: the service retries
        try:
            event = Webhook(self.secret).verify(body, headers)
        except (WebhookVerificationError, ValueError):
            return 400
        event_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        with self.lock:
            if event_id in self.seen:
                return 204
            self.seen[event_id] = None
            if len(self.seen) > SEEN_IDS:
                del self.seen[next(iter(self.seen))]
        self.show(event)
        return 204


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        status = self.server.receive(self.rfile.read(length), dict(self.headers.items()))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass  # the events are the output


def listen(
    api: Api,
    events: Sequence[str] | None,
    port: int,
    show: Callable[[dict[str, Any]], None],
    ready: Callable[[str, str], None],
    stop: threading.Event,
) -> None:
    """Receive until ``stop`` is set (or KeyboardInterrupt); the endpoint is deleted
    whatever ends it. ``ready(endpoint_id, url)`` is called once registered."""
    receiver = Receiver(port, show)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    try:
        body: dict[str, Any] = {"url": receiver.url}
        if events:
            body["events"] = list(events)
        endpoint = api.create_webhook(body)
        receiver.secret = str(endpoint["secret"])
        try:
            ready(str(endpoint["id"]), receiver.url)
            stop.wait()
        finally:
            api.delete_webhook(str(endpoint["id"]))
    finally:
        receiver.shutdown()
        receiver.server_close()
        serving.join()


def line(event: dict[str, Any]) -> str:
    """One event as ``jobs listen`` prints it (without --json)."""
    data = event.get("data") or {}
    return json.dumps(
        {"type": event.get("type"), "job_id": data.get("job_id"), "status": data.get("status")}
    )
