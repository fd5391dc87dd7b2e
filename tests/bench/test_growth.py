"""Figure 9's parts on their own: backlogs in the product's shapes, the bare calls, the
comparisons and notes built from measurements, the chart, and item sizing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import boto3
import pytest

from bench import calls, growth, stack
from bench.backlog import BACKLOG_CLIENT, LISTING_FLOOR, SWEEP_FLOOR, BareCalls, Target, new_job
from bench.sizes import FULL, SMOKE
from chalicelib import queue as queue_adapter
from chalicelib.clients import ANONYMOUS
from chalicelib.config import Settings
from chalicelib.jobs import PENDING, JobStatus, from_item, parse_message, to_item, to_message
from tests.chalicelib.test_config import REQUIRED

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def target(aws: dict[str, str]) -> Target:
    """The project's own stack on in-process moto (the `aws` fixture applies it)."""
    return Target.of(
        boto3.client("dynamodb"), boto3.client("sqs"), aws["TableName"], aws["QueueUrl"]
    )


def depth(target: Target, url: str) -> int:
    attributes = target.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_a_backlog_is_queued_jobs_in_the_products_shapes(target: Target) -> None:
    ids = target.fill(30)
    assert len(set(ids)) == 30
    assert target.depth() == 30 and depth(target, target.mirror_url) == 30
    item = target.ddb.get_item(TableName=target.table_name, Key={"job_id": {"S": ids[0]}})
    job = from_item(item["Item"])
    assert job.status is JobStatus.QUEUED and job.expires_at is not None
    # The item the API writes: listing keys and the pending mark included.
    assert item["Item"] == to_item(job)
    assert job.pending_at is not None and PENDING.partition_key in item["Item"]
    messages = target.sqs.receive_message(
        QueueUrl=target.queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        AttributeNames=["MessageGroupId", "MessageDeduplicationId"],
    )["Messages"]
    # Sent in order, after their records, in the job queue's one group, deduplicated by
    # job id: the worker meets them first to last.
    assert [parse_message(m["Body"]).job_id for m in messages] == ids[:10]
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {queue_adapter.MESSAGE_GROUP}
    assert [m["Attributes"]["MessageDeduplicationId"] for m in messages] == ids[:10]

    # A message left in flight (by a worker stopped while it held one) blocks the FIFO
    # job queue's one group: emptying must drop it too.
    target.sqs.receive_message(QueueUrl=target.queue_url, MaxNumberOfMessages=1)
    target.empty(ids)
    assert target.depth() == 0 and depth(target, target.mirror_url) == 0
    assert "Item" not in target.ddb.get_item(
        TableName=target.table_name, Key={"job_id": {"S": ids[-1]}}
    )


def test_the_bare_calls_each_make_their_call_and_keep_the_mirror_deep(target: Target) -> None:
    target.fill(5)
    bare = BareCalls(target)
    bare.warm()
    operations = bare.operations()
    assert {
        "PutItem",
        "SendMessage",
        "ReceiveMessage+DeleteMessage",
        "BatchGetItem",
        LISTING_FLOOR,
        SWEEP_FLOOR,
    } <= set(operations)
    # One query per index of the table, whatever the template declares.
    assert sum(name.startswith("Query ") for name in operations) == len(target.indexes) >= 1
    for name, operation in operations.items():
        assert operation() > 0, name
    assert depth(target, target.mirror_url) == 5
    assert bare.created  # its records are known, to be deleted


def test_a_fifo_queue_gets_the_adapters_group_and_the_job_id_as_deduplication_id(
    target: Target,
) -> None:
    assert target.fifo  # the template's job queue
    job = new_job()
    assert target.message_entry(job) == {
        "MessageBody": to_message(job),
        "MessageGroupId": queue_adapter.MESSAGE_GROUP,
        "MessageDeduplicationId": job.job_id,
    }


def test_a_standard_queue_gets_the_body_alone(target: Target) -> None:
    target.fifo = False
    job = new_job()
    assert target.message_entry(job) == {"MessageBody": to_message(job)}


# --- the figure from measurements ---------------------------------------------------------


def measured(
    depth: int, post: float, listing: float, drain: float, sweep: float, own: float = 20
) -> growth.Depth:
    result = growth.Depth(depth)
    result.samples = {
        growth.POST: [post / 1000] * 4,
        growth.LIST: [listing / 1000] * 4,
        growth.CLIENT_LIST: [own / 1000] * 4,
        "PutItem": [0.004] * 4,
        "SendMessage": [0.004] * 4,
        LISTING_FLOOR: [0.01] * 4,
        SWEEP_FLOOR: [0.02] * 4,
    }
    result.sweep_ms = [sweep]
    result.drain_per_second = drain
    result.queue_depths = [depth, depth + 4]
    return result


def test_the_targets_hold_the_target_depth_against_depth_zero(tmp_path: Path) -> None:
    sizes = SMOKE
    results = [
        measured(0, post=10, listing=20, drain=25, sweep=30),
        measured(sizes.growth_target_depth, post=25, listing=30, drain=10, sweep=300, own=50),
    ]
    figure = growth._figure(results, sizes, seconds=12)
    by_label = {c.label.split(" at ")[0]: c for c in figure.comparisons}
    post = by_label[f"{growth.POST} p50"]
    assert math.isclose(post.ratio, 2.5) and post.met is False  # over 2x: missed
    listing = by_label[f"{growth.LIST} p50"]
    assert math.isclose(listing.ratio, 1.5) and listing.met is True
    # One client's listing, while another client's backlog grows: a target (at most 2x).
    own = by_label[f"{growth.CLIENT_LIST} p50 (one client's)"]
    assert math.isclose(own.ratio, 2.5) and own.met is False
    drain = next(c for c in figure.comparisons if "drain" in c.label)
    assert math.isclose(drain.ratio, 0.4) and drain.met is False  # under 0.5x: missed
    sweep = next(c for c in figure.comparisons if "sweep" in c.label)
    assert math.isclose(sweep.ratio, 10) and sweep.met is None  # shown, not a target
    table = [n for n in figure.notes if n.startswith("| ")]
    assert len(table) == 2 + len(results)  # header, rule, one row per depth
    assert any("took 12 s" in n for n in figure.notes)

    growth.draw_chart(figure, tmp_path / growth.CHART_NAME)
    assert (tmp_path / growth.CHART_NAME).read_bytes().startswith(PNG_SIGNATURE)


def test_item_size_follows_dynamodbs_rules() -> None:
    # Names and strings count their UTF-8 bytes; a number about a byte per two
    # significant digits plus one; a boolean one byte.
    assert calls.item_size({"id": {"S": "abc"}}) == 5
    assert calls.item_size({"n": {"N": "1234"}}) == 1 + 3
    assert calls.item_size({"n": {"N": "0.0012"}}) == 1 + 2
    assert calls.item_size({"é": {"BOOL": True}}) == 2 + 1


def test_a_backlog_is_another_clients_than_the_apis_callers(target: Target) -> None:
    """What figure 9 measures flat: the backlog is not the API caller's (anonymous), so
    that caller's listing and quota read none of it."""
    ids = target.fill(3)
    item = target.ddb.get_item(TableName=target.table_name, Key={"job_id": {"S": ids[0]}})
    assert from_item(item["Item"]).client == BACKLOG_CLIENT != ANONYMOUS
    assert f"GET /jobs?client={ANONYMOUS}&limit=20" == growth.CLIENT_LIST


def test_the_bench_stacks_raise_the_quota_over_what_the_figures_queue(tmp_path: Path) -> None:
    """Figure 2 leaves submit_iterations of one client's jobs queued; figure 9 its rounds'
    posts and warm-ups: both over the default quota, under the bench's."""
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    (project / ".chalice" / "config.json").write_text(
        json.dumps({"stages": {stack.STAGE: {"environment_variables": {"A": "b"}}}})
    )
    stack.raise_quotas(project)
    env = json.loads((project / ".chalice" / "config.json").read_text())["stages"][stack.STAGE]
    settings = Settings.from_mapping({**REQUIRED, **env["environment_variables"]})
    assert env["environment_variables"]["A"] == "b"
    queued = max(FULL.submit_iterations, FULL.growth_samples + 10)
    assert Settings.max_active_per_client < queued < settings.max_active_per_client
    assert queued < settings.max_active_seconds_per_client  # n = 0: 1 s each


def test_the_releases_read_is_a_target_and_leaves_the_chart_by_depth_alone(
    tmp_path: Path,
) -> None:
    sizes = SMOKE
    results = [measured(0, 10, 20, 25, 30), measured(sizes.growth_target_depth, 10, 20, 25, 30)]
    figure = growth._figure(results, sizes, seconds=12)
    release = growth.ReleaseReads(10_000, [5.0] * 3, [6.0] * 3, (0, 0))
    figure.comparisons.append(release.comparison(sizes))
    figure.series += release.series()
    assert math.isclose(figure.comparisons[-1].ratio, 1.2) and figure.comparisons[-1].met
    assert "0 entries read with none waiting and 0 with 10,000" in release.note()
    growth.draw_chart(figure, tmp_path / growth.CHART_NAME)  # depths 0 and 12 only
    assert (tmp_path / growth.CHART_NAME).read_bytes().startswith(PNG_SIGNATURE)


def test_invocations_are_counted_from_what_the_log_appended_whole_lines_only(
    tmp_path: Path,
) -> None:
    log = tmp_path / "stack.log"
    log.write_text("worker | invoke function=f-a outcome=ok\n")
    counted = growth._Counted(log, ["function=f-a ", "function=f-b "])
    try:
        assert counted.count() == 1
        with log.open("a") as out:
            out.write("worker | invoke function=f-b outcome=ok\nworker | invoke funct")
            out.flush()
            assert counted.count() == 2  # the unfinished line waits for its end
            out.write("ion=f-a outcome=ok\n")
        assert counted.count() == 3
        assert counted.count() == 3
    finally:
        counted.close()
