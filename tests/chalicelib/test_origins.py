"""chalicelib.origins: which state-changing requests another site's page sent, and the
API's own origin they are compared with."""

from __future__ import annotations

import pytest

from chalicelib.origins import CrossSiteRequest, cross_site_refusal, own_origin

OWN = "https://abc123.execute-api.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, the CLI, any program: neither header
        {"sec-fetch-site": "same-origin"},  # the dashboard's own fetch
        {"sec-fetch-site": "none"},  # typed or bookmarked by the user
        {"origin": OWN},
        {"origin": OWN.upper(), "sec-fetch-site": "Same-Origin"},  # case is no difference
        {"origin": OWN, "sec-fetch-site": "same-origin"},
    ],
)
def test_a_request_from_the_api_itself_or_no_browser_goes_through(
    headers: dict[str, str],
) -> None:
    assert cross_site_refusal("POST", headers, OWN) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        # Another execute-api host is the same site (amazonaws.com is no public suffix).
        {"sec-fetch-site": "same-site"},
        {"sec-fetch-site": "something-new"},
        {"origin": "https://evil.example"},
        {"origin": "null"},  # sandboxed frames, redirects across origins
        {"origin": "http://abc123.execute-api.us-east-1.amazonaws.com"},  # another scheme
        {"origin": "https://xyz789.execute-api.us-east-1.amazonaws.com"},  # same site
        {"origin": OWN, "sec-fetch-site": "cross-site"},
        {"origin": "https://evil.example", "sec-fetch-site": "same-origin"},
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "post"])
def test_a_state_changing_request_from_another_site_is_refused(
    method: str, headers: dict[str, str]
) -> None:
    refusal = cross_site_refusal(method, headers, OWN)

    assert isinstance(refusal, CrossSiteRequest)
    assert (refusal.status_code, refusal.code) == (403, "cross_site_request")


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_safe_request_is_never_refused(method: str) -> None:
    headers = {"origin": "null", "sec-fetch-site": "cross-site"}
    assert cross_site_refusal(method, headers, OWN) is None


@pytest.mark.parametrize(
    ("sent", "own", "accepted"),
    [
        ("http://localhost:8000", "http://127.0.0.1:8000", True),
        ("http://127.0.0.1:8000", "http://localhost:8000", True),
        ("http://[::1]:8000", "http://127.0.0.1:8000", True),
        ("http://localhost", "http://127.0.0.1", True),
        ("http://localhost:8001", "http://127.0.0.1:8000", False),  # another server
        ("https://localhost:8000", "http://127.0.0.1:8000", False),
        ("http://evil.example:8000", "http://127.0.0.1:8000", False),  # DNS rebinding
        ("http://127.0.0.2:8000", "http://127.0.0.1:8000", False),
        ("http://localhost.evil.example:8000", "http://localhost:8000", False),
    ],
)
def test_the_loopback_names_are_one_origin(sent: str, own: str, accepted: bool) -> None:
    refusal = cross_site_refusal("POST", {"origin": sent, "sec-fetch-site": "same-origin"}, own)
    assert (refusal is None) is accepted


def test_an_origin_is_refused_when_the_apis_own_is_unknown() -> None:
    assert cross_site_refusal("POST", {"origin": OWN}, None) is not None
    assert cross_site_refusal("POST", {}, None) is None


@pytest.mark.parametrize(
    ("context", "headers", "stage", "origin"),
    [
        ({"domainName": "abc.execute-api.eu-west-1.amazonaws.com"}, {}, "dev", "https://abc.execute-api.eu-west-1.amazonaws.com"),
        ({"domainName": "api.example.com"}, {"host": "evil.example"}, "prod", "https://api.example.com"),
        ({"domainName": "127.0.0.1:8123"}, {}, "local", "http://127.0.0.1:8123"),
        ({}, {"host": "localhost:8000"}, "local", "http://localhost:8000"),
        ({}, {}, "dev", None),
    ],
)  # fmt: skip
def test_the_apis_own_origin_is_its_domain_name_else_the_host(
    context: dict[str, str], headers: dict[str, str], stage: str, origin: str | None
) -> None:
    assert own_origin(context, headers, stage) == origin
