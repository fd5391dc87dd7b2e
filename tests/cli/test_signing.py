"""`jobs --auth iam` signs every request as botocore's own signer does.

No emulator checks a SigV4 signature, so each request the CLI sent to a recording
server is signed again here by botocore's ``SigV4Auth`` (service execute-api), with the
same frozen credentials and the same frozen time, over the same method, URL, body and
signed headers: the Authorization, X-Amz-Date and X-Amz-Security-Token headers must be
the ones the CLI sent.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from jobs_cli import main as cli
from jobs_cli.signing import SERVICE, region_of
from tests.cli.conftest import Answer, FakeApi, Recorded
from tests.cli.test_main import ACCEPTED, JOB_ID, JOB_PATH, Run, job

FROZEN = datetime.datetime(2026, 12, 6, 8, 30, 0)
REGION = "eu-west-1"
KEY, SECRET, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Temporary credentials and a region in the environment (the chain's first source),
    no config file, and a clock stopped at FROZEN for every signer."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)
    yield


@pytest.fixture
def signed_jobs(
    capsys: pytest.CaptureFixture[str], fake_api: FakeApi, aws_credentials: None
) -> Any:
    def run(*argv: str, env: dict[str, str] | None = None) -> Run:
        code = cli.main(list(argv), env={"JOBS_URL": fake_api.url, **(env or {})})
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def botocores_signature(api: FakeApi, request: Recorded) -> dict[str, str]:
    """What botocore's signer puts on the same request with the same credentials and time."""
    headers = {"Content-Type": request.headers["content-type"]} if request.body else {}
    reference = AWSRequest(
        method=request.method, url=f"{api.url}{request.target}", data=request.body, headers=headers
    )
    SigV4Auth(Credentials(KEY, SECRET, TOKEN), SERVICE, REGION).add_auth(reference)
    return {
        name: reference.headers[name]
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
    }


def sent_signature(request: Recorded) -> dict[str, str]:
    names = {"authorization": "Authorization", "x-amz-date": "X-Amz-Date"}
    names["x-amz-security-token"] = "X-Amz-Security-Token"
    return {name: request.headers[lower] for lower, name in names.items()}


@pytest.mark.parametrize("how", [["--auth", "iam"], ["--auth=iam"], []])
def test_every_request_carries_botocores_own_signature(
    signed_jobs: Any, fake_api: FakeApi, how: list[str]
) -> None:
    fake_api.on("POST", "/heavy", ACCEPTED)
    fake_api.on("GET", "/jobs", (200, {"jobs": [job()], "next": None}))
    fake_api.on("POST", f"{JOB_PATH}/cancel", (200, job(status="cancelled")))
    env = {} if how else {"JOBS_AUTH": "iam"}  # the flag, or the environment

    assert signed_jobs(*how, "submit", "1000", env=env).code == 0
    assert signed_jobs(*how, "list", "--status", "queued", "--limit", "5", env=env).code == 0
    assert signed_jobs(*how, "cancel", JOB_ID, env=env).code == 0

    assert len(fake_api.requests) == 3
    for request in fake_api.requests:
        assert sent_signature(request) == botocores_signature(fake_api, request)
        assert "x-api-key" not in request.headers
    authorization = fake_api.requests[0].headers["authorization"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential={KEY}/20261206/{REGION}/execute-api/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
    )
    assert fake_api.requests[0].headers["x-amz-date"] == "20261206T083000Z"
    assert fake_api.requests[1].query == {"status": "queued", "limit": "5"}


def test_without_iam_nothing_is_signed(signed_jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/jobs", (200, {"jobs": [], "next": None}))
    assert signed_jobs("list").code == 0
    assert not {"authorization", "x-amz-date"} & set(fake_api.requests[0].headers)


def test_a_redirect_within_the_origin_is_signed_again(signed_jobs: Any, fake_api: FakeApi) -> None:
    fake_api.on("GET", "/jobs", Answer(307, {}, {"Location": f"{fake_api.url}/iam/jobs"}))
    fake_api.on("GET", "/iam/jobs", (200, {"jobs": [], "next": None}))
    assert signed_jobs("--auth", "iam", "list").code == 0
    first, second = fake_api.requests
    assert second.path == "/iam/jobs"
    assert sent_signature(second) == botocores_signature(fake_api, second)
    assert sent_signature(second)["Authorization"] != sent_signature(first)["Authorization"]


def test_a_signature_never_follows_a_redirect_to_another_origin(
    signed_jobs: Any, fake_api: FakeApi, elsewhere: FakeApi
) -> None:
    fake_api.on("GET", "/jobs", Answer(302, {}, {"Location": f"{elsewhere.url}/jobs"}))
    result = signed_jobs("--auth", "iam", "list")
    assert result.code == 2 and "not followed" in result.err
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://a1b2c3.execute-api.us-east-2.amazonaws.com/iam", "us-east-2"),
        ("https://a1b2c3.execute-api.cn-north-1.amazonaws.com.cn/iam/", "cn-north-1"),
        ("https://jobs.example.com/iam", None),  # a custom domain: the chain's region
        ("http://127.0.0.1:8000", None),
    ],
)
def test_the_region_is_the_apis_host_s(url: str, region: str | None) -> None:
    assert region_of(url) == region


def test_the_region_in_the_host_is_the_one_signed_for(
    signed_jobs: Any, fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs_cli import signing

    signer = signing.sigv4_for("https://a1b2c3.execute-api.us-east-2.amazonaws.com/iam")
    assert signer.region == "us-east-2"  # not the chain's eu-west-1
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(signing.NoCredentials, match="no AWS region"):
        signing.sigv4_for(fake_api.url)


def test_no_credentials_is_one_line_that_says_where_they_come_from(
    signed_jobs: Any, monkeypatch: pytest.MonkeyPatch, fake_api: FakeApi
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    result = signed_jobs("--auth", "iam", "list")
    assert result.code == 2 and result.err.startswith("jobs: --auth iam: no AWS credentials")
    assert fake_api.requests == []


def test_a_profile_that_does_not_exist_is_one_line(
    signed_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nowhere")
    result = signed_jobs("--auth", "iam", "list")
    assert result.code == 2 and result.err.startswith("jobs: --auth iam: ")
    assert "nowhere" in result.err and result.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--auth", "iam", "--api-key", "k", "list"], {}, "an IAM stage takes no API key"),
        (["--auth", "api_key", "list"], {}, "--auth api_key needs a key"),
        (["list"], {"JOBS_AUTH": "sigv4"}, "$JOBS_AUTH must be one of none, api_key, iam"),
    ],
)
def test_contradictory_authentication_is_a_usage_error(
    signed_jobs: Any, fake_api: FakeApi, argv: list[str], env: dict[str, str], message: str
) -> None:
    result = signed_jobs(*argv, env=env)
    assert result.code == 2 and message in result.err
    assert fake_api.requests == []


def test_an_unsigned_request_to_an_iam_stage_says_how_to_sign(
    signed_jobs: Any, fake_api: FakeApi
) -> None:
    # The fake answers an unknown route as API Gateway answers an unsigned request.
    result = signed_jobs("list")
    assert result.code == 2 and "(--auth iam)" in result.err


def test_a_refused_signature_says_whose_it_was(signed_jobs: Any, fake_api: FakeApi) -> None:
    denied = "User: arn:aws:sts::123456789012:assumed-role/x/y is not authorized"
    fake_api.on("GET", "/jobs", (403, {"message": denied}))
    result = signed_jobs("--auth", "iam", "list")
    assert result.code == 2
    assert (
        result.err.strip()
        == f"jobs: {denied}: the AWS credentials' principal may not call this API"
    )
