"""What tests/conftest.py's shared botocore Loader must keep: sessions share the parsed
models, yet each session's clients behave as if it had parsed them itself."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import botocore.session
from moto import mock_aws


def test_sessions_share_one_loader_and_its_parsed_models() -> None:
    first, second = botocore.session.Session(), botocore.session.Session()
    assert first.get_component("data_loader") is second.get_component("data_loader")
    assert first.get_service_model("sqs") is not None
    assert first.get_service_data("sqs") is second.get_service_data("sqs")


def test_clients_of_separate_sessions_still_work_and_stay_apart() -> None:
    with mock_aws():
        east = boto3.session.Session(region_name="us-east-1").client("sqs")
        west = boto3.session.Session(region_name="eu-west-1").client("sqs")
        east.create_queue(QueueName="only-in-east")
        assert east.meta.region_name == "us-east-1"
        assert west.meta.region_name == "eu-west-1"
        names = [url.rsplit("/", 1)[1] for url in east.list_queues()["QueueUrls"]]
        assert names == ["only-in-east"]
        assert "QueueUrls" not in west.list_queues()


def test_a_session_with_its_own_data_path_gets_a_loader_of_its_own(tmp_path: Path) -> None:
    default = botocore.session.Session()
    custom = botocore.session.Session()
    custom.set_config_variable("data_path", str(tmp_path))
    assert custom.get_component("data_loader") is not default.get_component("data_loader")
    assert str(tmp_path) in custom.get_component("data_loader").search_paths


# Two tests in this order (pytest runs a file's tests in order, --dist loadfile keeps them
# on one worker): what the first leaves in os.environ, the second must not see.
LEAK_PROBE = "HEAVY_JOBS_LEAK_PROBE"


def test_a_test_may_change_the_environment_as_chalice_does() -> None:
    # Chalice's CLIFactory writes a stage's variables straight into os.environ.
    os.environ[LEAK_PROBE] = "left behind"


def test_the_next_test_starts_from_the_sessions_environment() -> None:
    assert LEAK_PROBE not in os.environ
