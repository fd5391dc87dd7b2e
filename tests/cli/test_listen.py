"""``jobs listen`` (jobs_cli/listen.py): it registers a loopback endpoint, prints each
delivery whose signature verifies (once per webhook-id), refuses the others, and deletes
its endpoint when it stops."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.webhooks.delivery import signature_headers
from chalicelib.webhooks.endpoints import new_secret
from jobs_cli import listen
from tests.waiting import wait_for


class FakeApi:
    def __init__(self) -> None:
        self.secret = new_secret()
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def create_webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return {"id": "wh_1", "secret": self.secret, **body}

    def delete_webhook(self, endpoint_id: str) -> None:
        self.deleted.append(endpoint_id)


def deliver(url: str, event_id: str, payload: str, secret: str) -> int:
    headers = signature_headers(event_id, payload, [secret], datetime.now(UTC))
    request = urllib.request.Request(url, data=payload.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_listen_registers_prints_verified_events_once_and_deletes_its_endpoint() -> None:
    api = FakeApi()
    shown: list[dict[str, Any]] = []
    ready: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=listen.listen,
        args=(api, ["job.succeeded"], 0, shown.append, lambda i, url: ready.append(url), stop),
    )
    thread.start()
    try:
        url = wait_for(lambda: ready and ready[0], 30, "the receiver to register")
        payload = json.dumps({"type": "job.succeeded", "timestamp": "t", "data": {"job_id": "j"}})

        assert deliver(url, "e1", payload, api.secret) == 204
        assert deliver(url, "e1", payload, api.secret) == 204  # a repeat: acknowledged
        assert deliver(url, "e2", payload, new_secret()) == 400  # not signed by its secret
    finally:
        stop.set()
        thread.join(timeout=30)

    assert not thread.is_alive()
    assert api.created == [{"url": url, "events": ["job.succeeded"]}]
    assert url.startswith("http://127.0.0.1:")
    assert [e["data"]["job_id"] for e in shown] == ["j"]
    assert listen.line(shown[0]) == '{"type": "job.succeeded", "job_id": "j", "status": null}'
    assert api.deleted == ["wh_1"]


def test_listen_deletes_its_endpoint_when_interrupted() -> None:
    api = FakeApi()

    class Interrupted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # it goes on to main's exit status 130
        listen.listen(api, None, 0, print, lambda i, u: None, Interrupted())
    assert api.deleted == ["wh_1"]
    assert "events" not in api.created[0]  # the service's default
