"""infra.local_api's hook into chalice local: it replaces the request handler Chalice's
server builds, and refuses to guess when Chalice builds it some other way. (What the
handler answers is tested over real HTTP in tests/e2e/test_local_api.py.)"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from chalice.app import Chalice
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalDevServer

from infra.local_api import LocalApiRequestHandler, use_handler


@pytest.fixture
def server() -> Iterator[LocalDevServer]:
    app = Chalice(app_name="toy")

    @app.route("/")
    def index() -> dict[str, str]:
        return {}

    dev_server = LocalDevServer(app, Config(), "127.0.0.1", 0)
    yield dev_server
    dev_server.server.server_close()


def test_the_server_builds_the_projects_handler_with_chalices_arguments(
    server: LocalDevServer,
) -> None:
    before = server.server.RequestHandlerClass
    assert isinstance(before, functools.partial) and before.func is ChaliceRequestHandler

    use_handler(server)

    after = server.server.RequestHandlerClass
    assert isinstance(after, functools.partial) and after.func is LocalApiRequestHandler
    assert after.keywords == before.keywords  # the same app and config
    assert LocalApiRequestHandler.disable_nagle_algorithm is True


def test_an_unexpected_handler_factory_is_refused(server: LocalDevServer) -> None:
    server.server.RequestHandlerClass = ChaliceRequestHandler
    with pytest.raises(RuntimeError, match="unexpected request handler factory"):
        use_handler(server)
