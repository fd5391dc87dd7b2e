"""Shared fixtures: a moto-backed AWS with the project's own stack applied, the Chalice
test client, and factories for jobs and SQS events that clean up after themselves."""

from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore
import botocore.loaders
import botocore.session
import chalice.test
import pytest
from chalice.local import LambdaContext
from chalice.test import Client
from moto import mock_aws

from chalicelib import connections
from chalicelib.jobs import Job, to_message, utc_now
from infra import stack
from infra.event_source import sqs_event as sqs_events
from infra.event_source import sqs_message_to_record

# The Chalice stage the tests run as: its environment_variables name the resources of
# stack "heavy-jobs-local", which the `aws` fixture applies to moto from infra/.
STAGE = "local"
REGION = "us-east-1"
# The environment the session started with. Loading a stage's Chalice config puts the
# stage's variables in os.environ (Chalice's CLIFactory does, as the chalice CLI does), and
# a stack started later would inherit them: prod's JOBS_REQUIRE_API_KEY=true turns a later
# test's local stack into a keyed one. Every test ends with the environment put back.
SESSION_ENVIRON = dict(os.environ)

# Every test builds fresh boto3 sessions (connections.reset(), moto's mock_aws), and each
# session's own botocore Loader parses the service models' JSON again: a quarter of a
# moto test's time. Tests share one Loader instead, so each model is parsed once per run.
# This replaces Session._register_data_loader, a private method: only on the botocore the
# dev requirements pin, and tests/test_conftest.py checks what it must keep.
BOTOCORE_WITH_SHARED_LOADER = "1.44.8"
if botocore.__version__ != BOTOCORE_WITH_SHARED_LOADER:
    raise RuntimeError(
        f"tests/conftest.py shares botocore's Loader through Session._register_data_loader, "
        f"checked on botocore {BOTOCORE_WITH_SHARED_LOADER}; this is {botocore.__version__}: "
        "check that method and the test_conftest.py tests, then update the pin"
    )
_shared_loaders: dict[Any, botocore.loaders.Loader] = {}


def _register_shared_data_loader(self: botocore.session.Session) -> None:
    def loader() -> botocore.loaders.Loader:
        data_path = self.get_config_variable("data_path")
        if data_path not in _shared_loaders:
            _shared_loaders[data_path] = botocore.loaders.create_loader(data_path)
        return _shared_loaders[data_path]

    self._components.lazy_register_component("data_loader", loader)


botocore.session.Session._register_data_loader = _register_shared_data_loader


# The order in which `make test`'s workers take whole files (pytest-xdist's --dist loadfile,
# with --no-loadscope-reorder: in collection order, which the hook below sets). The files
# that start processes (the benchmark's smoke run, the live stack, the event source, the
# deploy rehearsals, the docs' stack: seconds to minutes each) go first, the in-process
# ones (milliseconds a test) last; within each tier, files with more tests first. A worker
# that is done early then takes short files while the other finishes a long one, instead
# of one worker running a minute-long file alone at the end of the run.
FIRST_TIERS = (("tests/bench/", "tests/e2e/"), ("tests/infra/", "tests/docs/"))


def schedule_rank(path: str, tests_in_file: int) -> tuple[int, int]:
    """Where a file's tests go in the run: its tier (FIRST_TIERS, then everything else),
    then more tests first."""
    tier = next(
        (rank for rank, prefixes in enumerate(FIRST_TIERS) if path.startswith(prefixes)),
        len(FIRST_TIERS),
    )
    return tier, -tests_in_file


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files by schedule_rank; a file's own tests keep their order."""
    path_of = {item: item.nodeid.split("::", 1)[0] for item in items}
    counts = Counter(path_of.values())
    items.sort(key=lambda item: schedule_rank(path_of[item], counts[path_of[item]]))


@pytest.fixture(autouse=True, scope="module")
def _no_app_module_across_files() -> Iterator[None]:
    """Each file starts, and ends, without ``app.py`` imported. A file's shared stack (a
    module-scoped fixture) is built before any per-test fixture below runs, and applies its
    template through Chalice's loader, which imports ``app.py`` unless it already is: an
    ``app.py`` another file imported under another stage (its queue names read at import)
    would be the one the stack derived its queues' settings from (a KeyError on the local
    queue's name, seen when the files' order put such a file first)."""
    sys.modules.pop("app", None)
    yield
    sys.modules.pop("app", None)


@pytest.fixture(autouse=True)
def _session_environ() -> Iterator[None]:
    """os.environ as the session started, after every test, whatever the test (or code it
    ran) added, changed or removed: no test leaves a setting behind for the next."""
    yield
    for name in [name for name in os.environ if name not in SESSION_ENVIRON]:
        if not name.startswith("PYTEST_"):  # pytest's own, which it removes itself
            del os.environ[name]
    for name, value in SESSION_ENVIRON.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _isolated_aws_env(_session_environ: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dummy credentials and no endpoint: nothing in a unit test can reach real AWS (nor,
    through `make run`'s LocalStack detection, a developer's LocalStack)."""
    for name in (
        "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN",
        "LOCALSTACK_HOST", "EDGE_PORT", "USE_SSL",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # app.py reads its queue names and key requirement from os.environ when it is
    # imported, and Chalice's CLIFactory puts a stage's variables in os.environ when it
    # loads the project: each test starts with neither, and imports app.py under the
    # stage it sets up, whatever ran before it in this process (pytest-xdist runs the
    # files in any order).
    monkeypatch.delitem(sys.modules, "app", raising=False)
    for name in [name for name in os.environ if name.startswith("JOBS_")]:
        monkeypatch.delenv(name)
    connections.reset()
    yield
    connections.reset()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto with the project's CloudFormation stack applied; yields the stack outputs."""
    with mock_aws():
        outputs = stack.apply_stage(STAGE, cfn=boto3.client("cloudformation"))
        for name, value in stack.stage_environment(STAGE, outputs).items():
            monkeypatch.setenv(name, value)
        # A small checkpoint-before-timeout margin, for tests that give a run a short
        # Lambda context of their own.
        monkeypatch.setenv("JOBS_TIMEOUT_MARGIN_SECONDS", "0.5")
        connections.reset()
        yield outputs


@pytest.fixture
def app_module(aws: dict[str, str]) -> Any:
    import app

    return app


@pytest.fixture
def client(app_module: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    with Client(app_module.app, stage_name=STAGE) as test_client:
        # Chalice's test client gives every invocation a 3-second Lambda context, whatever
        # the function's timeout: on a busy machine a job of a few milliseconds then
        # "nears its timeout" and continues in another invocation. Give each invocation
        # its function's configured timeout, as Lambda does.
        config = test_client.lambda_._config

        def context(function_name: str, memory_size: int) -> LambdaContext:
            timeout = config.scope(STAGE, function_name).lambda_timeout
            return LambdaContext(function_name, memory_size, max_runtime_ms=timeout * 1000)

        monkeypatch.setattr(chalice.test, "LambdaContext", context)
        yield test_client


@pytest.fixture
def sqs(aws: dict[str, str]) -> Any:
    return boto3.client("sqs")


@pytest.fixture
def receive(sqs: Any, aws: dict[str, str]) -> Callable[..., list[dict[str, Any]]]:
    """Receive what is on the job queue (or another queue), with all attributes."""

    def _receive(queue_url: str | None = None, wait: int = 0) -> list[dict[str, Any]]:
        response = sqs.receive_message(
            QueueUrl=queue_url or aws["QueueUrl"],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    return _receive


def sqs_message(body: str) -> dict[str, Any]:
    """A message with ``body`` as boto3's ReceiveMessage returns one, without a queue."""
    now_ms = str(int(time.time() * 1000))
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": "receipt-" + uuid.uuid4().hex,
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "Body": body,
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now_ms,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
    }


def sqs_record(body: str, queue_arn: str) -> dict[str, Any]:
    """One record of Lambda's SQS event for a bare body (the local runner's own builder)."""
    return sqs_message_to_record(sqs_message(body), queue_arn, REGION)


@pytest.fixture
def sqs_event(aws: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """Factory: Lambda's SQS event for bodies (str) or received messages (dict)."""

    def _event(*items: str | dict[str, Any]) -> dict[str, Any]:
        messages = [item if isinstance(item, dict) else sqs_message(item) for item in items]
        return sqs_events(messages, aws["QueueArn"], REGION)

    return _event


@pytest.fixture
def make_job(aws: dict[str, str]) -> Callable[..., Job]:
    """Factory: write a job straight to the table (no message), with overrides."""

    def _make(**overrides: Any) -> Job:
        job = Job.new(n=overrides.pop("n", 1000), now=utc_now()).with_(**overrides)
        connections.job_table().create(job)
        return job

    return _make


@pytest.fixture
def message_for() -> Callable[[Job], str]:
    return lambda job: to_message(job)
