"""Structured logs and metrics: Powertools for AWS Lambda's Logger (JSON lines) and
CloudWatch embedded metric format (EMF) lines on stdout.

On AWS, Lambda ships stdout to CloudWatch Logs, where EMF lines become metrics with no API
call; locally they appear in ``make run``'s output. Every log line about a job carries its
``job_id``: the worker binds it for the run, the API passes it per line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

# Not the Chalice app's name: Chalice owns the logger called "heavy-jobs" (level ERROR).
SERVICE = "jobs"
NAMESPACE = "HeavyJobs"

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
        default_dimensions={"service": SERVICE},
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
