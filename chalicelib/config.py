"""Settings, read once from a mapping (``os.environ`` by default).

The names of the AWS resources reach the app as environment variables that
``.chalice/config.json`` declares per stage (written there from the CloudFormation stack's
outputs by ``infra/stack.py``, with the stage's own name); tunables have defaults here and
may be overridden the same way. Nothing else in the code reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache

from chalicelib.clients import operator_client
from chalicelib.errors import SettingsError

# Environment variable names: the one place they are spelled.
TABLE_NAME = "JOBS_TABLE_NAME"
QUEUE_NAME = "JOBS_QUEUE_NAME"
DEAD_LETTER_QUEUE_NAME = "JOBS_DEAD_LETTER_QUEUE_NAME"
DELAY_QUEUE_NAME = "JOBS_DELAY_QUEUE_NAME"
STAGE = "JOBS_STAGE"
DEFAULT_N = "JOBS_DEFAULT_N"
MAX_N = "JOBS_MAX_N"
PROGRESS_INTERVAL = "JOBS_PROGRESS_INTERVAL_SECONDS"
LOOP_RATE = "JOBS_LOOP_RATE_PER_SECOND"
RETENTION_DAYS = "JOBS_RETENTION_DAYS"
REQUIRE_API_KEY = "JOBS_REQUIRE_API_KEY"
AUTH = "JOBS_AUTH"
OPERATOR_PRINCIPAL = "JOBS_OPERATOR_PRINCIPAL"
MAX_ATTEMPTS = "JOBS_MAX_ATTEMPTS"
RETRY_BASE = "JOBS_RETRY_BASE_SECONDS"
STALE_AFTER = "JOBS_STALE_AFTER_SECONDS"
TIMEOUT_MARGIN = "JOBS_TIMEOUT_MARGIN_SECONDS"
LOST_AFTER = "JOBS_LOST_AFTER_SECONDS"
CLAIM_BACKOFF_CAP = "JOBS_CLAIM_BACKOFF_CAP_SECONDS"
MAX_ACTIVE_PER_CLIENT = "JOBS_MAX_ACTIVE_PER_CLIENT"
MAX_ACTIVE_SECONDS_PER_CLIENT = "JOBS_MAX_ACTIVE_SECONDS_PER_CLIENT"
# The stage's lanes (docs/lanes.md): rendered from the stage's "lanes" and "lane_key" in
# .chalice/config.json by infra/lanes.py, with the worker's reserved concurrency.
LANES = "JOBS_LANES"
LANE_KEY = "JOBS_LANE_KEY"
# What a job's lane is chosen by: its client (the default) or its kind.
LANE_KEYS = ("client", "kind")
MAX_SCHEDULES_PER_CLIENT = "JOBS_MAX_SCHEDULES_PER_CLIENT"
# Where the stage's EventBridge Scheduler schedules live and what they invoke (the stack's
# outputs; chalicelib.scheduler).
SCHEDULE_GROUP = "JOBS_SCHEDULE_GROUP"
SCHEDULE_TARGET_ARN = "JOBS_SCHEDULE_TARGET_ARN"
SCHEDULER_ROLE_ARN = "JOBS_SCHEDULER_ROLE_ARN"
SCHEDULE_DEAD_LETTER_ARN = "JOBS_SCHEDULE_DEAD_LETTER_ARN"
# Job events (chalicelib/events.py): the stage's EventBridge bus they go to, and the job
# table's stream they are read from (the stack's outputs).
EVENT_BUS_NAME = "JOBS_EVENT_BUS_NAME"
TABLE_STREAM_ARN = "JOBS_TABLE_STREAM_ARN"
# The queue the stage's EventBridge rule puts job events on, and the webhook deliveries
# wait in between attempts (chalicelib.webhooks.delivery).
WEBHOOK_QUEUE_NAME = "JOBS_WEBHOOK_QUEUE_NAME"


class Auth(StrEnum):
    """How a stage's guarded routes (chalicelib.openapi.KEYED_OPERATIONS) know who calls
    (``JOBS_AUTH``; docs/security.md says when to choose each)."""

    NONE = "none"  # nothing: every caller is the one client anonymous
    API_KEY = "api_key"  # an API key, whose name names the client (chalicelib.clients)
    IAM = "iam"  # a SigV4 signature API Gateway checks; the client is the IAM principal


@dataclass(frozen=True)
class ClientBounds:
    """How long one AWS call of a client may take: each attempt connects and reads within
    these timeouts, and botocore's standard retry mode makes at most ``attempts``."""

    connect_seconds: float
    read_seconds: float
    attempts: int

    @property
    def worst_call_seconds(self) -> float:
        """The longest one call can take: every attempt connects and reads to its timeout,
        and before retry i (1-based) botocore's standard mode sleeps at most
        min(2^(i-1), 20) s, plus up to 5 s when the service sends x-amz-retry-after
        (botocore/retries/standard.py, ExponentialBackoff)."""
        sleeps = sum(min(2.0 ** (i - 1), 20.0) + 5.0 for i in range(1, self.attempts))
        return self.attempts * (self.connect_seconds + self.read_seconds) + sleeps


# The worker's, the sweep's, the forwarder's and the DLQ consumer's clients
# (chalicelib.connections builds them from this). Tight enough that the calls of the
# out-of-time path fit the timeout margin below, which must stay at most 15% of the
# worker's timeout (tests/chalicelib/test_connections.py checks it against
# .chalice/config.json): DynamoDB and SQS answer in milliseconds, so a read that takes
# 5 s is a failure worth retrying.
WORKER_CLIENT_BOUNDS = ClientBounds(connect_seconds=1, read_seconds=5, attempts=3)
# The AWS calls a run makes once it is out of time, in its worst case (counted in
# chalicelib.worker, and by a test): the checkpoint (UpdateItem), the message hold
# (ChangeMessageVisibility), the release as a continuation (UpdateItem), and the
# continuation's SendMessage (or, when the release is refused, the GetItem that says why).
OUT_OF_TIME_CALLS = 4
# The default timeout margin: time for every call of the out-of-time path at its worst
# (4 x 31 s = 124 s, 13.8% of the worker's 900-second timeout).
TIMEOUT_MARGIN_SECONDS = OUT_OF_TIME_CALLS * WORKER_CLIENT_BOUNDS.worst_call_seconds


@dataclass(frozen=True)
class Settings:
    table_name: str
    # The FIFO job queue (one message group: jobs start in the order they were sent).
    queue_name: str
    # The standard queue that holds a retry for its backoff (FIFO has no per-message
    # delay), then hands it to the job queue (app.forward_delayed).
    delay_queue_name: str
    # The Chalice stage the function runs as (local, dev, prod): the metrics' "stage"
    # dimension, so each stage's alarms and dashboard watch its own jobs only.
    stage: str
    # n when POST /heavy has no body: a few seconds of counting on a laptop.
    default_n: int = 300_000_000
    # The largest n accepted: the classic blocking example's 1e10.
    max_n: int = 10**10
    # A running job checkpoints (position, progress, heartbeat) at most this often, so
    # DynamoDB writes never slow the loop; cancellation is noticed at the same pace.
    progress_interval_seconds: float = 1.0
    # Loop iterations per second, for Retry-After estimates (CPython 3.11, one core).
    loop_rate_per_second: int = 100_000_000
    # Job records expire this long after creation (DynamoDB TTL; gone on read at once).
    retention_days: int = 7
    # Runs of a job that may end in an exception (or a dead worker) before it is failed.
    max_attempts: int = 3
    # Backoff before retry k (k = 1, 2, ...): base * 2**(k-1) seconds, at most 900 (SQS).
    retry_base_seconds: int = 2
    # A running job whose heartbeat is older than this is presumed dead: its lease has
    # expired, and the next delivery of its message takes it over.
    stale_after_seconds: int = 30
    # Checkpoint and continue in a new invocation when less than this remains before
    # the function's timeout: by default the worst case of the calls that takes
    # (TIMEOUT_MARGIN_SECONDS), so Lambda never stops an invocation mid-continuation.
    timeout_margin_seconds: float = TIMEOUT_MARGIN_SECONDS
    # A queued job whose message should have reached the worker this long ago, by the
    # queue's order, lost it; the recovery sweep sends it again. Covers the API's bounded
    # send time and clock skew between the API, SQS and the worker.
    lost_after_seconds: int = 120
    # The longest a message whose claim failed stays hidden before it comes back (the
    # claim backoff: 2^receive count seconds up to this; chalicelib.queue.claim_backoff).
    # The job queue's maxReceiveCount is derived at this default to outlast a 15-minute
    # outage; a smaller cap shrinks the tolerated outage about proportionally (tests
    # set it small to scale an outage down; chalicelib.queue.tolerated_outage_seconds).
    claim_backoff_cap_seconds: int = 60
    # A client's quota (chalicelib.service.check_quota): at most this many of its jobs
    # queued or running, and at most this many seconds of their kinds' estimated run
    # time. A submission over either is refused (429). 0 turns that limit off (for
    # benchmarks that queue thousands of jobs on purpose).
    max_active_per_client: int = 100
    max_active_seconds_per_client: int = 3600
    # Lanes: message groups of the job queue, each run one job at a time in submission
    # order, as many at once as there are lanes (the worker's reserved concurrency). A
    # job's lane is a stable hash of its lane key (LANE_KEYS) modulo the lanes
    # (chalicelib.jobs.lane_of). 1: every job in one lane.
    lanes: int = 1
    lane_key: str = "client"
    # The most recurring schedules a client may have (POST /schedules; 0: no limit).
    max_schedules_per_client: int = 100
    # EventBridge Scheduler's group of the stage, the firing function, the role the
    # Scheduler assumes to invoke it, and the dead-letter queue of fires it gave up on
    # (empty where the stack has none: creating a schedule then fails with 503).
    schedule_group: str = ""
    schedule_target_arn: str = ""
    scheduler_role_arn: str = ""
    schedule_dead_letter_arn: str = ""
    # The stage's EventBridge bus, where publish_job_events puts job events (empty where
    # the stack has none: publishing then fails, and the stream retries it).
    event_bus_name: str = ""
    # The webhooks queue (empty where the stack has none: nothing is delivered).
    webhook_queue_name: str = ""
    # On an IAM stage, the principal that sees and acts on every job, as
    # chalicelib.clients.operator_client reads it (a role's name, a role's or a user's
    # ARN); None: no principal is the operator.
    operator_principal: str | None = None

    @property
    def message_hold_seconds(self) -> int:
        """How long a running job's message stays hidden (renewed while it runs): twice
        the lease, so a crashed run's message comes back after its lease has expired and
        the next delivery can take the job over, within this time."""
        return 2 * self.stale_after_seconds

    def retry_delay_seconds(self, attempt: int) -> int:
        """Backoff before retrying after failed attempt ``attempt`` (SQS allows <= 900 s)."""
        return int(min(900, self.retry_base_seconds * 2 ** (attempt - 1)))

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from ``env``; raise SettingsError naming any bad setting."""
        settings = cls(
            table_name=_required(env, TABLE_NAME),
            queue_name=_required(env, QUEUE_NAME),
            delay_queue_name=_required(env, DELAY_QUEUE_NAME),
            stage=_required(env, STAGE),
            default_n=_int(env, DEFAULT_N, cls.default_n, minimum=0),
            max_n=_int(env, MAX_N, cls.max_n, minimum=0),
            progress_interval_seconds=_float(env, PROGRESS_INTERVAL, cls.progress_interval_seconds),
            loop_rate_per_second=_int(env, LOOP_RATE, cls.loop_rate_per_second, minimum=1),
            retention_days=_int(env, RETENTION_DAYS, cls.retention_days, minimum=1),
            max_attempts=_int(env, MAX_ATTEMPTS, cls.max_attempts, minimum=1),
            retry_base_seconds=_int(env, RETRY_BASE, cls.retry_base_seconds, minimum=0),
            stale_after_seconds=_int(env, STALE_AFTER, cls.stale_after_seconds, minimum=1),
            timeout_margin_seconds=_float(env, TIMEOUT_MARGIN, cls.timeout_margin_seconds),
            lost_after_seconds=_int(env, LOST_AFTER, cls.lost_after_seconds, minimum=1),
            claim_backoff_cap_seconds=_int(
                env, CLAIM_BACKOFF_CAP, cls.claim_backoff_cap_seconds, minimum=1
            ),
            max_active_per_client=_int(
                env, MAX_ACTIVE_PER_CLIENT, cls.max_active_per_client, minimum=0
            ),
            max_active_seconds_per_client=_int(
                env, MAX_ACTIVE_SECONDS_PER_CLIENT, cls.max_active_seconds_per_client, minimum=0
            ),
            lanes=_int(env, LANES, cls.lanes, minimum=1),
            lane_key=env.get(LANE_KEY, "").strip() or cls.lane_key,
            max_schedules_per_client=_int(
                env, MAX_SCHEDULES_PER_CLIENT, cls.max_schedules_per_client, minimum=0
            ),
            schedule_group=env.get(SCHEDULE_GROUP, "").strip(),
            schedule_target_arn=env.get(SCHEDULE_TARGET_ARN, "").strip(),
            scheduler_role_arn=env.get(SCHEDULER_ROLE_ARN, "").strip(),
            schedule_dead_letter_arn=env.get(SCHEDULE_DEAD_LETTER_ARN, "").strip(),
            webhook_queue_name=env.get(WEBHOOK_QUEUE_NAME, "").strip(),
            operator_principal=env.get(OPERATOR_PRINCIPAL, "").strip() or None,
            event_bus_name=env.get(EVENT_BUS_NAME, "").strip(),
        )
        if settings.lane_key not in LANE_KEYS:
            raise SettingsError(
                f"setting {LANE_KEY} must be one of {', '.join(LANE_KEYS)}, "
                f"got {settings.lane_key!r}"
            )
        principal = settings.operator_principal
        if principal is not None and operator_client(principal) is None:
            raise SettingsError(
                f"setting {OPERATOR_PRINCIPAL} must be a role's name or ARN, or a user's ARN, "
                f"got {principal!r}"
            )
        if settings.default_n > settings.max_n:
            raise SettingsError(
                f"{DEFAULT_N}={settings.default_n} is over {MAX_N}={settings.max_n}"
            )
        return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from ``os.environ`` on first use."""
    return Settings.from_mapping(os.environ)


def queue_name_at_import() -> str:
    """The job queue's name, for ``@app.on_sqs_message`` in app.py.

    Chalice reads event sources when it imports app.py. ``chalice deploy``, ``package`` and
    ``local`` load the stage's ``environment_variables`` into ``os.environ`` before that
    import, and Lambda sets them, so this is the one setting needed at import time.
    """
    return _required(os.environ, QUEUE_NAME)


def dead_letter_queue_name_at_import() -> str:
    """The dead-letter queue's name, for the DLQ consumer's ``@app.on_sqs_message``."""
    return _required(os.environ, DEAD_LETTER_QUEUE_NAME)


def delay_queue_name_at_import() -> str:
    """The delay queue's name, for the forwarder's ``@app.on_sqs_message``."""
    return _required(os.environ, DELAY_QUEUE_NAME)


def table_stream_arn_at_import() -> str:
    """The job table's stream, for publish_job_events' ``@app.on_dynamodb_record``; "" when
    the process was not given it.

    Only the tools that create the event source mapping read it: ``make deploy`` passes the
    stack's TableStreamArn output to ``chalice deploy`` in this variable, and ``make
    package`` replaces the mapping's stream with the stack's own reference. It is not a
    stage setting in .chalice/config.json: a stream's ARN ends in the time it was enabled,
    so every new table (each test's, each emulator's) has another, and the function itself
    never needs it (Lambda hands it the records)."""
    return os.environ.get(TABLE_STREAM_ARN, "").strip()


def webhook_queue_name_at_import() -> str:
    """The webhooks queue's name, for the delivery function's ``@app.on_sqs_message``."""
    return _required(os.environ, WEBHOOK_QUEUE_NAME)


def auth(env: Mapping[str, str]) -> Auth:
    """How the stage's guarded routes know who calls: ``JOBS_AUTH`` (none, api_key or
    iam), else ``JOBS_REQUIRE_API_KEY`` (true: api_key, as prod has always said; false or
    unset: none). SettingsError for an unknown value of either, or for both set and
    disagreeing (``JOBS_REQUIRE_API_KEY=true`` with any ``JOBS_AUTH`` but api_key, or
    ``false`` with api_key): a stage whose two settings contradict each other would be
    guarded in a way one of them does not say."""
    raw_key = env.get(REQUIRE_API_KEY, "").strip().lower()
    if raw_key not in ("", "true", "false"):
        raise SettingsError(f"setting {REQUIRE_API_KEY} must be true or false, got {raw_key!r}")
    raw_auth = env.get(AUTH, "").strip().lower()
    if not raw_auth:
        return Auth.API_KEY if raw_key == "true" else Auth.NONE
    try:
        mode = Auth(raw_auth)
    except ValueError:
        choices = ", ".join(mode.value for mode in Auth)
        raise SettingsError(f"setting {AUTH} must be one of {choices}, got {raw_auth!r}") from None
    if raw_key and (raw_key == "true") != (mode is Auth.API_KEY):
        raise SettingsError(
            f"settings {AUTH}={mode.value} and {REQUIRE_API_KEY}={raw_key} disagree: "
            f"set {AUTH} alone"
        )
    return mode


def auth_at_import() -> Auth:
    """``auth`` for app.py's route decorators, read at import for the same reason as the
    queue name: Chalice builds the API definition when it imports app.py."""
    return auth(os.environ)


def api_key_required(env: Mapping[str, str]) -> bool:
    """Whether the stage's guarded routes need an API key (``auth`` is api_key: prod)."""
    return auth(env) is Auth.API_KEY


def api_key_required_at_import() -> bool:
    """``api_key_required`` of the process's environment, as app.py is imported with it."""
    return api_key_required(os.environ)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"missing required setting {name}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"setting {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"setting {name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"setting {name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"setting {name} must be > 0, got {raw!r}")
    return value
