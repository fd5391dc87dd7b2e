"""The webhook endpoints' use cases: register, list, show, delete, rotate a client's
endpoint and show its recent delivery attempts (chalicelib.webhooks.endpoints has the record).

Isolation follows the jobs' (chalicelib.clients): an endpoint is its client's; another
client's endpoint is WebhookNotFound exactly as an unknown id; the operator (and the
anonymous caller of a stage without keys) sees every client's.

A secret leaves the service in the answer that made it (``create``, ``rotate``) and in no
log line: the log records name an endpoint by its id and client only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from chalicelib.clients import RECORDED_CLIENT, Caller
from chalicelib.errors import InvalidRequest, RequestError
from chalicelib.jobs import utc_now
from chalicelib.observability import logger
from chalicelib.webhooks.endpoints import (
    ENDPOINT_ID,
    MAX_ENDPOINTS_PER_CLIENT,
    Attempt,
    Endpoint,
    new_id,
    new_secret,
    parse_request,
)
from chalicelib.webhooks.store import TooManyEndpoints, WebhookTable


class WebhookNotFound(RequestError):
    status_code = 404

    def __init__(self, endpoint_id: str) -> None:
        super().__init__("webhook_not_found", f"No webhook endpoint {endpoint_id!r}.")


class TooManyWebhooks(RequestError):
    status_code = 409


def create(
    raw: bytes | str,
    caller: Caller,
    table: WebhookTable,
    stage: str,
    now: Callable[[], datetime] = utc_now,
) -> Endpoint:
    """Register the caller's endpoint; the returned record holds its secret, which the
    route answers once. 409 too_many_webhooks at the cap."""
    url, events = parse_request(raw, stage)
    endpoint = Endpoint(new_id(), caller.client, url, events, new_secret(), now())
    try:
        table.create(endpoint, MAX_ENDPOINTS_PER_CLIENT)
    except TooManyEndpoints:
        raise TooManyWebhooks(
            "too_many_webhooks",
            f"Client {caller.client!r} has {MAX_ENDPOINTS_PER_CLIENT} webhook endpoints, "
            "the most it may have; delete one first.",
        ) from None
    logger.info("Webhook created", webhook_id=endpoint.endpoint_id, client=caller.client)
    return endpoint


def get(endpoint_id: str, caller: Caller, table: WebhookTable) -> Endpoint:
    """The endpoint ``endpoint_id`` if the caller may see it; WebhookNotFound otherwise,
    the same answer for an unknown id and for another client's."""
    endpoint = table.get(endpoint_id) if ENDPOINT_ID.fullmatch(endpoint_id) else None
    if endpoint is None or not caller.may_see(endpoint.client):
        raise WebhookNotFound(endpoint_id)
    return endpoint


def listing(caller: Caller, params: Mapping[str, str], table: WebhookTable) -> list[Endpoint]:
    """The caller's endpoints; for a caller who sees all, every client's, or
    ``?client=``'s."""
    unknown = sorted(set(params) - {"client"})
    if unknown:
        raise InvalidRequest("unknown_parameter", f"Unknown parameter(s): {', '.join(unknown)}.")
    chosen = params.get("client")
    if not caller.sees_all:
        return table.listing(caller.client)
    if chosen is None:
        return table.listing(None)
    if not RECORDED_CLIENT.fullmatch(chosen):
        raise InvalidRequest("invalid_client", "client must be a client's name.")
    return table.listing(chosen)


def delete(endpoint_id: str, caller: Caller, table: WebhookTable) -> None:
    """Delete the endpoint; deliveries already on their way find it gone and stop."""
    endpoint = get(endpoint_id, caller, table)
    table.delete(endpoint)
    logger.info("Webhook deleted", webhook_id=endpoint_id, client=endpoint.client)


def rotate(
    endpoint_id: str,
    caller: Caller,
    table: WebhookTable,
    now: Callable[[], datetime] = utc_now,
) -> Endpoint:
    """Give the endpoint a new secret; the previous one signs beside it for
    chalicelib.webhooks.endpoints.ROTATION_OVERLAP. The returned record holds the new secret."""
    endpoint = get(endpoint_id, caller, table).rotated(now())
    if not table.set_secrets(endpoint):
        raise WebhookNotFound(endpoint_id)
    logger.info("Webhook secret rotated", webhook_id=endpoint_id, client=endpoint.client)
    return endpoint


def deliveries(endpoint_id: str, caller: Caller, table: WebhookTable) -> list[Attempt]:
    """The endpoint's recent delivery attempts, newest first."""
    get(endpoint_id, caller, table)
    return table.attempts(endpoint_id)


def with_secret(endpoint: Endpoint) -> dict[str, object]:
    """The representation plus ``secret``: the answer of create and rotate only."""
    return {**endpoint.to_api(), "secret": endpoint.secret}
