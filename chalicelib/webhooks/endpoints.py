"""A client's webhook endpoints: the record, its API representation and the request that
registers one (chalicelib.webhooks.store keeps them, chalicelib.webhooks.service has the use
cases).

An endpoint is a URL, the event types it wants and one or two signing secrets: the
current one and, for ``ROTATION_OVERLAP`` after a rotation, the previous one, so a
receiver that has not yet switched keeps verifying. A secret is returned by the request
that made it (create, rotate) and by nothing else: ``to_api`` has no secret.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from chalicelib import requests
from chalicelib.errors import InvalidRequest
from chalicelib.events import EVENT_TYPES
from chalicelib.jobs import iso_utc

# What an endpoint registered without ``events`` gets: every type but progress, the one
# that comes often.
DEFAULT_EVENTS = tuple(t for t in EVENT_TYPES if t != "job.progress")
# The most endpoints a client may have.
MAX_ENDPOINTS_PER_CLIENT = 10
# How long the previous secret keeps signing beside the new one after a rotation.
ROTATION_OVERLAP = timedelta(hours=24)
# The Standard Webhooks secret format: a prefix, then the key's bytes in base64.
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# An endpoint's id, as made by ``new_id`` (a request's id of any other shape is unknown).
ENDPOINT_ID = re.compile(r"wh_[0-9a-f]{32}")
MAX_URL_LENGTH = 2048
FIELDS = ("url", "events")
# The stage whose endpoints may be plain http (and, chalicelib.webhooks.urls, loopback).
LOCAL_STAGE = "local"


def new_id() -> str:
    return "wh_" + uuid.uuid4().hex


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt to an endpoint, as GET /webhooks/{id}/deliveries shows it."""

    # The event's id, sent as webhook-id (the same on every attempt of one event).
    event_id: str
    event_type: str
    attempted_at: datetime
    # Which attempt of this event it was (1: the first).
    attempt: int
    # The endpoint's HTTP status, or None when no answer came (refused, timeout).
    status_code: int | None
    # True for a 2xx answer: the event is delivered.
    delivered: bool
    # Why it failed, without the endpoint's answer body (None when delivered).
    error: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "attempted_at": iso_utc(self.attempted_at),
            "attempt": self.attempt,
            "status_code": self.status_code,
            "delivered": self.delivered,
            "error": self.error,
        }


@dataclass(frozen=True)
class Endpoint:
    """A client's webhook endpoint."""

    endpoint_id: str
    client: str
    url: str
    events: tuple[str, ...]
    secret: str = field(repr=False)
    created_at: datetime
    # The secret before the last rotation, and until when it still signs (None: none).
    previous_secret: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None
    rotated_at: datetime | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets a delivery at ``now`` is signed with: the current one, and the
        previous one during its overlap."""
        keep = self.previous_secret is not None and self.previous_until is not None
        if keep and now < self.previous_until:  # type: ignore[operator]
            return [self.secret, self.previous_secret]  # type: ignore[list-item]
        return [self.secret]

    def rotated(self, now: datetime) -> Endpoint:
        """This endpoint with a new secret; the current one signs beside it until
        ``now + ROTATION_OVERLAP``."""
        return replace(
            self,
            secret=new_secret(),
            previous_secret=self.secret,
            previous_until=now + ROTATION_OVERLAP,
            rotated_at=now,
        )

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    def to_api(self) -> dict[str, Any]:
        """The representation every answer but create's and rotate's carries: no secret."""
        return {
            "id": self.endpoint_id,
            "client": self.client,
            "url": self.url,
            "events": list(self.events),
            "created_at": iso_utc(self.created_at),
            "rotated_at": None if self.rotated_at is None else iso_utc(self.rotated_at),
            "previous_secret_expires_at": (
                None if self.previous_until is None else iso_utc(self.previous_until)
            ),
        }


def parse_request(raw: bytes | str, stage: str) -> tuple[str, tuple[str, ...]]:
    """A POST /webhooks body as (url, events); 400 naming the bad field otherwise. The URL
    must be absolute, https (http too on the local stage), without credentials or a
    fragment; whether its host is a public address is decided at each delivery
    (chalicelib.webhooks.urls), since a name's addresses change."""
    payload = requests.object_body(
        raw,
        FIELDS,
        '{"url": "https://example.com/hook", "events": ["job.succeeded", "job.failed"]}',
    )
    # Omitted, ``events`` is the default; given, it must be a list (null is no list).
    events = parse_events(payload["events"]) if "events" in payload else DEFAULT_EVENTS
    return parse_url(payload.get("url"), stage), events


def parse_url(url: object, stage: str) -> str:
    schemes = ("https", "http") if stage == LOCAL_STAGE else ("https",)
    allowed = " or ".join(schemes)
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LENGTH:
        raise InvalidRequest(
            "invalid_url", f"/url: must be an {allowed} URL of at most {MAX_URL_LENGTH} characters."
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise InvalidRequest("invalid_url", "/url: is not a URL.") from None
    if parts.scheme not in schemes:
        raise InvalidRequest("invalid_url", f"/url: must be an {allowed} URL on this stage.")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise InvalidRequest("invalid_url", "/url: needs a host and no user or password.")
    if parts.fragment or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidRequest("invalid_url", "/url: may have no fragment and no whitespace.")
    return url


def parse_events(events: object) -> tuple[str, ...]:
    if (
        not isinstance(events, list)
        or not events
        or not all(isinstance(e, str) and e in EVENT_TYPES for e in events)
    ):
        raise InvalidRequest(
            "invalid_events",
            f"/events: must be a non-empty list of {', '.join(EVENT_TYPES)}.",
        )
    # In the declared order, once each: the same request is the same endpoint.
    return tuple(t for t in EVENT_TYPES if t in events)
