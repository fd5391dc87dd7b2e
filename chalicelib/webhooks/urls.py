"""Where a webhook may be delivered, and the one HTTP request that delivers it.

A client names its endpoint by URL; the delivery function runs inside AWS, so a URL that
resolves to the function's own network (loopback, private ranges, link-local, the
instance metadata service at 169.254.169.254 and fd00:ec2::254) would let a client make
the service call what it can reach and the client cannot. So each delivery:

1. resolves the host once, with the resolver it is given (``socket.getaddrinfo`` by
   default; tests inject one), and refuses the URL if any address it resolves to is not
   public (one bad address is enough: a name that answers both is not trusted);
2. connects to the address it checked, never resolving the name again, while TLS still
   verifies the certificate against the host name (SNI and hostname checking as usual),
   so a DNS answer that changes between the check and the connection changes nothing;
3. does not follow redirects: a 3xx answer is a failed attempt like a 5xx, retried on
   the same schedule (a redirect could name any address; Standard Webhooks receivers
   answer 2xx).

Deployed stages deliver over https only; the local stage (``make run``) may also use
http and deliver to loopback, for a receiver such as ``jobs listen`` on the developer's
machine. Every other address rule holds there too.

Failure costs: a refused URL or a failed request is one failed attempt for that
endpoint and event, retried later (chalicelib.webhooks.delivery); it costs no job and no
other endpoint anything. A request lasts at most ``timeout`` seconds in all (connect,
TLS, sending, the answer's status, headers and body): an endpoint that trickles its answer
a byte at a time is cut off at the deadline like one that never answers.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from chalicelib.webhooks.endpoints import LOCAL_STAGE

# host, port -> the addresses the host resolves to.
Resolver = Callable[[str, int], list[str]]
# The instance metadata service's addresses (EC2 User Guide, "Access instance metadata
# for an EC2 instance": 169.254.169.254 and, over IPv6, fd00:ec2::254). Both are in
# ranges refused anyway (link-local, unique local); named so that stays checked.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# The most bytes of an answer read (its status is what counts; the body is discarded).
MAX_ANSWER_BYTES = 4096


class UnsafeUrl(Exception):
    """A URL this stage does not deliver to; the message says why (no secret in it)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to ask for there."""

    scheme: str
    host: str
    port: int
    address: str
    # The path and query to request ("/" for none).
    path: str


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system's resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise UnsafeUrl(f"cannot resolve {host!r}: {error}") from None
    return [str(info[4][0]) for info in infos]


def refusal(address: str, stage: str) -> str | None:
    """Why ``address`` is no delivery address on ``stage`` (None: it is one)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is no part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip in METADATA_ADDRESSES:
        return "the instance metadata address"
    if ip.is_loopback:
        return None if stage == LOCAL_STAGE else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not a public address"
    return None


def check(url: str, stage: str, resolver: Resolver = resolve) -> Target:
    """The target to deliver ``url`` to on ``stage``; UnsafeUrl if the scheme is not
    allowed there or any address the host resolves to is refused."""
    parts = urlsplit(url)
    schemes = ("https", "http") if stage == LOCAL_STAGE else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise UnsafeUrl(f"{parts.scheme or 'no'} scheme: this stage delivers over https only")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(parts.hostname, port)
    if not addresses:
        raise UnsafeUrl(f"{parts.hostname!r} resolves to no address")
    for address in addresses:
        why = refusal(address, stage)
        if why is not None:
            raise UnsafeUrl(f"{parts.hostname!r} resolves to {address}, {why}")
    path = parts.path or "/"
    return Target(
        parts.scheme,
        parts.hostname,
        port,
        addresses[0],
        f"{path}?{parts.query}" if parts.query else path,
    )


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a checked address, whatever the host name resolves to now."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address; the certificate is verified against
    the host name, as for any HTTPS request."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._context = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def post(
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``target`` and return the answer's status (a redirect is not
    followed: its status is returned). OSError (a refused connection, a certificate that
    does not match, no whole answer within ``timeout`` seconds of the start) when no
    answer came."""
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(
            target, timeout, context or ssl.create_default_context()
        )
    else:
        connection = _PinnedHTTPConnection(target, timeout)
    # Each socket operation has ``timeout`` too; the deadline bounds their sum: it shuts
    # the socket down under whatever read or write is waiting, which then fails at once.
    expired = threading.Event()
    deadline = threading.Timer(timeout, _cut, args=(connection, expired))
    deadline.start()
    try:
        connection.request("POST", target.path, body=body, headers=dict(headers))
        answer = connection.getresponse()
        answer.read(MAX_ANSWER_BYTES)
        status = answer.status
    except (OSError, http.client.HTTPException) as error:
        if expired.is_set():
            raise TimeoutError(f"no whole answer within {timeout:g} s") from None
        if isinstance(error, OSError):
            raise
        raise OSError(f"malformed answer: {type(error).__name__}") from None
    finally:
        deadline.cancel()
        connection.close()
    return status


def _cut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """End ``connection``'s request at its deadline (a shutdown wakes a blocked read)."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
