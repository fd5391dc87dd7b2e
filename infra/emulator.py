"""The embedded AWS emulator: moto's server on 127.0.0.1, or an endpoint already there.

Command line (a foreground process, for ``make emulator`` and CI)::

    python -m infra.emulator [--port N] [--no-reuse] [--log-requests] [--stock-moto]

The port defaults to ``$EMULATOR_PORT``, else 4566 (LocalStack's port, so tools that
assume LocalStack find it). If an AWS-compatible endpoint already answers there (a
user's LocalStack, or a moto server started earlier), the command says so and exits 0:
that endpoint is the emulator, nothing is started. Otherwise it runs moto's server in
the foreground (with ``infra.moto_speedups`` applied, so that a deep queue or a big table
costs no more per call than an empty one; ``--stock-moto`` runs moto as released), prints
the endpoint once it answers, and stops cleanly on SIGINT or
SIGTERM (exit 0, no traceback). It exits 1 if the port is taken by something that does
not answer like AWS, or (with ``--no-reuse``) by an endpoint that does.

``make run`` (``infra.run``) also looks where a user's LocalStack says it is
(``localstack_endpoint``: LocalStack's own variables, read by localstack-client's rules)
before it starts moto; see ``ensure_emulator``'s ``fallback``.

Python API, for tooling and tests::

    endpoint_answers(url, timeout=1.0) -> bool
    free_port() -> int
    localstack_endpoint(environ=None) -> str | None
    start_emulator(port=None, *, output=None, ready_timeout=15.0, stock_moto=False)
        -> EmulatorHandle
    ensure_emulator(port=None, *, output=None, fallback=None) -> EmulatorHandle

An ``EmulatorHandle`` is a context manager with ``.url``, ``.port``, ``.owned`` and
``.stop()``; stopping a handle that owns its server leaves no process and frees the
port, stopping one that reuses somebody else's endpoint (on 127.0.0.1 or elsewhere)
does nothing.

Readiness is always a real AWS call (SQS ListQueues with dummy credentials), never a
sleep: "the port accepts connections" is not "the emulator answers".
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from localstack_client import config as localstack_config  # type: ignore[import-untyped]

HOST = "127.0.0.1"
DEFAULT_PORT = 4566  # LocalStack's edge port: SDK-based tools and docs assume it
PORT_ENV = "EMULATOR_PORT"

# The directory that holds the `infra` package, so a child `python -m infra.emulator`
# imports this very code whatever the caller's working directory.
_IMPORT_ROOT = Path(__file__).resolve().parent.parent


class EmulatorError(RuntimeError):
    """The emulator could not be started, or did not answer in time."""


def endpoint_url(port: int) -> str:
    """The emulator's URL on the loopback interface for ``port``."""
    return f"http://{HOST}:{port}"


def default_port(environ: Mapping[str, str] | None = None) -> int:
    """``$EMULATOR_PORT`` if set, else 4566.

    Raises ``ValueError`` naming the variable if it is set but not a port number.
    """
    env = os.environ if environ is None else environ
    raw = env.get(PORT_ENV)
    if not raw:
        return DEFAULT_PORT
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV}={raw!r} is not a port number") from None


# LocalStack's own conventions for where it listens, as its tooling reads them.
LOCALSTACK_HOST_ENV = "LOCALSTACK_HOST"  # <hostname>[:<port>]
LEGACY_EDGE_PORT_ENV = "EDGE_PORT"  # the port, before LOCALSTACK_HOST carried it
USE_SSL_ENV = "USE_SSL"


def localstack_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """Where the user's LocalStack is, by LocalStack's conventions; None if nothing says.

    ``$LOCALSTACK_HOST`` is ``<hostname>[:<port>]``, parsed by localstack-client's own
    ``parse_localstack_host`` (an empty hostname is ``localhost``), and ``$USE_SSL``
    (``1``/``true``) means https: the URL ``localstack_client.session`` clients use.
    ``$EDGE_PORT`` is LocalStack's port variable from before ``LOCALSTACK_HOST`` carried
    the port (localstack-client stopped reading it in 2.0); it gives the port when
    ``$LOCALSTACK_HOST`` names none, with ``localhost`` when that is unset. Otherwise the
    port is 4566. ``$AWS_ENDPOINT_URL``, which localstack-client puts first, is not read:
    ``make run`` sets it for its own processes to the endpoint it picked, and never took
    it as a hint. Raises ``ValueError`` naming the variable whose value is unusable.
    """
    env = os.environ if environ is None else environ
    host = env.get(LOCALSTACK_HOST_ENV, "").strip()
    edge_port = env.get(LEGACY_EDGE_PORT_ENV, "").strip()
    if not host and not edge_port:
        return None
    try:
        hostname, port = localstack_config.parse_localstack_host(host or "localhost")
    except RuntimeError:
        raise ValueError(f"{LOCALSTACK_HOST_ENV}={host!r} is not <hostname>[:<port>]") from None
    if edge_port and ":" not in host:
        if not edge_port.isdigit():
            raise ValueError(f"{LEGACY_EDGE_PORT_ENV}={edge_port!r} is not a port number")
        port = int(edge_port)
    scheme = "https" if env.get(USE_SSL_ENV) in ("1", "true") else "http"
    return f"{scheme}://{hostname}:{port}"


@functools.lru_cache(maxsize=1)
def _probe_session() -> boto3.session.Session:
    # Built once, on first use (never at import): a session loads service models, and
    # readiness polling would otherwise pay for that on every attempt.
    return boto3.session.Session(
        aws_access_key_id="emulator", aws_secret_access_key="emulator", region_name="us-east-1"
    )


def endpoint_answers(url: str, timeout: float = 1.0) -> bool:
    """True if an AWS-compatible endpoint answers SQS ListQueues at ``url``.

    Uses dummy credentials (emulators accept any), one attempt and ``timeout`` seconds
    for connecting and for reading. Anything else (refused connection, timeout, an HTTP
    server that is not AWS-shaped, an AWS error) is False: the question is "can boto3
    work against this", not "is something listening".
    """
    client = _probe_session().client(
        "sqs",
        endpoint_url=url,
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1},
        ),
    )
    try:
        client.list_queues()
    except (BotoCoreError, ClientError):
        return False
    finally:
        client.close()
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to right now (the OS picks it).

    Another process may take it before you bind it; good enough for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True if a server could bind 127.0.0.1:``port`` now.

    SO_REUSEADDR, as servers (werkzeug's included) set it, so sockets of closed
    connections lingering in TIME_WAIT do not count as taking the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class EmulatorHandle:
    """An emulator endpoint, and the server process if this handle started it.

    ``owned`` is True when ``process`` is ours to stop; a handle on an endpoint that
    was already there (``owned`` False) never stops it.
    """

    def __init__(
        self,
        port: int,
        process: subprocess.Popen[bytes] | None = None,
        url: str | None = None,
    ) -> None:
        self.port = port
        self.process = process
        self._url = url  # an endpoint found elsewhere than 127.0.0.1:port

    @classmethod
    def reusing(cls, url: str) -> EmulatorHandle:
        """A handle on somebody else's endpoint at ``url`` (never stopped by us)."""
        parts = urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.port or default, url=url.rstrip("/"))

    @property
    def url(self) -> str:
        return self._url or endpoint_url(self.port)

    @property
    def owned(self) -> bool:
        return self.process is not None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server if we own it, and wait until its port is free.

        SIGTERM first (the server shuts down cleanly), SIGKILL if it is still running
        after ``timeout`` seconds. Idempotent. Raises ``EmulatorError`` if the port is
        still taken afterwards.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not wait_until(lambda: port_is_free(self.port), timeout):
            raise EmulatorError(f"port {self.port} is still taken after the emulator stopped")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"EmulatorHandle(url={self.url!r}, owned={self.owned}, pid={pid})"


def start_emulator(
    port: int | None = None,
    *,
    output: IO[Any] | int | None = None,
    ready_timeout: float = 15.0,
    stock_moto: bool = False,
) -> EmulatorHandle:
    """Start a moto server in a subprocess on 127.0.0.1:``port`` and wait until it answers.

    ``stock_moto`` runs moto as released (``--stock-moto``), without the speed-ups.

    ``port`` None picks a free one. The subprocess is ``python -m infra.emulator
    --no-reuse`` (this module's foreground server); its stdout and stderr go to
    ``output`` (default: inherited; ``subprocess.PIPE`` gives one pipe for both, on
    ``handle.process.stdout``). Raises ``EmulatorError`` if the port is taken,
    the process exits early, or it does not answer within ``ready_timeout`` seconds;
    in each case no process is left behind.
    """
    port = free_port() if port is None else port
    if not port_is_free(port):
        raise EmulatorError(f"port {port} is taken; use ensure_emulator() to reuse an endpoint")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_IMPORT_ROOT), env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.emulator", "--port", str(port), "--no-reuse"]
        + (["--stock-moto"] if stock_moto else []),
        cwd=_IMPORT_ROOT,  # `-m` looks in the working directory first
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output == subprocess.PIPE else output,
    )
    handle = EmulatorHandle(port, process)
    url = handle.url

    def answers_or_exited() -> bool:
        return process.poll() is not None or endpoint_answers(url, timeout=0.5)

    ready = wait_until(answers_or_exited, ready_timeout)
    if ready and process.poll() is None:
        return handle
    code = process.poll()
    handle.stop()
    if code is not None:
        raise EmulatorError(f"the emulator on port {port} exited early with status {code}")
    raise EmulatorError(f"the emulator on port {port} did not answer within {ready_timeout} s")


def ensure_emulator(
    port: int | None = None,
    *,
    output: IO[Any] | int | None = None,
    fallback: str | None = None,
) -> EmulatorHandle:
    """Reuse the endpoint answering on ``port`` if there is one, else the one at
    ``fallback`` (e.g. ``localstack_endpoint()``) if that answers, else start moto on
    ``port``.

    ``port`` defaults to ``$EMULATOR_PORT`` or 4566. The handle's ``owned`` says whether
    it started one; only an owned handle's ``stop()`` stops anything.
    """
    port = default_port() if port is None else port
    if endpoint_answers(endpoint_url(port)):
        return EmulatorHandle(port)
    if fallback is not None and endpoint_answers(fallback):
        return EmulatorHandle.reusing(fallback)
    return start_emulator(port, output=output)


def serve(
    port: int, *, log_requests: bool = False, ready_timeout: float = 15.0, stock_moto: bool = False
) -> int:
    """Run moto's server on 127.0.0.1:``port`` until SIGINT or SIGTERM; return an exit status.

    The server runs in a thread of this process and the main thread only waits for a
    signal, so a signal stops it through ``ThreadedMotoServer.stop()`` rather than
    unwinding moto's own CLI (which prints a SystemExit traceback on SIGTERM).

    Unless ``stock_moto``, moto's SQS and DynamoDB are first given indexes
    (``infra.moto_speedups``), so calls cost the same at any queue depth or table size;
    that raises ``UnsupportedMotoVersion`` on a moto release other than the pinned one.
    """
    from moto.server import ThreadedMotoServer  # heavy import, needed only here

    from infra import moto_speedups

    if not stock_moto:
        moto_speedups.apply()
    flavour = "moto as released" if stock_moto else "with infra.moto_speedups"
    if not log_requests:
        # werkzeug logs every request; the event-source runner long-polls all day.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stop = threading.Event()
    _stop_on_signals(stop)
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    # start() blocks until the socket is bound and would block forever if binding
    # failed (the error stays in its thread), so start it aside and judge readiness
    # by a real AWS call with a deadline.
    threading.Thread(target=server.start, name="moto-start", daemon=True).start()
    url = endpoint_url(port)
    if not wait_until(lambda: stop.is_set() or endpoint_answers(url, 0.5), ready_timeout):
        print(
            f"emulator: moto server did not answer at {url} within {ready_timeout} s",
            file=sys.stderr,
            flush=True,
        )
        return 1
    if not stop.is_set():
        print(
            f"emulator: moto server ready at {url} ({flavour}; export AWS_ENDPOINT_URL={url})",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    server.stop()
    print("emulator: stopped", flush=True)
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.emulator",
        description="Run moto's AWS emulator on 127.0.0.1, or reuse an endpoint already there.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port on 127.0.0.1 (default: ${PORT_ENV}, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="fail instead of reusing an endpoint that already answers on the port",
    )
    parser.add_argument(
        "--log-requests",
        action="store_true",
        help="log every request moto serves",
    )
    parser.add_argument(
        "--stock-moto",
        action="store_true",
        help="run moto as released, without infra.moto_speedups (to compare, or to rule them out)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parse_args(argv)
    try:
        port = default_port() if args.port is None else args.port
    except ValueError as err:
        print(f"emulator: {err}", file=sys.stderr)
        return 2
    url = endpoint_url(port)
    if endpoint_answers(url):
        if args.no_reuse:
            print(f"emulator: an endpoint already answers at {url}", file=sys.stderr)
            return 1
        print(
            f"emulator: an AWS-compatible endpoint already answers at {url}; using it "
            "(nothing started)",
            flush=True,
        )
        return 0
    if not port_is_free(port):
        print(
            f"emulator: port {port} is taken by something that does not answer like AWS",
            file=sys.stderr,
        )
        return 1
    return serve(port, log_requests=args.log_requests, stock_moto=args.stock_moto)


if __name__ == "__main__":
    sys.exit(main())
