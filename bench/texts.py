"""The fixed prose of BENCHMARKS.md: how each figure is measured, and what it would be on
AWS. No number here: numbers come from the run (``bench.findings`` explains them)."""

from __future__ import annotations

METHOD = {
    "1": (
        "Blocks of timed `GET /fast` (one connection per request, as curl makes them: see "
        "`bench/client.py` for why not kept-alive) alternate: idle; a heavy job "
        "(n = 10¹⁰) counting in the worker; idle; a bare loop counting in a plain process "
        "(the control: any CPU-bound process on the other core, with no AWS call at all); "
        "and so on, ending idle, so idle is sampled before and after every busy block. A job "
        "is cancelled after its block and a trivial job run behind it, so the next block "
        "starts with the worker idle. The baseline runs the same loop inside the serving "
        "process (`bench/blocking_server.py`, never a route of the product): threaded, as "
        "`chalice local` serves, and one request at a time, the classic blocking server, "
        "where /fast is sent just after the loop started."
    ),
    "2": (
        "Each iteration makes five requests in a random order: `POST /heavy` with n = 1 "
        "and with n = 10¹⁰, `GET /fast`, and a bare boto3 `PutItem` (a job record, with the "
        "API's condition) and `SendMessage` (its message) from the benchmark, on the same "
        "emulator, table and queue. The floor of one submission is the sum of the last "
        "three in the same iteration. No worker runs; the queue is drained every few "
        "iterations, so both sides see the same shallow depth."
    ),
    "3": (
        "A trivial job (n = 0) is submitted with the worker idle, in its long poll of "
        "20 s (each job is waited for, then 50-250 ms pass). Queue-to-start is the job's "
        "`started_at`, written by the worker's claim, minus the wall-clock time at which "
        "the client had read the 202: one clock, no polling error. The floor is a bare "
        "pipeline with the same calls (`bench/floor_worker.py`: long poll, then the "
        "claim's UpdateItem), timed from its SendMessage's answer; they alternate."
    ),
    "4": (
        "A job of n iterations in the worker (its speed is n / (`finished_at` - "
        "`started_at`), both written by the worker, so it includes the claim's answer, "
        "every report, checkpoint and cancellation check, and the final write) alternates "
        "with `for i in range(n): pass` in a function of a fresh plain process, timed "
        "inside it. One at a time, so each has a core to itself."
    ),
    "5": (
        "Batches of trivial jobs (n = 0) with a fixed number in flight (so the queue never "
        "holds more), end to end through the API and the worker, alternate with the same "
        "batches through the bare pipeline (the benchmark's PutItem + SendMessage, then "
        "`bench/floor_worker.py`: receive, claim, result, delete). Completion is read the "
        "same way on both sides (GetItem by the benchmark)."
    ),
    "6": (
        "`make package`'s zip for the dev stage is built, checked and unzipped as Lambda's "
        "task root. Fresh processes import `app` from it (task root first on `sys.path`, "
        "the stage's environment variables, no bytecode written, as on Lambda's read-only "
        "task root) and, alternately, `boto3` alone (which comes with its bytecode, as in "
        "Lambda's runtime). The package ships its bytecode (`make package` adds unchecked-hash "
        "`.pyc` files); a third kind imports `app` from a copy whose bytecode was compiled "
        "again here, to check the shipped one is used. One `-X importtime` run says where "
        "the time goes."
    ),
    "7": (
        "Many client threads send `GET /fast` back to back for a few seconds; windows "
        "idle and with a heavy job counting in the worker alternate."
    ),
    "8": (
        "Two stacks of their own, one after the other, both served by the local event "
        "source in `aws` mode (five pollers that receive whether or not the worker is free; "
        "a throttled batch is retried after 1, 2, 4... s until its visibility timeout, then "
        "dropped): the previous release (`git archive`, its own template: a standard job "
        "queue) and this checkout. On both, the worker's timeout is 10 s (visibility 60 s), "
        "so a dropped batch comes back within the figure. After one warm-up job, a burst of "
        "jobs of about a second each is posted back to back; each design's numbers come from "
        "its jobs' own timestamps (idle gap: a job's `started_at` minus the previous one's "
        "`finished_at`, in start order; order: pairs started against submission order) and "
        "from the event source's throttle and drop lines."
    ),
    "9": (
        "On a stack of its own, after the other figures. At each depth a backlog of queued "
        "jobs is written straight to the emulator in the API's shapes (`bench/backlog.py`: "
        "`to_item` records with their listing keys and pending marks, `to_message` messages "
        "in the FIFO queue's one group with the job id as deduplication id, in batches); "
        "then, with no worker "
        "running, rounds of `POST /heavy`, `GET /jobs?limit=20` and the bare AWS calls "
        "(each alone, with boto3, on the same emulator, table and queue: what the "
        "emulator's share of each operation is), in a random order; warm runs of the "
        "recovery sweep through its handler, as the local event source invokes it "
        "(`bench/sweep_runner.py`); then the worker is started and the first jobs of the "
        "queue are timed through it (the shallow queue: that many jobs and no more). The "
        "bare calls include what a listing page asks of DynamoDB (a Query per shard, one "
        "BatchGetItem) and what a sweep run asks (GetQueueAttributes, the watermark's GetItem, "
        "two Queries per shard). Between depths the queues are purged and the records "
        "deleted. The embedded emulator is moto with `infra/moto_speedups` (indexes instead "
        "of walks of the queue and table)."
    ),
    "10": (
        "A stack of its own, on a copy of the project whose stage declares 4 lanes keyed "
        "by kind (so the worker reserves 4), the worker in `aws` mode. The copy gets kinds "
        "of its own (none ships): per lane one that sleeps n ms, reporting every 0.1 s (a "
        "job waiting on a remote call), and one that counts to n as heavyLoad does, each "
        "named so that it lands in its lane (`bench/lanes.py`). After every kind ran once "
        "(the instances' cold starts), each backlog is posted back to back twice: all in "
        "one lane (every job of lane 0's kind: one message group, one job at a time, as a "
        "stage with one lane runs it), then spread over the 4 lanes (the kinds in turn); "
        "each drain runs from the first POST to the last job's `finished_at`. The event "
        "source's throttle lines and the dead-letter queue are counted too."
    ),
    "11": (
        "On a stack of its own, the worker started and warm (a first job through the delay "
        "queue warms the forwarder too). Rounds of a trivial job submitted with "
        "`delay_seconds` of a few seconds (the delay queue's path), awaited before the next "
        "so its lane is free at its time, and a trivial job submitted to run at once. A later "
        "job's lateness is its `started_at` (the worker's claim) minus its `run_at`; the "
        "baseline is the immediate job's `started_at` minus its `created_at`. A job that "
        "started before its `run_at` fails the figure."
    ),
    "12": (
        "On a stack of its own, with no worker. Each round submits the same number of "
        "heavyLoad jobs (n = 0) three ways, in a random order: one `POST /jobs` each; "
        "`POST /jobs/batch` requests of 100; and the floor of the batches, their calls made "
        "bare with boto3 from the benchmark on the same emulator, table and queue (per 100 "
        "jobs, 4 `BatchWriteItem` of the API's records and 10 `SendMessageBatch` of its "
        "messages, built before the clock starts). Each way is timed from its first request "
        "to its last answer; the queue is drained and the jobs deleted after each, so each "
        "starts from an empty queue. The stack has no client quota, so no request reads the "
        "active index (with 1,000 queued jobs of one client under a raised quota, that read "
        "would be what is measured; figure 2 measures one). The ratios are the median of "
        "the rounds' pairs."
    ),
    "13": (
        "On the shared stack, after figure 7, the worker idle. The benchmark's receiver is "
        "`jobs listen`'s own (it verifies each delivery's signature), registered with "
        "`POST /webhooks` for `job.succeeded`. Rounds of one job of about a quarter of a "
        "second, each with the lane free: a second connection waits for it with "
        "`GET /jobs/{id}?wait=20` (the polling a webhook replaces), and the round ends when "
        "both have heard of its finish. Each side is the moment it heard minus the job's "
        "`finished_at` (the worker's clock; one machine). A webhook that does not arrive "
        "fails the figure."
    ),
}

ON_AWS = {
    "1": (
        "Each `/fast` is an invocation of the API function behind API Gateway, and the "
        "worker is another function in its own execution environment: a heavy job cannot "
        "take CPU from `/fast` at all, so the busy/idle ratio is 1 up to noise. Absolute "
        "latency is API Gateway's and Lambda's (network, routing, a cold start when no API "
        "environment is warm), none of which this machine has: not measured here. The "
        "in-process baseline stays what it is anywhere: the request waits for the loop."
    ),
    "2": (
        "The floor becomes network calls: API Gateway, a Lambda invocation, a DynamoDB "
        "PutItem and an SQS SendMessage in the region, each a network round trip, where "
        "moto answers on loopback. The app's own share is the same code, run on the API "
        "function's CPU share (256 MB: a fraction of a vCPU, so slower than here); n "
        "still changes nothing (the route only stores it)."
    ),
    "3": (
        "Lambda's SQS pollers (managed by AWS, several per mapping) long-poll the queue and "
        "invoke the worker; the delay from SendMessage to invocation is theirs, plus a cold "
        "start of the worker (figure 6, at 1,769 MB) when its one environment is not warm. "
        "Not measurable here; CloudWatch's `JobQueueWaitMilliseconds` metric (emitted by the "
        "worker from `created_at` to `started_at`) measures it in place."
    ),
    "4": (
        "The same code on one full vCPU (1,769 MB), so the ratio carries over; the "
        "absolute speed is the Lambda host's. A checkpoint is then a network call to "
        "DynamoDB, still at most one per second of counting."
    ),
    "5": (
        "Reserved concurrency 1 keeps the worker serial: the ceiling is one invocation plus "
        "its two UpdateItems and the mapping's delete per job, with network round trips "
        "instead of loopback, and the API side scales out. The mapping's pollers and "
        "batching are AWS's own."
    ),
    "6": (
        "A cold start is Lambda's init: starting the runtime, downloading and unpacking "
        "the package (small here) and importing the handler's module, which is what is "
        "measured here; Lambda reports it as Init Duration in the function's log. The "
        "task root is read-only, so whatever the package does not ship compiled is "
        "compiled again at every cold start, as measured here."
    ),
    "7": (
        "Concurrent requests get concurrent API environments (up to the account's "
        "concurrency, each new one a cold start), so two cores shared with the worker and "
        "the clients are not a limit there; the worker's job runs elsewhere."
    ),
    "8": (
        "The mapping is AWS's, so the two designs differ there as here, with two unknowns "
        "that make a standard queue worse, not better: AWS does not publish the throttle "
        "backoff (the model uses Lambda's documented curve for throttled asynchronous "
        "invocations), and with the shipped 900 s timeout a held batch is retried for 90 "
        "minutes (retries up to 5 minutes apart) before it is dropped, each drop raising its "
        "receive count towards the dead-letter queue without the job having run."
    ),
    "9": (
        "SQS and DynamoDB cost the same per call at any queue depth or table size; what "
        "grows with the backlog is what the design reads. The calls and capacity units per "
        "job, the accept rate and its first limit, the cost per million jobs and the "
        "scaling to a million queued jobs are worked out in "
        "[docs/capacity.md](docs/capacity.md)."
    ),
    "10": (
        "Lanes are message groups of the FIFO job queue, and the worker's reserved "
        "concurrency is their number: each lane gets its own Lambda instance, so a backlog "
        "of waiting jobs drains N times faster there too, and counting jobs as well, since "
        "each instance has its own vCPU share (1,769 MB: one vCPU) rather than two cores "
        "shared with the whole stack as here. What N costs: "
        "[docs/lanes.md](docs/lanes.md)."
    ),
    "11": (
        "The path is the same: SQS `DelaySeconds` is whole seconds (Amazon SQS Developer "
        'Guide, "Amazon SQS message timers"), the forwarder waits out the fraction, and the '
        "Lambda event source mappings' polling of the delay queue and of the job queue adds "
        "their latency; a job due further than 15 minutes ahead is released by the minutely "
        "function minutes ahead, so the precision of its EventBridge rule (a minute) does "
        "not reach the job ([docs/later.md](docs/later.md))."
    ),
    "12": (
        "Each single `POST /jobs` is an API Gateway request and a Lambda invocation with a "
        "PutItem and a SendMessage, each a network round trip; a batch of 100 is one "
        "request and one invocation with 4 BatchWriteItem and 10 SendMessageBatch calls, "
        "so the batches save more there than on loopback. A batch's calls are made one "
        "after the other (the messages must keep their order), so a batch of 100 takes "
        "about 14 round trips; its write units are the same as 100 single writes."
    ),
    "13": (
        "The path has the same steps, each AWS's: Lambda polls a DynamoDB stream's shards "
        'about four times a second ("Using AWS Lambda with Amazon DynamoDB"), PutEvents '
        "and the rule's delivery to SQS take tens of milliseconds, and the webhooks queue's "
        "event source mapping receives with a long poll, so a delivery leaves within about "
        "a second of the finish; the receiver's own network distance adds to it. What each "
        "event and delivery costs: [docs/capacity.md](docs/capacity.md)."
    ),
}


def raw_samples(raw: str, summary: str, sha256: str, statistics: str) -> str:
    """BENCHMARKS.md's line on the raw samples: where they are, why they are not
    committed, how to get them. ``raw`` and ``summary`` are paths relative to it;
    ``statistics`` names what the summary gives per series."""
    return (
        f"Raw samples: `{raw}` (SHA-256 `{sha256[:16]}…`), written by `make bench` beside the "
        "chart but not committed (git-ignored: every run rewrites all of them, and they would "
        "dominate the history). `make bench` writes a fresh set on your machine; "
        "`python -m bench.report --raw <file>` writes this page, the chart and the summary "
        "again from a raw file without measuring. What this run measured, per series "
        f"({statistics}) and per comparison: [`{summary}`]({summary}), "
        "committed, with the raw file's full SHA-256."
    )
