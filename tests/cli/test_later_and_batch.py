"""`jobs submit --at/--in` (jobs that run later) and `jobs submit --from FILE` (bulk
submission to POST /jobs/batch), against a scripted API."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from jobs_cli import batch, when
from jobs_cli import main as cli
from tests.cli.conftest import Answer, FakeApi
from tests.cli.test_main import ACCEPTED, JOB_ID, JOB_PATH, KINDS, job, jobs  # noqa: F401

# ruff: noqa: F811 - jobs is a fixture, redefined by name as pytest fixtures are


# --- --at and --in ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
     ("1d2h3m4s", 93784), ("0s", 0), (" 2H ", 7200)],
)  # fmt: skip
def test_a_duration_is_read_as_people_write_it(text: str, seconds: int) -> None:
    assert when.delay_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "run_at"),
    [("2026-12-24T09:00:00Z", "2026-12-24T09:00:00.000Z"),
     ("2026-12-24T10:00:00+01:00", "2026-12-24T09:00:00.000Z"),
     ("2026-12-24 10:00+01:00", "2026-12-24T09:00:00.000Z"),
     ("2026-12-24T09:00:00.123456Z", "2026-12-24T09:00:00.123Z")],
)  # fmt: skip
def test_a_time_is_sent_in_utc_to_the_millisecond(text: str, run_at: str) -> None:
    assert when.run_at(text) == run_at


def test_submit_in_sends_delay_seconds(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", "/heavy", ACCEPTED)
    fake_api.on("GET", "/kinds", (200, KINDS))
    fake_api.on("POST", "/jobs", (202, job(status="queued")))
    assert jobs("submit", "1000", "--in", "1h30m").code == 0
    assert fake_api.calls("POST", "/heavy")[0].json() == {"n": 1000, "delay_seconds": 5400}
    assert jobs("submit", "countPrimes", "below=100", "--at", "2026-12-24T10:00+01:00").code == 0
    assert fake_api.calls("POST", "/jobs")[0].json() == {
        "kind": "countPrimes",
        "input": {"below": 100},
        "run_at": "2026-12-24T09:00:00.000Z",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--in", "2 hours"], "argument --in: not a duration: '2 hours' (such as 90s, 15m, 2h,"
                              " 1d or 1h30m) (see `jobs submit --help`)"),
        (["--in", "30m1h"], "argument --in: not a duration: '30m1h'"),
        (["--in", ""], "argument --in: not a duration: ''"),
        (["--at", "tomorrow"], "argument --at: not a date and time: 'tomorrow'"),
        (["--at", "2026-12-24T09:00"], "argument --at: '2026-12-24T09:00' has no time zone"
                                       " offset: add Z for UTC or one like +01:00"),
        (["--at", "2026-12-24T09:00Z", "--in", "2h"],
         "argument --in: not allowed with argument --at"),
    ],
)  # fmt: skip
def test_a_bad_time_is_a_usage_error_naming_the_option(
    jobs: Any, fake_api: FakeApi, argv: list[str], message: str
) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    for target in (["1000"], ["countPrimes", "below=100"]):
        result = jobs("submit", *target, *argv)
        assert result.code == 2 and result.out == "" and result.err.count("\n") == 1
        assert result.err.startswith(f"jobs: {message}")
    assert fake_api.calls("POST", "/heavy") == fake_api.calls("POST", "/jobs") == []


WAITING = job(
    status="queued", started_at=None, finished_at=None, result=None, progress=0,
    run_at="2026-12-24T09:00:00.000Z", lane=2, schedule="nightly",
)  # fmt: skip


def test_status_shows_lane_run_at_and_schedule(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", JOB_PATH, (200, WAITING), (200, job()))
    lines = jobs("status", JOB_ID).out.splitlines()
    assert "lane        2" in lines
    assert "run at      2026-12-24T09:00:00.000Z" in lines
    assert "schedule    nightly" in lines
    # A stage older than lanes, later and schedules: none of the three lines.
    lines = jobs("status", JOB_ID).out.splitlines()
    assert not [line for line in lines if line.startswith(("lane ", "run at ", "schedule "))]


def test_list_shows_the_lane_and_when_a_waiting_job_runs(jobs: Any, fake_api: FakeApi) -> None:
    other = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
    page = {"jobs": [WAITING, job(job_id=other, lane=0, run_at="2026-01-01T00:00:00.000Z")]}
    fake_api.on("GET", "/jobs", (200, {**page, "next": None}))
    lines = jobs("list").out.splitlines()
    assert lines[2].split()[:9] == [
        JOB_ID, "queued", "-", "2", "heavyLoad", "1000", "0%", "runs", "at"
    ]  # fmt: skip
    assert "runs at 2026-12-24 09:00:00Z" in lines[2]
    # A job whose time came shows its result as any other.
    assert lines[3].split()[:7] == [other, "succeeded", "-", "0", "heavyLoad", "1000", "100%"]


# --- --from FILE --------------------------------------------------------------------------


def made(index: int) -> dict[str, Any]:
    return {"status": 202, "job": job(job_id=f"job-{index}", status="queued")}


def refused(code: str, message: str) -> dict[str, Any]:
    return {"status": 400, "error": {"code": code, "message": message}}


def write(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


ITEM = {"kind": "countPrimes", "input": {"below": 100}}


def test_from_a_file_sends_each_line_and_sums_up(
    jobs: Any, fake_api: FakeApi, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "# three jobs, a blank line, a comment and a line that is not JSON",
        json.dumps(ITEM),
        "",
        json.dumps({**ITEM, "idempotency_key": "k1", "run_at": "2026-12-24T09:00:00Z"}),
        '{"kind": "countPrimes", "input": {"below": 1}',
        json.dumps({"kind": "nope", "input": {}}),
    )
    replayed = {"status": 200, "job": job(job_id="job-1")}
    results = [made(0), replayed, refused("invalid_kind", "No kind 'nope'.")]
    fake_api.on("POST", "/jobs/batch", Answer(207, {"results": results}))
    result = jobs("submit", "--from", path)
    assert result.code == 1  # a line failed
    (request,) = fake_api.calls("POST", "/jobs/batch")
    assert request.json() == {
        "jobs": [
            ITEM,
            {**ITEM, "idempotency_key": "k1", "run_at": "2026-12-24T09:00:00Z"},
            {"kind": "nope", "input": {}},
        ]
    }
    assert result.out == "job-0\njob-1\n"  # the ids, in line order
    assert result.err.splitlines() == [
        "jobs: line 5: invalid_json: not JSON: Expecting ',' delimiter at column 46",
        "jobs: line 6: invalid_kind: No kind 'nope'.",
        "made 1, replayed 1, failed 2 (invalid_json 1, invalid_kind 1)",
    ]


def test_from_sends_batches_of_100(jobs: Any, fake_api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, *[json.dumps(ITEM)] * 250)
    fake_api.on(
        "POST", "/jobs/batch", *[Answer(207, {"results": [made(i)] * n}) for i, n in
                                 enumerate([100, 100, 50])]
    )  # fmt: skip
    result = jobs("submit", "--from", path)
    assert result.code == 0
    assert [len(r.json()["jobs"]) for r in fake_api.calls("POST", "/jobs/batch")] == [
        100,
        100,
        50,
    ]
    assert result.out.splitlines() == ["job-0"] * 100 + ["job-1"] * 100 + ["job-2"] * 50
    assert result.err == "made 250, replayed 0, failed 0\n"  # no bar: stderr is not a TTY


def test_from_stdin_and_json_prints_every_result(
    jobs: Any, fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ITEM) + "\n[1]\n"))
    fake_api.on("POST", "/jobs/batch", Answer(207, {"results": [made(0)]}))
    result = jobs("submit", "--from", "-", "--json")
    assert result.code == 1
    assert json.loads(result.out) == {
        "results": [
            {"line": 1, **made(0)},
            {"line": 2, **refused("invalid_json", "not a JSON object: each line is one job")},
        ],
        "made": 1,
        "replayed": 0,
        "failed": 1,
    }


def test_at_and_in_apply_to_lines_without_a_time_of_their_own(
    jobs: Any, fake_api: FakeApi, tmp_path: Path
) -> None:
    own = {**ITEM, "delay_seconds": 5}
    path = write(tmp_path, json.dumps(ITEM), json.dumps(own))
    fake_api.on("POST", "/jobs/batch", Answer(207, {"results": [made(0), made(1)]}))
    assert jobs("submit", "--from", path, "--in", "2h").code == 0
    assert fake_api.requests[0].json()["jobs"] == [{**ITEM, "delay_seconds": 7200}, own]


def test_a_refused_batch_fails_its_lines_and_the_next_is_still_sent(
    jobs: Any, fake_api: FakeApi, tmp_path: Path
) -> None:
    path = write(tmp_path, *[json.dumps(ITEM)] * 101)
    too_big = {"error": {"code": "body_too_large", "message": "The body is too large."}}
    fake_api.on("POST", "/jobs/batch", Answer(413, too_big), Answer(207, {"results": [made(9)]}))
    result = jobs("submit", "--from", path)
    assert result.code == 1 and result.out == "job-9\n"
    errors = result.err.splitlines()
    assert errors[0] == "jobs: line 1: body_too_large: The body is too large."
    assert errors[-1] == "made 1, replayed 0, failed 100 (body_too_large 100)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "--from", "/nonexistent/jobs.jsonl"],
         "--from /nonexistent/jobs.jsonl: No such file or directory"),
        (["submit", "5", "--from", "x"], "--from takes no 5: each line of the file is one job"),
        (["submit", "--wait", "--from", "x"], "--from takes no --wait"),
    ],
)  # fmt: skip
def test_from_usage_errors_are_one_line(
    jobs: Any, fake_api: FakeApi, argv: list[str], message: str
) -> None:
    result = jobs(*argv)
    assert result.code == 2 and result.err.startswith(f"jobs: {message}")
    assert fake_api.requests == []


def test_the_progress_bar_is_drawn_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    lines = batch.read_lines([json.dumps(ITEM)] * 3, {})

    def post(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [made(0)] * len(items)

    for stream, drawn in ((Terminal(), True), (io.StringIO(), False)):
        output = cli.Output(io.StringIO(), stream, as_json=False)
        with cli._progress(output, len(lines)) as advance:
            batch.send(lines, post, advance)
        assert ("submitting" in stream.getvalue()) is drawn
