"""Structured logs, metrics and trace propagation.

Logs are Powertools for AWS Lambda's Logger (JSON lines); metrics are CloudWatch embedded
metric format (EMF) lines on stdout, each with two dimensions, the service and the stage
(``dimensions``). On AWS, Lambda ships stdout to CloudWatch Logs, where EMF lines become
metrics with no API call; locally they appear in ``make run``'s output.
Every log line about a job carries its ``job_id``: the worker binds it for the run, the API
passes it per line.

Tracing needs no SDK. With active tracing, Lambda gives each invocation its X-Ray trace
header in ``_X_AMZN_TRACE_ID`` (Lambda Developer Guide, "Visualize Lambda function
invocations using AWS X-Ray"; the Python runtime sets it per invocation). Every SendMessage
of a job's life carries a trace header in the ``AWSTraceHeader`` message system attribute,
and X-Ray links the producer's trace to the Lambda consumer that receives the message (X-Ray
Developer Guide, "Amazon SQS and AWS X-Ray" and "Tracing event-driven applications"). Which
header: the one the message being handled arrived with, if any (so a continuation, a retry
through the delay queue and its forward, and a dead-letter re-drive stay on the job's
trace from POST /heavy), else this invocation's own. Locally neither exists, so nothing is
sent and nothing warns. The X-Ray SDK (or Powertools' Tracer, built on it) is not used: it
would add subsegments only, at about twice the cold import of boto3 (see README,
"Tracing").
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from chalicelib.config import get_settings

# Not the Chalice app's name: Chalice owns the logger called "heavy-jobs" (level ERROR).
SERVICE = "jobs"
NAMESPACE = "HeavyJobs"

# Lambda's per-invocation trace header (set only when the function's tracing is active or
# the caller sent one), and the SQS system attribute that carries one with a message.
TRACE_HEADER_VARIABLE = "_X_AMZN_TRACE_ID"
TRACE_ATTRIBUTE = "AWSTraceHeader"

# The trace header of the message being handled (None: none arrived with it).
_received_trace: ContextVar[str | None] = ContextVar("received_trace", default=None)

# Powertools' idiom is one module-level Logger; it reads only POWERTOOLS_* settings.
logger = Logger(service=SERVICE)


class Metric:
    """The metric names: one place, so dashboards and tests agree."""

    ACCEPTED = "JobsAccepted"
    STARTED = "JobsStarted"
    SUCCEEDED = "JobsSucceeded"
    FAILED = "JobsFailed"
    CANCELLED = "JobsCancelled"
    RETRIED = "JobsRetried"
    QUEUE_WAIT = "JobQueueWaitMilliseconds"
    RUN_DURATION = "JobRunMilliseconds"


def dimensions(stage: str) -> dict[str, str]:
    """The dimensions every metric of a function of ``stage`` carries: the service, and the
    stage, so that stages sharing an account write separate metrics (CloudWatch tells
    metrics apart by namespace, name and every dimension). infra/operations.yaml's alarm and
    dashboard name the same two."""
    return {"service": SERVICE, "stage": stage}


def count(name: str, value: float = 1) -> None:
    """Emit one EMF line counting ``name``."""
    _emit(name, MetricUnit.Count, value)


def milliseconds(name: str, value: float) -> None:
    """Emit one EMF line with a duration in milliseconds."""
    _emit(name, MetricUnit.Milliseconds, value)


def _emit(name: str, unit: MetricUnit, value: float) -> None:
    with single_metric(
        name=name,
        unit=unit,
        value=value,
        namespace=NAMESPACE,
        # The stage comes from the settings (JOBS_STAGE), read on first use, not at import.
        default_dimensions=dimensions(get_settings().stage),
    ):
        pass  # the line is written when the context exits


@contextmanager
def job_logging(job_id: str) -> Iterator[None]:
    """Add ``job_id`` to every log line of this thread while the block runs."""
    logger.thread_safe_append_keys(job_id=job_id)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(["job_id"])


def trace_header(environ: Mapping[str, str] | None = None) -> str | None:
    """The X-Ray trace header a message sent now should carry: the one the message being
    handled arrived with, else this invocation's (``_X_AMZN_TRACE_ID``), else None."""
    received = _received_trace.get()
    if received:
        return received
    return (os.environ if environ is None else environ).get(TRACE_HEADER_VARIABLE) or None


@contextmanager
def continue_trace(received: str | None) -> Iterator[None]:
    """While the block runs, messages sent in this context carry ``received`` (the trace
    header a handled message arrived with); None keeps the invocation's own."""
    token = _received_trace.set(received)
    try:
        yield
    finally:
        _received_trace.reset(token)


def received_trace_header(record: Mapping[str, object]) -> str | None:
    """The trace header of one record of Lambda's SQS event (its JSON form), if any."""
    attributes = record.get("attributes")
    header = attributes.get(TRACE_ATTRIBUTE) if isinstance(attributes, Mapping) else None
    return header if isinstance(header, str) and header else None
