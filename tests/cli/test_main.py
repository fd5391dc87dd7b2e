"""The `jobs` command against a scripted API: arguments, requests, output, exit statuses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from infra.emulator import free_port
from jobs_cli import main as cli
from jobs_cli import watch
from jobs_cli.client import MAX_WAIT_SECONDS, Api
from jobs_cli.main import PAUSED_LINE
from tests.cli.conftest import Answer, FakeApi

JOB_ID = "0b7f2c9e-5d1a-4c3e-9f00-2a6b8c4d1e7f"
JOB_PATH = f"/jobs/{JOB_ID}"


def job(**overrides: Any) -> dict[str, Any]:
    return {
        "job_id": JOB_ID,
        "kind": "heavyLoad",
        "input": {"n": 1000},
        "status": "succeeded",
        "n": 1000,
        "progress": 1,
        "result": 1000,
        "error": None,
        "attempts": 1,
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": "2026-01-01T00:00:01.000Z",
        "finished_at": "2026-01-01T00:00:03.500Z",
        **overrides,
    }


ACCEPTED = (202, {"job_id": JOB_ID, "status": "queued", "n": 1000, "status_url": "x"})


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def jobs(capsys: pytest.CaptureFixture[str], fake_api: FakeApi) -> Any:
    """Run `jobs ARGS` in-process against the fake API (through $JOBS_URL)."""

    def run(*argv: str, env: dict[str, str] | None = None) -> Run:
        code = cli.main(list(argv), env={"JOBS_URL": fake_api.url, **(env or {})})
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


# --- submit ---------------------------------------------------------------------------


def test_submit_prints_the_job_id(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", "/heavy", ACCEPTED)
    result = jobs("submit", "1_000")
    assert (result.code, result.out, result.err) == (0, f"{JOB_ID}\n", "")
    (request,) = fake_api.requests
    assert request.json() == {"n": 1000} and "prefer" not in request.headers
    assert request.headers["content-type"] == "application/json"


def test_submit_wait_lets_the_server_wait(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", "/heavy", (200, job(result=123456789012)))
    result = jobs("submit", "123456789012", "--wait")
    assert (result.code, result.out, result.err) == (0, "123456789012\n", "")
    assert fake_api.requests[0].headers["prefer"] == f"wait={MAX_WAIT_SECONDS}"


def test_submit_wait_then_waits_on_the_job_not_in_a_busy_loop(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", "/heavy", ACCEPTED)
    fake_api.on(
        "GET", JOB_PATH, (200, job(status="running", progress=0.4)), (200, job(status="running")),
        (200, job()),
    )  # fmt: skip
    result = jobs("submit", "1000", "--wait")
    assert (result.code, result.out) == (0, "1000\n")
    gets = fake_api.calls("GET", JOB_PATH)
    assert [g.query for g in gets] == [{"wait": str(MAX_WAIT_SECONDS)}] * 3


@pytest.mark.parametrize(
    ("final", "message"),
    [
        (job(status="failed", result=None, error="boom [red]x[/red]"), "failed: boom [red]x[/red]"),
        (job(status="cancelled", result=None), "was cancelled"),
    ],
)
def test_submit_wait_exits_1_when_the_job_did_not_succeed(
    jobs: Any, fake_api: FakeApi, final: dict[str, Any], message: str
) -> None:
    fake_api.on("POST", "/heavy", (200, final))
    result = jobs("submit", "5", "--wait")
    assert (result.code, result.out) == (1, "")
    assert result.err == f"jobs: job {JOB_ID} {message}\n"


def test_submit_json_prints_the_answer(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", "/heavy", (200, job()))
    result = jobs("--json", "submit", "1000", "--wait")
    assert result.code == 0 and json.loads(result.out) == job()


@pytest.mark.parametrize(
    ("text", "n"), [("300000000", 300000000), ("3e8", 300000000), ("1,000", 1000),
                    ("2.5e3", 2500), ("0", 0)],
)  # fmt: skip
def test_n_is_read_as_people_write_it(text: str, n: int) -> None:
    assert cli.count(text) == n


# --- status, watch, list, cancel -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [("queued", 0), ("running", 0), ("succeeded", 0), ("failed", 1), ("cancelled", 1)],
)
def test_status_exit_status_says_whether_the_job_went_wrong(
    jobs: Any, fake_api: FakeApi, status: str, code: int
) -> None:
    fake_api.on("GET", JOB_PATH, (200, job(status=status)))
    result = jobs("status", JOB_ID)
    assert result.code == code and result.err == ""
    lines = result.out.splitlines()
    assert f"job         {JOB_ID}" in lines and f"status      {status}" in lines
    assert "run time    2.5 s" in lines and "queue wait  1.0 s" in lines
    assert all(line == line.rstrip() for line in lines)  # no padding in a pipe


def test_status_json_is_the_apis_answer(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", JOB_PATH, (200, job()))
    result = jobs("status", JOB_ID, "--json")
    assert result.code == 0 and json.loads(result.out) == job()


def test_a_job_id_is_one_path_segment(jobs: Any, fake_api: FakeApi) -> None:
    result = jobs("status", "../fast")
    assert result.code == 2
    assert fake_api.requests[0].path == "/jobs/..%2Ffast"


def test_watch_follows_the_job_until_it_ends(
    jobs: Any, fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "POLL_SECONDS", 0.01)
    fake_api.on(
        "GET", JOB_PATH, (200, job(status="queued", progress=0, started_at=None, result=None,
                                   finished_at=None)),
        (200, job(status="running", progress=0.3, result=None, finished_at=None)),
        (200, job(status="running", progress=0.6, result=None, finished_at=None)),
        (200, job()),
    )  # fmt: skip
    result = jobs("watch", JOB_ID)
    assert result.code == 0
    assert result.out == "succeeded: result 1000 (queued 1.0 s, ran 2.5 s)\n"
    assert "100%" in result.err  # the bar, on stderr
    assert len(fake_api.calls("GET", JOB_PATH)) == 4


def test_watch_of_a_cancelled_job_exits_1(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", JOB_PATH, (200, job(status="cancelled", progress=0.25, result=None)))
    result = jobs("watch", JOB_ID)
    assert (result.code, result.out) == (1, "cancelled at 25% (queued 1.0 s, ran 2.5 s)\n")


def test_list_shows_full_ids_and_passes_the_filters(jobs: Any, fake_api: FakeApi) -> None:
    other = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
    # The second job has no client: a stage older than clients.
    page = {
        "jobs": [job(client="alice"), job(job_id=other, status="failed", error="boom")],
        "next": "abc",
    }
    fake_api.on("GET", "/jobs", (200, page))
    result = jobs("list", "--status", "failed", "--limit", "2", "--cursor", "xyz")
    assert result.code == 0
    assert fake_api.requests[0].query == {"status": "failed", "limit": "2", "cursor": "xyz"}
    lines = result.out.splitlines()
    # LANE: the lane the job runs in ("-" from a stage older than lanes).
    assert lines[0].split() == [
        "JOB", "STATUS", "CLIENT", "LANE", "KIND", "N", "PROGRESS", "RESULT", "QUEUE", "WAIT",
        "RUN", "TIME", "CREATED"
    ]  # fmt: skip
    assert lines[2].split() == [
        JOB_ID, "succeeded", "alice", "-", "heavyLoad", "1000", "100%", "1000", "1.0", "s",
        "2.5", "s", "2026-01-01", "00:00:00Z",
    ]  # fmt: skip
    assert lines[3].split()[:8] == [
        other, "failed", "-", "-", "heavyLoad", "1000", "100%", "boom"
    ]  # fmt: skip


def test_list_filters_by_client(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/jobs", (200, {"jobs": [job(client="bob")], "next": None}))
    result = jobs("list", "--client", "bob", "--status", "succeeded")
    assert fake_api.requests[0].query == {"client": "bob", "status": "succeeded"}
    assert result.out.splitlines()[2].split()[:3] == [JOB_ID, "succeeded", "bob"]


def test_status_shows_the_jobs_client(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", JOB_PATH, (200, job(client="alice")), (200, job()))
    assert "client      alice" in jobs("status", JOB_ID).out.splitlines()
    assert "client      -" in jobs("status", JOB_ID).out.splitlines()  # before clients


def test_list_sends_only_the_filters_given(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/jobs", (200, {"jobs": [], "next": None}))
    result = jobs("list")
    assert (result.code, result.out) == (0, "no jobs\n")
    assert fake_api.requests[0].query == {}


@pytest.mark.parametrize("paused", [True, False])
def test_list_says_when_the_worker_is_paused(jobs: Any, fake_api: FakeApi, paused: bool) -> None:
    fake_api.on(
        "GET", "/jobs", (200, {"jobs": [job(status="queued")], "next": None, "paused": paused})
    )
    result = jobs("list")
    assert result.code == 0
    assert result.out.splitlines()[2].split()[:2] == [JOB_ID, "queued"]  # stdout: the table only
    assert result.err == (f"{PAUSED_LINE}\n" if paused else "")


def test_cancel(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", f"{JOB_PATH}/cancel", (200, job(status="cancelled")))
    result = jobs("cancel", JOB_ID)
    assert (result.code, result.out) == (0, f"cancelled {JOB_ID}\n")


# --- where, and with which key ---------------------------------------------------------


def test_url_and_key_come_from_options_then_environment_then_defaults() -> None:
    parser = cli.build_parser()

    def resolved(argv: list[str], env: dict[str, str]) -> Api:
        return cli.api_for(parser.parse_args(argv), env)

    assert resolved(["list"], {}).base_url == "http://127.0.0.1:8000/"
    assert resolved(["list"], {}).api_key is None
    env = {"JOBS_URL": "https://env.example/dev", "JOBS_API_KEY": "env-key"}
    assert resolved(["list"], env).base_url == "https://env.example/dev/"
    assert resolved(["list"], env).api_key == "env-key"
    flags = ["--url", "http://flag.example/", "--api-key", "flag-key"]
    assert resolved([*flags, "list"], env).base_url == "http://flag.example/"
    assert resolved(["list", *flags], env).api_key == "flag-key"  # after the command too
    assert resolved(["--url", "http://a.example", "list"], env).base_url == "http://a.example/"


def test_a_stage_prefix_is_kept(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", "/dev/heavy", ACCEPTED)
    assert jobs("--url", f"{fake_api.url}/dev", "submit", "1").code == 0
    assert jobs("submit", "1", env={"JOBS_URL": f"{fake_api.url}/dev/"}).code == 0
    assert [r.path for r in fake_api.requests] == ["/dev/heavy", "/dev/heavy"]


def test_the_api_key_is_sent(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("POST", "/heavy", ACCEPTED)
    jobs("submit", "1", env={"JOBS_API_KEY": "k1"})
    jobs("--api-key", "k2", "submit", "1", env={"JOBS_API_KEY": "k1"})
    jobs("submit", "1")
    assert [r.headers.get("x-api-key") for r in fake_api.requests] == ["k1", "k2", None]


@pytest.mark.parametrize(
    "argv",
    [["submit", "1000", "--wait"], ["submit", "countPrimes", "below=9", "--wait"],
     ["status", JOB_ID], ["watch", JOB_ID], ["cancel", JOB_ID], ["retry", JOB_ID],
     ["list"], ["kinds"]],
)  # fmt: skip
def test_every_request_sends_the_key(
    jobs: Any, fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    # Reading a job (status, watch, and the wait after submit --wait) needs the key too: on
    # a keyed stage GET /jobs/{id} is refused without one.
    monkeypatch.setattr(watch, "POLL_SECONDS", 0.01)
    running = job(status="running", progress=0.5, result=None, finished_at=None)
    fake_api.on("POST", "/heavy", ACCEPTED)
    fake_api.on("GET", "/kinds", (200, KINDS))
    fake_api.on("POST", "/jobs", ACCEPTED)
    fake_api.on("GET", JOB_PATH, (200, running), (200, job()))
    fake_api.on("POST", f"{JOB_PATH}/cancel", (200, job(status="cancelled")))
    fake_api.on("POST", f"{JOB_PATH}/retry", (202, job(status="queued")))
    fake_api.on("GET", "/jobs", (200, {"jobs": [job()], "next": None}))
    assert jobs(*argv, env={"JOBS_API_KEY": "k1"}).code == 0
    assert fake_api.requests
    assert [r.headers.get("x-api-key") for r in fake_api.requests] == ["k1"] * len(
        fake_api.requests
    )


@pytest.mark.parametrize("location", ["{elsewhere}/jobs", "http://localhost:{port}/jobs"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_the_key_never_follows_a_redirect_to_another_origin(
    jobs: Any, fake_api: FakeApi, elsewhere: FakeApi, location: str, status: int
) -> None:
    # Another port, or another host name: another origin either way.
    target = location.format(elsewhere=elsewhere.url, port=elsewhere.url.rsplit(":", 1)[1])
    fake_api.on("GET", "/jobs", Answer(status, {}, {"Location": f"{target}?limit=1"}))
    elsewhere.on("GET", "/jobs", (200, {"jobs": [], "next": None}))
    result = jobs("list", env={"JOBS_API_KEY": "secret"})
    assert elsewhere.requests == []  # nothing at all arrived there, so neither did the key
    assert _one_line(result) == (
        f"jobs: the API redirected to {target}: not followed, so the API key goes to the"
        " API's own address only"
    )
    assert fake_api.requests[0].headers["x-api-key"] == "secret"


def test_a_redirect_within_the_origin_is_followed_with_the_key(
    jobs: Any, fake_api: FakeApi
) -> None:
    fake_api.on("GET", "/jobs", Answer(307, {}, {"Location": f"{fake_api.url}/dev/jobs"}))
    fake_api.on("GET", "/dev/jobs", (200, {"jobs": [], "next": None}))
    assert jobs("list", env={"JOBS_API_KEY": "secret"}).code == 0
    assert [(r.path, r.headers.get("x-api-key")) for r in fake_api.requests] == [
        ("/jobs", "secret"),
        ("/dev/jobs", "secret"),
    ]


# --- errors: exit 2, one line, no traceback --------------------------------------------


def _one_line(result: Run) -> str:
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("jobs: ")
    return result.err.strip()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, {"error": {"code": "invalid_status", "message": "status must be one of: x."}},
         "jobs: status must be one of: x."),
        (403, {"message": "Forbidden"},
         "jobs: Forbidden: this stage needs an API key: --api-key or $JOBS_API_KEY; "
         "`make api-key STAGE=<stage> CLIENT=<name>` prints a client's key"),
        (429, {"message": "Too Many Requests"},
         "jobs: Too Many Requests: over the API key's request rate; retry shortly"),
        (502, "<html>bad gateway</html>", "jobs: HTTP 502 Bad Gateway"),
    ],
)  # fmt: skip
def test_an_error_answer_is_one_line(
    jobs: Any, fake_api: FakeApi, status: int, body: Any, message: str
) -> None:
    fake_api.on("GET", "/jobs", Answer(status, body))
    assert _one_line(jobs("list")) == message


GET_A_KEY = "`make api-key STAGE=<stage> CLIENT=<name>` prints a client's key"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer(403, {"message": "Forbidden"}),
         "Forbidden: the API key was not accepted (wrong, disabled or another stage's); "
         + GET_A_KEY),
        (Answer(403, {"error": {"code": "unknown_key", "message": "This key names no client."}}),
         f"This key names no client. ({GET_A_KEY})"),
        (Answer(404, {"error": {"code": "job_not_found", "message": "No job with id 'x'."}}),
         "No job with id 'x'. (an API key finds its own client's jobs only)"),
        (Answer(429, {"error": {"code": "quota_exceeded", "message": "alice has 100 jobs."}},
                {"Retry-After": "30"}),
         "alice has 100 jobs. (retry in 30 s)"),
        (Answer(429, {"message": "Too Many Requests"}, {"Retry-After": "2"}),
         "Too Many Requests: over the API key's request rate; retry in 2 s"),
    ],
)  # fmt: skip
def test_a_keyed_stages_refusals_say_what_to_do(
    jobs: Any, fake_api: FakeApi, answer: Answer, message: str
) -> None:
    fake_api.on("GET", JOB_PATH, answer)
    assert _one_line(jobs("status", JOB_ID, env={"JOBS_API_KEY": "k"})) == f"jobs: {message}"


def test_cancelling_a_finished_job_is_an_error(jobs: Any, fake_api: FakeApi) -> None:
    error = {
        "code": "job_finished",
        "message": "The job already succeeded; it cannot be cancelled.",
    }
    fake_api.on("POST", f"{JOB_PATH}/cancel", (409, {"error": error}))
    assert _one_line(jobs("cancel", JOB_ID)) == f"jobs: {error['message']}"


def test_connection_refused_is_one_line(jobs: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = _one_line(jobs("status", JOB_ID, env={"JOBS_URL": url}))
    assert message == f"jobs: cannot connect to {url}/: Connection refused"


def test_a_body_that_is_not_json_is_an_error(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", JOB_PATH, Answer(200, "<html>a captive portal</html>"))
    assert _one_line(jobs("status", JOB_ID)) == "jobs: HTTP 200 without a JSON object"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND (see `jobs --help`)"),
        (["submit"], "the following arguments are required: KIND (see `jobs submit --help`)"),
        (["submit", "1x"], "argument N: not a whole number: '1x' (see `jobs submit --help`)"),
        (["submit", "5", "n=6"], "N takes no FIELD=VALUE; name the kind: jobs submit KIND n=6"),
        (["submit", "3.5"], "argument N: not a whole number: '3.5' (see `jobs submit --help`)"),
        (["status"], "the following arguments are required: ID (see `jobs status --help`)"),
        (["list", "--limit", "x"], "argument --limit: invalid int value: 'x'"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate' (choose from "),
        (["--url", "ftp://x", "list"], "not an http(s) URL: 'ftp://x'"),
    ],
)  # fmt: skip
def test_bad_usage_is_one_line(jobs: Any, fake_api: FakeApi, argv: list[str], message: str) -> None:
    assert _one_line(jobs(*argv)).startswith(f"jobs: {message}")
    assert fake_api.requests == []


def test_help_exits_0(jobs: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        jobs("--help")
    assert exited.value.code == 0


# --- kinds ------------------------------------------------------------------------------

KINDS = {
    "kinds": [
        {
            "kind": "countPrimes",
            "description": "Count the primes below a bound.",
            "input_schema": {
                "type": "object",
                "title": "countPrimes",
                "properties": {"below": {"type": "integer", "minimum": 2, "maximum": 10**10}},
                "required": ["below"],
                "additionalProperties": False,
            },
            "result_schema": {"type": "object"},
        },
        {
            "kind": "demo",
            "description": "Every field type.",
            "input_schema": {
                "type": "object",
                "title": "demo",
                "properties": {
                    "ratio": {"type": "number", "default": 0.5},
                    "loud": {"type": "boolean", "default": False},
                    "name": {"type": "string", "default": "x"},
                    "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                },
                "required": [],
                "additionalProperties": False,
            },
            "result_schema": {"type": "integer"},
        },
    ]
}
PRIMES_DONE = job(kind="countPrimes", input={"below": 100}, n=None, result={"count": 25})


def test_kinds_lists_each_kind_and_its_fields(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    result = jobs("kinds")
    assert result.code == 0
    assert "countPrimes" in result.out and "below: integer 2..10000000000 required" in result.out
    assert 'mode: string (fast|slow) = "fast"' in result.out
    assert json.loads(jobs("--json", "kinds").out) == KINDS


def test_submit_a_kind_reads_each_field_as_its_schema_says(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    fake_api.on("POST", "/jobs", (202, job(status="queued")))
    result = jobs("submit", "countPrimes", "below=1e9")
    assert (result.code, result.out) == (0, f"{JOB_ID}\n")
    assert fake_api.calls("POST", "/jobs")[0].json() == {
        "kind": "countPrimes",
        "input": {"below": 10**9},
    }
    jobs("submit", "demo", "ratio=2.5", "loud=yes", "name=a=b", "mode=slow")
    assert fake_api.calls("POST", "/jobs")[1].json()["input"] == {
        "ratio": 2.5,
        "loud": True,
        "name": "a=b",
        "mode": "slow",
    }


def test_submit_a_kind_and_wait_prints_its_json_result(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    fake_api.on("POST", "/jobs", (200, PRIMES_DONE))
    result = jobs("submit", "countPrimes", "below=100", "--wait")
    assert (result.code, result.out) == (0, '{"count": 25}\n')
    assert fake_api.calls("POST", "/jobs")[0].headers["prefer"] == f"wait={MAX_WAIT_SECONDS}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "abc"], "no kind 'abc'; kinds: countPrimes, demo"),
        (["submit", "countPrimes"], "countPrimes needs below=..."),
        (["submit", "countPrimes", "below"], "not FIELD=VALUE: 'below'"),
        (["submit", "countPrimes", "n=5"], "countPrimes has no field 'n'; fields: below"),
        (["submit", "countPrimes", "below=x"], "below: not a whole number: 'x'"),
        (["submit", "countPrimes", "below=5", "below=6"], "below given twice"),
        (["submit", "demo", "ratio=nan"], "ratio: not a number: 'nan'"),
        (["submit", "demo", "loud=maybe"], "loud: not true or false: 'maybe'"),
        (["submit", "demo", "mode=medium"], "mode: one of fast, slow, not 'medium'"),
    ],
)
def test_a_bad_field_is_one_line_and_submits_nothing(
    jobs: Any, fake_api: FakeApi, argv: list[str], message: str
) -> None:
    fake_api.on("GET", "/kinds", (200, KINDS))
    result = jobs(*argv)
    assert (result.code, result.err) == (2, f"jobs: {message}\n")
    assert fake_api.calls("POST", "/jobs") == []


def test_retry_prints_the_new_job_id(jobs: Any, fake_api: FakeApi) -> None:
    other = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
    fake_api.on("POST", f"{JOB_PATH}/retry", (202, job(job_id=other, retry_of=JOB_ID)))
    result = jobs("retry", JOB_ID)
    assert (result.code, result.out) == (0, f"{other}\n")
    fake_api.on(
        "POST",
        f"{JOB_PATH}/retry",
        (409, {"error": {"code": "not_retryable", "message": "The job is running."}}),
    )
    refused = jobs("retry", JOB_ID)
    assert (refused.code, refused.err) == (2, "jobs: The job is running.\n")


def test_list_filters_by_kind(jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/jobs", (200, {"jobs": [PRIMES_DONE], "next": None}))
    result = jobs("list", "--kind", "countPrimes")
    assert fake_api.requests[0].query == {"kind": "countPrimes"}
    assert '{"count": 25}' in result.out and "countPrimes" in result.out
