from __future__ import annotations

import pytest

from chalicelib.config import Settings
from chalicelib.errors import SettingsError

REQUIRED = {"JOBS_TABLE_NAME": "t", "JOBS_QUEUE_NAME": "q"}


def test_required_settings_and_defaults() -> None:
    settings = Settings.from_mapping(REQUIRED)
    assert (settings.table_name, settings.queue_name) == ("t", "q")
    assert settings.max_n == 10**10
    assert 0 < settings.default_n <= settings.max_n


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
        }
    )
    assert (settings.max_n, settings.default_n, settings.progress_interval_seconds) == (50, 5, 0.5)


def test_importing_the_app_without_the_queue_setting_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import sys

    monkeypatch.delenv("JOBS_QUEUE_NAME", raising=False)
    monkeypatch.delitem(sys.modules, "app", raising=False)
    with pytest.raises(SettingsError, match="JOBS_QUEUE_NAME"):
        importlib.import_module("app")
