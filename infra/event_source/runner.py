"""The runner: the command line, building the sources, running them until stopped."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from chalice.constants import DEFAULT_STAGE_NAME

from .deployment import import_world
from .instances import FunctionRuntime, InstanceSpec, instance_environment, line_buffered_output
from .mappings import MappingGate
from .modes import DEFAULT_POLLERS, MODE_VARIABLE, Mode, mode_from_environment
from .pollers import PollingSQSEventSource
from .receives import RECOVERY_MARGIN_SECONDS, ReceiveJournal
from .scheduler import SchedulerEventSource, lambda_functions
from .settings import (
    FunctionSettings,
    ProjectSettings,
    SQSSourceSettings,
    StreamSourceSettings,
    load_project,
)
from .sources import (
    MAX_WAIT_SECONDS,
    EventSource,
    ScheduleEventSource,
    SourceError,
    SQSEventSource,
)
from .streams import DynamoDBStreamEventSource, StreamMapping, mapping_extras

log = logging.getLogger(__name__)


def run_sources(
    sources: Sequence[EventSource],
    runtimes: Iterable[FunctionRuntime],
    stop: threading.Event,
    burst: bool = False,
    drain_seconds: float = MAX_WAIT_SECONDS + RECOVERY_MARGIN_SECONDS,
    hurry: threading.Event | None = None,
) -> None:
    """Run every source in a thread of its own until ``stop`` (or, in burst mode, until
    all have drained), then shut every function runtime down (invocations in flight are
    interrupted) and wait for the sources to finish their open receives and release
    what no invocation took: at most ``drain_seconds`` (a long poll's length), less if
    ``hurry`` is set meanwhile (a second Ctrl-C).

    Source threads are daemons: one still blocked in a receive after that is abandoned;
    the next runner takes back what it receives (``receives.recover``, FIFO queues).
    """
    threads = [
        threading.Thread(
            target=s.run, args=(stop, burst), name=f"source:{s.runtime.function.name}", daemon=True
        )
        for s in sources
    ]
    for thread in threads:
        thread.start()
    try:
        while not stop.wait(0.1):
            if burst and not any(t.is_alive() for t in threads):
                break
    finally:
        stop.set()
        for runtime in runtimes:
            runtime.shutdown()
        deadline = time.monotonic() + drain_seconds
        if any(t.is_alive() for t in threads):
            log.info("waiting up to %g s for open receives to end", drain_seconds)
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                break
            time.sleep(0.05)
        if any(t.is_alive() for t in threads):
            log.warning("a receive is still open; the next start takes back what it takes")


def _configure_logging() -> None:
    # The runner's own lines only: the package's logger, which every module's logger
    # propagates to; the root logger (boto3's chatter, the app's loggers imported into
    # this process) is left alone.
    line_buffered_output()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s event_source %(message)s"))
    package_log = logging.getLogger(__name__.rpartition(".")[0])
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    package_log.propagate = False


def _stop_on_signals(stop: threading.Event, hurry: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.info("%s again: not waiting for open receives", signal.Signals(signum).name)
            hurry.set()
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _poll_seconds(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_WAIT_SECONDS}")
    return value


def _pollers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.event_source",
        description="Serve a Chalice app's on_sqs_message handlers as Lambda's SQS event "
        "source mapping would.",
    )
    parser.add_argument("--project-dir", default=".", help="the Chalice project (default: .)")
    parser.add_argument(
        "--stage", default=DEFAULT_STAGE_NAME, help=f"Chalice stage (default: {DEFAULT_STAGE_NAME})"
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="exit once every queue is empty and no invocation runs (for tests)",
    )
    parser.add_argument(
        "--schedule-period-seconds",
        type=float,
        default=None,
        help="invoke scheduled handlers this often instead of their rate (for tests)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=_poll_seconds,
        default=MAX_WAIT_SECONDS,
        help=f"long-poll wait of each receive, 0..{MAX_WAIT_SECONDS} (default: {MAX_WAIT_SECONDS})",
    )
    parser.add_argument(
        "--mode",
        type=Mode,
        choices=list(Mode),
        default=None,
        help=f"exact: receive only what can run at once; aws: Lambda's pollers, throttles and "
        f"backoff as AWS documents them (default: ${MODE_VARIABLE}, else exact)",
    )
    parser.add_argument(
        "--pollers",
        type=_pollers,
        default=DEFAULT_POLLERS,
        help=f"aws mode: pollers per SQS mapping (default: {DEFAULT_POLLERS}, as AWS starts a "
        "standard queue's mapping)",
    )
    return parser.parse_args(argv)


def _build_sources(
    project: ProjectSettings,
    base_environment: Mapping[str, str],
    session: boto3.session.Session,
    region: str,
    poll_seconds: int,
    schedule_period: float | None = None,
    mode: Mode = Mode.EXACT,
    pollers: int = DEFAULT_POLLERS,
) -> tuple[list[EventSource], list[FunctionRuntime]]:
    # One client for all sources: boto3 clients are thread-safe. Its read timeout must
    # outlast the longest long poll.
    sqs = session.client("sqs", config=Config(read_timeout=poll_seconds + 30))
    runtimes: dict[str, FunctionRuntime] = {}
    # What every instance of the project may import: computed once, shared.
    world = import_world(project.project_dir).to_wire()

    def runtime_for(function: FunctionSettings) -> FunctionRuntime:
        if function.name not in runtimes:
            spec = InstanceSpec(
                project_dir=project.project_dir,
                handler=function.handler,
                function_name=function.function_name,
                memory_size=function.memory_size,
                timeout_seconds=function.timeout_seconds,
                environment=instance_environment(
                    base_environment, function, region, project.project_dir
                ),
                import_world=world,
            )
            runtimes[function.name] = FunctionRuntime(function, spec)
        return runtimes[function.name]

    def sqs_source(settings: SQSSourceSettings) -> EventSource:
        runtime = runtime_for(settings.function)
        # Each mapping can be disabled and enabled while the runner runs (see .mappings).
        gate = MappingGate(
            Path(project.project_dir),
            project.stage,
            settings.function.name,
            pollers=pollers if mode is Mode.AWS else 1,
            log=log.info,
        )
        # What a killed runner's receives took, the next one takes back (see .receives).
        journal = ReceiveJournal(Path(project.project_dir), project.stage, settings.function.name)
        if mode is Mode.AWS:
            return PollingSQSEventSource(
                settings, runtime, sqs, region, poll_seconds, pollers, gate=gate, journal=journal
            )
        return SQSEventSource(settings, runtime, sqs, region, poll_seconds, gate, journal)

    def stream_source(settings: StreamSourceSettings) -> EventSource:
        mapping = StreamMapping(
            stream_arn=settings.stream_arn,
            batch_size=settings.batch_size,
            starting_position=settings.starting_position,
            **mapping_extras(os.environ),
        )
        account = _account_id(session)
        function_arn = (
            f"arn:aws:lambda:{region}:{account}:function:{settings.function.function_name}"
        )
        return DynamoDBStreamEventSource(
            mapping,
            runtime_for(settings.function),
            session.client("dynamodbstreams"),
            sqs,
            function_arn,
        )

    sources = [sqs_source(settings) for settings in project.sqs_sources]
    sources += [stream_source(settings) for settings in project.stream_sources]
    if project.schedule_sources:
        account = _account_id(session)
        sources += [
            ScheduleEventSource(
                settings, runtime_for(settings.function), region, account, schedule_period
            )
            for settings in project.schedule_sources
        ]
    # EventBridge Scheduler's schedules that invoke the project's plain functions.
    targets = {
        f.function_name: runtime_for(f)
        for f in lambda_functions(project.project_dir, project.stage)
    }
    if targets:
        sources.append(SchedulerEventSource(session.client("scheduler"), targets, sqs))
    return sources, list(runtimes.values())


def _account_id(session: boto3.session.Session) -> str:
    """The account the credentials belong to (for ARNs in events); moto's if unknown."""
    try:
        return str(session.client("sts").get_caller_identity()["Account"])
    except (BotoCoreError, ClientError):
        return "123456789012"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 when the project or a queue is unusable)."""
    args = _parse_args(argv)
    _configure_logging()
    try:
        mode: Mode = args.mode or mode_from_environment(os.environ)
    except ValueError as err:
        log.error("%s", err)
        return 2
    # The first line says which mapping behaviour is in force (see .modes).
    log.info("mode=%s%s", mode.value, f" pollers={args.pollers}" if mode is Mode.AWS else "")
    stop, hurry = threading.Event(), threading.Event()
    _stop_on_signals(stop, hurry)
    # What instances inherit: the environment before Chalice adds the stage's variables.
    base_environment = dict(os.environ)
    # As the chalice CLI sets it for its own import of app.py, so an app can tell.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    try:
        project = load_project(args.project_dir, args.stage)
    except Exception:
        log.exception("cannot load the Chalice project in %s", args.project_dir)
        return 2
    session = boto3.session.Session()
    region = session.region_name
    if not region:
        log.error("no AWS region: set AWS_DEFAULT_REGION")
        return 2
    sources, runtimes = _build_sources(
        project,
        base_environment,
        session,
        region,
        args.poll_seconds,
        args.schedule_period_seconds,
        mode,
        args.pollers,
    )
    try:
        for source in sources:
            source.prepare()
    except SourceError as err:
        log.error("%s", err)
        return 2
    for source in sources:
        log.info("serving %s", source.describe())
    for skipped in project.not_emulated:
        log.info("not emulated: %s", skipped)
    if not sources:
        log.warning("%s has no on_sqs_message handler", project.app_name)
    run_sources(
        sources,
        runtimes,
        stop,
        burst=args.burst,
        drain_seconds=args.poll_seconds + RECOVERY_MARGIN_SECONDS,
        hurry=hurry,
    )
    log.info("stopped")
    return 0
