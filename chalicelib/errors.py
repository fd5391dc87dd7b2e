"""Exceptions raised by the job service.

::

    JobsError                    base of everything raised on purpose here
    ├── SettingsError            a required setting is missing or malformed
    ├── RequestError             a client sent something we refuse (-> HTTP 4xx)
    │   ├── InvalidRequest       400: malformed body, bad n, unknown field, bad job id
    │   ├── PayloadTooLarge      413: body over the size limit
    │   ├── LengthRequired       411: chunked body that arrived empty
    │   ├── JobNotFound          404: no such job
    │   ├── JobFinished          409: cancelling a job that already ended
    │   ├── JobNotRetryable      409: retrying a job that did not fail or get cancelled
    │   ├── IdempotencyConflict  409: an Idempotency-Key reused for another request
    │   ├── UnknownKey           403: an API key whose name names no client of this stage
    │   ├── UnknownPrincipal     403: no IAM principal, or one that cannot be a client
    │   └── QuotaExceeded        429: the client's queued and running work is at its quota
    ├── PoisonMessage            a queue message that can never be processed
    ├── NoTimeLeft               a run's invocation ran out of time before handing it on
    └── StoreUnavailable         DynamoDB/SQS failed in a way worth retrying
        └── StoreRefused         SQS answered and refused the request (not worth repeating)

Only app.py turns these into HTTP responses; adapters turn botocore errors into them.
"""

from __future__ import annotations


class JobsError(Exception):
    """Base class for the service's own errors."""


class SettingsError(JobsError):
    """A required setting is missing or has a value we cannot use."""


class RequestError(JobsError):
    """A request the service refuses; carries a machine code and an HTTP status."""

    status_code = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidRequest(RequestError):
    status_code = 400


class PayloadTooLarge(RequestError):
    status_code = 413


class LengthRequired(RequestError):
    status_code = 411


class JobNotFound(RequestError):
    status_code = 404

    def __init__(self, job_id: str) -> None:
        super().__init__("job_not_found", f"No job with id {job_id!r}.")


class JobFinished(RequestError):
    status_code = 409


class JobNotRetryable(RequestError):
    status_code = 409


class IdempotencyConflict(RequestError):
    status_code = 409


class UnknownKey(RequestError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__("unknown_key", "This API key belongs to no client of this stage.")


class UnknownPrincipal(RequestError):
    """On an IAM stage: the request names no IAM principal API Gateway authenticated, or
    one that cannot be a client (another account's, a reserved name)."""

    status_code = 403

    def __init__(self) -> None:
        super().__init__(
            "unknown_principal", "This request is signed by no IAM principal of this stage."
        )


class QuotaExceeded(RequestError):
    """The client's queued and running jobs are at its quota; ``retry_after`` (whole
    seconds) estimates when its oldest work will have made room."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__("quota_exceeded", message)
        self.retry_after = retry_after


class PoisonMessage(JobsError):
    """A queue message that no retry can fix (not JSON, no job id, unknown job)."""


class NoTimeLeft(JobsError):
    """Too little of the invocation is left for the next call of the out-of-time path:
    the invocation ends (raises) before Lambda stops it inside the call, and the run's
    message comes back after its hold."""


class StoreUnavailable(JobsError):
    """An AWS call failed for a reason that may pass; the message should be retried."""


class StoreRefused(StoreUnavailable):
    """SQS answered and refused the request for a reason of the request itself (a receipt
    handle it does not know, access denied): the same request would be refused again.
    Still a StoreUnavailable, for the callers that treat every AWS failure alike; a caller
    that repeats a call while SQS is unreachable stops at this one."""
