"""The client a key names, and what a caller may see."""

from __future__ import annotations

from urllib.parse import unquote

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


ACCOUNT = "123456789012"


@pytest.mark.parametrize("session", ["build-1", "build-2", "i-0abc@example.com"])
def test_an_assumed_role_is_its_role_whichever_session_signed(session: str) -> None:
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/Billing+Reports=1,v.2@x_y-z/{session}"
    assert clients.client_of_principal(arn, ACCOUNT) == "Billing+Reports=1,v.2@x_y-z"


def test_a_user_is_its_arn() -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:user/teams/data/alice"
    assert clients.client_of_principal(arn, ACCOUNT) == arn
    assert clients.client_of_principal(arn) == arn  # the account is checked only when given


def test_an_arns_characters_no_key_may_hold_are_percent_encoded() -> None:
    """An IAM path may hold any printable ASCII: `#` (which separates the parts of a
    listing key) and `&` (a listing name's) never reach a key; the encoding is one-to-one."""
    arn = f"arn:aws:iam::{ACCOUNT}:user/a#b&c%d?e/bob"
    client = clients.client_of_principal(arn, ACCOUNT)
    assert client == f"arn:aws:iam::{ACCOUNT}:user/a%23b%26c%25d%3Fe/bob"
    assert client is not None and clients.RECORDED_CLIENT.fullmatch(client)
    assert unquote(client) == arn
    assert not {"#", "&"} & set(client)


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "alice",  # not an ARN
        "arn:aws:s3:::bucket/key",  # not an IAM principal
        "arn:aws:sts::999999999999:assumed-role/Billing/s",  # another account
        f"arn:aws:sts::{ACCOUNT}:assumed-role/operator/s",  # a reserved name
        f"arn:aws:sts::{ACCOUNT}:assumed-role/anonymous/s",
        f"arn:aws:iam::{ACCOUNT}:user/" + "p/" * 600 + "bob",  # too long to record
    ],
)
def test_principals_no_client_could_be_are_none(arn: str) -> None:
    assert clients.client_of_principal(arn, ACCOUNT) is None


@pytest.mark.parametrize(
    ("principal", "client"),
    [
        ("Ops", "Ops"),
        (f"arn:aws:iam::{ACCOUNT}:role/Ops", "Ops"),
        (f"arn:aws:iam::{ACCOUNT}:role/team/Ops", "Ops"),  # a role's sessions hold no path
        (f"arn:aws:iam::{ACCOUNT}:user/carol", f"arn:aws:iam::{ACCOUNT}:user/carol"),
    ],
)
def test_the_operator_principal_is_named_as_its_requests_are(principal: str, client: str) -> None:
    assert clients.operator_client(principal) == client
    assert clients.operator_client("operator") is None
