from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from chalicelib.errors import PoisonMessage
from chalicelib.jobs import (
    ACTIVE,
    INDEXES,
    LATER,
    LIST_ALL,
    LIST_BY_KIND,
    LIST_BY_KIND_STATUS,
    LIST_BY_STATUS,
    PENDING,
    PROGRESS_MARK,
    SHARDS,
    Job,
    JobStatus,
    Listing,
    derived_attributes,
    from_item,
    is_job_id,
    iso_utc,
    parse_message,
    request_fingerprint,
    shard_of,
    to_item,
    to_message,
)

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_item_round_trip_keeps_every_field() -> None:
    job = Job.new(n=10**10, now=MOMENT).with_(
        status=JobStatus.SUCCEEDED,
        progress=0.5,
        result=10**10,
        error="boom",
        attempts=2,
        started_at=MOMENT,
        finished_at=MOMENT,
        expires_at=1_900_000_000,
        state={"low": 12345, "count": [1, "two"]},
        lease_until=1_800_000_000_000,
        owner="token",
        progress_mark=1_799_999_975_000,
        resume=True,
        last_error="earlier",
        request_hash="abc",
        pending_at=None,  # only a queued job has a message due
        redrives=2,
        retry_of="6f9619ff-8b86-4011-b42d-00c04fc964ff",
        client="alice",
        estimate_seconds=42,
        lane=3,
        run_at=MOMENT,
        schedule="nightly",
    )
    defaults = {f.name for f in dataclasses.fields(Job) if getattr(job, f.name) == f.default}
    # Every other field is set: the trip keeps it (``later``: only a queued job waits).
    assert defaults == {"pending_at", "later"}
    assert from_item(to_item(job)) == job
    waiting = Job.new(n=1, now=MOMENT, run_at=MOMENT + timedelta(days=1), later=True)
    assert from_item(to_item(waiting)) == waiting
    queued = Job.new(n=1, now=MOMENT)
    assert queued.pending_at == int(MOMENT.timestamp() * 1000)  # due from its creation
    assert from_item(to_item(queued)) == queued
    # What is not set is not written: a new job's item holds only these (and its keys).
    written = {"job_id", "kind", "input", "n", "status", "progress", "attempts", "created_at"}
    written |= {"client", "estimate_seconds"}
    assert set(to_item(queued)) == written | set(derived_attributes(queued))


@pytest.mark.parametrize(
    ("kind", "input", "text", "n"),
    [
        ("countPrimes", {"below": 10, "hint": [1, 2]}, '{"below":10,"hint":[1,2]}', None),
        ("heavyLoad", {"n": 5}, '{"n":5}', {"N": "5"}),
    ],
)
def test_the_input_is_compact_json_text_and_heavyloads_n_a_number_too(
    kind: str, input: dict[str, Any], text: str, n: dict[str, str] | None
) -> None:
    """The item's ``input`` is JSON text without spaces (an item is at most 400 KB);
    heavyLoad's is also written as the number ``n``, which the release before kinds
    reads."""
    job = Job.new(input=input, kind=kind, now=MOMENT)
    item = to_item(job)
    assert item["input"] == {"S": text}
    assert item.get("n") == n
    assert from_item(item).input == input


def test_a_job_needs_its_input() -> None:
    with pytest.raises(TypeError, match=r"^a job needs its input \(or heavyLoad's n\)$"):
        Job.new(now=MOMENT)


@pytest.mark.parametrize(
    ("result", "attribute"),
    [
        (10**10, {"N": "10000000000"}),  # an int is a number, as before kinds
        (True, {"S": "true"}),  # a bool is not an int here: JSON text
        ({"primes": [2, 3], "last": None}, {"S": '{"primes":[2,3],"last":null}'}),
        (["a", 1.5], {"S": '["a",1.5]'}),
    ],
)
def test_a_result_is_stored_as_a_number_for_an_int_else_as_compact_json_text(
    result: Any, attribute: dict[str, str]
) -> None:
    """The item's ``result``: DynamoDB's number for an int (what the previous release
    wrote and reads), else JSON text without spaces (an item is at most 400 KB). Either
    reads back as the same value, of the same type."""
    job = Job.new(n=1, now=MOMENT).with_(status=JobStatus.SUCCEEDED, result=result)
    assert to_item(job)["result"] == attribute
    read = from_item(to_item(job)).result
    assert read == result and type(read) is type(result)


def test_a_job_is_expired_from_the_instant_its_expiry_is_reached() -> None:
    """Job.is_expired: readers stop seeing a job at ``expires_at`` itself, not after it."""
    job = Job.new(n=1, now=MOMENT, retention=timedelta(days=7))
    expires_at = int(MOMENT.timestamp()) + 7 * 24 * 3600  # the retention after its creation
    assert job.expires_at == expires_at
    expiry = datetime.fromtimestamp(expires_at, UTC)
    assert not job.is_expired(expiry - timedelta(milliseconds=1))
    assert job.is_expired(expiry)
    assert job.is_expired(expiry + timedelta(seconds=1))
    assert not Job.new(n=1, now=MOMENT).is_expired(datetime.max.replace(tzinfo=UTC))


def test_an_item_carries_the_index_keys_its_status_and_kind_derive() -> None:
    job = Job.new(n=1, now=MOMENT)
    shard = shard_of(job.job_id)
    item = to_item(job)
    assert item[LIST_ALL.partition_key] == {"S": f"all#{shard}"}
    assert item[LIST_BY_STATUS.partition_key] == {"S": f"queued#{shard}"}
    assert item[LIST_BY_KIND.partition_key] == {"S": f"heavyLoad#{shard}"}
    assert item[LIST_BY_KIND_STATUS.partition_key] == {"S": f"heavyLoad#queued#{shard}"}
    assert item[PENDING.partition_key] == {"S": f"pending#{shard}"}
    done = to_item(job.with_(status=JobStatus.SUCCEEDED))
    assert done[LIST_BY_STATUS.partition_key] == {"S": f"succeeded#{shard}"}
    assert PENDING.partition_key not in done and PENDING.sort_key not in done


def test_jobs_spread_over_every_shard() -> None:
    """A job's shard is its id's first 32 bits (8 hex digits, random in a uuid4) modulo
    SHARDS, so jobs spread evenly over the shards."""
    assert shard_of("6f9619ff-8b86-4011-b42d-00c04fc964ff") == 0x6F9619FF % SHARDS
    shards = [shard_of(Job.new(n=1, now=MOMENT).job_id) for _ in range(400)]
    assert set(shards) == set(range(SHARDS))
    assert min(shards.count(s) for s in range(SHARDS)) > 400 / SHARDS / 2


def test_each_listing_has_its_own_index_and_partitions() -> None:
    listings = [
        Listing(client=client, kind=kind, status=status)
        for client in (None, "alice", "bob")
        for kind in (None, "heavyLoad")
        for status in (None, JobStatus.QUEUED)
    ]
    assert len({listing.index.name for listing in listings}) == 8
    assert {listing.index for listing in listings} | {PENDING, ACTIVE, LATER} == set(INDEXES)
    partitions = {listing.partition(shard) for listing in listings for shard in range(SHARDS)}
    # No hot partition shared by all jobs, and no client's partition holds another's jobs.
    assert len(partitions) == len(listings) * SHARDS
    assert len({listing.name for listing in listings}) == len(listings)
    # Keys only, plus expires_at for the listings: a checkpoint writes no index.
    checkpointed = {"state", "progress", "lease_until"}
    for index in INDEXES:
        assert not checkpointed & {index.partition_key, index.sort_key, *index.projected}


JOB_ID = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
NOT_JSON = "x" * 100


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json", "message body is not JSON: 'this is not json'"),
        (NOT_JSON, f"message body is not JSON: {NOT_JSON[:80]!r}"),  # the first 80 only
        ("[1, 2]", "message body is not a JSON object"),
        ('{"n": 5}', "message names no valid job id: None"),
        ('{"job_id": 5}', "message names no valid job id: 5"),
        ('{"job_id": "abc"}', "message names no valid job id: 'abc'"),
        (
            '{"job_id": "6F9619FF-8B86-4011-B42D-00C04FC964FF"}',  # a uuid4, not as we issue it
            "message names no valid job id: '6F9619FF-8B86-4011-B42D-00C04FC964FF'",
        ),
        (f'{{"job_id": "{JOB_ID}", "kind": 5}}', "message names no valid kind: 5"),
        (f'{{"job_id": "{JOB_ID}", "kind": ""}}', "message names no valid kind: ''"),
    ],
)
def test_a_poison_message_says_why_it_can_never_be_processed(body: str, reason: str) -> None:
    """parse_message's reason is what the worker logs when it drops the message: it says
    what is wrong, quoting the bad part (a body not JSON: its first 80 characters)."""
    with pytest.raises(PoisonMessage) as raised:
        parse_message(body)
    assert str(raised.value) == reason


def test_the_progress_mark_is_the_items_own_never_the_apis_and_an_older_item_has_none() -> None:
    """The mark of the checkpoint last published as progress is bookkeeping of the job's
    events: written to the item as a number, read back, not shown by GET /jobs/{id}, not
    projected into any index (a checkpoint that sets it still writes no index); an item
    written before marks existed reads as never published."""
    job = Job.new(n=1, now=MOMENT).with_(progress_mark=1_767_323_045_678)
    item = to_item(job)
    assert item[PROGRESS_MARK] == {"N": "1767323045678"}
    assert from_item(item).progress_mark == 1_767_323_045_678
    assert PROGRESS_MARK not in job.to_api() and "progress_mark" not in job.to_api()
    indexed = {name for i in INDEXES for name in (i.partition_key, i.sort_key, *i.projected)}
    assert PROGRESS_MARK not in indexed
    del item[PROGRESS_MARK]
    assert from_item(item).progress_mark is None


def test_api_form_uses_iso_utc_strings() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = Job.new(n=1, now=moment).to_api()
    assert body["created_at"] == "2026-01-02T03:04:05.000Z"
    assert body["started_at"] is None and body["status"] == "queued"


@pytest.fixture
def local_zone_new_york() -> Iterator[None]:
    """The process's local time zone is not UTC (a developer's machine under `make run`;
    Lambda's is UTC)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.usefixtures("local_zone_new_york")
def test_times_are_written_in_utc_whatever_the_local_zone() -> None:
    """iso_utc converts to UTC itself, not to the local zone: items and the API say Z
    whatever zone a moment is in and wherever the code runs."""
    tokyo = MOMENT.astimezone(timezone(timedelta(hours=9)))
    assert iso_utc(MOMENT) == iso_utc(tokyo) == "2026-01-02T03:04:05.678Z"
    assert Job.new(n=1, now=tokyo).to_api()["created_at"] == "2026-01-02T03:04:05.678Z"


def test_job_ids_are_uuid4() -> None:
    ids = {Job.new(n=1, now=datetime.now(UTC)).job_id for _ in range(100)}
    assert len(ids) == 100 and all(is_job_id(i) for i in ids)


def test_a_fingerprint_is_the_sha256_of_the_canonical_kind_and_input() -> None:
    """Fingerprints are stored with Idempotency-Keys, so their form is a contract: the
    sorted JSON of kind and input; only heavyLoad's {"n": ...} keeps its pre-kinds form.
    Another kind whose input is just n is not taken for heavyLoad."""
    assert request_fingerprint("countPrimes", {"n": 5}) == (
        hashlib.sha256(b'{"input": {"n": 5}, "kind": "countPrimes"}').hexdigest()
    )
    assert request_fingerprint("heavyLoad", {"n": 5, "extra": 1}) == (
        hashlib.sha256(b'{"input": {"extra": 1, "n": 5}, "kind": "heavyLoad"}').hexdigest()
    )


def test_a_fingerprint_does_not_depend_on_the_order_of_the_input_fields() -> None:
    assert request_fingerprint("kind", {"b": 1, "a": {"y": 2, "x": 3}}) == (
        request_fingerprint("kind", {"a": {"x": 3, "y": 2}, "b": 1})
    )


def test_a_message_names_its_jobs_client_unless_anonymous() -> None:
    """The claim rewrites the client's listing keys from the message, without a read; a
    message without a client (every one before clients) is an anonymous job's."""
    alices = Job.new(n=1, now=MOMENT, client="alice")
    assert json.loads(to_message(alices))["client"] == "alice"
    assert parse_message(to_message(alices)).client == "alice"
    anonymous = Job.new(n=1, now=MOMENT)
    assert "client" not in json.loads(to_message(anonymous))
    assert parse_message(to_message(anonymous)).client == "anonymous"
    for bad in (5, "", "no#hash"):
        body = json.dumps({"job_id": alices.job_id, "kind": "heavyLoad", "client": bad})
        with pytest.raises(PoisonMessage, match="message names no valid client"):
            parse_message(body)
