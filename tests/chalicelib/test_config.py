from __future__ import annotations

import pytest

from chalicelib.config import Auth, Settings, api_key_required, auth
from chalicelib.errors import SettingsError

REQUIRED = {
    "JOBS_TABLE_NAME": "t",
    "JOBS_QUEUE_NAME": "q",
    "JOBS_DELAY_QUEUE_NAME": "d",
    "JOBS_STAGE": "s",
}


def test_required_settings_and_defaults() -> None:
    settings = Settings.from_mapping(REQUIRED)
    assert (settings.table_name, settings.queue_name, settings.delay_queue_name) == ("t", "q", "d")
    assert settings.stage == "s"
    assert settings.max_n == 10**10
    assert 0 < settings.default_n <= settings.max_n
    assert settings.lost_after_seconds == 120
    assert settings.claim_backoff_cap_seconds == 60
    assert (settings.max_active_per_client, settings.max_active_seconds_per_client) == (100, 3600)


def test_the_client_quotas_are_settings_and_0_turns_one_off() -> None:
    env = {
        **REQUIRED,
        "JOBS_MAX_ACTIVE_PER_CLIENT": "0",
        "JOBS_MAX_ACTIVE_SECONDS_PER_CLIENT": "60",
    }
    settings = Settings.from_mapping(env)
    assert (settings.max_active_per_client, settings.max_active_seconds_per_client) == (0, 60)


def test_the_claim_backoff_cap_is_a_setting() -> None:
    env = {**REQUIRED, "JOBS_CLAIM_BACKOFF_CAP_SECONDS": "3"}
    assert Settings.from_mapping(env).claim_backoff_cap_seconds == 3


def test_message_hold_outlasts_the_lease() -> None:
    """A crashed run's message must come back only after its lease expired (so that
    delivery can take the job over), and the hold follows the lease setting."""
    for stale in ("30", "2"):
        settings = Settings.from_mapping({**REQUIRED, "JOBS_STALE_AFTER_SECONDS": stale})
        assert settings.message_hold_seconds == 2 * settings.stale_after_seconds
        # Renewed every third of the lease: what is left of the hold at a crash always
        # exceeds the lease then left.
        assert settings.message_hold_seconds - settings.stale_after_seconds / 3 > (
            settings.stale_after_seconds
        )


@pytest.mark.parametrize("missing", sorted(REQUIRED))
@pytest.mark.parametrize("value", [None, "", "  "])
def test_missing_required_setting_is_named(missing: str, value: str | None) -> None:
    env = dict(REQUIRED)
    if value is None:
        del env[missing]
    else:
        env[missing] = value
    with pytest.raises(SettingsError, match=f"missing required setting {missing}"):
        Settings.from_mapping(env)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("JOBS_MAX_N", "lots", "JOBS_MAX_N must be an integer"),
        ("JOBS_MAX_N", "-1", "JOBS_MAX_N must be >= 0"),
        ("JOBS_DEFAULT_N", "1.5", "JOBS_DEFAULT_N must be an integer"),
        ("JOBS_DEFAULT_N", "100000000000", "JOBS_DEFAULT_N=100000000000 is over JOBS_MAX_N"),
        ("JOBS_PROGRESS_INTERVAL_SECONDS", "0", "must be > 0"),
        ("JOBS_PROGRESS_INTERVAL_SECONDS", "soon", "must be a number"),
        ("JOBS_LOOP_RATE_PER_SECOND", "0", "must be >= 1"),
        ("JOBS_LOST_AFTER_SECONDS", "0", "JOBS_LOST_AFTER_SECONDS must be >= 1"),
        ("JOBS_CLAIM_BACKOFF_CAP_SECONDS", "0", "JOBS_CLAIM_BACKOFF_CAP_SECONDS must be >= 1"),
        ("JOBS_MAX_ACTIVE_PER_CLIENT", "-1", "JOBS_MAX_ACTIVE_PER_CLIENT must be >= 0"),
        ("JOBS_MAX_ACTIVE_SECONDS_PER_CLIENT", "1h", "must be an integer"),
    ],
)
def test_malformed_setting_is_named(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_mapping({**REQUIRED, name: value})


def test_overrides_are_read() -> None:
    settings = Settings.from_mapping(
        {
            **REQUIRED,
            "JOBS_MAX_N": "50",
            "JOBS_DEFAULT_N": "5",
            "JOBS_PROGRESS_INTERVAL_SECONDS": "0.5",
            "JOBS_LOST_AFTER_SECONDS": "7",
        }
    )
    assert (settings.max_n, settings.default_n, settings.progress_interval_seconds) == (50, 5, 0.5)
    assert settings.lost_after_seconds == 7


def test_importing_the_app_without_the_queue_setting_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import sys

    monkeypatch.delenv("JOBS_QUEUE_NAME", raising=False)
    monkeypatch.delitem(sys.modules, "app", raising=False)
    with pytest.raises(SettingsError, match="JOBS_QUEUE_NAME"):
        importlib.import_module("app")


def test_importing_the_app_without_the_delay_queue_setting_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import sys

    monkeypatch.delenv("JOBS_DELAY_QUEUE_NAME", raising=False)
    monkeypatch.setenv("JOBS_QUEUE_NAME", "q")
    monkeypatch.setenv("JOBS_DEAD_LETTER_QUEUE_NAME", "dlq")
    monkeypatch.delitem(sys.modules, "app", raising=False)
    with pytest.raises(SettingsError, match="JOBS_DELAY_QUEUE_NAME"):
        importlib.import_module("app")


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, Auth.NONE),
        ({"JOBS_REQUIRE_API_KEY": "false"}, Auth.NONE),
        ({"JOBS_REQUIRE_API_KEY": "true"}, Auth.API_KEY),  # prod's setting keeps working
        ({"JOBS_AUTH": "none"}, Auth.NONE),
        ({"JOBS_AUTH": "api_key"}, Auth.API_KEY),
        ({"JOBS_AUTH": "IAM"}, Auth.IAM),
        ({"JOBS_AUTH": "api_key", "JOBS_REQUIRE_API_KEY": "true"}, Auth.API_KEY),
        ({"JOBS_AUTH": "iam", "JOBS_REQUIRE_API_KEY": "false"}, Auth.IAM),
        ({"JOBS_AUTH": "none", "JOBS_REQUIRE_API_KEY": "false"}, Auth.NONE),
    ],
)
def test_how_a_stage_authenticates_is_one_setting(env: dict[str, str], mode: Auth) -> None:
    assert auth(env) is mode
    assert api_key_required(env) is (mode is Auth.API_KEY)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBS_AUTH": "sigv4"}, "JOBS_AUTH must be one of none, api_key, iam, got 'sigv4'"),
        ({"JOBS_REQUIRE_API_KEY": "yes"}, "JOBS_REQUIRE_API_KEY must be true or false"),
        (
            {"JOBS_AUTH": "iam", "JOBS_REQUIRE_API_KEY": "true"},
            "JOBS_AUTH=iam and JOBS_REQUIRE_API_KEY=true disagree",
        ),
        (
            {"JOBS_AUTH": "none", "JOBS_REQUIRE_API_KEY": "true"},
            "JOBS_AUTH=none and JOBS_REQUIRE_API_KEY=true disagree",
        ),
        (
            {"JOBS_AUTH": "api_key", "JOBS_REQUIRE_API_KEY": "false"},
            "JOBS_AUTH=api_key and JOBS_REQUIRE_API_KEY=false disagree",
        ),
    ],
)
def test_an_unknown_or_contradicted_authentication_is_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        auth(env)


@pytest.mark.parametrize(
    "principal",
    ["jobs-operator", "arn:aws:iam::123456789012:role/ops/jobs-operator"],
)
def test_the_operator_principal_is_a_setting(principal: str) -> None:
    settings = Settings.from_mapping({**REQUIRED, "JOBS_OPERATOR_PRINCIPAL": principal})
    assert settings.operator_principal == principal
    assert Settings.from_mapping(REQUIRED).operator_principal is None


@pytest.mark.parametrize("principal", ["a role", "arn:aws:s3:::bucket", "operator"])
def test_an_operator_principal_no_caller_could_be_is_named(principal: str) -> None:
    with pytest.raises(SettingsError, match="JOBS_OPERATOR_PRINCIPAL must be"):
        Settings.from_mapping({**REQUIRED, "JOBS_OPERATOR_PRINCIPAL": principal})
