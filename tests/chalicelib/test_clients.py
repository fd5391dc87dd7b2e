"""The client a key names, and what a caller may see."""

from __future__ import annotations

import pytest

from chalicelib import clients
from chalicelib.clients import ANONYMOUS_CALLER, OPERATOR_CALLER, Caller


@pytest.mark.parametrize("client", [None, "operator"])
def test_the_stages_own_key_is_the_operators(client: str | None) -> None:
    name = clients.key_name("heavy-jobs", "prod", client)
    assert name == "heavy-jobs-prod"
    assert clients.client_of_key("heavy-jobs", "prod", name) == clients.OPERATOR


def test_a_clients_key_names_the_client_and_round_trips() -> None:
    name = clients.key_name("heavy-jobs", "prod", "alice")
    assert name == "heavy-jobs-prod-alice"
    assert clients.client_of_key("heavy-jobs", "prod", name) == "alice"


@pytest.mark.parametrize(
    "name",
    [
        "heavy-jobs-dev-alice",  # another stage's
        "heavy-jobs-prod-",  # no client
        "heavy-jobs-prod-anonymous",  # reserved
        "heavy-jobs-prod-operator",
        "heavy-jobs-prod-a/b",
        "heavy-jobs-prod-" + "x" * 65,
        "other-prod-alice",
        "heavy-jobs-production",
    ],
)
def test_keys_no_client_could_have_name_no_client(name: str) -> None:
    assert clients.client_of_key("heavy-jobs", "prod", name) is None


@pytest.mark.parametrize("name", ["", "a b", "é", "x" * 65, "operator", "anonymous"])
def test_client_names_are_plain_and_not_reserved(name: str) -> None:
    assert not clients.is_client_name(name)


def test_a_client_sees_its_own_jobs_only_and_the_operator_all() -> None:
    alice = Caller("alice")
    assert alice.may_see("alice") and not alice.may_see("bob")
    assert not alice.may_see(clients.ANONYMOUS)
    assert OPERATOR_CALLER.may_see("bob") and OPERATOR_CALLER.may_see(clients.ANONYMOUS)
    assert ANONYMOUS_CALLER.may_see("anything")
