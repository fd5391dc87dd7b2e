"""Lanes against Lambda's SQS mapping as AWS documents it (the event source's ``aws`` mode:
pollers that receive whether or not the worker is free, throttles, drops). One local
stack whose stage declares 3 lanes keyed by kind, so its worker reserves concurrency 3;
jobs of 3 kinds, one per lane, each waiting about a second, posted back to back. With a
maxReceiveCount of 1 and a visibility timeout of 8 s, a single throttled-then-dropped
batch would dead-letter a job that never ran; the backlog holds more work than that.

(a) no job is failed or dead-lettered, and none was throttled;
(b) each lane's jobs start in submission order;
(c) the lanes run at the same time (their jobs overlap, and the backlog takes well under
    the sum of its run times).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.lanes import WAIT_KIND, kind_names
from chalicelib.jobs import lane_of
from infra.emulator import free_port, port_is_free
from infra.event_source.modes import Mode
from infra.run import Services, copy_app
from tests.e2e.conftest import FAST_SETTINGS, STAGE, WORKER_ARGS, Stack, configure
from tests.processes import is_running

LANES = 3
PER_LANE = 4
JOB_MS = 1500
WORKER_TIMEOUT_SECONDS = 4
VISIBILITY_SECONDS = 8
MAX_RECEIVE_COUNT = 1
FINAL = ("succeeded", "failed", "cancelled")
WORKER = f"heavy-jobs-{STAGE}-process_job"
KINDS = kind_names("wait", LANES)


def moment(job: dict[str, Any], name: str) -> float:
    return datetime.fromisoformat(job[name].replace("Z", "+00:00")).timestamp()


@dataclass
class Run:
    stack: Stack
    jobs: list[dict[str, Any]]  # in submission order, each final
    log: list[str]  # the worker's lines

    def dead_letters(self) -> int:
        response = self.stack.client("sqs").get_queue_attributes(
            QueueUrl=self.stack.outputs["DeadLetterQueueUrl"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return sum(int(v) for v in response["Attributes"].values())


def post(stack: Stack, kind: str, n: int) -> str:
    response = requests.post(
        f"{stack.url}/jobs", json={"kind": kind, "input": {"n": n}}, timeout=30
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def declare(project: Path) -> None:
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"][STAGE].update(lanes=LANES, lane_key="kind")
    path.write_text(json.dumps(config, indent=2))
    for kind in KINDS:
        (project / "chalicelib" / "kinds" / f"{kind}.py").write_text(
            WAIT_KIND.replace("{name}", kind)
        )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("lanes-aws-mode")
    project = copy_app(workdir / "project")
    configure(
        project,
        {**FAST_SETTINGS, "JOBS_TIMEOUT_MARGIN_SECONDS": "1"},
        {"process_job": {"lambda_timeout": WORKER_TIMEOUT_SECONDS}},
    )
    declare(project)
    log_path = workdir / "stack.log"
    with log_path.open("w") as log:
        services = Services(
            project_dir=project, stage=STAGE, api_port=free_port(),
            emulator_port=free_port(), output=log, worker_args=WORKER_ARGS,
            event_source_mode=Mode.AWS.value,
        )  # fmt: skip
        try:
            outputs = services.start_all(
                {
                    "VisibilityTimeoutSeconds": str(VISIBILITY_SECONDS),
                    "MaxReceiveCount": str(MAX_RECEIVE_COUNT),
                },
                worker=True,
            )
            stack = Stack(services, outputs, log_path)
            warm = [post(stack, kind, 0) for kind in KINDS]  # each instance's cold start
            for job_id in warm:
                stack.wait_for_job(job_id, lambda j: j["status"] in FINAL, timeout=120)
            ids = [post(stack, kind, JOB_MS) for _ in range(PER_LANE) for kind in KINDS]
            jobs = [stack.wait_for_job(i, lambda j: j["status"] in FINAL, timeout=180) for i in ids]
            lines = [line for line in stack.log.splitlines() if line.startswith("  worker | ")]
            yield Run(stack, jobs, lines)
        finally:
            pids = [p.popen.pid for p in services.processes.values()]
            ports = [services.api_port, services.emulator_port]
            services.stop_all()
    assert not [pid for pid in pids if is_running(pid)], "a process outlived the stack"
    assert all(port_is_free(port) for port in ports), "a port is still taken"


def test_the_stage_runs_three_lanes_behind_reserved_concurrency_three(run: Run) -> None:
    assert sorted(lane_of(kind, LANES) for kind in KINDS) == list(range(LANES))
    assert [job["lane"] for job in run.jobs] == [lane_of(job["kind"], LANES) for job in run.jobs]
    assert any(" event_source mode=aws" in line for line in run.log)


def test_a_no_job_is_throttled_failed_or_dead_lettered(run: Run) -> None:
    work = sum(moment(j, "finished_at") - moment(j, "started_at") for j in run.jobs)
    assert work > MAX_RECEIVE_COUNT * VISIBILITY_SECONDS, work  # the premise
    assert [j["status"] for j in run.jobs] == ["succeeded"] * len(run.jobs)
    assert [j["attempts"] for j in run.jobs] == [1] * len(run.jobs)
    assert run.dead_letters() == 0
    assert not [line for line in run.log if f" throttle function={WORKER} " in line]
    assert not [line for line in run.log if f" release function={WORKER} " in line]


def test_b_each_lanes_jobs_start_in_submission_order(run: Run) -> None:
    for lane in range(LANES):
        submitted = [j["job_id"] for j in run.jobs if j["lane"] == lane]
        started = sorted(
            (j for j in run.jobs if j["lane"] == lane), key=lambda j: moment(j, "started_at")
        )
        assert len(submitted) == PER_LANE
        assert [j["job_id"] for j in started] == submitted


def test_c_the_lanes_run_at_the_same_time(run: Run) -> None:
    overlapping = [
        (a["lane"], b["lane"])
        for a, b in itertools.combinations(run.jobs, 2)
        if a["lane"] != b["lane"]
        and moment(a, "started_at") < moment(b, "finished_at")
        and moment(b, "started_at") < moment(a, "finished_at")
    ]
    assert {frozenset(pair) for pair in overlapping} == {
        frozenset(pair) for pair in itertools.combinations(range(LANES), 2)
    }
    work = sum(moment(j, "finished_at") - moment(j, "started_at") for j in run.jobs)
    span = max(moment(j, "finished_at") for j in run.jobs) - min(
        moment(j, "started_at") for j in run.jobs
    )
    assert span < 0.75 * work, (span, work)
