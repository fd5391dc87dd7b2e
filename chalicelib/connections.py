"""The process's boto3 clients and adapters, built on first use and then reused.

Nothing here runs at import time, so importing app.py makes no AWS call and reads no
setting (a Lambda cold start pays only for what the first request uses). The endpoint,
region and credentials come from boto3's standard settings (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, ...), which is how an emulator is selected: no code here knows.

Every client has explicit timeouts and a bounded number of attempts (boto3's defaults
allow a 60-second read timeout, retried). The API's are tight enough that a submission's
worst case fits inside the API function's timeout (see ``SUBMISSION_CALLS``); when AWS
is that slow the API answers 503 and the client retries, which an Idempotency-Key makes
safe. The worker's functions have minutes, so their clients retry a little more, within
``config.WORKER_CLIENT_BOUNDS``: the worker's timeout margin is derived from those bounds,
so the calls a run makes once it is out of time always fit before Lambda's timeout.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from chalicelib.api_keys import ApiKeys
from chalicelib.config import WORKER_CLIENT_BOUNDS, ClientBounds, get_settings
from chalicelib.event_bus import EventBus
from chalicelib.queue import DelayQueue, JobQueue
from chalicelib.store import JobTable
from chalicelib.webhooks.store import WebhookTable

if TYPE_CHECKING:
    from chalicelib.schedule_store import ScheduleTable
    from chalicelib.scheduler import Scheduler
    from chalicelib.webhooks.delivery import WebhookQueue
    from chalicelib.worker import Worker


def _bounded(bounds: ClientBounds) -> Config:
    return Config(
        connect_timeout=bounds.connect_seconds,
        read_timeout=bounds.read_seconds,
        retries={"mode": "standard", "total_max_attempts": bounds.attempts},
    )


# The API function's clients: one attempt of at most connect + read seconds per call
# (DynamoDB, SQS and API Gateway answer in milliseconds: a read of 2.5 s is a failure).
API_CLIENT_CONFIG = _bounded(ClientBounds(connect_seconds=1, read_seconds=2.5, attempts=1))
# The most AWS calls one submission makes, in its worst case: GetApiKey (on a keyed
# stage, once per key and cold start), Query (the client's quota), GetQueueUrl (once per
# cold start), PutItem or TransactWriteItems (the job, and its Idempotency-Key),
# SendMessage, and when the send failed, TransactWriteItems (fail the job, release its
# key).
# tests/chalicelib/test_connections.py counts them, and checks SUBMISSION_CALLS x the worst
# call against the API function's timeout in .chalice/config.json.
SUBMISSION_CALLS = 6
# The worker's, the sweep's, the forwarder's and the DLQ consumer's clients.
WORKER_CLIENT_CONFIG = _bounded(WORKER_CLIENT_BOUNDS)


@cache
def _client(service: str, config: Config) -> Any:
    return boto3.client(service, config=config)


@lru_cache(maxsize=1)
def job_table() -> JobTable:
    """The API's job table adapter."""
    return JobTable(_client("dynamodb", API_CLIENT_CONFIG), get_settings().table_name)


@lru_cache(maxsize=1)
def job_queue() -> JobQueue:
    """The API's job queue adapter."""
    return JobQueue(_client("sqs", API_CLIENT_CONFIG), get_settings().queue_name)


@lru_cache(maxsize=1)
def delay_queue() -> DelayQueue:
    """The API's delay queue adapter: a job that runs within SQS's longest delay waits
    there from its submission."""
    return DelayQueue(_client("sqs", API_CLIENT_CONFIG), get_settings().delay_queue_name)


@lru_cache(maxsize=1)
def api_keys() -> ApiKeys:
    """The API's reader of API Gateway's keys (which client a request's key belongs to),
    with its own per-process memory of the names it read."""
    return ApiKeys(_client("apigateway", API_CLIENT_CONFIG))


@lru_cache(maxsize=1)
def schedule_table() -> ScheduleTable:
    """The API's and the firing function's adapter of the schedules' records. (Imported
    here, not at the top: only the schedules' routes and the firing function need it, and
    every function's cold start would import it and its time zones.)"""
    from chalicelib.schedule_store import ScheduleTable

    return ScheduleTable(_client("dynamodb", API_CLIENT_CONFIG), get_settings().table_name)


@lru_cache(maxsize=1)
def scheduler() -> Scheduler:
    """The API's EventBridge Scheduler adapter, on the stage's group and target (imported
    here for the reason ``schedule_table`` gives)."""
    from chalicelib.scheduler import Scheduler, SchedulerTarget

    settings = get_settings()
    target = SchedulerTarget(
        group_name=settings.schedule_group,
        function_arn=settings.schedule_target_arn,
        role_arn=settings.scheduler_role_arn,
        dead_letter_arn=settings.schedule_dead_letter_arn,
    )
    return Scheduler(_client("scheduler", API_CLIENT_CONFIG), target)


@lru_cache(maxsize=1)
def webhook_table() -> WebhookTable:
    """The API's adapter of the webhook endpoints' records."""
    return WebhookTable(_client("dynamodb", API_CLIENT_CONFIG), get_settings().table_name)


@lru_cache(maxsize=1)
def webhook_queue() -> WebhookQueue:
    """The delivery function's webhooks queue (events in, deliveries between attempts)."""
    # Imported here, as the worker is: the API function never delivers a webhook.
    from chalicelib.webhooks.delivery import WebhookQueue

    settings = get_settings()
    return WebhookQueue(
        DelayQueue(_client("sqs", WORKER_CLIENT_CONFIG), settings.webhook_queue_name)
    )


@lru_cache(maxsize=1)
def worker() -> Worker:
    """The worker functions' use cases, on clients of their own."""
    # Imported here, not at the top: the API function never runs a job, and every function
    # imports app.py, so the API's cold start does not pay for the worker's module.
    from chalicelib.worker import Worker

    settings = get_settings()
    return Worker(
        table=JobTable(_client("dynamodb", WORKER_CLIENT_CONFIG), settings.table_name),
        queue=JobQueue(_client("sqs", WORKER_CLIENT_CONFIG), settings.queue_name),
        delay_queue=DelayQueue(_client("sqs", WORKER_CLIENT_CONFIG), settings.delay_queue_name),
        settings=settings,
    )


@lru_cache(maxsize=1)
def event_bus() -> EventBus:
    """The stream consumer's adapter of the stage's EventBridge bus (publish_job_events),
    with the worker functions' bounds: it has minutes, and a failed put only delays its
    shard."""
    return EventBus(_client("events", WORKER_CLIENT_CONFIG), get_settings().event_bus_name)


def reset() -> None:
    """Forget cached clients and settings (tests that change the environment call it)."""
    get_settings.cache_clear()
    _client.cache_clear()
    job_table.cache_clear()
    job_queue.cache_clear()
    delay_queue.cache_clear()
    api_keys.cache_clear()
    schedule_table.cache_clear()
    scheduler.cache_clear()
    webhook_table.cache_clear()
    webhook_queue.cache_clear()
    worker.cache_clear()
    event_bus.cache_clear()
