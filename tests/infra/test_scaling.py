"""The SQS mappings' maximum concurrency (infra/deploy/sqs_scaling.py): which handlers get
it and at what number, and the request ``make deploy`` makes for each (a botocore Stubber:
the exact UpdateEventSourceMapping). What the package and the deployed stage end up with is
checked in test_package.py and test_deploy.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from chalice import Chalice
from chalice.config import Config

from infra.deploy import sqs_scaling
from infra.deploy.chalice_project import DeployError
from tests.infra.harness import REGION, stage_config

STAGE = "dev"
# Mapping UUIDs as Lambda gives them (botocore checks the length).
WORKER_UUID, DELIVERIES_UUID = (f"00000000-0000-0000-0000-00000000000{n}" for n in (1, 2))
WEBHOOKS = "deliver_webhooks"


def an_app_config(reservations: dict[str, int | None], project_dir: Path) -> Config:
    """A Chalice app with one SQS handler per entry of ``reservations`` (its name, its
    queue: ``<name>.fifo`` for a name starting with fifo) and the stage's reservations."""
    app = Chalice(app_name="probe")
    for handler in reservations:
        queue = f"{handler}.fifo" if handler.startswith("fifo") else handler
        app.on_sqs_message(queue=queue, name=handler)(lambda event: None)
    functions = {
        handler: {"reserved_concurrency": reserved}
        for handler, reserved in reservations.items()
        if reserved is not None
    }
    return Config(
        chalice_stage=STAGE,
        user_provided_params={"chalice_app": app, "project_dir": str(project_dir)},
        config_from_disk={"app_name": "probe", "stages": {STAGE: {"lambda_functions": functions}}},
    )


def record_mappings(project_dir: Path, uuids: dict[str, str]) -> None:
    """What ``chalice deploy`` records for each handler's SQS mapping (only what is read)."""
    resources = [
        {
            "name": sqs_scaling.event_source_name(handler),
            "resource_type": "sqs_event",
            "event_uuid": uuid,
        }
        for handler, uuid in uuids.items()
    ]
    deployed = project_dir / ".chalice" / "deployed" / f"{STAGE}.json"
    deployed.parent.mkdir(parents=True)
    deployed.write_text(json.dumps({"schema_version": "2.0", "resources": resources}))


def lambda_stub() -> tuple[Any, Stubber]:
    client = boto3.client(
        "lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    return client, Stubber(client)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_webhook_deliveries_are_capped_at_their_reservation_and_nothing_else_is(
    stage: str,
) -> None:
    """The project's stages: deliver_webhooks (a standard queue) at its reserved concurrency,
    read from .chalice/config.json; the worker (FIFO, reservation 1) and the handlers
    without a reservation are left as Chalice makes them."""
    config = stage_config(stage)
    reserved = config.scope(stage, WEBHOOKS).reserved_concurrency
    assert reserved is not None and reserved >= sqs_scaling.MIN_MAXIMUM_CONCURRENCY
    assert sqs_scaling.maximum_concurrency(config, stage) == {WEBHOOKS: reserved}


def test_only_standard_queues_consumers_with_a_reservation_of_two_or_more_are_capped(
    tmp_path: Path,
) -> None:
    config = an_app_config(
        {
            "fifo_worker": 3,  # FIFO: message groups bound it; left alone at any reservation
            "one_at_a_time": 1,  # below ScalingConfig's minimum of 2
            "unreserved": None,  # nothing of its own to match
            "deliveries": 7,
            "huge": 5000,  # above ScalingConfig's maximum: capped lower, as AWS allows
        },
        tmp_path,
    )
    assert sqs_scaling.maximum_concurrency(config, STAGE) == {
        "deliveries": 7,
        "huge": sqs_scaling.MAX_MAXIMUM_CONCURRENCY,
    }


def test_deploy_sets_each_recorded_mapping_to_its_functions_reservation(tmp_path: Path) -> None:
    config = an_app_config({"fifo_worker": 1, "deliveries": 7}, tmp_path)
    record_mappings(tmp_path, {"fifo_worker": WORKER_UUID, "deliveries": DELIVERIES_UUID})
    client, stubber = lambda_stub()
    stubber.add_response(
        "update_event_source_mapping",
        {"UUID": DELIVERIES_UUID, "ScalingConfig": {"MaximumConcurrency": 7}},
        expected_params={"UUID": DELIVERIES_UUID, "ScalingConfig": {"MaximumConcurrency": 7}},
    )
    with stubber:  # no request for the FIFO worker's mapping: the stub would refuse it
        assert sqs_scaling.configure(client, config, STAGE) == {"deliveries": 7}
    stubber.assert_no_pending_responses()


def test_deploy_refuses_a_stage_whose_record_lacks_a_capped_mapping(tmp_path: Path) -> None:
    config = an_app_config({"deliveries": 7}, tmp_path)
    record_mappings(tmp_path, {})
    client, stubber = lambda_stub()
    with stubber, pytest.raises(DeployError, match="no SQS mapping of deliveries"):
        sqs_scaling.configure(client, config, STAGE)


def test_the_package_event_is_the_one_chalice_package_names(tmp_path: Path) -> None:
    """Merged over Chalice's own SQS event (its logical id), not added beside it: the
    packaged stage has one event per function (test_package.py)."""
    config = an_app_config({"deliveries": 7}, tmp_path)
    assert sqs_scaling.package_events(config, STAGE) == {
        "deliveries": {
            "DeliveriesSqsEventSource": {"Properties": {"ScalingConfig": {"MaximumConcurrency": 7}}}
        }
    }
