"""Migration rehearsal: a stage deployed by the previous release, updated by `make deploy`.

The previous release (commit ``aa910a9``: a standard job queue, the ``by-status`` and
``recent`` indexes) is taken with ``git archive`` and deployed with its own
``make deploy STAGE=dev`` to a moto server; its own code then writes jobs into the stage
(one finished, queued ones whose messages sit in its standard queue, one waiting for a
retry, one whose worker died mid-run). Then this release's ``make deploy`` runs over it,
from a copy of the project that kept ``.chalice/deployed/`` (as a checkout upgraded in
place keeps it). The tests check that each stack update changed at most one index, the
final indexes and queues, that the old jobs are listed, and that the recovery sweep
re-drives the jobs whose messages went with the old queue and the worker runs them.

moto's CloudFormation cannot update a table's indexes or replace a queue whose name
changed (it keeps the old queue); ``bridge_stack_updates`` makes it do both, the way
CloudFormation does, and enforces DynamoDB's rule: "You can create or delete only one
global secondary index per UpdateTable operation" (DynamoDB API Reference, UpdateTable,
GlobalSecondaryIndexUpdates). A stack update that would change two fails, as on AWS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import moto
import pytest
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.server import ThreadedMotoServer
from moto.sqs.models import Queue, sqs_backends

from chalicelib import config, connections, service
from chalicelib.clients import ANONYMOUS
from chalicelib.config import Settings
from chalicelib.jobs import (
    INDEXES,
    SCHEMA_VERSION,
    SHARDS,
    JobStatus,
    Listing,
    is_job_item,
    utc_now,
)
from chalicelib.queue import DelayQueue, JobQueue
from chalicelib.store import JobTable
from chalicelib.worker import Delivery, Worker
from infra import stack
from tests.infra.harness import REGION, copy_project, isolated_environment, run_make
from tests.infra.test_deploy import bridge_chalice_api_import

PREVIOUS_RELEASE = "aa910a9"
STAGE = "dev"
# The bridge reaches into moto's CloudFormation and model classes: only for this version.
MOTO_VERSION = "5.2.5"


# --- moto's CloudFormation, made to update what CloudFormation updates ---------------------


@dataclass
class StackUpdates:
    """What the bridge did: per table update, the index changes it applied."""

    index_changes: list[list[str]] = field(default_factory=list)
    replaced_queues: list[tuple[str, str]] = field(default_factory=list)


def bridge_stack_updates(monkeypatch: pytest.MonkeyPatch) -> StackUpdates:
    """Let moto's stack updates add or delete a table's global secondary index (one per
    update, else a ValidationError as on AWS) and replace a queue whose name changed."""
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(f"the stack-update bridge is written for moto {MOTO_VERSION}")
    from moto.cloudformation.exceptions import ValidationError

    updates = StackUpdates()
    original_queue_update = Queue.update_from_cloudformation_json

    def update_table(
        cls: Any,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        properties = cloudformation_json["Properties"]
        wanted = {i["IndexName"]: i for i in properties.get("GlobalSecondaryIndexes", [])}
        current = {index.name for index in original_resource.global_indexes}
        changes: list[dict[str, Any]] = [
            {"Create": definition} for name, definition in wanted.items() if name not in current
        ]
        changes += [{"Delete": {"IndexName": name}} for name in current if name not in wanted]
        if len(changes) > 1:
            raise ValidationError(
                original_resource.name,
                "Cannot perform more than one GSI creation or deletion in a single update",
            )
        backend = dynamodb_backends[account_id][region_name]
        # A stream the template adds is enabled in place (no replacement), as on AWS.
        stream = properties.get("StreamSpecification")
        enabled = (original_resource.stream_specification or {}).get("StreamEnabled")
        adds_stream = stream is not None and not enabled
        backend.update_table(
            name=original_resource.name,
            attr_definitions=properties["AttributeDefinitions"],
            global_index=changes,
            throughput={},
            billing_mode="",
            stream_spec={"StreamEnabled": True, **stream} if adds_stream else {},
            deletion_protection_enabled=None,
            warm_throughput=None,
        )
        if changes:
            updates.index_changes.append(
                [f"{kind.lower()} {spec['IndexName']}" for c in changes for kind, spec in c.items()]
            )
        return backend.get_table(original_resource.name)

    def update_queue(
        cls: Any,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        if new_resource_name == original_resource.name:
            return original_queue_update.__func__(  # type: ignore[attr-defined]
                cls, original_resource, new_resource_name, cloudformation_json,
                account_id, region_name,
            )  # fmt: skip
        # A new QueueName (or FifoQueue) means replacement: create the new queue, then
        # delete the old one with its messages.
        replacement = Queue.create_from_cloudformation_json(
            new_resource_name, cloudformation_json, account_id, region_name
        )
        sqs_backends[account_id][region_name].delete_queue(original_resource.name)
        updates.replaced_queues.append((original_resource.name, new_resource_name))
        return replacement

    monkeypatch.setattr(Table, "update_from_cloudformation_json", classmethod(update_table))
    monkeypatch.setattr(Queue, "update_from_cloudformation_json", classmethod(update_queue))
    return updates


def test_the_bridge_enforces_one_index_change_per_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bridge's own semantics, against in-process moto: one change applies, two fail."""
    from moto import mock_aws

    updates = bridge_stack_updates(monkeypatch)
    template = stack.load_template()
    wanted = stack.wanted_indexes()
    parameters = {"ExpiryAttributeName": "expires_at"}
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name=REGION)
        stack.apply(cfn, "bridge", parameters, json.dumps(stack.render(template, wanted[:1])))
        two = json.dumps(stack.render(template, wanted[:3]))
        with pytest.raises(cfn.exceptions.ClientError, match="more than one GSI"):
            stack.apply(cfn, "bridge", parameters, two)
        stack.apply(cfn, "bridge", parameters, json.dumps(stack.render(template, wanted[:2])))
        table = boto3.client("dynamodb", region_name=REGION).describe_table(
            TableName="bridge-jobs"
        )["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == [
        wanted[0].name,
        wanted[1].name,
    ]
    assert updates.index_changes == [[f"create {wanted[1].name}"]]


def test_index_steps_change_one_index_each_and_keep_the_old_ones_until_the_new_exist() -> None:
    old = [
        stack.Index(
            {
                "IndexName": name,
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            },
            {"status": "S"},
        )
        for name in ("by-status", "recent")
    ]
    wanted = stack.wanted_indexes()

    steps = stack.index_steps(old, wanted)

    names = [{index.name for index in step} for step in steps]
    previous = {index.name for index in old}
    for step in names:
        assert len(step ^ previous) == 1  # exactly one index added or deleted
        previous = step
    assert names[-1] == {index.name for index in wanted}
    adding = names[: len(wanted)]
    assert all({"by-status", "recent"} <= step for step in adding)  # old code keeps working
    assert len(steps) == len(wanted) + len(old)
    assert stack.index_steps(wanted, wanted) == [wanted]  # nothing to change: one update
    assert stack.index_steps([], wanted)[-1] == wanted
    reshaped = stack.Index({**wanted[0].definition, "Projection": {"ProjectionType": "ALL"}}, {})
    with pytest.raises(stack.StackError, match="rename"):
        stack.index_steps([reshaped], wanted)


# --- the rehearsal ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[str, StackUpdates]]:
    """A moto server in this process, bridged for Chalice's API import and for stack
    updates; its URL and what the stack-update bridge did."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        bridge_chalice_api_import(monkeypatch)
        updates = bridge_stack_updates(monkeypatch)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        assert port not in (4566, 8000)
        url = f"http://{host}:{port}"
        try:
            yield url, updates
        finally:
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
            server.stop()


# Runs in the previous release's project, with its own code: what its API and worker did.
WRITE_OLD_JOBS = """
import json
from datetime import timedelta
from chalicelib import connections, service
from chalicelib.config import get_settings
from chalicelib.jobs import utc_now

settings = get_settings()
table, queue = connections.job_table(), connections.job_queue()

def submit(n, key=None):
    return service.submit_job(n, table, queue, settings.retention, key).job.job_id

ids = {"succeeded": submit(11)}
sqs = queue._client
(message,) = sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=1)["Messages"]
connections.worker().process_message(message["Body"])
sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
ids["queued"] = submit(12)
ids["keyed"] = submit(13, service.IdempotencyKey(key="order-1"))
ids["running"] = submit(14)  # a worker claimed it long ago, checkpointed, and died
long_ago = utc_now() - timedelta(minutes=10)
table.claim(ids["running"], "dead-worker", long_ago, 30_000)
table.checkpoint(ids["running"], "dead-worker", 5, 5 / 14, 0)
ids["retrying"] = submit(15)  # its first attempt failed; the retry's message was delayed
table.claim(ids["retrying"], "first-attempt", utc_now(), 30_000)
table.release(ids["retrying"], "first-attempt", 0, resume=False, last_error="Boom: once")
print(json.dumps(ids))
"""


@dataclass
class Migration:
    env: dict[str, str]
    endpoint: str
    updates: StackUpdates
    old_jobs: dict[str, str]
    deploy_output: str
    settings: Settings

    def client(self, service_name: str) -> Any:
        return boto3.client(
            service_name,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def table(self) -> JobTable:
        return JobTable(self.client("dynamodb"), self.settings.table_name)


def stage_environment(project: Path) -> dict[str, str]:
    config = json.loads((project / ".chalice" / "config.json").read_text())
    return dict(config["stages"][STAGE]["environment_variables"])


def disable_event_sources(lambda_client: Any) -> None:
    """moto cannot run the functions: it would fail every message it tried to deliver."""
    for mapping in lambda_client.list_event_source_mappings()["EventSourceMappings"]:
        if mapping["State"] != "Disabled":
            lambda_client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)


@pytest.fixture(scope="module")
def migration(
    emulator: tuple[str, StackUpdates], tmp_path_factory: pytest.TempPathFactory
) -> Migration:
    endpoint, updates = emulator
    env = isolated_environment(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
    )
    old = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", PREVIOUS_RELEASE],
        cwd=stack.PROJECT_DIR, capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    run_make(old, env, "deploy", f"STAGE={STAGE}")
    lambda_client = boto3.client(
        "lambda", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    disable_event_sources(lambda_client)
    written = subprocess.run(
        [sys.executable, "-c", WRITE_OLD_JOBS],
        cwd=old, env={**env, **stage_environment(old), "PYTHONPATH": str(old)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    old_jobs = json.loads(written.stdout.strip().splitlines()[-1])

    new = copy_project(tmp_path_factory.mktemp("this-release"))
    deployed = new / ".chalice" / "deployed"
    deployed.mkdir(parents=True)
    (deployed / f"{STAGE}.json").write_text(
        (old / ".chalice" / "deployed" / f"{STAGE}.json").read_text()
    )
    updates.index_changes.clear()
    result = run_make(new, env, "deploy", f"STAGE={STAGE}")
    disable_event_sources(lambda_client)
    return Migration(
        env=env,
        endpoint=endpoint,
        updates=updates,
        old_jobs=old_jobs,
        deploy_output=result.stdout,
        settings=Settings.from_mapping(stage_environment(new)),
    )


def test_each_stack_update_changed_at_most_one_index(migration: Migration) -> None:
    wanted = [shape.name for shape in INDEXES]
    assert migration.updates.index_changes == [
        *([f"create {name}"] for name in wanted),
        ["delete by-status"],
        ["delete recent"],
    ]
    steps = len(wanted) + 2
    assert f"step {steps} of {steps}" in migration.deploy_output


def test_the_table_ends_with_exactly_the_new_indexes(migration: Migration) -> None:
    table = migration.client("dynamodb").describe_table(TableName=migration.settings.table_name)
    names = {index["IndexName"] for index in table["Table"]["GlobalSecondaryIndexes"]}
    assert names == {shape.name for shape in INDEXES}
    assert migration.table().schema_version() == SCHEMA_VERSION
    # Version 3: every job item has its input (the previous release wrote only n).
    items = migration.client("dynamodb").scan(TableName=migration.settings.table_name)["Items"]
    jobs = [item for item in items if is_job_item(item)]
    assert jobs and all(
        json.loads(item["input"]["S"]) == {"n": int(item["n"]["N"])} for item in jobs
    )
    # Version 4: every job is anonymous's (the previous release had no clients), and listed
    # in anonymous's listings.
    assert all(item["client"] == {"S": ANONYMOUS} for item in jobs)
    anonymous = migration.table().page(Listing(client=ANONYMOUS), 20, [None] * SHARDS, utc_now())
    assert len(anonymous.jobs) == len(jobs)


def test_the_queues_were_replaced_by_the_fifo_ones_and_the_delay_queue(
    migration: Migration,
) -> None:
    urls = migration.client("sqs").list_queues()["QueueUrls"]
    names = sorted(url.rsplit("/", 1)[-1] for url in urls)
    assert names == sorted(
        [
            f"heavy-jobs-{STAGE}-queue.fifo",
            f"heavy-jobs-{STAGE}-dlq.fifo",
            f"heavy-jobs-{STAGE}-delay",
            # Where EventBridge Scheduler puts a fire it gave up on (recurring schedules).
            f"heavy-jobs-{STAGE}-schedule-dlq",
            # Where the stream consumer puts a change record it gave up on (job events).
            f"heavy-jobs-{STAGE}-events-failed",
            f"heavy-jobs-{STAGE}-webhooks",
            f"heavy-jobs-{STAGE}-webhooks-dlq",
        ]
    )
    assert migration.settings.queue_name == f"heavy-jobs-{STAGE}-queue.fifo"


def test_each_consumer_has_one_mapping_on_its_new_queue(migration: Migration) -> None:
    sqs = migration.client("sqs")
    mappings = migration.client("lambda").list_event_source_mappings()["EventSourceMappings"]
    by_function: dict[str, list[str]] = {}
    for mapping in mappings:
        by_function.setdefault(mapping["FunctionArn"].rsplit(":", 1)[-1], []).append(
            mapping["EventSourceArn"]
        )

    def arn(name: str) -> str:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    prefix = f"heavy-jobs-{STAGE}"
    table = migration.client("dynamodb").describe_table(TableName=migration.settings.table_name)
    stream = table["Table"]["LatestStreamArn"]  # the stream the update added
    assert by_function == {
        f"{prefix}-process_job": [arn(migration.settings.queue_name)],
        f"{prefix}-forward_delayed": [arn(migration.settings.delay_queue_name)],
        f"{prefix}-process_dead_letters": [arn(f"{prefix}-dlq.fifo")],
        f"{prefix}-publish_job_events": [stream],
        f"{prefix}-deliver_webhooks": [arn(f"{prefix}-webhooks")],
    }


def test_old_jobs_are_listed_newest_first(migration: Migration) -> None:
    page = migration.table().page(Listing(), 20, [None] * SHARDS, utc_now())
    listed = [job.job_id for job in page.jobs]
    assert sorted(listed) == sorted(migration.old_jobs.values())
    created = [job.created_at for job in page.jobs]
    assert created == sorted(created, reverse=True)
    succeeded = migration.table().page(
        Listing(kind="heavyLoad", status=JobStatus.SUCCEEDED), 20, [None] * SHARDS, utc_now()
    )
    assert [job.job_id for job in succeeded.jobs] == [migration.old_jobs["succeeded"]]


def test_an_old_idempotency_key_still_replays_its_job(migration: Migration) -> None:
    table = migration.table()
    queue = JobQueue(migration.client("sqs"), migration.settings.queue_name)
    replay = service.submit_job(
        "heavyLoad",
        {"n": 13},
        table,
        queue,
        migration.settings.retention,
        service.IdempotencyKey(key="order-1"),
    )
    assert replay.replayed and replay.job.job_id == migration.old_jobs["keyed"]


def test_the_sweep_re_drives_the_jobs_of_the_old_queue_and_the_worker_runs_them(
    migration: Migration, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = migration.settings
    # The worker's metrics name the stage from the process's own settings, as on Lambda
    # (without them this test passed only after another test had left a stage's variables
    # in os.environ).
    for name, value in {
        config.TABLE_NAME: settings.table_name,
        config.QUEUE_NAME: settings.queue_name,
        config.DELAY_QUEUE_NAME: settings.delay_queue_name,
        config.STAGE: settings.stage,
    }.items():
        monkeypatch.setenv(name, value)
    connections.reset()
    sqs = migration.client("sqs")
    queue = JobQueue(sqs, settings.queue_name)
    worker = Worker(
        migration.table(),
        queue,
        DelayQueue(sqs, settings.delay_queue_name),
        settings,
        # The sweep a few minutes after the deploy: the jobs' messages are overdue.
        now=lambda: utc_now() + timedelta(seconds=settings.lost_after_seconds + 60),
    )
    unfinished = {k: v for k, v in migration.old_jobs.items() if k != "succeeded"}

    assert sorted(worker.recover_stalled()) == sorted(unfinished.values())
    assert worker.recover_stalled() == []  # once

    for _ in range(2 * len(unfinished)):
        messages = sqs.receive_message(
            QueueUrl=queue.url, MaxNumberOfMessages=1, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            break
        (message,) = messages
        attributes = message["Attributes"]
        delivery = Delivery(
            message["ReceiptHandle"],
            int(attributes["ApproximateReceiveCount"]),
            int(attributes["SentTimestamp"]),
        )
        worker.process_message(message["Body"], delivery)
        sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])

    table = migration.table()
    jobs = {name: table.get(job_id) for name, job_id in unfinished.items()}
    assert {name: (job.status, job.result) for name, job in jobs.items() if job} == {
        "queued": (JobStatus.SUCCEEDED, 12),
        "keyed": (JobStatus.SUCCEEDED, 13),
        "running": (JobStatus.SUCCEEDED, 14),
        "retrying": (JobStatus.SUCCEEDED, 15),
    }
    assert jobs["running"] and jobs["running"].attempts == 2  # the dead run counted
    assert jobs["retrying"] and jobs["retrying"].attempts == 2
