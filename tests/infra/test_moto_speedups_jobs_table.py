"""infra.moto_speedups on the project's own table: the indexes chalicelib/jobs.py declares
(four sharded listing indexes projecting ``expires_at``, the sparse keys-only pending
index with a numeric sort key), read through chalicelib's own store, answer the same on
moto as released and with the speed-ups.

A seeded mix of jobs in every status and kind (some expired, some pending long ago) is
written and changed through ``JobTable`` (create, cancel, re-drive, requeue); then every
listing is paged through with its cursors, and the sweep's reads (``lost_pending`` at
several cutoffs, ``running``) are made. The whole transcript must be equal on both.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.jobs import SHARDS, Job, JobStatus, Listing, epoch_ms
from chalicelib.store import JobTable
from infra import stack
from tests.infra.moto_flavours import FLAVOURS, client, moto_as

STAGE = "local"
KINDS = ("heavyLoad", "countPrimes", "sleep")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SEEDS = (1,)


def _job(rng: random.Random, n: int) -> Job:
    created = NOW - timedelta(seconds=rng.randrange(0, 5000), milliseconds=rng.randrange(1000))
    status = rng.choice(list(JobStatus))
    expires = created + timedelta(days=1) if rng.random() > 0.1 else NOW - timedelta(hours=1)
    fields: dict[str, Any] = {
        "job_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "kind": rng.choice(KINDS),
        "input": {"n": n},
        "status": status,
        "created_at": created,
        "expires_at": int(expires.timestamp()),
    }
    if status is JobStatus.QUEUED:
        fields["pending_at"] = epoch_ms(created) + rng.randrange(0, 3000)
    if status is JobStatus.RUNNING:
        fields["lease_until"] = epoch_ms(NOW) - rng.randrange(0, 600_000)
        fields["owner"] = "o"
    return Job(**fields)


def _pages(table: JobTable, listing: Listing, limit: int) -> list[list[str]]:
    positions: tuple[Any, ...] = (None,) * SHARDS
    pages = []
    for _ in range(200):
        page = table.page(listing, limit, positions, NOW)
        pages.append([job.job_id for job in page.jobs])
        if page.last:
            return pages
        positions = page.positions
    raise AssertionError("the listing never ended")


def _transcript(seed: int) -> list[Any]:
    rng = random.Random(seed)
    outputs = stack.apply_stage(STAGE, cfn=client("cloudformation"))
    table = JobTable(client("dynamodb"), outputs["TableName"])
    jobs = [_job(rng, n) for n in range(100)]
    listings = [Listing()] + [Listing(status=s) for s in JobStatus]
    listings += [Listing(kind=k) for k in KINDS] + [Listing(kind=KINDS[0], status=JobStatus.QUEUED)]
    transcript: list[Any] = []

    def read_everything(limits: tuple[int, ...]) -> None:
        for listing in listings:
            for limit in limits:
                transcript.append(("page", listing.name, limit, _pages(table, listing, limit)))
        for seconds in (0, 1000, 3000, 6000):
            cutoff = epoch_ms(NOW) - seconds * 1000
            lost = table.lost_pending(cutoff, 25)
            transcript.append(("lost", seconds, [(e.job_id, e.pending_at) for e in lost]))
        transcript.append(("running", sorted(job.job_id for job in table.running(25))))

    # Half the jobs, then every read (the speed-ups build their indexes from the table);
    # then the rest and the changes, which the built indexes must follow item by item.
    for job in jobs[:50]:
        table.create(job)
    read_everything((20,))
    for job in jobs[50:]:
        table.create(job)
    for job in rng.sample(jobs, 30):  # status changes move items between index partitions
        if job.status is JobStatus.QUEUED and job.pending_at is not None and rng.random() < 0.5:
            changed = table.redrive_pending(job.job_id, job.pending_at, epoch_ms(NOW))
        elif job.status is JobStatus.RUNNING and rng.random() < 0.5:
            changed = table.requeue_running(job, epoch_ms(NOW))
        else:
            changed = table.cancel(job, NOW)
        transcript.append(("change", job.job_id, None if changed is None else changed.status))
    read_everything((6, 20))
    return transcript


@pytest.mark.parametrize("seed", SEEDS)
def test_the_projects_indexes_answer_the_same_on_stock_and_fast_moto(seed: int) -> None:
    transcripts = {}
    for flavour in FLAVOURS:
        with moto_as(flavour):
            transcripts[flavour] = _transcript(seed)
    stock, fast = transcripts["stock"], transcripts["fast"]
    # Not vacuous: the listings found jobs, the sweep's reads found some and not others.
    everything = [t for t in stock if t[0] == "page" and t[1] == Listing().name][-1]
    assert 60 < sum(map(len, everything[3])) < 100  # the expired ones filtered out
    lost = [t[2] for t in stock if t[0] == "lost"][-4:]
    assert lost[0] and len(lost[0]) > len(lost[-1])
    for i, (expected, got) in enumerate(zip(stock, fast, strict=True)):
        assert got == expected, f"step {i}: {expected[:2]}"
