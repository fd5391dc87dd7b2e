"""The heavy-jobs API over HTTP: one method per request, every failure an exception.

    CliError            a one-line reason the command could not do its work
    ├── Unreachable     no HTTP answer at all: refused, unknown host, timed out
    ├── Redirected      the API redirected to another origin: not followed
    └── ApiError        an HTTP error answer: the API's {"error": {code, message}},
                        or API Gateway's {"message"} (403 without an API key, 429)

URLs are joined to the base URL relatively, so a base with a stage prefix
(``https://…/dev`` or ``…/dev/``) keeps it.

The API key goes to the base URL's origin (scheme, host and port) only. requests strips
``Authorization`` when a redirect leaves the host (``Session.rebuild_auth``), but not a
custom header such as ``x-api-key``, which a session's headers carry to wherever a
redirect points; so :class:`KeySession` refuses to follow a redirect to another origin.
On an IAM stage each request is signed instead (``jobs_cli.signing``); the same rule
keeps the signature and any session token on the API's origin, and a redirect within it
is signed again, since a signature covers one request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, quote, urljoin, urlsplit

import requests
from requests.auth import AuthBase

from jobs_cli import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
# The longest the API holds a request open for Prefer: wait / ?wait (it caps larger
# values there, under API Gateway's 29-second limit).
MAX_WAIT_SECONDS = 25
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 15.0
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
API_KEY_HEADER = "x-api-key"
# How a person gets a key for a keyed stage (the operator runs it; see docs/deploying.md).
GET_A_KEY = "`make api-key STAGE=<stage> CLIENT=<name>` prints a client's key"
# What API Gateway answers a request an IAM stage needs signed, and an unknown route alike.
MISSING_TOKEN = "Missing Authentication Token"
DEFAULT_PORTS = {"http": 80, "https": 443}


class CliError(Exception):
    """A one-line reason the command could not do its work."""


class Unreachable(CliError):
    """No HTTP answer at all."""


class Redirected(CliError):
    """The API answered with a redirect to another origin, which is not followed."""


class ApiError(CliError):
    """An HTTP error answer."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


Job = dict[str, Any]


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port filled in for http and https."""
    parts: SplitResult = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


class KeySession(requests.Session):
    """A session that follows redirects within one origin only, so the API key in its
    headers (or the signature its ``auth`` adds) never reaches another host, port or
    scheme; a redirect it follows is signed again."""

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        # Called for each redirect, before its request is sent: the place to stop it.
        target = prepared_request.url or ""
        if origin(target) != origin(response.request.url or ""):
            raise Redirected(
                f"the API redirected to {_without_query(target)}: not followed, so the API"
                " key goes to the API's own address only"
            )
        super().rebuild_auth(prepared_request, response)
        if self.auth is not None:  # requests applies a session's auth to the first request only
            prepared_request.prepare_auth(self.auth)


def _without_query(url: str) -> str:
    return urlsplit(url)._replace(query="", fragment="").geturl()


@dataclass
class Api:
    base_url: str
    api_key: str | None = None
    session: requests.Session = field(default_factory=KeySession)
    # Signs every request (an IAM stage: jobs_cli.signing.SigV4); None: unsigned.
    signer: AuthBase | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"not an http(s) URL: {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/") + "/"
        self.session.headers["User-Agent"] = f"jobs-cli/{__version__}"
        if self.api_key:
            self.session.headers[API_KEY_HEADER] = self.api_key
        self.session.auth = self.signer

    def submit(
        self, n: int, wait: int | None = None, when: Mapping[str, Any] | None = None
    ) -> tuple[int, Job]:
        """POST /heavy: (202, the accepted job) or, after Prefer: wait, (200, the job).
        ``when`` is ``{"run_at": ...}`` or ``{"delay_seconds": ...}`` for a job that runs
        later, or nothing for now."""
        headers = {"Prefer": f"wait={wait}"} if wait else {}
        body = {"n": n, **(when or {})}
        response = self._request("POST", "heavy", json=body, headers=headers, wait=wait)
        return response.status_code, _body(response)

    def submit_job(
        self,
        kind: str,
        input: Mapping[str, Any],
        wait: int | None = None,
        when: Mapping[str, Any] | None = None,
    ) -> tuple[int, Job]:
        """POST /jobs: (202, the queued job) or, after Prefer: wait, (200, the job)."""
        headers = {"Prefer": f"wait={wait}"} if wait else {}
        body = {"kind": kind, "input": dict(input), **(when or {})}
        response = self._request("POST", "jobs", json=body, headers=headers, wait=wait)
        return response.status_code, _body(response)

    def submit_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST /jobs/batch: one result per item, in order (``{"status", "job"}`` or
        ``{"status", "error"}``). Raises ApiError when the request as a whole is refused."""
        results = _body(self._request("POST", "jobs/batch", json={"jobs": items})).get("results")
        if not isinstance(results, list) or len(results) != len(items):
            raise ApiError(207, None, "POST /jobs/batch answered without one result per job")
        return [r if isinstance(r, dict) else {} for r in results]

    def schedules(self, client: str | None = None) -> list[dict[str, Any]]:
        """GET /schedules: the caller's schedules (the operator's: every client's, or
        ``client``'s)."""
        params = {"client": client} if client else None
        found = _body(self._request("GET", "schedules", params=params)).get("schedules")
        if not isinstance(found, list):
            raise ApiError(200, None, "GET /schedules answered without a list of schedules")
        return [s for s in found if isinstance(s, dict)]

    def schedule(self, name: str, client: str | None = None) -> dict[str, Any]:
        """GET /schedules/{name}; ``client`` is the operator's way to another client's."""
        return _body(self._request("GET", _schedule_path(name), params=_client(client)))

    def create_schedule(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /schedules: the schedule as made (201)."""
        return _body(self._request("POST", "schedules", json=dict(body)))

    def delete_schedule(self, name: str, client: str | None = None) -> None:
        """DELETE /schedules/{name} (204, no body)."""
        self._request("DELETE", _schedule_path(name), params=_client(client))

    def set_schedule_state(
        self, name: str, action: str, client: str | None = None
    ) -> dict[str, Any]:
        """POST /schedules/{name}/pause or /resume: the schedule as it now is."""
        path = f"{_schedule_path(name)}/{action}"
        return _body(self._request("POST", path, params=_client(client)))

    def create_webhook(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /webhooks: the endpoint as made, with its secret (201)."""
        return _body(self._request("POST", "webhooks", json=dict(body)))

    def delete_webhook(self, endpoint_id: str) -> None:
        """DELETE /webhooks/{id} (204, no body)."""
        self._request("DELETE", f"webhooks/{quote(endpoint_id, safe='')}")

    def kinds(self) -> list[dict[str, Any]]:
        """GET /kinds: each kind's name, description and input and result schemas."""
        kinds = _body(self._request("GET", "kinds")).get("kinds")
        if not isinstance(kinds, list):
            raise ApiError(200, None, "GET /kinds answered without a list of kinds")
        return [kind for kind in kinds if isinstance(kind, dict)]

    def retry(self, job_id: str) -> Job:
        """POST /jobs/{id}/retry: the new job."""
        return _body(self._request("POST", f"{_job_path(job_id)}/retry"))

    def job(self, job_id: str, wait: int | None = None) -> Job:
        """GET /jobs/{id}, waiting up to ``wait`` seconds on the server for it to finish."""
        params = {"wait": str(wait)} if wait else None
        return _body(self._request("GET", _job_path(job_id), params=params, wait=wait))

    def jobs(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        kind: str | None = None,
        client: str | None = None,
    ) -> dict[str, Any]:
        """GET /jobs: a page of jobs, newest first, and the cursor of the next one.
        ``client`` filters by client: the operator's (any name) or a client's own."""
        params = {"kind": kind, "status": status, "limit": None if limit is None else str(limit)}
        params.update(client=client, cursor=cursor)
        found = {name: value for name, value in params.items() if value is not None}
        return _body(self._request("GET", "jobs", params=found))

    def cancel(self, job_id: str) -> Job:
        return _body(self._request("POST", f"{_job_path(job_id)}/cancel"))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        wait: int | None = None,
    ) -> requests.Response:
        url = urljoin(self.base_url, path)
        timeout = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS + (wait or 0))
        try:
            response = self.session.request(
                method, url, params=params, json=json, headers=headers, timeout=timeout
            )
        except requests.Timeout:
            raise Unreachable(f"no answer from {self.base_url} in time") from None
        except requests.RequestException as error:
            raise Unreachable(f"cannot connect to {self.base_url}: {_reason(error)}") from None
        if response.status_code >= 400:
            raise _api_error(response, has_key=bool(self.api_key), signed=bool(self.signer))
        return response


def _job_path(job_id: str) -> str:
    # Quoted whole: an id is a path segment, never more ("../fast" stays one segment).
    return f"jobs/{quote(job_id, safe='')}"


def _schedule_path(name: str) -> str:
    return f"schedules/{quote(name, safe='')}"


def _client(client: str | None) -> dict[str, str] | None:
    return {"client": client} if client else None


def _body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(
            response.status_code, None, f"HTTP {response.status_code} without a JSON object"
        )
    return body


def _api_error(response: requests.Response, has_key: bool, signed: bool = False) -> ApiError:
    """The error answer as one line that says what to do about it."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = str(error.get("code"))
        return ApiError(status, code, _with_hint(error["message"], code, response, has_key))
    gateway = body.get("message") if isinstance(body, dict) else None
    message = gateway if isinstance(gateway, str) else f"HTTP {status} {response.reason}".strip()
    if status == 403 and gateway == "Forbidden":
        # API Gateway's own refusal: no key, or a key it does not know (or of another stage).
        if has_key:
            hint = f"the API key was not accepted (wrong, disabled or another stage's); {GET_A_KEY}"
        else:
            hint = f"this stage needs an API key: --api-key or $JOBS_API_KEY; {GET_A_KEY}"
        message = f"{message}: {hint}"
    elif status == 403 and gateway == MISSING_TOKEN and not signed:
        message = f"{message}: no such route, or a stage that needs signed requests (--auth iam)"
    elif status == 403 and signed and gateway not in (None, MISSING_TOKEN):
        # API Gateway's refusal of a signature: another account's, an expired token, or a
        # principal no policy allows execute-api:Invoke on this API.
        message = f"{message}: the AWS credentials' principal may not call this API"
    elif status == 429:
        message = f"{message}: over the API key's request rate; {_retry_when(response)}"
    return ApiError(status, None, message)


def _with_hint(message: str, code: str, response: requests.Response, has_key: bool) -> str:
    if code == "unknown_key":
        return f"{message} ({GET_A_KEY})"
    if code == "job_not_found" and has_key:
        return f"{message} (an API key finds its own client's jobs only)"
    if code == "schedule_not_found" and has_key:
        return f"{message} (an API key finds its own client's schedules only)"
    if response.status_code == 429:
        return f"{message} ({_retry_when(response)})"
    return message


def _retry_when(response: requests.Response) -> str:
    """``retry in 30 s`` from a Retry-After header (seconds or an HTTP date), else shortly."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return f"retry in {int(value)} s"
    return f"retry after {value}" if value else "retry shortly"


def _reason(error: BaseException) -> str:
    """The innermost OS-level reason (``Connection refused``), else the error's type."""
    reason: str = type(error).__name__
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            reason = current.strerror
        cause = getattr(current, "reason", None)
        if not isinstance(cause, BaseException):
            first = current.args[0] if current.args else None
            cause = first if isinstance(first, BaseException) else current.__cause__
        current = cause
    return reason
