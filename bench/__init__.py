"""Benchmarks of the local stack: ``make bench`` writes BENCHMARKS.md.

Modules, one figure or concept each:

    run.py           the order of the figures; the command line
    stack.py         the benchmark's own stack (infra.run.Services on free ports)
    fast.py          1. /fast latency idle / busy / in-process baseline; 7. under load
    submit.py        2. POST /heavy against its floor
    queueing.py      3. queue-to-start; 5. throughput, against a bare pipeline
    loopspeed.py     4. the worker's loop against a bare loop
    coldstart.py     6. cold import and the deployment package
    burst.py         8. a burst through AWS's SQS mapping (aws mode), against the previous release
    growth.py        9. cost against backlog depth, beside the bare AWS calls
    backlog.py       backlogs written fast; the bare calls; stock moto vs the speed-ups
    report.py        BENCHMARKS.md, the chart, the JSON
    stats.py sizes.py machine.py client.py
    loop.py blocking_server.py floor_worker.py sweep_runner.py   processes the figures start
"""
