"""The API's use cases (chalicelib/service.py) called directly, against moto: what each
refusal says (its code and its exact message: clients read both), the limits of what is
accepted, the clock a caller injects, and the shape of the listing cursor."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from chalicelib import connections, service
from chalicelib.config import Settings, get_settings
from chalicelib.errors import (
    IdempotencyConflict,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    JobNotRetryable,
    QuotaExceeded,
    StoreUnavailable,
)
from chalicelib.jobs import (
    DEFAULT_KIND,
    SHARDS,
    Job,
    JobStatus,
    Listing,
    shard_of,
    to_message,
    utc_now,
)
from chalicelib.kinds import KINDS
from chalicelib.service import IdempotencyKey
from chalicelib.store import ActiveEntry, JobTable
from tests.chalicelib.test_config import REQUIRED

RETENTION = timedelta(days=7)


@pytest.fixture
def table(aws: dict[str, str]) -> JobTable:
    return connections.job_table()


def queued_job_count(table: JobTable) -> int:
    return len(service.list_jobs({"status": "queued"}, table).jobs)


def clock(*times: datetime) -> Callable[[], datetime]:
    """A ``now`` that returns ``times`` in turn, then the last one for ever."""
    remaining: Iterator[datetime] = iter(times)
    last = [times[0]]

    def now() -> datetime:
        last[0] = next(remaining, last[0])
        return last[0]

    return now


# --- Idempotency-Key --------------------------------------------------------------------

KEY_MESSAGE = "Idempotency-Key must be 1 to 255 visible ASCII characters."


@pytest.mark.parametrize("key", ["k", "!", "~", "!~", "a" * 255, "!" * 255])
def test_an_idempotency_key_of_1_to_255_visible_ascii_characters_is_accepted(key: str) -> None:
    assert IdempotencyKey(key).key == key


@pytest.mark.parametrize("key", ["", "a" * 256, " ", "a b", "tab\t", "\x7f", "é", "k\n"])
def test_any_other_idempotency_key_is_refused_saying_what_a_key_is(key: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        IdempotencyKey(key)
    assert (refused.value.code, refused.value.message) == ("invalid_idempotency_key", KEY_MESSAGE)


def test_a_key_reused_for_another_request_is_a_conflict_that_says_so(table: JobTable) -> None:
    key = IdempotencyKey("order-7")
    queue = connections.worker().queue
    first = service.submit_job(DEFAULT_KIND, {"n": 1}, table, queue, RETENTION, key)

    with pytest.raises(IdempotencyConflict) as refused:
        service.submit_job(DEFAULT_KIND, {"n": 2}, table, queue, RETENTION, key)

    assert (refused.value.code, refused.value.message) == (
        "idempotency_key_reused",
        "This Idempotency-Key was already used with a different request.",
    )
    replay = service.submit_job(DEFAULT_KIND, {"n": 1}, table, queue, RETENTION, key)
    assert (replay.job.job_id, replay.replayed) == (first.job.job_id, True)


def test_a_key_whose_job_is_gone_is_an_aws_failure_to_retry(table: JobTable) -> None:
    """The key's record outlived its job (deleted by hand, say): the request is answered
    as a passing AWS failure, whose reason the log shows."""
    key = IdempotencyKey("order-8")
    queue = connections.worker().queue
    first = service.submit_job(DEFAULT_KIND, {"n": 1}, table, queue, RETENTION, key)
    table._client.delete_item(TableName=table.table_name, Key={"job_id": {"S": first.job.job_id}})

    with pytest.raises(StoreUnavailable) as refused:
        service.submit_job(DEFAULT_KIND, {"n": 1}, table, queue, RETENTION, key)

    assert str(refused.value) == "the job of an Idempotency-Key record is missing; retry"


# --- submitting -------------------------------------------------------------------------


def test_a_submission_records_the_job_by_the_callers_clock_then_sends_its_message(
    table: JobTable,
    receive: Callable[..., list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The message names the job and is deduplicated by its id (a repeated send of it is
    dropped); the job is counted as accepted."""
    then = utc_now().replace(microsecond=0) - timedelta(hours=1)
    queue = connections.worker().queue

    submission = service.submit_job(
        DEFAULT_KIND, {"n": 3}, table, queue, RETENTION, now=lambda: then
    )

    job = submission.job
    assert submission.replayed is False
    assert job.request_hash is None  # no key: nothing to bind
    assert (job.created_at, job.expires_at, job.input) == (
        then,
        int((then + RETENTION).timestamp()),
        {"n": 3},
    )
    assert table.get(job.job_id) == job
    [message] = receive()
    assert message["Body"] == to_message(job)
    assert message["Attributes"]["MessageDeduplicationId"] == job.job_id
    assert '"JobsAccepted"' in capsys.readouterr().out


@pytest.fixture
def unsendable(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The job queue, refusing every send once."""
    queue = connections.worker().queue
    real_send = queue.send
    refusals = [StoreUnavailable("SQS SendMessage failed: injected")]

    def send(body: str, deduplication_id: str) -> str:
        if refusals:
            raise refusals.pop()
        return real_send(body, deduplication_id)

    monkeypatch.setattr(queue, "send", send)
    return queue


def failed_jobs(table: JobTable) -> list[Job]:
    return service.list_jobs({"status": "failed"}, table).jobs


@pytest.mark.parametrize("key", [None, IdempotencyKey("order-9", scope="client-1")])
def test_a_job_whose_message_cannot_be_sent_is_failed_by_the_callers_clock(
    table: JobTable, unsendable: Any, key: IdempotencyKey | None
) -> None:
    then = utc_now().replace(microsecond=0) - timedelta(hours=1)

    with pytest.raises(StoreUnavailable, match=r"^SQS SendMessage failed: injected$"):
        service.submit_job(DEFAULT_KIND, {"n": 3}, table, unsendable, RETENTION, key, lambda: then)

    [failed] = failed_jobs(table)
    assert (failed.error, failed.finished_at, failed.input) == (service.SEND_FAILED, then, {"n": 3})


def test_a_key_whose_submission_could_not_be_sent_makes_a_new_job_next_time(
    table: JobTable, unsendable: Any
) -> None:
    key = IdempotencyKey("order-10", scope="client-1")
    with pytest.raises(StoreUnavailable):
        service.submit_job(DEFAULT_KIND, {"n": 3}, table, unsendable, RETENTION, key)

    again = service.submit_job(DEFAULT_KIND, {"n": 3}, table, unsendable, RETENTION, key)

    [failed] = failed_jobs(table)
    assert again.replayed is False and again.job.job_id != failed.job_id
    assert service.get_job(again.job.job_id, table).status is JobStatus.QUEUED


def test_an_idempotency_key_binds_one_client_one_key_one_request(
    table: JobTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys are scoped to their client: the same key of two clients, or two keys of one
    client, make separate jobs. A key binds kind and input: the same input for another
    kind is another request."""
    queue = connections.worker().queue

    def submit(kind: str, input: dict[str, Any], key: str, scope: str) -> service.Submission:
        return service.submit_job(
            kind, input, table, queue, RETENTION, IdempotencyKey(key, scope=scope)
        )

    first = submit(DEFAULT_KIND, {"n": 3}, "k", "client-1")
    other_client = submit(DEFAULT_KIND, {"n": 4}, "k", "client-2")
    other_key = submit(DEFAULT_KIND, {"n": 5}, "k2", "client-1")
    assert not (first.replayed or other_client.replayed or other_key.replayed)
    assert len({first.job.job_id, other_client.job.job_id, other_key.job.job_id}) == 3

    with pytest.raises(IdempotencyConflict):
        submit("countPrimes", {"below": 3}, "k", "client-1")
    assert submit(DEFAULT_KIND, {"n": 3}, "k", "client-1").job.job_id == first.job.job_id

    monkeypatch.setitem(KINDS, "countPrimesToo", KINDS["countPrimes"])
    primes = submit("countPrimes", {"below": 10}, "k3", "client-1")
    assert service.get_job(primes.job.job_id, table).kind == "countPrimes"
    with pytest.raises(IdempotencyConflict):
        submit("countPrimesToo", {"below": 10}, "k3", "client-1")


# --- reading and waiting -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "error", "code", "message"),
    [
        (
            "not-a-uuid",
            InvalidRequest,
            "invalid_job_id",
            "A job id is a UUID as returned by POST /heavy.",
        ),
        (
            "6f9619ff-8b86-4011-b42d-00c04fc964ff",
            JobNotFound,
            "job_not_found",
            "No job with id '6f9619ff-8b86-4011-b42d-00c04fc964ff'.",
        ),
    ],
)
def test_a_job_that_cannot_be_read_is_refused_saying_why(
    table: JobTable, job_id: str, error: type[Exception], code: str, message: str
) -> None:
    with pytest.raises(error) as refused:
        service.get_job(job_id, table)
    assert isinstance(refused.value, InvalidRequest | JobNotFound)
    assert (refused.value.code, refused.value.message) == (code, message)


class FakeTime:
    """monotonic and sleep for wait_for_job: sleeping advances the clock; a wait that
    would never end fails instead."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) > 50:
            raise AssertionError(f"still waiting after {self.sleeps}")
        self.now += seconds


def test_waiting_for_an_unfinished_job_polls_until_the_deadline_exactly(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    job = make_job(n=1)
    fake = FakeTime()

    waited = service.wait_for_job(job.job_id, table, 2.1, fake.sleep, fake.monotonic)

    assert waited.status is JobStatus.QUEUED
    # Twice a second at most: a wait reads the job 5 times in 2.1 s, not 9.
    assert fake.sleeps == [0.5] * 4 + [pytest.approx(0.1)]
    assert fake.now == pytest.approx(102.1)


def test_waiting_for_a_job_ends_at_a_deadline_met_exactly(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    job = make_job(n=1)
    fake = FakeTime()

    service.wait_for_job(job.job_id, table, 1.0, fake.sleep, fake.monotonic)

    assert fake.sleeps == [0.5, 0.5]


def test_waiting_for_a_finished_job_returns_it_at_once(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    job = make_job(n=1, status=JobStatus.SUCCEEDED, result=1)
    fake = FakeTime()

    waited = service.wait_for_job(job.job_id, table, 5, fake.sleep, fake.monotonic)

    assert (waited.status, waited.result, fake.sleeps) == (JobStatus.SUCCEEDED, 1, [])


# --- cancel and retry -------------------------------------------------------------------


def test_cancelling_a_job_expired_by_the_callers_clock_is_not_found_and_writes_nothing(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    now = utc_now()
    job = make_job(n=1, expires_at=int(now.timestamp()) + 60)
    before = table.get(job.job_id)
    later = now + timedelta(minutes=5)

    with pytest.raises(JobNotFound):
        service.cancel_job(job.job_id, table, now=lambda: later)

    assert table.get(job.job_id) == before


def test_a_finished_job_that_expires_during_the_cancel_is_not_found(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    """cancel_job reads the job again, after the refused cancel, with the caller's clock."""
    now = utc_now()
    job = make_job(n=1, status=JobStatus.SUCCEEDED, expires_at=int(now.timestamp()) + 60)

    with pytest.raises(JobNotFound):
        service.cancel_job(job.job_id, table, now=clock(now, now, now + timedelta(minutes=5)))


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED])
def test_cancelling_a_finished_job_says_how_it_ended(
    table: JobTable, make_job: Callable[..., Job], status: JobStatus
) -> None:
    job = make_job(n=1, status=status)
    before = table.get(job.job_id)

    with pytest.raises(JobFinished) as refused:
        service.cancel_job(job.job_id, table)

    assert (refused.value.code, refused.value.message) == (
        "job_finished",
        f"The job already {status.value}; it cannot be cancelled.",
    )
    assert table.get(job.job_id) == before


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED])
def test_retrying_a_job_that_did_not_fail_says_what_it_is(
    table: JobTable, make_job: Callable[..., Job], status: JobStatus
) -> None:
    job = make_job(n=1, status=status)

    with pytest.raises(JobNotRetryable) as refused:
        service.retry_job(job.job_id, table, connections.worker().queue, RETENTION)

    assert (refused.value.code, refused.value.message) == (
        "not_retryable",
        f"The job is {status.value}; only a failed or cancelled job can be retried.",
    )


def test_a_retry_is_a_new_job_made_with_the_callers_clock_and_retention(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    failed = make_job(n=5, status=JobStatus.FAILED, error="ValueError: x")
    then = utc_now().replace(microsecond=0) - timedelta(hours=1)

    retried = service.retry_job(
        failed.job_id, table, connections.worker().queue, RETENTION, now=lambda: then
    )

    assert (retried.retry_of, retried.input, retried.status) == (
        failed.job_id,
        {"n": 5},
        JobStatus.QUEUED,
    )
    assert retried.created_at == then
    assert retried.expires_at == int((then + RETENTION).timestamp())
    assert table.get(retried.job_id) == retried


def test_retrying_a_job_expired_by_the_callers_clock_is_not_found_and_makes_nothing(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    now = utc_now()
    failed = make_job(n=5, status=JobStatus.FAILED, expires_at=int(now.timestamp()) + 60)
    later = now + timedelta(minutes=5)

    with pytest.raises(JobNotFound):
        service.retry_job(
            failed.job_id, table, connections.worker().queue, RETENTION, now=lambda: later
        )

    assert queued_job_count(table) == 0


# --- Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "input"),
    [("retiredKind", {"n": 10**9}), (DEFAULT_KIND, {"n": "not a number", "extra": 1})],
)
def test_retry_after_is_1_second_for_a_job_its_kind_cannot_estimate(
    aws: dict[str, str], kind: str, input: dict[str, Any]
) -> None:
    """The kind is gone, or the stored input no longer fits it: no estimate, so 1 s."""
    job = Job.new(kind=kind, input=input, now=utc_now())
    assert service.retry_after_seconds(job, get_settings()) == 1


# --- listing parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        (
            {"statsu": "queued", "after": "x"},
            "unknown_parameter",
            "Unknown query parameter(s): after, statsu. "
            "Allowed: kind, status, client, limit, cursor.",
        ),
        (
            {"kind": "heavyload"},
            "unknown_kind",
            "Unknown kind 'heavyload'. Kinds: countPrimes, heavyLoad.",
        ),
        (
            {"status": "done"},
            "invalid_status",
            "status must be one of: queued, running, succeeded, failed, cancelled.",
        ),
        ({"limit": "0"}, "invalid_limit", "limit must be an integer from 1 to 100."),
        ({"limit": "101"}, "invalid_limit", "limit must be an integer from 1 to 100."),
        (
            {"cursor": "garbage"},
            "invalid_cursor",
            "cursor must be a value returned as next by GET /jobs.",
        ),
    ],
)
def test_a_bad_listing_parameter_is_refused_saying_what_is_allowed(
    table: JobTable, params: dict[str, str], code: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        service.list_jobs(params, table)
    assert (refused.value.code, refused.value.message) == (code, message)


def test_an_unknown_wait_parameter_is_refused_saying_what_is_allowed() -> None:
    with pytest.raises(InvalidRequest) as refused:
        service.wait_param({"wiat": "3", "wait": "1", "timeout": "2"}, 25)
    assert (refused.value.code, refused.value.message) == (
        "unknown_parameter",
        "Unknown query parameter(s): timeout, wiat. Allowed: wait.",
    )


@pytest.mark.parametrize(("params", "wait"), [({}, None), ({"wait": "0"}, 0), ({"wait": "25"}, 25)])
def test_wait_is_0_to_the_maximum_seconds_or_absent(
    params: dict[str, str], wait: int | None
) -> None:
    assert service.wait_param(params, 25) == wait


def test_a_wait_over_the_maximum_is_refused_naming_the_range() -> None:
    with pytest.raises(InvalidRequest) as refused:
        service.wait_param({"wait": "26"}, 25)
    assert (refused.value.code, refused.value.message) == (
        "invalid_wait",
        "wait must be an integer from 0 to 25.",
    )


def test_the_largest_page_is_100_jobs(table: JobTable, make_job: Callable[..., Job]) -> None:
    made = {make_job(n=i).job_id for i in range(3)}
    page = service.list_jobs({"limit": "100"}, table)
    assert {job.job_id for job in page.jobs} == made and page.next_cursor is None


# --- the cursor ---------------------------------------------------------------------------

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def test_every_cursor_is_url_safe_without_padding(
    table: JobTable, make_job: Callable[..., Job]
) -> None:
    """A cursor goes into a query string as it is: base64url, no '=' padding."""
    start = utc_now() - timedelta(minutes=1)
    for i in range(9):
        make_job(n=i, created_at=start + timedelta(seconds=i))
    cursors: list[str] = []
    for limit in ("1", "2", "4"):
        params = {"limit": limit}
        while True:
            page = service.list_jobs(params, table)
            if page.next_cursor is None:
                break
            cursors.append(page.next_cursor)
            params = {"limit": limit, "cursor": page.next_cursor}
    assert len(cursors) > 9
    assert [c for c in cursors if not URL_SAFE.fullmatch(c)] == []


def cursor_text(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def a_job_id_of_shard(shard: int) -> str:
    while True:
        job_id = Job.new(n=1).job_id
        if shard_of(job_id) == shard:
            return job_id


def test_a_cursor_with_a_stray_character_is_refused(table: JobTable) -> None:
    """Only a cursor as issued is read: one with a character that base64url does not use
    is refused, even where a lenient decoder would skip the character."""
    text = json.dumps({"l": Listing().name, "p": [None] * SHARDS})
    text += " " * ((1 - len(text)) % 3)  # a length that base64 pads with "=="
    cursor = cursor_text(text)
    assert len(cursor) % 4 == 2
    assert service.list_jobs({"cursor": cursor}, table).jobs == []

    for stray in (cursor[:3] + "." + cursor[3:], cursor + "!"):
        with pytest.raises(InvalidRequest) as refused:
            service.list_jobs({"cursor": stray}, table)
        assert refused.value.code == "invalid_cursor"


def test_a_cursor_position_must_be_a_pair_not_an_object(table: JobTable) -> None:
    """A shard's position is [created_at, job_id]; an object with those two as its keys
    is not one."""
    job_id = a_job_id_of_shard(0)
    created_at = "2026-01-01T00:00:00.000Z"
    pair = cursor_text(
        json.dumps({"l": Listing().name, "p": [[created_at, job_id], None, None, None]})
    )
    assert service.list_jobs({"cursor": pair}, table).jobs == []

    as_object = {"l": Listing().name, "p": [{created_at: 0, job_id: 0}, None, None, None]}
    with pytest.raises(InvalidRequest) as refused:
        service.list_jobs({"cursor": cursor_text(json.dumps(as_object))}, table)
    assert refused.value.code == "invalid_cursor"


# --- quotas -------------------------------------------------------------------------------


class ActiveJobs:
    """A stand-in for the table's active index: a client's active jobs' estimates, oldest
    first; records each read's limit."""

    def __init__(self, estimates: list[int]) -> None:
        self.estimates = estimates
        self.limits: list[int] = []

    def active(self, client: str, limit: int) -> list[ActiveEntry]:
        self.limits.append(limit)
        return [
            ActiveEntry(f"job-{i}", f"2026-01-01T00:00:0{i}.000Z", seconds)
            for i, seconds in enumerate(self.estimates[:limit])
        ]


def limits(jobs: int, seconds: int) -> Any:
    return replace(
        Settings.from_mapping(REQUIRED),
        max_active_per_client=jobs,
        max_active_seconds_per_client=seconds,
    )


@pytest.mark.parametrize(
    ("estimates", "new", "jobs", "seconds", "retry_after"),
    [
        ([3, 4], 1, 2, 0, 3),  # at 2 jobs: the oldest (3 s) must finish
        # Over by one (a burst overshot): the read stops at the quota, so the answer is
        # the oldest one's, a lower bound.
        ([3, 4, 5], 1, 2, 0, 3),
        ([3, 4], 4, 0, 10, 3),  # 7 + 4 > 10: freeing the oldest 3 s makes room
        ([3, 4], 8, 0, 10, 7),  # 7 + 8 > 10: both must finish
        ([3, 4], 3, 0, 10, None),  # 7 + 3 fits
        ([], 50, 0, 10, None),  # a job over the whole limit runs alone
        ([1], 50, 0, 10, 1),  # ...but only alone
        ([3, 4], 99, 0, 0, None),  # both limits off
    ],
)
def test_a_quota_refusal_says_when_the_clients_oldest_work_makes_room(
    estimates: list[int], new: int, jobs: int, seconds: int, retry_after: int | None
) -> None:
    table = ActiveJobs(estimates)

    def check() -> None:
        service.check_quota("alice", new, table, limits(jobs, seconds))  # type: ignore[arg-type]

    if retry_after is None:
        check()
    else:
        with pytest.raises(QuotaExceeded) as refused:
            check()
        assert refused.value.retry_after == retry_after
        assert refused.value.status_code == 429 and refused.value.code == "quota_exceeded"
    # One read, bounded by the quota (never when both limits are off).
    assert table.limits == ([] if not jobs and not seconds else [jobs or seconds])
