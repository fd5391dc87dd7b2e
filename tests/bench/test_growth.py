"""Figure 9's parts on their own: backlogs in the product's shapes, the bare calls, the
comparisons and notes built from measurements, the chart, and item sizing."""

from __future__ import annotations

import math
from pathlib import Path

import boto3
import pytest

from bench import calls, growth
from bench.backlog import BareCalls, Target
from bench.sizes import SMOKE
from chalicelib import queue as queue_adapter
from chalicelib.jobs import JobStatus, from_item, parse_message, to_message

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
    messages = target.sqs.receive_message(
        QueueUrl=target.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    # Sent in order, after their records: the worker meets them first to last.
    assert [parse_message(m["Body"]).job_id for m in messages["Messages"]] == ids[:10]

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
    assert {"PutItem", "SendMessage", "ReceiveMessage+DeleteMessage", "BatchGetItem"} <= set(
        operations
    )
    # One query per index of the table, whatever the template declares.
    assert sum(name.startswith("Query ") for name in operations) == len(target.indexes) >= 1
    for name, operation in operations.items():
        assert operation() > 0, name
    assert depth(target, target.mirror_url) == 5
    assert bare.created  # its records are known, to be deleted


def test_a_fifo_queue_gets_the_adapters_group_and_the_job_id_as_deduplication_id(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    target.fifo = True
    monkeypatch.setattr(queue_adapter, "MESSAGE_GROUP_ID", "the-group", raising=False)
    assert target.message_entry("j") == {
        "MessageBody": to_message("j"),
        "MessageGroupId": "the-group",
        "MessageDeduplicationId": "j",
    }
    monkeypatch.delattr(queue_adapter, "MESSAGE_GROUP_ID")
    with pytest.raises(RuntimeError, match="MESSAGE_GROUP_ID"):
        target.message_entry("j")


def test_a_standard_queue_gets_the_body_alone(target: Target) -> None:
    assert target.message_entry("j") == {"MessageBody": to_message("j")}


# --- the figure from measurements ---------------------------------------------------------


def measured(depth: int, post: float, listing: float, drain: float, sweep: float) -> growth.Depth:
    result = growth.Depth(depth)
    result.samples = {
        growth.POST: [post / 1000] * 4,
        growth.LIST: [listing / 1000] * 4,
        "PutItem": [0.004] * 4,
        "SendMessage": [0.004] * 4,
    }
    result.sweep_ms = [sweep]
    result.drain_per_second = drain
    result.queue_depths = [depth, depth + 4]
    return result


def test_the_targets_hold_the_target_depth_against_depth_zero(tmp_path: Path) -> None:
    sizes = SMOKE
    results = [
        measured(0, post=10, listing=20, drain=25, sweep=30),
        measured(sizes.growth_target_depth, post=25, listing=30, drain=10, sweep=300),
    ]
    figure = growth._figure(results, sizes, seconds=12)
    by_label = {c.label.split(" at ")[0]: c for c in figure.comparisons}
    post = by_label[f"{growth.POST} p50"]
    assert math.isclose(post.ratio, 2.5) and post.met is False  # over 2x: missed
    listing = by_label[f"{growth.LIST} p50"]
    assert math.isclose(listing.ratio, 1.5) and listing.met is True
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
