"""The process's boto3 clients and adapters, built on first use and then reused.

Nothing here runs at import time, so importing app.py makes no AWS call and reads no
setting (a Lambda cold start pays only for what the first request uses). The endpoint,
region and credentials come from boto3's standard settings (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, ...), which is how an emulator is selected: no code here knows.
"""

from __future__ import annotations

from functools import lru_cache

import boto3

from chalicelib.config import get_settings
from chalicelib.queue import JobQueue
from chalicelib.store import JobTable
from chalicelib.worker import Worker


@lru_cache(maxsize=1)
def job_table() -> JobTable:
    return JobTable(boto3.client("dynamodb"), get_settings().table_name)


@lru_cache(maxsize=1)
def job_queue() -> JobQueue:
    return JobQueue(boto3.client("sqs"), get_settings().queue_name)


@lru_cache(maxsize=1)
def worker() -> Worker:
    return Worker(job_table(), job_queue(), get_settings())


def reset() -> None:
    """Forget cached clients and settings (tests that change the environment call it)."""
    get_settings.cache_clear()
    job_table.cache_clear()
    job_queue.cache_clear()
    worker.cache_clear()
