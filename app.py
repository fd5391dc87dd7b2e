"""Routes and the SQS handler. Each parses its input, calls one chalicelib function and
shapes the answer; domain errors become HTTP errors here and nowhere else."""

from __future__ import annotations

import logging
from typing import Any

from chalice.app import Chalice, Request, Response

from chalicelib import connections, service, worker
from chalicelib.config import api_key_required_at_import, get_settings, queue_name_at_import
from chalicelib.errors import RequestError, StoreUnavailable
from chalicelib.requests import parse_submission

app = Chalice(app_name="heavy-jobs")
# Chalice owns the logger named after the app; ours is "chalicelib".
logging.getLogger("chalicelib").setLevel(logging.INFO)

# curl -d sends form content by default; the body is parsed as JSON whatever the type.
SUBMIT_CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]


@app.route("/fast", methods=["GET"])
def fast() -> dict[str, str]:
    return {"message": "I'm fast"}


@app.route(
    "/heavy",
    methods=["POST"],
    content_types=SUBMIT_CONTENT_TYPES,
    api_key_required=api_key_required_at_import(),
)
def submit_heavy() -> Response:
    request = _current_request()
    settings = get_settings()
    try:
        n = parse_submission(request.raw_body, request.headers, settings)
        job = service.submit_job(
            n, connections.job_table(), connections.job_queue(), settings.retention
        )
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    status_url = _external_url(f"/jobs/{job.job_id}")
    return Response(
        status_code=202,
        body={
            "job_id": job.job_id,
            "status": job.status.value,
            "n": job.n,
            "status_url": status_url,
        },
        headers={
            "Location": status_url,
            "Retry-After": str(service.retry_after_seconds(n, settings.loop_rate_per_second)),
        },
    )


@app.route("/jobs/{job_id}", methods=["GET"])
def get_job(job_id: str) -> Response:
    try:
        job = service.get_job(job_id, connections.job_table())
    except (RequestError, StoreUnavailable) as error:
        return _error_response(error)
    return Response(status_code=200, body=job.to_api())


@app.on_sqs_message(queue=queue_name_at_import(), batch_size=1)
def process_job(event: Any) -> None:
    """Run the job each record names. Poison and duplicate records are acknowledged.

    If an AWS call fails for one record, the others are still processed, then the
    invocation raises so SQS delivers the batch again (records already done are
    recognised as duplicates). Raising, rather than returning batchItemFailures, is
    right whether or not the event source mapping has ReportBatchItemFailures enabled.
    """
    settings = get_settings()
    failures = []
    for record in event:
        try:
            worker.process_message(
                record.body, connections.job_table(), settings.progress_interval_seconds
            )
        except StoreUnavailable as error:
            failures.append(error)
    if failures:
        raise failures[0]


def _error_response(error: RequestError | StoreUnavailable) -> Response:
    if isinstance(error, StoreUnavailable):
        logging.getLogger("chalicelib").exception("AWS call failed")
        code, message, status = "unavailable", "The job store is unavailable; retry.", 503
    else:
        code, message, status = error.code, error.message, error.status_code
    return Response(status_code=status, body={"error": {"code": code, "message": message}})


def _external_url(path: str) -> str:
    """An absolute URL for ``path`` as the client reached this API.

    Behind API Gateway the request's path includes the stage (``/dev/heavy``) while the
    route is ``/heavy``; the difference is the prefix every link needs. Under
    ``chalice local`` the prefix is empty.
    """
    request = _current_request()
    full_path = request.context.get("path", request.path)
    prefix = full_path[: -len(request.path)] if full_path.endswith(request.path) else ""
    scheme = request.headers.get("x-forwarded-proto", "http")
    host = request.headers.get("host", "localhost")
    return f"{scheme}://{host}{prefix.rstrip('/')}{path}"


def _current_request() -> Request:
    request = app.current_request
    assert request is not None, "only called while handling a request"
    return request
