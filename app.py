"""Routes and the event handlers. Each parses its input, calls one chalicelib function and
shapes the answer; domain errors become HTTP errors here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalice.app import Chalice, IAMAuthorizer, Rate, Request, Response, SQSRecord

from chalicelib import connections, dashboard, openapi, origins, service
from chalicelib.clients import ANONYMOUS_CALLER, Caller
from chalicelib.config import (
    Auth,
    Settings,
    auth_at_import,
    dead_letter_queue_name_at_import,
    delay_queue_name_at_import,
    get_settings,
    queue_name_at_import,
    table_stream_arn_at_import,
    webhook_queue_name_at_import,
)
from chalicelib.errors import QuotaExceeded, RequestError, StoreUnavailable
from chalicelib.event_bus import publish_records
from chalicelib.events import STREAM_BATCH_SIZE, STREAM_STARTING_POSITION
from chalicelib.jobs import Job, utc_now
from chalicelib.observability import continue_trace, logger, received_trace_header
from chalicelib.queue import Delivery
from chalicelib.requests import (
    JobRequest,
    parse_batch_request,
    parse_heavy_request,
    parse_job_request,
    parse_prefer,
)
from chalicelib.schedules import ENABLED, PAUSED
from chalicelib.webhooks import service as webhook_service

app = Chalice(app_name="heavy-jobs")

# curl -d sends form content by default; the body is parsed as JSON whatever the type.
SUBMIT_CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]


# How the stage's guarded routes know who calls (JOBS_AUTH: none, api_key or iam). Every
# route that touches jobs is declared with ``**GUARDED`` (and listed in
# chalicelib.openapi.KEYED_OPERATIONS; a test checks the two agree): on a keyed stage
# (prod) it needs an API key, on an IAM stage a SigV4 signature API Gateway checks. Who
# calls (``_caller``) then names the client; a client sees and acts on its own jobs only.
AUTH = auth_at_import()
_ROUTE_AUTH: dict[Auth, dict[str, Any]] = {
    Auth.NONE: {},
    Auth.API_KEY: {"api_key_required": True},
    Auth.IAM: {"authorizer": IAMAuthorizer()},
}
GUARDED = _ROUTE_AUTH[AUTH]


@app.middleware("http")
def refuse_cross_site(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """A state-changing request another site's page sent is 403 cross_site_request, before
    any route runs (chalicelib.origins)."""
    if request.method in origins.SAFE_METHODS:  # and no stage setting is read for them
        return get_response(request)
    origin = origins.own_origin(request.context, request.headers, get_settings().stage)
    refusal = origins.cross_site_refusal(request.method, request.headers, origin)
    return _error_response(refusal) if refusal else get_response(request)


@app.route("/", methods=["GET"])
def dashboard_page() -> Response:
    page = dashboard.page()
    return Response(status_code=200, body=page.html, headers={**page.headers})


@app.route("/fast", methods=["GET"])
def fast() -> dict[str, str]:
    return {"message": "I'm fast"}


@app.route("/openapi.json", methods=["GET"])
def openapi_document() -> dict[str, object]:
    return openapi.document(get_settings(), AUTH)


@app.route("/kinds", methods=["GET"])
def list_kinds() -> dict[str, object]:
    return {"kinds": service.describe_kinds(get_settings())}


@app.route(
    "/heavy",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def submit_heavy() -> Response:
    request = _current_request()

    def parse(settings: Settings) -> JobRequest:
        return parse_heavy_request(request.raw_body, request.headers, settings)

    def accepted(job: Job, status_url: str) -> dict[str, Any]:
        return {
            "job_id": job.job_id,
            "status": job.status.value,
            "n": job.n,
            "status_url": status_url,
        }

    return _submit(parse, accepted)


@app.route(
    "/jobs",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def submit_job() -> Response:
    request = _current_request()
    return _submit(
        lambda settings: parse_job_request(request.raw_body, settings),
        lambda job, status_url: job.to_api(),
    )


@app.route(
    "/jobs/batch",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def submit_jobs_batch() -> Response:
    """1 to 100 jobs in one request (docs/batch.md): 207 with each item's job or error,
    in order; a body that is not a batch at all is one error, nothing made."""
    request = _current_request()
    settings = get_settings()
    try:
        caller = _caller()
        items = parse_batch_request(request.raw_body, settings)
        results = service.submit_batch(
            items,
            connections.job_table(),
            connections.job_queue(),
            settings.retention,
            client=caller.client,
            settings=settings,
            delay_queue=connections.delay_queue(),
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=207, body={"results": [_batch_result(r) for r in results]})


def _batch_result(result: service.BatchResult) -> dict[str, Any]:
    """One item's answer: its job with the status POST /jobs would have answered (200 for
    a replay of a finished job, else 202), or its error in the API's error shape."""
    if result.error is not None:
        status, code, message = _error_fields(result.error)
        return {"status": status, "error": {"code": code, "message": message}}
    assert result.job is not None, "a result without an error has its job"
    return {"status": 200 if result.job.status.is_final else 202, "job": result.job.to_api()}


def _submit(
    parse: Callable[[Settings], JobRequest], accepted: Callable[[Job, str], dict[str, Any]]
) -> Response:
    """POST /heavy and POST /jobs: parse, submit (Idempotency-Key), honour Prefer, and
    answer 202 with ``accepted``'s body (or 200 with the job once it is finished)."""
    request = _current_request()
    settings = get_settings()
    prefer = parse_prefer(request.headers.get("prefer"), service.MAX_WAIT_SECONDS)
    try:
        caller = _caller()
        job_request = parse(settings)
        submission = service.submit_job(
            job_request.kind,
            job_request.input,
            connections.job_table(),
            connections.job_queue(),
            settings.retention,
            _idempotency_key(request, caller),
            client=caller.client,
            settings=settings,
            run_at=job_request.run_at,
            delay_queue=connections.delay_queue(),
        )
        job = submission.job
        waited = bool(prefer.wait) and not prefer.respond_async
        if waited and prefer.wait:
            job = service.wait_for_job(
                job.job_id, connections.job_table(), prefer.wait, caller=caller
            )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    status_url = _external_url(f"/jobs/{job.job_id}")
    headers: dict[str, str | list[str]] = {}
    if submission.replayed:  # on every answer that returns an earlier job, 200 included
        headers["Idempotent-Replayed"] = "true"
    if job.status.is_final:  # finished: in time for Prefer: wait=N, or a replay of a done job
        headers["Content-Location"] = status_url
        if waited:
            headers["Preference-Applied"] = f"wait={prefer.wait}"
        return Response(status_code=200, body=job.to_api(), headers=headers)
    headers.update(_accepted_headers(job, status_url, settings))
    return Response(status_code=202, body=accepted(job, status_url), headers=headers)


def _accepted_headers(job: Job, status_url: str, settings: Settings) -> dict[str, str]:
    retry_after = service.retry_after_seconds(job, settings)
    return {"Location": status_url, "Retry-After": str(retry_after)}


@app.route("/jobs", methods=["GET"], **GUARDED)
def list_jobs() -> Response:
    try:
        page = service.list_jobs(_query_params(), connections.job_table(), caller=_caller())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(
        status_code=200,
        body={
            "jobs": [job.to_api() for job in page.jobs],
            "next": page.next_cursor,
            "paused": page.paused,
        },
    )


@app.route("/jobs/{job_id}", methods=["GET"], **GUARDED)
def get_job(job_id: str) -> Response:
    try:
        caller = _caller()
        wait = service.wait_param(_query_params(), service.MAX_WAIT_SECONDS)
        job: Job = (
            service.wait_for_job(job_id, connections.job_table(), wait, caller=caller)
            if wait
            else service.get_job(job_id, connections.job_table(), caller=caller)
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body=job.to_api())


@app.route(
    "/jobs/{job_id}/cancel",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def cancel_job(job_id: str) -> Response:
    try:
        job = service.cancel_job(job_id, connections.job_table(), caller=_caller())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body=job.to_api())


@app.route(
    "/jobs/{job_id}/retry",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def retry_job(job_id: str) -> Response:
    settings = get_settings()
    try:
        job = service.retry_job(
            job_id,
            connections.job_table(),
            connections.job_queue(),
            settings.retention,
            caller=_caller(),
            settings=settings,
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    status_url = _external_url(f"/jobs/{job.job_id}")
    headers = _accepted_headers(job, status_url, settings)
    return Response(status_code=202, body=job.to_api(), headers={**headers})


@app.route(
    "/schedules",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def create_schedule() -> Response:
    from chalicelib import schedule_service  # here: no cold start pays for it (figure 6)

    try:
        schedule, created = schedule_service.create(
            _current_request().raw_body,
            _caller(),
            connections.schedule_table(),
            connections.scheduler(),
            get_settings(),
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    location = _external_url(f"/schedules/{schedule.name}")
    return Response(
        status_code=201 if created else 200,
        body=schedule.to_api(utc_now()),
        headers={"Location": location},
    )


@app.route("/schedules", methods=["GET"], **GUARDED)
def list_schedules() -> Response:
    from chalicelib import schedule_service  # here: no cold start pays for it (figure 6)

    try:
        schedules = schedule_service.listing(
            _caller(), _query_params(), connections.schedule_table()
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    now = utc_now()
    return Response(status_code=200, body={"schedules": [s.to_api(now) for s in schedules]})


@app.route("/schedules/{name}", methods=["GET", "DELETE"], **GUARDED)
def schedule(name: str) -> Response:
    from chalicelib import schedule_service  # here: no cold start pays for it (figure 6)

    request = _current_request()
    try:
        client = schedule_service.owner(_caller(), _query_params())
        if request.method == "DELETE":
            schedule_service.delete(
                name, client, connections.schedule_table(), connections.scheduler()
            )
            return Response(status_code=204, body="")
        found = schedule_service.get(name, client, connections.schedule_table())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body=found.to_api(utc_now()))


@app.route(
    "/schedules/{name}/pause",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def pause_schedule(name: str) -> Response:
    return _set_schedule_state(name, PAUSED)


@app.route(
    "/schedules/{name}/resume",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def resume_schedule(name: str) -> Response:
    return _set_schedule_state(name, ENABLED)


def _set_schedule_state(name: str, state: str) -> Response:
    from chalicelib import schedule_service  # here: no cold start pays for it (figure 6)

    try:
        client = schedule_service.owner(_caller(), _query_params())
        schedule = schedule_service.set_state(
            name, client, state, connections.schedule_table(), connections.scheduler()
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body=schedule.to_api(utc_now()))


# --- webhook endpoints (chalicelib/webhooks/service.py) ---------------------------------


@app.route(
    "/webhooks",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def create_webhook() -> Response:
    try:
        endpoint = webhook_service.create(
            _current_request().raw_body,
            _caller(),
            connections.webhook_table(),
            get_settings().stage,
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(
        status_code=201,
        body=webhook_service.with_secret(endpoint),
        headers={"Location": _external_url(f"/webhooks/{endpoint.endpoint_id}")},
    )


@app.route("/webhooks", methods=["GET"], **GUARDED)
def list_webhooks() -> Response:
    try:
        endpoints = webhook_service.listing(_caller(), _query_params(), connections.webhook_table())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body={"webhooks": [e.to_api() for e in endpoints]})


@app.route("/webhooks/{webhook_id}", methods=["GET", "DELETE"], **GUARDED)
def webhook(webhook_id: str) -> Response:
    try:
        if _current_request().method == "DELETE":
            webhook_service.delete(webhook_id, _caller(), connections.webhook_table())
            return Response(status_code=204, body="")
        found = webhook_service.get(webhook_id, _caller(), connections.webhook_table())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body=found.to_api())


@app.route(
    "/webhooks/{webhook_id}/rotate",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    **GUARDED,
)
def rotate_webhook(webhook_id: str) -> Response:
    try:
        endpoint = webhook_service.rotate(webhook_id, _caller(), connections.webhook_table())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body=webhook_service.with_secret(endpoint))


@app.route("/webhooks/{webhook_id}/deliveries", methods=["GET"], **GUARDED)
def webhook_deliveries(webhook_id: str) -> Response:
    try:
        attempts = webhook_service.deliveries(webhook_id, _caller(), connections.webhook_table())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body={"deliveries": [a.to_api() for a in attempts]})


@app.lambda_function()
def fire_schedule(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Submit the job of one fire of a schedule; EventBridge Scheduler invokes it with the
    target's Input (chalicelib.scheduler). Each fire time submits one job, however often
    it is delivered (chalicelib.schedule_service.fire). An AWS failure raises: EventBridge
    Scheduler retries the fire within the target's retry policy, then sends it to the
    schedules' dead-letter queue. It costs the jobs behind it nothing: no job of the
    fire is queued until it succeeds."""
    from chalicelib import schedule_service  # here: no cold start pays for it (figure 6)

    job = schedule_service.fire(
        event,
        connections.schedule_table(),
        connections.job_table(),
        connections.job_queue(),
        get_settings(),
    )
    return {"job_id": None if job is None else job.job_id}


@app.on_sqs_message(queue=queue_name_at_import(), batch_size=1)
def process_job(event: Any) -> None:
    """Run the job each record names. Poison and duplicate records are acknowledged.

    What a failure costs the jobs behind it (one message group: they wait for this one):
    any failure before the run (the claim, a lookup) raises after shortening the message's
    visibility to the claim backoff (2^receive count seconds, at most
    JOBS_CLAIM_BACKOFF_CAP_SECONDS), so it comes back in seconds, in order; a job record
    that cannot be read is failed on its third delivery (the lane waits about 6 s); a run
    that fails mid-way on AWS raises and its message comes back after its hold (twice the
    lease: 60 s); a run that goes silent is ended by the run watchdog after its lease.
    Only what the code cannot see (an init error, a crashed sandbox) leaves the message
    hidden for the queue's visibility timeout, the worker's timeout. The whole table:
    docs/reliability.md, "What each failure costs the jobs behind it".

    If an AWS call fails for one record, the others are still processed, then the
    invocation raises so SQS delivers the batch again (records already done are
    recognised as duplicates). Raising, rather than returning batchItemFailures, is
    right whether or not the event source mapping has ReportBatchItemFailures enabled.
    """
    worker = connections.worker()
    # Lambda's context says how long this invocation has left (None: no context, e.g. tests).
    remaining_ms = getattr(event.context, "get_remaining_time_in_millis", None)
    _each_record(
        event,
        lambda record: worker.process_message(
            record.body, Delivery.from_record(record.to_dict()), remaining_ms
        ),
    )


# forward_delayed and process_dead_letters take one record per invocation, so each record
# is settled on its own: Chalice cannot enable ReportBatchItemFailures on a mapping, and
# without it an invocation that raises returns its whole batch to the queue. A batch comes
# back after the queue's visibility timeout, past FIFO's 5-minute deduplication window, so
# records of it already forwarded or re-driven would be sent again.


@app.on_sqs_message(queue=delay_queue_name_at_import(), batch_size=1)
def forward_delayed(event: Any) -> None:
    """Put a retry whose backoff ended at the tail of the job queue.

    One record per invocation: a forward that fails (SQS unavailable) raises, and only
    that record comes back, after the delay queue's visibility timeout; no other retry
    is sent twice or held back by it. The job queue's lane is not held meanwhile: the
    retry is not on it yet (and the recovery sweep sends a lost one again).
    """
    worker = connections.worker()
    _each_record(event, lambda record: worker.forward(record.body, record.to_dict()["messageId"]))


@app.on_sqs_message(queue=dead_letter_queue_name_at_import(), batch_size=1)
def process_dead_letters(event: Any) -> None:
    """Handle a message SQS dead-lettered: send again a job that never started, fail any
    other (one whose record cannot be read too, without reading it), so none stays
    unfinished.

    One record per invocation: a dead letter that fails (AWS unavailable) raises and only
    it comes back, after the dead-letter queue's visibility timeout; no other dead letter
    is re-driven twice (which would count towards its re-drive cap) or held back by it.
    """
    worker = connections.worker()
    _each_record(
        event,
        lambda record: worker.process_dead_letter(
            record.body, int(record.to_dict()["attributes"]["ApproximateReceiveCount"])
        ),
    )


# --- job events (chalicelib/events.py, docs/events.md) -------------------------------------


@app.on_dynamodb_record(
    stream_arn=table_stream_arn_at_import(),
    batch_size=STREAM_BATCH_SIZE,
    starting_position=STREAM_STARTING_POSITION,
)
def publish_job_events(event: Any) -> dict[str, list[dict[str, str]]]:
    """Publish one event per change of a job's status, read from the job table's stream,
    to the stage's bus; answer the first record that could not be published as the batch
    item failure (ReportBatchItemFailures), so Lambda retries from it.

    What a failure costs: the records of the same shard from the failed one on wait for
    the retries (bisected, at most chalicelib.events.STREAM_MAX_RETRY_ATTEMPTS, then the
    on-failure queue); no job waits, since nothing in a job's run reads the stream. An
    unreachable bus, or an unreadable record first in the batch, raises: the batch is
    bisected and retried (down to that record alone, which alone is given up), and
    events already put are put again (the same ids)."""
    failed = publish_records(event.to_dict()["Records"], connections.event_bus())
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in failed]}


# How often lost messages are looked for: a job whose message was lost is sent again
# within about JOBS_LOST_AFTER_SECONDS plus this period.
RECOVERY_PERIOD = Rate(1, unit=Rate.MINUTES)


@app.on_sqs_message(queue=webhook_queue_name_at_import(), batch_size=1)
def deliver_webhooks(event: Any) -> None:
    """Each record: a job event to fan out to its client's endpoints, or one endpoint's
    delivery attempt (chalicelib.webhooks.delivery). Its own reserved concurrency: a slow
    endpoint holds this function's invocations, never the worker's or the API's."""
    from chalicelib.webhooks import delivery  # only this function delivers

    settings = get_settings()
    _each_record(
        event,
        lambda record: delivery.handle_message(
            json.loads(record.body),
            connections.webhook_table(),
            connections.webhook_queue(),
            settings.stage,
        ),
    )


@app.schedule(RECOVERY_PERIOD)
def recover_stalled_jobs(event: Any) -> None:
    """Release the jobs that run later whose time is within a few minutes
    (Worker.release_due: to the delay queue, delayed to their time), then send again the
    message of every job that lost it (Worker.recover_stalled), even when the release
    failed. An AWS failure raises; the next run, a period later, reads the same jobs
    again, so a job whose message an SQS outage lost is sent within about
    JOBS_LOST_AFTER_SECONDS plus RECOVERY_PERIOD of the outage's end."""
    worker = connections.worker()
    try:
        worker.release_due()
    finally:
        worker.recover_stalled()


def _each_record(event: Any, handle: Callable[[SQSRecord], object]) -> None:
    failures = []
    for record in event:
        # Whatever this record's handling sends stays on the trace the message came with.
        try:
            with continue_trace(received_trace_header(record.to_dict())):
                handle(record)
        except StoreUnavailable as error:
            failures.append(error)
    if failures:
        raise failures[0]


def _caller() -> Caller:
    """Who calls: on a keyed stage, the client the request's API key names (UnknownKey
    for a key of no client of this stage); on an IAM stage, the IAM principal that signed
    the request (UnknownPrincipal without one); on a stage without either, the anonymous
    caller. API Gateway has checked the key or the signature before the request reaches
    the function, and names the key's id or the principal in the request's identity.

    The principal is ``requestContext.identity.userArn``, "the Amazon Resource Name (ARN)
    of the effective user identified after authentication" (API Gateway Developer Guide,
    "Variables for data transformations for API Gateway": ``$context.identity.userArn``):
    ``arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`` for a role's session,
    ``arn:aws:iam::ACCT:user/NAME`` for a user. ``identity.caller`` (same page: "the
    principal identifier of the caller that signed the request") is an id such as
    ``AROA…:SESSION``, not a name, so it is not used. ``requestContext.accountId`` is the
    API owner's account: a principal of another account is refused."""
    if AUTH is Auth.NONE:
        return ANONYMOUS_CALLER
    context = _current_request().context
    identity = context.get("identity") or {}
    if AUTH is Auth.IAM:
        return service.caller_of_principal(
            identity.get("userArn"), context.get("accountId"), get_settings().operator_principal
        )
    key_id = identity.get("apiKeyId")
    name = connections.api_keys().name_of(key_id) if key_id else None
    return service.caller_of_key(app.app_name, get_settings().stage, name)


def _idempotency_key(request: Request, caller: Caller) -> service.IdempotencyKey | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    # Scoped to the caller's client, so clients cannot collide, and a client's rotated
    # key still finds the keys its old one used.
    return service.IdempotencyKey(key=key, scope=caller.client)


def _error_fields(error: RequestError | StoreUnavailable) -> tuple[int, str, str]:
    """An error's HTTP status, code and message."""
    if isinstance(error, StoreUnavailable):
        return 503, "unavailable", "The job store is unavailable; retry."
    return error.status_code, error.code, error.message


def _error_response(error: RequestError | StoreUnavailable) -> Response:
    if isinstance(error, StoreUnavailable):
        logger.exception("AWS call failed")
    status, code, message = _error_fields(error)
    headers: dict[str, str | list[str]] = {}
    if isinstance(error, QuotaExceeded):  # when the client's oldest work makes room
        headers["Retry-After"] = str(error.retry_after)
    return Response(
        status_code=status,
        body={"error": {"code": code, "message": message}},
        headers=headers,
    )


def _external_url(path: str) -> str:
    """The URL of ``path`` on this stage: API Gateway's domain name (the local API's
    host:port) and the stage's prefix, never a request header (a client could put any
    host or scheme there). Without a domain name in the context (Chalice's test client)
    the link is the path alone.

    Behind API Gateway the request's path includes the stage (``/dev/heavy``) while the
    route is ``/heavy``; the difference is the prefix every link needs. Under
    ``chalice local`` the prefix is empty.
    """
    request = _current_request()
    full_path = request.context.get("path", request.path)
    prefix = full_path[: -len(request.path)] if full_path.endswith(request.path) else ""
    origin = origins.own_origin(request.context, {}, get_settings().stage)
    return f"{origin or ''}{prefix.rstrip('/')}{path}"


def _query_params() -> dict[str, str]:
    params = _current_request().query_params
    return {name: params.getlist(name)[-1] for name in params} if params else {}


def _current_request() -> Request:
    request = app.current_request
    assert request is not None, "only called while handling a request"
    return request
