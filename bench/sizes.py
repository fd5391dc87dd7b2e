"""How much each figure measures: the full run (``make bench``) and the smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    # 1. /fast latency: rounds of [idle, heavy job in the worker, idle, bare loop] blocks.
    fast_rounds: int = 6
    fast_block: int = 250
    fast_pause: float = 0.002  # between samples, so a block spans time, not a burst
    # 1. the in-process baseline: a threaded server running the loop in a handler...
    inprocess_rounds: int = 3
    inprocess_block: int = 100
    # ...and a one-request-at-a-time server, /fast sent while its loop runs.
    blocking_samples: int = 15
    blocking_n: int = 30_000_000  # about 0.3 s of counting
    # 2. POST /heavy against its floor; the queue is drained every few iterations.
    submit_iterations: int = 500
    drain_every: int = 5
    # 3. queue-to-start, worker idle (product and floor alternate).
    queue_samples: int = 60
    # 4. loop speed: rounds of one worker job and one bare loop of loop_n.
    loop_rounds: int = 7
    loop_n: int = 200_000_000  # 2-4 s of counting
    # ...and of one countPrimes job and one bare sieve below sieve_below.
    sieve_rounds: int = 5
    sieve_below: int = 400_000_000  # 5-10 s of sieving
    # 5. trivial-job throughput: rounds of a batch through the product and the floor.
    throughput_rounds: int = 5
    throughput_jobs: int = 100
    throughput_window: int = 5  # jobs in flight at once: the queue stays this shallow
    # 6. cold start: fresh processes of each kind, alternated.
    import_rounds: int = 20
    # 7. /fast under load: windows of `load_clients` clients, idle and busy alternated.
    load_rounds: int = 3
    load_clients: int = 20
    load_seconds: float = 5.0
    # 8. a burst of short jobs in aws mode, this checkout against the previous release.
    burst_jobs: int = 30
    burst_n: int = 50_000_000  # about a second of counting in the worker here
    burst_timeout_seconds: float = 600.0
    # 9. cost against backlog depth: rounds of the product's and the bare calls at each
    # depth; the sweep's warm runs; jobs timed through the worker; the depth the targets
    # are held at (one of the depths).
    growth_depths: tuple[int, ...] = (0, 1_000, 10_000)
    growth_target_depth: int = 10_000
    growth_samples: int = 150
    growth_sweep_runs: int = 3
    growth_drain_jobs: int = 150
    # 10. lanes: a backlog of jobs that wait (I/O) and one of jobs that count (CPU), on
    # one lane and on bench.lanes.LANES.
    lanes_io_jobs: int = 16
    lanes_io_ms: int = 2000
    lanes_cpu_jobs: int = 8
    lanes_cpu_n: int = 50_000_000  # about a second of counting in the worker here
    lanes_timeout_seconds: float = 300.0
    # later: jobs submitted this many seconds ahead, each awaited (and one at once beside
    # each); the release's read against this many jobs waiting (figure 9).
    later_jobs: int = 100
    later_delay_seconds: int = 2
    later_waiting: int = 10_000
    # 10. bulk submission: rounds of that many jobs submitted singly, in batches, and bare.
    bulk_rounds: int = 3
    bulk_jobs: int = 1_000
    # 13. webhooks: rounds of one job of that many iterations (about a quarter of a second
    # here: long enough that the ``?wait`` beside it is in place before it finishes).
    webhook_rounds: int = 100
    webhook_n: int = 10_000_000


FULL = Sizes()

SMOKE = Sizes(
    fast_rounds=1,
    fast_block=5,
    inprocess_rounds=1,
    inprocess_block=5,
    blocking_samples=2,
    blocking_n=1_000_000,
    submit_iterations=4,
    drain_every=2,
    queue_samples=2,
    loop_rounds=1,
    loop_n=2_000_000,
    sieve_rounds=1,
    sieve_below=2_000_000,
    throughput_rounds=1,
    throughput_jobs=3,
    throughput_window=2,
    import_rounds=1,
    load_rounds=1,
    load_clients=2,
    load_seconds=0.3,
    burst_jobs=3,
    burst_n=1_000_000,
    burst_timeout_seconds=120.0,
    growth_depths=(0, 12),
    growth_target_depth=12,
    growth_samples=3,
    growth_sweep_runs=1,
    growth_drain_jobs=4,
    lanes_io_jobs=4,
    lanes_io_ms=50,
    lanes_cpu_jobs=2,
    lanes_cpu_n=1_000_000,
    lanes_timeout_seconds=120.0,
    later_jobs=2,
    later_waiting=12,
    bulk_rounds=1,
    bulk_jobs=20,
    webhook_rounds=2,
    webhook_n=1_000_000,
)
