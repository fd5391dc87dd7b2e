"""The job table adapter (chalicelib/store.py) under moto: what each write leaves in the
table, what it returns when its condition does not hold, what its reads ask DynamoDB for
(keys a request, consistency, the keys DynamoDB left unprocessed), and the
StoreUnavailable it raises (with the operation and AWS's error in its message) when
DynamoDB fails."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib import connections
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import (
    ACTIVE,
    INDEXES,
    PENDING,
    PROGRESS_MARK,
    SCHEMA_ITEM,
    SCHEMA_VERSION,
    SHARDS,
    Job,
    JobStatus,
    Listing,
    derived_attributes,
    epoch_ms,
    idempotency_record_id,
    iso_utc,
    shard_of,
    to_item,
    utc_now,
)
from chalicelib.store import (
    END,
    ActiveEntry,
    IdempotencyRecord,
    JobTable,
    MigrationReport,
    PendingEntry,
    Position,
    _add_expression,
)

LEASE_MS = 60_000


def aws_error(code: str, operation: str = "TransactWriteItems") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}}, operation)


# One of each kind of failure: AWS answered with an error, or could not be reached.
FAILURES = [
    aws_error("ProvisionedThroughputExceededException"),
    EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
]
FAILURE_IDS = ["client-error", "connection-error"]


@pytest.fixture
def table(aws: dict[str, str]) -> JobTable:
    return connections.job_table()


def raw_item(job_id: str) -> dict[str, Any] | None:
    """The item as stored (not through the adapter under test)."""
    response = boto3.client("dynamodb").get_item(
        TableName=connections.job_table().table_name,
        Key={"job_id": {"S": job_id}},
        ConsistentRead=True,
    )
    item: dict[str, Any] | None = response.get("Item")
    return item


def failing_with(error: Exception) -> Callable[..., Any]:
    def call(**kwargs: Any) -> Any:
        raise error

    return call


# --- create and get -----------------------------------------------------------------------


def test_a_second_create_of_an_id_fails_and_leaves_the_first_job(table: JobTable) -> None:
    """Ids are never reused: a write of a new job must not replace one already there."""
    first = Job.new(n=1, now=utc_now())
    table.create(first)

    with pytest.raises(StoreUnavailable) as raised:
        table.create(Job.new(n=2, now=utc_now()).with_(job_id=first.job_id))

    assert str(raised.value).startswith("DynamoDB put_item failed: ")
    assert "ConditionalCheckFailedException" in str(raised.value)
    assert raw_item(first.job_id) == to_item(first)


@pytest.mark.parametrize("error", FAILURES, ids=FAILURE_IDS)
def test_a_failed_read_is_store_unavailable_naming_it(
    table: JobTable, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(table._client, "get_item", failing_with(error))

    with pytest.raises(StoreUnavailable) as raised:
        table.get(Job.new(n=1, now=utc_now()).job_id)

    assert str(raised.value) == f"DynamoDB get_item failed: {error}"


# --- create_with_key ----------------------------------------------------------------------


def test_a_key_taken_by_a_job_without_fingerprint_replays_it_with_an_empty_one(
    table: JobTable,
) -> None:
    """A job submitted without a request fingerprint records "" as the key's fingerprint:
    the record names the job and "", and a second submission with the key is told so."""
    record_id = idempotency_record_id("scope", "order-1")
    first = Job.new(n=5, now=utc_now(), retention=timedelta(days=1))
    second = Job.new(n=5, now=utc_now(), request_hash="other")

    assert table.create_with_key(first, record_id, utc_now()) is None
    assert table.create_with_key(second, record_id, utc_now()) == IdempotencyRecord(
        first.job_id, ""
    )
    record = raw_item(record_id)
    assert record is not None
    assert record["request_hash"] == {"S": ""} and record["target"] == {"S": first.job_id}
    assert raw_item(second.job_id) is None  # the cancelled transaction wrote nothing


@pytest.mark.parametrize("error", FAILURES, ids=FAILURE_IDS)
def test_a_failed_key_transaction_is_store_unavailable_naming_it(
    table: JobTable, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(table._client, "transact_write_items", failing_with(error))
    job = Job.new(n=5, now=utc_now(), request_hash="hash")

    with pytest.raises(StoreUnavailable) as raised:
        table.create_with_key(job, idempotency_record_id("scope", "k"), utc_now())

    assert str(raised.value) == f"DynamoDB TransactWriteItems failed: {error}"


def test_a_key_whose_holder_vanished_asks_for_a_retry(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction was cancelled (the key was held) but no record is there when read:
    the holder expired meanwhile, so the caller should simply try again."""
    cancelled = failing_with(aws_error("TransactionCanceledException"))
    monkeypatch.setattr(table._client, "transact_write_items", cancelled)
    job = Job.new(n=5, now=utc_now(), request_hash="hash")

    with pytest.raises(StoreUnavailable) as raised:
        table.create_with_key(job, idempotency_record_id("scope", "k"), utc_now())

    assert str(raised.value) == "Idempotency-Key record changed; retry"


# --- fail_submission ----------------------------------------------------------------------


def test_fail_submission_fails_a_queued_job_and_frees_its_key(table: JobTable) -> None:
    record_id = idempotency_record_id("scope", "order-2")
    job = Job.new(n=5, now=utc_now(), request_hash="hash")
    assert table.create_with_key(job, record_id, utc_now()) is None

    assert table.fail_submission(job, "could not send", utc_now(), record_id) is True

    failed = table.get(job.job_id)
    assert failed is not None
    assert (failed.status, failed.error) == (JobStatus.FAILED, "could not send")
    assert failed.pending_at is None  # no message is due any more
    assert raw_item(record_id) is None  # a retry with the key creates a new job


def test_fail_submission_of_a_job_that_left_queued_changes_nothing(table: JobTable) -> None:
    """A worker claimed the job meanwhile (its message did arrive after all): the
    transaction is cancelled, the job runs on and its key still replays it."""
    record_id = idempotency_record_id("scope", "order-3")
    job = Job.new(n=5, now=utc_now(), request_hash="hash")
    assert table.create_with_key(job, record_id, utc_now()) is None
    running = table.claim(job.job_id, job.kind, "owner", utc_now(), LEASE_MS)
    assert running is not None

    assert table.fail_submission(job, "could not send", utc_now(), record_id) is False

    assert table.get(job.job_id) == running
    record = raw_item(record_id)
    assert record is not None and record["target"] == {"S": job.job_id}


@pytest.mark.parametrize("error", FAILURES, ids=FAILURE_IDS)
@pytest.mark.parametrize(
    ("method", "operation", "write"),
    [
        (
            "transact_write_items",
            "TransactWriteItems",
            lambda table, job: table.fail_submission(job, "could not send", utc_now()),
        ),
        (
            "update_item",
            "UpdateItem",
            lambda table, job: table.claim(job.job_id, job.kind, "owner", utc_now(), LEASE_MS),
        ),
    ],
    ids=["fail_submission", "status_change"],
)
def test_a_failed_write_is_store_unavailable_naming_it_and_leaves_the_job_queued(
    table: JobTable,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    method: str,
    operation: str,
    write: Callable[[JobTable, Job], Any],
) -> None:
    job = Job.new(n=5, now=utc_now())
    table.create(job)
    monkeypatch.setattr(table._client, method, failing_with(error))

    with pytest.raises(StoreUnavailable) as raised:
        write(table, job)

    assert str(raised.value) == f"DynamoDB {operation} failed: {error}"
    stored = raw_item(job.job_id)
    assert stored is not None and stored["status"] == {"S": "queued"}


# --- claim --------------------------------------------------------------------------------


def test_a_continuation_message_does_not_start_a_job_waiting_to_retry(table: JobTable) -> None:
    """A continuation's message (``resume``) starts only a job queued to continue (or takes
    over a dead run). A stale copy of one (SQS delivers at least once) arriving while the
    job waits out a retry's backoff leaves it waiting for its retry message."""
    job = Job.new(n=5, now=utc_now())
    table.create(job)
    claimed = table.claim(job.job_id, job.kind, "first", utc_now(), LEASE_MS)
    assert claimed is not None
    retry_due = epoch_ms(utc_now()) + 900_000
    waiting = table.release(claimed, "first", retry_due, resume=False, last_error="boom")
    assert waiting is not None

    assert table.claim(job.job_id, job.kind, "second", utc_now(), LEASE_MS, resume=True) is None

    assert table.get(job.job_id) == waiting
    assert (waiting.status, waiting.pending_at) == (JobStatus.QUEUED, retry_due)


# --- checkpoint ---------------------------------------------------------------------------


def test_a_checkpoint_writes_the_progress_mark_only_when_given_and_a_new_run_keeps_it(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark (the checkpoint published as progress) is written by the checkpoint that
    is given one, in its one UpdateItem, beside the run's state, progress and lease and
    nothing else; a checkpoint without one leaves it; a continuation's release and claim
    keep it, so the next run spaces its progress from it."""
    now = utc_now()
    job = Job.new(n=5, now=now)
    table.create(job)
    assert table.claim(job.job_id, job.kind, "run-1", now, LEASE_MS) is not None
    lease = epoch_ms(now) + LEASE_MS
    updates = recorded_calls(table, "update_item", monkeypatch)

    unmarked = table.checkpoint(job.job_id, "run-1", "1", 0.1, lease)
    assert unmarked is not None and unmarked.progress_mark is None
    assert PROGRESS_MARK not in (raw_item(job.job_id) or {})
    before = raw_item(job.job_id) or {}
    marked = table.checkpoint(job.job_id, "run-1", "2", 0.2, lease + 1, progress_mark=1_234)
    assert marked is not None and marked.progress_mark == 1_234
    after = raw_item(job.job_id) or {}
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert changed == {"state", "progress", "lease_until", PROGRESS_MARK}
    kept = table.checkpoint(job.job_id, "run-1", "3", 0.3, lease + 2)
    assert kept is not None and kept.progress_mark == 1_234
    assert len(updates) == 3  # one request a checkpoint, marked or not

    released = table.release(kept, "run-1", epoch_ms(now), resume=True)
    assert released is not None and released.progress_mark == 1_234
    resumed = table.claim(job.job_id, job.kind, "run-2", now, LEASE_MS, resume=True)
    assert resumed is not None and resumed.progress_mark == 1_234


# --- rewrite_derived ----------------------------------------------------------------------


def test_rewrite_derived_leaves_an_old_item_without_input_unless_asked(
    table: JobTable,
) -> None:
    """The sweep rewrites only index keys (``rewrite_derived(job)``); only the migration
    adds the input an item written before kinds lacks (``with_input=True``)."""
    job = Job.new(n=7, now=utc_now()).with_(status=JobStatus.SUCCEEDED, pending_at=None)
    item = to_item(job)
    del item["input"]  # as written before kinds: only heavyLoad's n
    boto3.client("dynamodb").put_item(TableName=table.table_name, Item=item)

    assert table.rewrite_derived(job) is not None
    stored = raw_item(job.job_id)
    assert stored is not None and "input" not in stored

    assert table.rewrite_derived(job, with_input=True) is not None
    stored = raw_item(job.job_id)
    assert stored is not None and stored["input"] == {"S": '{"n":7}'}


# --- page ---------------------------------------------------------------------------------


def jobs_in_one_shard(
    now: datetime, *ages_and_expiry: tuple[timedelta, timedelta], shard: int = SHARDS - 1
) -> list[Job]:
    """Jobs created ``age`` before ``now`` and expiring ``expiry`` after it, all in the
    same shard (by default the last: the listing must go on reading it after the others
    ended)."""
    jobs = []
    for age, expiry in ages_and_expiry:
        while True:
            job = Job.new(n=1, now=now - age).with_(expires_at=int((now + expiry).timestamp()))
            if shard_of(job.job_id) == shard:
                jobs.append(job)
                break
    return jobs


def page_through(table: JobTable, limit: int, now: datetime) -> list[list[str]]:
    """The job ids of each page of the whole listing, following its positions."""
    positions: tuple[Position, ...] = (None,) * SHARDS
    pages: list[list[str]] = []
    for _ in range(20):
        page = table.page(Listing(), limit, positions, now)
        pages.append([job.job_id for job in page.jobs])
        if page.last:
            return pages
        positions = page.positions
    raise AssertionError(f"the listing never ended: {pages}")


def test_paging_one_shard_lists_each_job_once_newest_first(table: JobTable) -> None:
    now = utc_now()
    day = timedelta(days=1)
    jobs = jobs_in_one_shard(now, *[(timedelta(minutes=m), day) for m in (1, 2, 3)])
    for job in jobs:
        table.create(job)

    pages = page_through(table, 1, now)

    assert [job_id for page in pages for job_id in page] == [job.job_id for job in jobs]


def test_jobs_of_two_shards_interleaved_in_age_are_each_listed_once(table: JobTable) -> None:
    """A shard's query reads more than the page takes from it: its next position is the
    last job taken from it, not where its query stopped, nor where it was."""
    now = utc_now()
    day = timedelta(days=1)
    first, third = jobs_in_one_shard(now, (timedelta(minutes=1), day), (timedelta(minutes=3), day))
    (second,) = jobs_in_one_shard(now, (timedelta(minutes=2), day), shard=0)
    for job in (first, second, third):
        table.create(job)

    pages = page_through(table, 2, now)

    assert pages == [[first.job_id, second.job_id], [third.job_id]]


def test_a_page_of_only_expired_jobs_moves_its_cursor_past_them(table: JobTable) -> None:
    """A shard whose newest jobs are all expired (TTL has not deleted them yet) fills no
    page within its query budget; the next position must still move past what was read,
    or every later page reads the same expired jobs and the live one is never reached."""
    now = utc_now()
    expired = [(timedelta(minutes=m), -timedelta(hours=1)) for m in range(12)]
    # More expired jobs than the query budget of one page with limit 1, then a live one.
    *old, live = jobs_in_one_shard(now, *expired, (timedelta(hours=2), timedelta(days=1)))
    for job in [*old, live]:
        table.create(job)

    pages = page_through(table, 1, now)

    assert [job_id for page in pages for job_id in page] == [live.job_id]
    assert [] in pages  # a page the expired jobs left empty, yet not the last


def recorded_calls(
    table: JobTable, operation: str, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """The keyword arguments of each call of ``operation`` on the table's client from now
    on; the calls still go through."""
    calls: list[dict[str, Any]] = []
    real = getattr(table._client, operation)

    def recording(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(table._client, operation, recording)
    return calls


def test_a_page_makes_one_query_per_shard_when_it_fills(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard whose first query returns ``limit`` live jobs is not queried again for the
    page, though more jobs follow: one Query per shard, as the docstring promises."""
    now = utc_now()
    day = timedelta(days=1)
    for job in jobs_in_one_shard(now, *[(timedelta(minutes=m), day) for m in (1, 2, 3)]):
        table.create(job)
    queries = recorded_calls(table, "query", monkeypatch)

    page = table.page(Listing(), 1, (None,) * SHARDS, now)

    assert len(page.jobs) == 1
    assert len(queries) == SHARDS


@pytest.mark.parametrize(
    ("read", "consistent"),
    [
        (lambda table: table.running(limit_per_shard=5), True),
        (lambda table: table.page(Listing(), 10, (None,) * SHARDS, utc_now()).jobs, False),
    ],
    ids=["sweep", "listing-page"],
)
def test_the_sweep_reads_running_jobs_consistently_a_listing_page_eventually(
    table: JobTable,
    monkeypatch: pytest.MonkeyPatch,
    read: Callable[[JobTable], list[Job]],
    consistent: bool,
) -> None:
    """The sweep decides from a running job's lease whether its run died: an eventually
    consistent read could show a lease a checkpoint has already renewed. A listing page
    only shows jobs, and an eventually consistent read costs half as much (moto is always
    consistent, so the request itself is what can be checked here)."""
    job = Job.new(n=10, now=utc_now())
    table.create(job)
    table.claim(job.job_id, job.kind, "worker-1", utc_now(), 30_000)
    requests = recorded_calls(table, "batch_get_item", monkeypatch)

    assert [listed.job_id for listed in read(table)] == [job.job_id]
    assert requests
    assert all(
        request["RequestItems"][table.table_name]["ConsistentRead"] is consistent
        for request in requests
    )


def test_get_reads_consistently(table: JobTable, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job read just after a write must show it (a client's GET after its cancel, the
    re-read that tells why a cancel was refused, a replayed Idempotency-Key's job): an
    eventually consistent read could miss the write (moto is always consistent, so the
    request is what is checked)."""
    job = Job.new(n=1, now=utc_now().replace(microsecond=0))
    table.create(job)
    requests = recorded_calls(table, "get_item", monkeypatch)

    assert table.get(job.job_id) == job

    assert [request["ConsistentRead"] for request in requests] == [True]


def test_a_start_key_dynamodb_refuses_is_a_value_error_other_refusals_unavailable(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ValidationException for a query from a position is the position's fault (the
    service answers "bad cursor"); from no position, it is the store's."""
    refused = aws_error("ValidationException", "Query")
    monkeypatch.setattr(table._client, "query", failing_with(refused))
    now = utc_now()
    job = Job.new(n=1, now=now)
    from_job: list[Position] = [END] * SHARDS
    from_job[shard_of(job.job_id)] = (iso_utc(job.created_at), job.job_id)

    with pytest.raises(ValueError, match=r"^the start key does not fit this listing$"):
        table.page(Listing(), 1, from_job, now)
    with pytest.raises(StoreUnavailable) as raised:
        table.page(Listing(), 1, (None,) * SHARDS, now)
    assert str(raised.value) == f"DynamoDB Query failed: {refused}"


@pytest.mark.parametrize(
    "refused",
    [aws_error("ValidationException", "Query"), FAILURES[1]],
    ids=["validation-error", "connection-error"],
)
@pytest.mark.parametrize(
    "read",
    [lambda table: table.lost_pending(0, 10), lambda table: table.running(10)],
    ids=["lost_pending", "running"],
)
def test_a_refused_sweep_query_is_store_unavailable(
    table: JobTable,
    monkeypatch: pytest.MonkeyPatch,
    read: Callable[[JobTable], Any],
    refused: Exception,
) -> None:
    """The sweep's queries start from no position: any refusal, a ValidationException
    too, is the store's (the sweep retries later), never a bad cursor."""
    monkeypatch.setattr(table._client, "query", failing_with(refused))

    with pytest.raises(StoreUnavailable) as raised:
        read(table)

    assert str(raised.value) == f"DynamoDB Query failed: {refused}"


# --- get_many -----------------------------------------------------------------------------


def created_jobs(table: JobTable, count: int) -> list[Job]:
    """``count`` queued jobs, in the table and as they read back from it."""
    now = utc_now().replace(microsecond=0)  # items keep milliseconds
    jobs = [Job.new(n=1, now=now) for _ in range(count)]
    for job in jobs:
        table.create(job)
    return jobs


def one_key_a_call(table: JobTable, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Make the table's BatchGetItem read only the first key of each request and hand the
    rest back as UnprocessedKeys, as DynamoDB does when a partition is throttled or the
    16 MB response limit is reached (moto never does): "If a partial result is returned,
    the operation returns a value for UnprocessedKeys [...] in the same form as
    RequestItems"; with none left, "an empty UnprocessedKeys map"
    (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html).
    Returns the requests, as recorded_calls does."""
    requests: list[dict[str, Any]] = []
    real = table._client.batch_get_item

    def partial(**kwargs: Any) -> Any:
        requests.append(kwargs)
        ((name, wanted),) = kwargs["RequestItems"].items()
        first, *rest = wanted["Keys"]
        response = real(RequestItems={name: {**wanted, "Keys": [first]}})
        response["UnprocessedKeys"] = {name: {**wanted, "Keys": rest}} if rest else {}
        return response

    monkeypatch.setattr(table._client, "batch_get_item", partial)
    return requests


def test_get_many_asks_again_for_the_keys_dynamodb_left_unprocessed(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = created_jobs(table, 3)
    requests = one_key_a_call(table, monkeypatch)

    found = table.get_many([job.job_id for job in jobs])

    assert found == {job.job_id: job for job in jobs}
    assert [len(request["RequestItems"][table.table_name]["Keys"]) for request in requests] == [
        3,
        2,
        1,
    ]


def test_get_many_gives_up_on_keys_still_unprocessed_after_five_requests(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table throttled for that long is unavailable: the caller (a listing, the sweep)
    fails with StoreUnavailable and is retried, rather than silently missing jobs."""
    jobs = created_jobs(table, 6)
    requests = one_key_a_call(table, monkeypatch)

    with pytest.raises(StoreUnavailable) as raised:
        table.get_many([job.job_id for job in jobs])

    assert str(raised.value) == "DynamoDB BatchGetItem left keys unprocessed; retry"
    assert len(requests) == 5


def test_get_many_asks_for_at_most_100_keys_a_request(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BatchGetItem refuses more than 100 keys; 150 ids are two requests, not more."""
    jobs = created_jobs(table, 2)
    missing = [Job.new(n=1, now=utc_now()).job_id for _ in range(148)]
    requests = recorded_calls(table, "batch_get_item", monkeypatch)

    found = table.get_many([jobs[0].job_id, *missing, jobs[1].job_id])

    assert found == {job.job_id: job for job in jobs}
    assert [len(request["RequestItems"][table.table_name]["Keys"]) for request in requests] == [
        100,
        50,
    ]


# --- the watermark ------------------------------------------------------------------------


def test_raise_watermark_says_whether_it_raised_it(table: JobTable) -> None:
    assert table.raise_watermark(2_000) is True
    assert table.raise_watermark(2_000) is False  # already as high
    assert table.raise_watermark(1_999) is False
    assert table.watermark() == 2_000
    assert table.raise_watermark(2_001) is True
    assert table.watermark() == 2_001


@pytest.mark.parametrize("error", FAILURES, ids=FAILURE_IDS)
def test_a_failed_watermark_write_is_store_unavailable_naming_it(
    table: JobTable, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(table._client, "update_item", failing_with(error))

    with pytest.raises(StoreUnavailable) as raised:
        table.raise_watermark(2_000)

    assert str(raised.value) == f"DynamoDB UpdateItem failed: {error}"


# --- migrate and the schema version ---------------------------------------------------------


def put_raw(item: dict[str, Any]) -> None:
    boto3.client("dynamodb").put_item(TableName=connections.job_table().table_name, Item=item)


def before_kinds(job: Job) -> dict[str, Any]:
    """``job``'s item as a release before kinds and the pending index wrote it: n instead
    of input, and none of today's index keys."""
    item = to_item(job)
    for name in ("input", *derived_attributes(job)):
        item.pop(name, None)
    return item


def test_migrate_brings_every_job_item_to_the_current_layout(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utc_now().replace(microsecond=0)  # items keep milliseconds
    queued = Job.new(n=3, now=now - timedelta(minutes=5))
    done = Job.new(n=4, now=now).with_(status=JobStatus.SUCCEEDED, pending_at=None, result=4)
    current = Job.new(n=5, now=now)
    put_raw(before_kinds(queued))
    put_raw(before_kinds(done))
    table.create(current)
    # Cancelled by code older than its index keys: it has its input, its keys say queued.
    stale = Job.new(n=6, now=now).with_(status=JobStatus.CANCELLED, pending_at=None)
    put_raw({**to_item(stale), **derived_attributes(stale.with_(status=JobStatus.QUEUED))})
    record_id = idempotency_record_id("scope", "key")
    put_raw({"job_id": {"S": record_id}, "target": {"S": current.job_id}})
    boto3.client("dynamodb").delete_item(
        TableName=table.table_name, Key={"job_id": {"S": SCHEMA_ITEM}}
    )  # as on a table no release recorded a version in (the stack's apply did)
    assert table.schema_version() == 1
    scans = recorded_calls(table, "scan", monkeypatch)

    report = table.migrate(page_size=1)  # one item a page: every page is read

    assert (report.scanned, report.rewritten) == (5, 3)
    # Page by page, each read consistently: an item written just before must not be
    # read as it was (and skipped as already migrated).
    assert len(scans) >= 5
    assert all((scan["Limit"], scan["ConsistentRead"]) == (1, True) for scan in scans)
    # A queued job without a pending time gets its creation time: the sweep re-sends it.
    assert table.get(queued.job_id) == queued.with_(pending_at=epoch_ms(queued.created_at))
    assert raw_item(queued.job_id) == to_item(table.get(queued.job_id) or queued)
    assert raw_item(done.job_id) == to_item(done)
    assert raw_item(current.job_id) == to_item(current)
    assert raw_item(stale.job_id) == to_item(stale)
    assert raw_item(record_id) == {"job_id": {"S": record_id}, "target": {"S": current.job_id}}
    assert table.schema_version() == SCHEMA_VERSION
    assert table.migrate().rewritten == 0  # idempotent


def another_worker() -> JobTable:
    """An adapter on a client of its own, as another process writing the table."""
    return JobTable(boto3.client("dynamodb"), connections.job_table().table_name)


def claimed_by_another_worker(job: Job) -> Job | None:
    return another_worker().claim(job.job_id, job.kind, "other", utc_now(), LEASE_MS)


def deleted_by_ttl(job: Job) -> None:
    boto3.client("dynamodb").delete_item(
        TableName=connections.job_table().table_name, Key={"job_id": {"S": job.job_id}}
    )


@pytest.mark.parametrize("change", [claimed_by_another_worker, deleted_by_ttl])
def test_migrate_reads_again_a_job_that_changed_after_the_scan(
    table: JobTable, monkeypatch: pytest.MonkeyPatch, change: Callable[[Job], Job | None]
) -> None:
    """The rewrite of a job changed after the scan read it is refused (its condition is the
    status read); the job is read again and rewritten as it now is, or left alone if it is
    gone (no stub item); the migration goes on and records the version."""
    now = utc_now().replace(microsecond=0)  # items keep milliseconds
    changing, other = Job.new(n=3, now=now), Job.new(n=4, now=now)
    while other.job_id < SCHEMA_ITEM:
        # moto scans in key order: the scan must step over the schema item (not a job)
        # and go on to this job, not stop there.
        other = Job.new(n=4, now=now)
    put_raw(before_kinds(changing))
    put_raw(before_kinds(other))
    changed: list[Job | None] = []
    real_scan = table._client.scan

    def scan_then_change(**kwargs: Any) -> Any:
        response = real_scan(**kwargs)
        if not changed:
            changed.append(change(changing))
        return response

    monkeypatch.setattr(table._client, "scan", scan_then_change)

    report = table.migrate()

    (now_is,) = changed
    assert raw_item(changing.job_id) == (to_item(now_is) if now_is else None)
    assert report.rewritten == (2 if now_is else 1)
    assert table.get(other.job_id) == other
    assert raw_item(other.job_id) == to_item(other)
    assert table.schema_version() == SCHEMA_VERSION


def test_migrate_leaves_a_job_that_keeps_changing_and_records_no_version(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose status changes again before each of the migration's three rewrites is
    left as it is and counted as unsettled (here two such jobs), and the version is not
    recorded: the table does not claim a layout one of its items lacks. The next apply
    migrates them."""
    ddb = boto3.client("dynamodb")
    ddb.delete_item(TableName=table.table_name, Key={"job_id": {"S": SCHEMA_ITEM}})
    jobs = [Job.new(n=n, now=utc_now().replace(microsecond=0)) for n in (3, 4)]
    for job in jobs:
        put_raw(before_kinds(job))
    changing, tries = [True], []
    real = table.rewrite_derived

    def changed_just_before(
        read: Job, with_input: bool = False, with_client: bool = False
    ) -> Job | None:
        tries.append(read.status)
        if changing[0]:  # another writer changes its status between the read and the write
            other = JobStatus.RUNNING if read.status is JobStatus.QUEUED else JobStatus.QUEUED
            ddb.update_item(
                TableName=table.table_name,
                Key={"job_id": {"S": read.job_id}},
                UpdateExpression="SET #status = :other",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":other": {"S": other.value}},
            )
        return real(read, with_input=with_input, with_client=with_client)

    monkeypatch.setattr(table, "rewrite_derived", changed_just_before)

    assert table.migrate() == MigrationReport(scanned=2, rewritten=0, unsettled=2)
    # Each try rewrote the status it had just read, and each was refused.
    assert tries == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.QUEUED] * 2
    assert all("input" not in (raw_item(job.job_id) or {}) for job in jobs)
    assert table.schema_version() == 1

    changing[0] = False
    assert table.migrate() == MigrationReport(scanned=2, rewritten=2)
    assert all("input" in (raw_item(job.job_id) or {}) for job in jobs)
    assert table.schema_version() == SCHEMA_VERSION


def test_a_request_whose_expressions_name_no_attribute_carries_no_names_map() -> None:
    """DynamoDB refuses an empty ExpressionAttributeNames ("ExpressionAttributeNames must
    not be empty"; moto accepts it) and unused placeholders: a request gets exactly the
    names and values its expressions use, and no names map when they use none."""
    request: dict[str, Any] = {"UpdateExpression": "SET progress = :p"}

    _add_expression(request, {":p": 0.5, ":unused": 1})

    assert request == {
        "UpdateExpression": "SET progress = :p",
        "ExpressionAttributeValues": {":p": {"N": "0.5"}},
    }


def test_migrate_never_lowers_a_newer_schema_version(table: JobTable) -> None:
    put_raw({"job_id": {"S": SCHEMA_ITEM}, "version": {"N": str(SCHEMA_VERSION + 1)}})

    assert table.migrate() == MigrationReport(scanned=1, rewritten=0)

    assert table.schema_version() == SCHEMA_VERSION + 1


@pytest.mark.parametrize("error", FAILURES, ids=FAILURE_IDS)
def test_a_failed_schema_version_write_is_store_unavailable_naming_it(
    table: JobTable, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(table._client, "put_item", failing_with(error))

    with pytest.raises(StoreUnavailable) as raised:
        table.migrate()

    assert str(raised.value) == f"DynamoDB PutItem failed: {error}"


def test_lost_pending_lists_the_longest_overdue_first_across_shards(table: JobTable) -> None:
    """The sweep re-drives the oldest lost messages first, whatever their ids or shards."""
    now = utc_now()
    first, second = sorted((Job.new(n=1, now=now) for _ in range(2)), key=lambda j: j.job_id)
    table.create(second.with_(pending_at=1_000))  # the larger id is the longer overdue
    table.create(first.with_(pending_at=2_000))

    assert table.lost_pending(10_000, 10) == [
        PendingEntry(second.job_id, 1_000),
        PendingEntry(first.job_id, 2_000),
    ]


# --- a client's listing keys and its active jobs ------------------------------------------


def index_keys(job_id: str) -> dict[str, Any]:
    """The index keys (and the active job's estimate) an item carries."""
    item = raw_item(job_id) or {}
    names = {index.partition_key for index in INDEXES} | {PENDING.sort_key}
    return {name: value for name, value in item.items() if name in names}


def expected_keys(job: Job) -> dict[str, Any]:
    return dict(derived_attributes(job))


def test_every_status_change_keeps_a_clients_listing_keys_and_active_entry(
    table: JobTable,
) -> None:
    """Each write that moves alice's job rewrites her status listing keys with the rest;
    a final status removes the job from her active jobs (what her quota reads)."""
    now = utc_now()
    job = Job.new(n=5, now=now, client="alice", estimate_seconds=7)
    table.create(job)
    assert index_keys(job.job_id) == expected_keys(job)
    assert table.active("alice", 10) == [ActiveEntry(job.job_id, iso_utc(job.created_at), 7)]

    running = table.claim(job.job_id, job.kind, "owner", now, LEASE_MS)  # reads the client
    assert running is not None and running.client == "alice"
    assert index_keys(job.job_id) == expected_keys(running)
    released = table.release(running, "owner", epoch_ms(now), resume=True)
    assert released is not None
    assert index_keys(job.job_id) == expected_keys(released)
    again = table.claim(job.job_id, job.kind, "owner2", now, LEASE_MS, True, client="alice")
    assert again is not None
    done = table.succeed(again, "owner2", 1, now)
    assert done is not None and index_keys(job.job_id) == expected_keys(done)
    assert ACTIVE.partition_key not in index_keys(job.job_id)
    assert table.active("alice", 10) == []

    for finish in (
        lambda j: table.cancel(j, now),
        lambda j: table.fail_unfinished(j, "dead", now),
        lambda j: table.fail_unreadable(j.job_id, "unreadable", now),
        lambda j: table.fail_submission(j, "not sent", now),
    ):
        other = Job.new(n=5, now=now, client="bob")
        table.create(other)
        assert table.active("bob", 10)
        assert finish(other)
        finished = table.get(other.job_id)
        assert finished is not None and finished.status.is_final
        assert index_keys(other.job_id) == expected_keys(finished)
        assert table.active("bob", 10) == []


def test_a_requeued_job_stays_its_clients(table: JobTable) -> None:
    now = utc_now()
    job = Job.new(n=5, now=now, client="alice")
    table.create(job)
    running = table.claim(job.job_id, job.kind, "owner", now, LEASE_MS, client="alice")
    assert running is not None
    requeued = table.requeue_running(running, epoch_ms(now))
    assert requeued is not None and requeued.client == "alice"
    assert index_keys(job.job_id) == expected_keys(requeued)
    assert [entry.job_id for entry in table.active("alice", 10)] == [job.job_id]


def test_the_active_read_stops_at_its_limit_and_reads_one_clients_partition(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utc_now()
    for client in ("alice", "alice", "alice", "bob"):
        table.create(Job.new(n=5, now=now, client=client))
    queries = recorded_calls(table, "query", monkeypatch)

    assert len(table.active("alice", 2)) == 2
    assert len(table.active("alice", 10)) == 3
    assert all(
        query["ExpressionAttributeValues"] == {":client": {"S": "alice"}} for query in queries
    )
    assert [query["Limit"] for query in queries] == [2, 10]


def before_clients(job: Job) -> dict[str, Any]:
    """``job``'s item as version 3 wrote it: no client, no estimate, none of the client
    listing keys, no active key."""
    item = to_item(job)
    version_4 = {"client", "estimate_seconds", ACTIVE.partition_key}
    version_4 |= {
        shape.partition_key for shape in INDEXES if shape.name.startswith("jobs-by-client")
    }
    return {name: value for name, value in item.items() if name not in version_4}


def test_migrate_to_version_4_makes_every_earlier_job_anonymous(table: JobTable) -> None:
    now = utc_now().replace(microsecond=0)
    queued = Job.new(n=3, now=now)
    done = Job.new(n=4, now=now).with_(status=JobStatus.SUCCEEDED, pending_at=None, result=4)
    for job in (queued, done):
        put_raw(before_clients(job))
    # Finished, yet still listed as active (as no release writes it): the entry goes.
    stale = Job.new(n=5, now=now).with_(status=JobStatus.CANCELLED, pending_at=None)
    put_raw({**to_item(stale), ACTIVE.partition_key: {"S": "anonymous"}})
    boto3.client("dynamodb").delete_item(
        TableName=table.table_name, Key={"job_id": {"S": SCHEMA_ITEM}}
    )

    report = table.migrate()

    assert report.rewritten == 3 and report.unsettled == 0
    for job in (queued, done):
        migrated = table.get(job.job_id)
        assert migrated is not None and migrated.client == "anonymous"
        assert index_keys(job.job_id) == expected_keys(migrated)
    assert ACTIVE.partition_key not in (raw_item(stale.job_id) or {})
    assert [entry.job_id for entry in table.active("anonymous", 10)] == [queued.job_id]
    page = table.page(Listing(client="anonymous"), 10, [None] * SHARDS, utc_now())
    assert {job.job_id for job in page.jobs} == {queued.job_id, done.job_id, stale.job_id}
    assert table.schema_version() == SCHEMA_VERSION == 4


def test_a_claim_naming_another_client_is_refused_and_changes_nothing(table: JobTable) -> None:
    now = utc_now()
    job = Job.new(n=5, now=now, client="alice")
    table.create(job)
    before = raw_item(job.job_id)

    assert table.claim(job.job_id, job.kind, "owner", now, LEASE_MS, client="bob") is None
    assert raw_item(job.job_id) == before
    claimed = table.claim(job.job_id, job.kind, "owner", now, LEASE_MS, client="alice")
    assert claimed is not None and claimed.status is JobStatus.RUNNING


def test_a_job_written_before_clients_is_claimed_as_anonymous(table: JobTable) -> None:
    """A message of a job the previous release queued names no client: the job has none
    either until the migration adds it, and is anonymous's."""
    now = utc_now()
    job = Job.new(n=5, now=now)
    put_raw(before_clients(job))

    assert table.claim(job.job_id, job.kind, "owner", now, LEASE_MS, client="alice") is None
    claimed = table.claim(job.job_id, job.kind, "owner", now, LEASE_MS, client="anonymous")
    assert claimed is not None and claimed.client == "anonymous"
    # The claim rewrites the status keys, anonymous's included; the migration adds the rest.
    keys = index_keys(job.job_id)
    assert keys["client_status_key"] == expected_keys(claimed)["client_status_key"]
    table.migrate()
    assert index_keys(job.job_id) == expected_keys(claimed)
