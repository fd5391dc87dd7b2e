"""Where a request comes from: the API's own origin, and the refusal of state-changing
requests that another site's page made a visitor's browser send.

A web page can make its visitor's browser send a POST to any address: a "simple"
request (a text/plain or form body) goes out without a CORS preflight, and the API
reads any body as JSON. Unchecked, any page the visitor opens could submit, cancel or
retry jobs on a stage the visitor can reach (dev, or ``make run`` on localhost).
Browsers say where a request comes from in two headers, ``Sec-Fetch-Site`` (Fetch
Metadata) and ``Origin``; curl, the CLI and other programs send neither and are not
affected.

A request is refused (``cross_site_refusal``) when its method changes state (anything
but GET, HEAD and OPTIONS) and either

- ``Sec-Fetch-Site`` is present and is neither ``same-origin`` nor ``none`` (a request
  the user made by hand): ``cross-site``, ``same-site`` (another execute-api host is the
  same site as this one) or a value browsers do not send; or
- ``Origin`` is present and is not the API's own origin (``own_origin``), ``null``
  (sandboxed frames, redirects across origins) included.

The API's own origin is the scheme and the domain API Gateway answered on
(``requestContext.domainName``; the local API sets it to its host:port). A domain name
from the context, not the ``Host`` header, is what stops DNS rebinding: a page of
evil.example whose name now points at 127.0.0.1 sends ``Host``, ``Origin`` (and
``Sec-Fetch-Site: same-origin``) of evil.example. Where the context has none (Chalice's
test client, a local API that does not set it) the ``Host`` header stands in. On the
loopback interface, ``localhost``, ``127.0.0.1`` and ``[::1]`` at the same port are one
origin, so the dashboard works whichever of them the browser was given.

Failure modes: a refusal is decided before any route runs, so it creates or changes no
job and costs the jobs behind it nothing. A wrong refusal of the dashboard's own
requests would stop it submitting and cancelling (the browser tests in
tests/e2e/test_dashboard*.py guard that); a wrong acceptance is the cross-site
submission this module exists to stop (tests/e2e/test_cross_site.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.errors import RequestError

# Methods that change nothing here (RFC 9110 safe methods); every other one is checked.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values of requests made by the API's own pages or by the user directly.
TRUSTED_FETCH_SITES = frozenset({"same-origin", "none"})
# The stage whose API is served over plain http (make run); every deployed one is https.
LOCAL_STAGE = "local"
# Names of the loopback interface: the same server, whichever a browser was given.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


class CrossSiteRequest(RequestError):
    """403: a state-changing request that another site's page sent."""

    status_code = 403

    def __init__(self, message: str) -> None:
        super().__init__("cross_site_request", message)


def own_origin(context: Mapping[str, Any], headers: Mapping[str, str], stage: str) -> str | None:
    """The API's origin (``https://<domain>``, ``http://`` on the local stage) from the
    request context's domainName, else from the Host header; None with neither."""
    domain = context.get("domainName") or headers.get("host")
    if not domain:
        return None
    scheme = "http" if stage == LOCAL_STAGE else "https"
    return f"{scheme}://{domain}".lower()


def cross_site_refusal(
    method: str, headers: Mapping[str, str], origin: str | None
) -> CrossSiteRequest | None:
    """The refusal of a state-changing request another site sent, or None to let it
    through. ``headers`` is case-insensitive on names (as Chalice's are); ``origin`` is
    the API's own (``own_origin``): an Origin header when it is None is refused."""
    if method.upper() in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() not in TRUSTED_FETCH_SITES:
        return CrossSiteRequest(
            f"Refused a {method.upper()} sent by a page of another site "
            f"(Sec-Fetch-Site: {fetch_site[:40]}); send it from this API's own pages, "
            "or without a browser."
        )
    sent_origin = headers.get("origin")
    if sent_origin is not None and not _is_own(sent_origin.strip().lower(), origin):
        return CrossSiteRequest(
            f"Refused a {method.upper()} sent by a page of {sent_origin[:100]!r}, "
            "not this API's origin; send it from this API's own pages, or without a browser."
        )
    return None


def _is_own(sent: str, origin: str | None) -> bool:
    if origin is None:
        return False
    loopback = _loopback(sent)
    return sent == origin or (loopback is not None and loopback == _loopback(origin))


def _loopback(origin: str) -> str | None:
    """``scheme:port`` of an origin on the loopback interface; None for any other."""
    scheme, _, authority = origin.partition("://")
    host, colon, port = authority.rpartition(":")
    if not colon or not port.isdigit():  # no port: the authority is all host
        host, port = authority, ""
    return f"{scheme}:{port}" if host in LOOPBACK_HOSTS else None
