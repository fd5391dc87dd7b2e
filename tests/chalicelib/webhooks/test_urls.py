"""Where a webhook may go (chalicelib.webhooks.urls): the address rules on a deployed stage
and on the local one, and a delivery that connects to the address it checked, with a
resolver the test injects, against a receiver on loopback (http, and https with a
certificate made here)."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib.webhooks.urls import UnsafeUrl, check, post, refusal

PUBLIC = "93.184.215.14"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.0.1", "a private address"),
        ("fc00::1", "a private address"),
        ("169.254.169.254", "the instance metadata address"),
        ("fd00:ec2::254", "the instance metadata address"),
        ("::ffff:169.254.169.254", "the instance metadata address"),
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "a private address"),  # "this network", in the private registry
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "not a public address"),
    ],
)
def test_a_deployed_stage_refuses_every_address_that_is_not_public(address: str, why: str) -> None:
    assert refusal(address, "prod") == why


def test_public_addresses_are_delivered_to() -> None:
    for address in (PUBLIC, "2606:4700:4700::1111", "8.8.8.8"):
        assert refusal(address, "prod") is None


def test_the_local_stage_may_deliver_to_loopback_and_nothing_else_more() -> None:
    assert refusal("127.0.0.1", "local") is None
    assert refusal("::1", "local") is None
    assert refusal("10.1.2.3", "local") == "a private address"
    assert refusal("169.254.169.254", "local") == "the instance metadata address"


def resolver_of(table: dict[str, list[str]]) -> Any:
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return table.get(host, [])

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def test_check_resolves_once_and_refuses_a_name_with_any_bad_address() -> None:
    resolve = resolver_of({"good.test": [PUBLIC], "mixed.test": [PUBLIC, "10.0.0.1"]})
    target = check("https://good.test/hooks?x=1", "prod", resolve)
    assert (target.host, target.port, target.address, target.path) == (
        "good.test",
        443,
        PUBLIC,
        "/hooks?x=1",
    )
    assert resolve.asked == [("good.test", 443)]
    with pytest.raises(UnsafeUrl, match=r"10\.0\.0\.1, a private address"):
        check("https://mixed.test/", "prod", resolve)
    with pytest.raises(UnsafeUrl, match="no address"):
        check("https://nowhere.test/", "prod", resolve)
    with pytest.raises(UnsafeUrl, match="https only"):
        check("http://good.test/", "prod", resolve)
    assert check("http://good.test/", "local", resolve).port == 80


@pytest.fixture
def system_resolver_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any lookup of a name past the checked one fails the test: the delivery connects
    to the address it checked (socket.create_connection still passes that address,
    a literal, through getaddrinfo)."""
    real = socket.getaddrinfo

    def literals_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise AssertionError(f"a second lookup of {host!r}") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", literals_only)


class Receiver(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the server's ``status`` and records what it got."""

    def do_POST(self) -> None:
        server: Any = self.server
        length = int(self.headers["Content-Length"])
        server.got.append((self.path, dict(self.headers), self.rfile.read(length)))
        self.send_response(server.status)
        if server.status in (301, 302, 307, 308):
            self.send_header("Location", server.location)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.got, server.status, server.location = [], 204, ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_delivery_connects_to_the_checked_address_with_the_urls_host(
    receiver: Any, system_resolver_refused: None
) -> None:
    port = receiver.server_address[1]
    resolve = resolver_of({"hooks.test": ["127.0.0.1"]})
    target = check(f"http://hooks.test:{port}/in?a=b", "local", resolve)

    status = post(target, b'{"x":1}', {"webhook-id": "e1"}, timeout=10)

    assert status == 204
    [(path, headers, body)] = receiver.got
    assert (path, body) == ("/in?a=b", b'{"x":1}')
    assert headers["Host"] == f"hooks.test:{port}" and headers["webhook-id"] == "e1"


def test_a_redirect_is_not_followed(receiver: Any, system_resolver_refused: None) -> None:
    port = receiver.server_address[1]
    receiver.status, receiver.location = 307, f"http://127.0.0.1:{port}/elsewhere"
    target = check(
        f"http://hooks.test:{port}/in", "local", resolver_of({"hooks.test": ["127.0.0.1"]})
    )

    assert post(target, b"{}", {}, timeout=10) == 307
    assert [path for path, _, _ in receiver.got] == ["/in"]


def test_a_receiver_that_never_answers_is_a_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        target = check(
            f"http://hooks.test:{port}/", "local", resolver_of({"hooks.test": ["127.0.0.1"]})
        )
        with pytest.raises(OSError):
            post(target, b"{}", {}, timeout=0.2)


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_deadline() -> None:
    """Each byte comes well within the per-operation timeout, so only a deadline on the
    whole request ends it: the trickle alone would last 50 times the timeout."""
    timeout = 0.5
    with socket.create_server(("127.0.0.1", 0)) as trickler:
        port = trickler.getsockname()[1]
        target = check(
            f"http://hooks.test:{port}/", "local", resolver_of({"hooks.test": ["127.0.0.1"]})
        )
        stop = threading.Event()

        def trickle() -> None:
            connection, _ = trickler.accept()
            with connection:
                connection.recv(65536)
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
                for byte in answer[: int(50 * timeout / 0.1)]:
                    if stop.wait(0.1):
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        return

        server = threading.Thread(target=trickle, daemon=True)
        server.start()
        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError, match=r"no whole answer within 0\.5 s"):
                post(target, b"{}", {}, timeout=timeout)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            server.join()
    assert elapsed < 25 * timeout  # the trickle would take 50


def certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_receiver(receiver: Any, tmp_path: Path) -> Any:
    cert, key = certificate(tmp_path, "hooks.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver.socket = context.wrap_socket(receiver.socket, server_side=True)
    receiver.cert = cert
    return receiver


def test_https_connects_to_the_checked_address_and_verifies_the_hosts_certificate(
    tls_receiver: Any, system_resolver_refused: None
) -> None:
    port = tls_receiver.server_address[1]
    trusted = ssl.create_default_context(cafile=str(tls_receiver.cert))
    resolve = resolver_of({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})

    target = check(f"https://hooks.test:{port}/in", "local", resolve)
    assert post(target, b"{}", {}, timeout=10, context=trusted) == 204

    # The same address under another name: its certificate does not name it.
    other = check(f"https://other.test:{port}/in", "local", resolve)
    with pytest.raises(ssl.SSLCertVerificationError):
        post(other, b"{}", {}, timeout=10, context=trusted)
    assert len(tls_receiver.got) == 1
    assert ipaddress.ip_address(target.address).is_loopback
