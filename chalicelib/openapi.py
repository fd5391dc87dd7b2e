"""The OpenAPI 3 document of the HTTP API, served at ``GET /openapi.json``.

Built from the code's own sources (statuses, limits, the stage's cap on n, each kind's
declaration) so it cannot drift from them; a test checks that its paths are exactly the
app's routes and that its Job schema is exactly ``Job.to_api``'s fields.
"""

from __future__ import annotations

from typing import Any

from chalicelib.clients import RECORDED_CLIENT
from chalicelib.config import Auth, Settings
from chalicelib.events import EVENT_TYPES as WEBHOOK_EVENT_TYPES
from chalicelib.jobs import DEFAULT_KIND, JobStatus
from chalicelib.kinds import KINDS
from chalicelib.origins import SAFE_METHODS
from chalicelib.requests import MAX_BATCH_BODY_BYTES, MAX_BATCH_JOBS, MAX_BODY_BYTES
from chalicelib.schedules import (
    DEFAULT_TIMEZONE,
    MAX_EXPRESSION_LENGTH,
    MAX_TIMEZONE_LENGTH,
    SCHEDULE_NAME,
    STATES,
)
from chalicelib.service import MAX_IDEMPOTENCY_KEY_LENGTH, MAX_PAGE_SIZE, MAX_WAIT_SECONDS
from chalicelib.webhooks.endpoints import DEFAULT_EVENTS, ENDPOINT_ID, MAX_URL_LENGTH, SECRET_PREFIX


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_TIMESTAMP = {"type": "string", "format": "date-time", "nullable": True}
# Job ids are canonical lowercase uuid4s (chalicelib.jobs.is_job_id); anything else is 400.
_UUID4 = {
    "type": "string",
    "format": "uuid",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": _UUID4}


# The operations the stage's authentication guards (app.py's ``**GUARDED`` routes): every
# one that touches jobs, behind an API key on a keyed stage, an IAM signature on an IAM
# stage. The key or the principal names the client; a client sees its own jobs only.
KEYED_OPERATIONS = (
    ("/heavy", "post"),
    ("/jobs", "get"),
    ("/jobs", "post"),
    ("/jobs/batch", "post"),
    ("/jobs/{job_id}", "get"),
    ("/jobs/{job_id}/cancel", "post"),
    ("/jobs/{job_id}/retry", "post"),
    ("/schedules", "get"),
    ("/schedules", "post"),
    ("/schedules/{name}", "get"),
    ("/schedules/{name}", "delete"),
    ("/schedules/{name}/pause", "post"),
    ("/schedules/{name}/resume", "post"),
    ("/webhooks", "get"),
    ("/webhooks", "post"),
    ("/webhooks/{webhook_id}", "get"),
    ("/webhooks/{webhook_id}", "delete"),
    ("/webhooks/{webhook_id}/rotate", "post"),
    ("/webhooks/{webhook_id}/deliveries", "get"),
)
_NOT_FOUND = "No such job, or another client's (the same answer), or it expired."
_QUOTA = (
    "quota_exceeded: the client's queued and running jobs are at its quota (a number of "
    "jobs, and seconds of estimated work); nothing was created. Retry-After: when its "
    "oldest work should have made room."
)


# The security scheme of an IAM stage, as API Gateway's OpenAPI extensions declare SigV4
# (API Gateway Developer Guide, "x-amazon-apigateway-authtype property"), and as Chalice's
# IAMAuthorizer declares it in the definition it deploys. A client (the dashboard, the
# `jobs` command) learns from it that the stage wants signed requests.
SIGV4_SCHEME = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "x-amazon-apigateway-authtype": "awsSigv4",
}
_SCHEMES: dict[Auth, tuple[str, dict[str, str], str]] = {
    Auth.API_KEY: (
        "api_key",
        {"type": "apiKey", "name": "x-api-key", "in": "header"},
        "No valid x-api-key header (API Gateway's own answer, {message}), or "
        "unknown_key: a key that names no client of this stage.",
    ),
    Auth.IAM: (
        "sigv4",
        SIGV4_SCHEME,
        "No valid SigV4 signature of an IAM principal allowed execute-api:Invoke (API "
        "Gateway's own answer, {message}), or unknown_principal: no principal of this "
        "stage's account.",
    ),
}


def document(settings: Settings, auth: Auth = Auth.NONE) -> dict[str, Any]:
    """The whole document, for the stage whose settings and authentication are given."""
    doc = _document(settings)
    if auth in _SCHEMES:
        name, scheme, refused = _SCHEMES[auth]
        doc["components"]["securitySchemes"] = {name: scheme}
        for path, method in KEYED_OPERATIONS:
            operation = doc["paths"][path][method]
            operation["security"] = [{name: []}]
            operation["responses"]["403"] = _json(
                {"oneOf": [_ref("Error"), _GATEWAY_REFUSAL]}, refused
            )
            if auth is Auth.API_KEY:
                _declare_usage_plan_refusal(operation)
    _declare_cross_site_refusals(doc)
    return doc


def _declare_usage_plan_refusal(operation: dict[str, Any]) -> None:
    """429 over the key's usage plan, besides any quota_exceeded the operation declares."""
    rate = "Over the usage plan's rate (API Gateway's own answer, {message})."
    quota = operation["responses"].get("429")
    operation["responses"]["429"] = (
        _json(_GATEWAY_REFUSAL, rate)
        if quota is None
        else {
            **_json({"oneOf": [_ref("Error"), _GATEWAY_REFUSAL]}, rate),
            "description": f"{rate} Or {quota['description']}",
            "headers": quota["headers"],
        }
    )


# What API Gateway itself answers when it refuses a request (no valid key, throttled).
_GATEWAY_REFUSAL = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string"}},
}


def _quota_exceeded() -> dict[str, Any]:
    return {
        **_error(_QUOTA),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    }


CROSS_SITE_REFUSAL = (
    "Sent by a page of another site (cross_site_request): Sec-Fetch-Site other than "
    "same-origin or none, or an Origin other than the API's own."
)


def _declare_cross_site_refusals(doc: dict[str, Any]) -> None:
    """403 cross_site_request on every state-changing operation (chalicelib.origins); where
    a 403 is declared already (an API key's), both are named."""
    for item in doc["paths"].values():
        for method, operation in item.items():
            if method.upper() in SAFE_METHODS:
                continue
            responses = operation["responses"]
            if "403" in responses:
                both = f"{responses['403']['description']} Or: {CROSS_SITE_REFUSAL}"
                responses["403"] = {**responses["403"], "description": both}
            else:
                responses["403"] = _error(CROSS_SITE_REFUSAL)


def _document(settings: Settings) -> dict[str, Any]:
    job_found = _json(_ref("Job"), "The job.")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "heavy-jobs",
            "version": "1.0.0",
            "description": (
                "Queue CPU-heavy jobs and poll them, while cheap requests stay fast. "
                "Errors are JSON {error: {code, message}}."
            ),
        },
        "paths": {
            "/": {
                "get": {
                    "summary": "The dashboard: a web page that submits, follows and cancels jobs",
                    "responses": {
                        "200": {
                            "description": "The page (HTML, with its CSS and JavaScript inline).",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/fast": {
                "get": {
                    "summary": "Answer at once, with no AWS call",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["message"],
                                "properties": {"message": {"type": "string"}},
                            },
                            "Always.",
                        )
                    },
                }
            },
            "/heavy": {"post": _submit(settings)},
            "/kinds": {
                "get": {
                    "summary": "The job kinds: each one's input and result schemas",
                    "responses": {"200": _json(_ref("KindList"), "Every kind, by name.")},
                }
            },
            "/jobs": {
                "post": _submit_job(),
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        {
                            "name": "kind",
                            "in": "query",
                            "description": "Only jobs of this kind (else 400 unknown_kind).",
                            "schema": {"type": "string", "enum": sorted(KINDS)},
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": [s.value for s in JobStatus]},
                        },
                        {
                            "name": "client",
                            "in": "query",
                            "description": "Only this client's jobs. The operator (and "
                            "every caller of a stage without keys) may name any client; "
                            "another client only itself (else 400 invalid_client).",
                            "schema": {"type": "string", "pattern": f"^{RECORDED_CLIENT.pattern}$"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "description": "Opaque: the `next` of a previous page (else 400).",
                            # A cursor is a value returned as `next`, never empty: an empty
                            # one is outside the document, as the API's 400 says.
                            "schema": {"type": "string", "minLength": 1},
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("JobList"), "A page of jobs."),
                        "400": _error(
                            "A bad parameter, an unknown kind, a client the caller may not "
                            "list (invalid_client); invalid_cursor: a cursor that is not a "
                            "`next` this listing returned."
                        ),
                    },
                },
            },
            "/jobs/batch": {"post": _submit_batch()},
            "/jobs/{job_id}": {
                "get": {
                    "summary": "A job's state, optionally waiting for it to finish",
                    "parameters": [
                        _JOB_ID,
                        {
                            "name": "wait",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": MAX_WAIT_SECONDS,
                            },
                        },
                    ],
                    "responses": {
                        "200": job_found,
                        "400": _error("A malformed job id or parameter."),
                        "404": _error(_NOT_FOUND),
                    },
                }
            },
            "/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Cancel a queued or running job",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _json(_ref("Job"), "The job, now cancelled."),
                        "400": _error("A malformed job id."),
                        "404": _error(_NOT_FOUND),
                        "409": _error("The job already succeeded or failed."),
                        "415": {"description": "An unsupported Content-Type."},
                    },
                }
            },
            "/jobs/{job_id}/retry": {
                "post": {
                    "summary": "Run a failed or cancelled job again, as a new job",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "202": _accepted(_ref("Job"), "The new job (queued), with retry_of set."),
                        "400": _error("A malformed job id."),
                        "404": _error(_NOT_FOUND),
                        "409": _error("The job is queued, running or succeeded."),
                        "415": {"description": "An unsupported Content-Type."},
                        "429": _quota_exceeded(),
                        "503": _error("The job store is unavailable; retry."),
                    },
                }
            },
            **_schedule_paths(),
            **_webhook_paths(),
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
                }
            },
        },
        "components": {"schemas": _schemas(settings)},
    }


_SUBMIT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
            "pattern": "^[!-~]+$",
        },
    },
    {
        "name": "Prefer",
        "in": "header",
        "schema": {"type": "string"},
        "description": f"RFC 7240: respond-async, or wait=N (N <= {MAX_WAIT_SECONDS}).",
    },
]


def _accepted(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "Location": {"schema": {"type": "string"}},
            "Retry-After": {"schema": {"type": "integer"}},
        },
        "content": {"application/json": {"schema": schema}},
    }


def _timing(settings: Settings) -> dict[str, Any]:
    """When a job runs (docs/later.md): either field, in both POST bodies."""
    return {
        "run_at": {
            "type": "string",
            "format": "date-time",
            "description": "Start it then (RFC 3339 with Z or an offset), not before: at "
            "most the stage's retention ahead; a time past runs at once. Not with "
            "delay_seconds (400 invalid_run_at).",
        },
        "delay_seconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": int(settings.retention.total_seconds()),
            "description": "Start it this many seconds from now. Not with run_at.",
        },
    }


def _submit(settings: Settings) -> dict[str, Any]:
    heavy = _schema(KINDS[DEFAULT_KIND].input_schema(settings))
    return {
        "summary": "Queue a heavyLoad job counting to n",
        "parameters": _SUBMIT_PARAMETERS,
        "requestBody": {
            "required": False,
            "description": "Optional. No body, a body of only whitespace, and {} are the "
            f"same request: n defaults to {settings.default_n}.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {**heavy["properties"], **_timing(settings)},
                    }
                }
            },
        },
        "responses": {
            "202": _accepted(
                _ref("Accepted"), "Queued. Poll Location; Retry-After estimates the run time."
            ),
            "200": _json(_ref("Job"), "Prefer: wait=N, and the job finished in time."),
            "400": _error(
                "The body is not a JSON object with a valid n (and run_at or delay_seconds: "
                "invalid_run_at)."
            ),
            "409": _error("The Idempotency-Key was used for another request."),
            "411": _error("A chunked body arrived empty."),
            "413": _error(f"The body is over {MAX_BODY_BYTES} bytes."),
            "415": {"description": "An unsupported Content-Type."},
            "429": _quota_exceeded(),
            "503": _error("The job store is unavailable; retry."),
        },
    }


def _submit_job() -> dict[str, Any]:
    return {
        "summary": "Queue a job of any kind (GET /kinds lists them)",
        "parameters": _SUBMIT_PARAMETERS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("JobRequest")}},
        },
        "responses": {
            "202": _accepted(
                _ref("Job"), "Queued. Poll Location; Retry-After estimates the run time."
            ),
            "200": _json(_ref("Job"), "Prefer: wait=N, and the job finished in time."),
            "400": _error(
                "Not a JSON object with a known kind (unknown_kind) and a valid input "
                "(invalid_input, naming the field as a JSON pointer), or a bad run_at or "
                "delay_seconds (invalid_run_at)."
            ),
            "409": _error("The Idempotency-Key was used for another request."),
            "413": _error(f"The body is over {MAX_BODY_BYTES} bytes."),
            "415": {"description": "An unsupported Content-Type."},
            "429": _quota_exceeded(),
            "503": _error("The job store is unavailable; retry."),
        },
    }


def _submit_batch() -> dict[str, Any]:
    return {
        "summary": f"Queue 1 to {MAX_BATCH_JOBS} jobs at once, each answered on its own",
        "description": "Each item is validated and submitted as POST /jobs would one job "
        "(its idempotency_key as the Idempotency-Key header, the quota counted item by item "
        "in order); one item's error does not stop the others. The jobs start in the "
        "order given. docs/batch.md says more.",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("BatchRequest")}},
        },
        "responses": {
            "207": _json(
                _ref("BatchResults"),
                "One result per item, in order: its job, or its error (an invalid item's "
                "400 names it by JSON pointer, /jobs/3/input/n; 409 idempotency_key_reused; "
                "429 quota_exceeded; 503 when it could not be written or queued).",
            ),
            "400": _error(
                f"Not a JSON object whose jobs is an array of 1 to {MAX_BATCH_JOBS} items."
            ),
            "413": _error(f"The body is over {MAX_BATCH_BODY_BYTES} bytes."),
            "415": {"description": "An unsupported Content-Type."},
            "503": _error("The job store is unavailable (reading the quota); retry."),
        },
    }


def _batch_schemas(settings: Settings) -> dict[str, Any]:
    """POST /jobs/batch's body (each item a kind's POST /jobs body, plus when and an
    Idempotency-Key) and its answer."""
    extra = {**_timing(settings), "idempotency_key": _SUBMIT_PARAMETERS[0]["schema"]}
    requests = _kind_schemas(settings)
    item_names = {name: f"{_request_schema(name)}BatchItem" for name in sorted(KINDS)}
    schemas: dict[str, Any] = {
        item: {
            **requests[_request_schema(name)],
            "properties": {**requests[_request_schema(name)]["properties"], **extra},
        }
        for name, item in item_names.items()
    }
    schemas["BatchItem"] = {
        "oneOf": [_ref(item) for item in item_names.values()],
        "discriminator": {
            "propertyName": "kind",
            "mapping": {name: f"#/components/schemas/{item}" for name, item in item_names.items()},
        },
    }
    schemas["BatchRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs"],
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_JOBS,
                "items": _ref("BatchItem"),
            }
        },
    }
    schemas["BatchResults"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_JOBS,
                "items": {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["status", "job"],
                            "properties": {
                                "status": {"type": "integer", "enum": [200, 202]},
                                "job": _ref("Job"),
                            },
                        },
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["status", "error"],
                            "properties": {
                                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                                # The error object of the API's error shape.
                                "error": {"$ref": "#/components/schemas/Error/properties/error"},
                            },
                        },
                    ]
                },
            }
        },
    }
    return schemas


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema as OpenAPI 3.0 takes it: no empty ``required`` (it needs one name)."""
    if schema.get("required") == []:
        schema = {k: v for k, v in schema.items() if k != "required"}
    return schema


def _request_schema(name: str) -> str:
    return f"{name}Request"


def _kind_schemas(settings: Settings) -> dict[str, Any]:
    """POST /jobs's body: one schema per kind, discriminated by ``kind``."""
    schemas: dict[str, Any] = {}
    for name, kind in sorted(KINDS.items()):
        input_schema = kind.input_schema(settings)
        schemas[_request_schema(name)] = {
            "type": "object",
            "additionalProperties": False,
            # The input may be left out only when every field has a default.
            "required": ["kind", "input"] if input_schema["required"] else ["kind"],
            "description": kind.description,
            "properties": {
                "kind": {"type": "string", "enum": [name]},
                "input": _schema(input_schema),
                **_timing(settings),
            },
        }
    schemas["JobRequest"] = {
        "oneOf": [_ref(_request_schema(name)) for name in sorted(KINDS)],
        "discriminator": {
            "propertyName": "kind",
            "mapping": {
                name: f"#/components/schemas/{_request_schema(name)}" for name in sorted(KINDS)
            },
        },
    }
    return schemas


def _schemas(settings: Settings) -> dict[str, Any]:
    return {
        **_kind_schemas(settings),
        **_batch_schemas(settings),
        "Job": {
            "type": "object",
            "additionalProperties": False,
            "required": list(JOB_FIELDS),
            "properties": {**JOB_FIELDS, **OPTIONAL_JOB_FIELDS},
        },
        "KindList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kinds"],
            "properties": {"kinds": {"type": "array", "items": _ref("Kind")}},
        },
        "Kind": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "description", "input_schema", "result_schema"],
            "properties": {
                "kind": {"type": "string", "enum": sorted(KINDS)},
                "description": {"type": "string"},
                "input_schema": {"type": "object", "description": "A JSON Schema."},
                "result_schema": {"type": "object", "description": "A JSON Schema."},
            },
        },
        "JobList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["jobs", "next", "paused"],
            "properties": {
                "jobs": {"type": "array", "items": _ref("Job")},
                "next": {"type": "string", "nullable": True},
                "paused": {
                    "type": "boolean",
                    "description": "The worker is paused (`make pause`): queued jobs wait, "
                    "none is lost, until `make resume`.",
                },
            },
        },
        "Accepted": {
            "type": "object",
            "additionalProperties": False,
            "required": ["job_id", "status", "n", "status_url"],
            "properties": {
                "job_id": {"type": "string", "format": "uuid"},
                "status": {"type": "string", "enum": [s.value for s in JobStatus]},
                "n": {"type": "integer", "minimum": 0, "maximum": settings.max_n},
                "status_url": {"type": "string"},
            },
        },
        **_schedule_schemas(),
        **_webhook_schemas(),
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
    }


JOB_FIELDS: dict[str, Any] = {
    "job_id": {"type": "string", "format": "uuid"},
    "kind": {"type": "string"},
    "input": {"type": "object", "description": "The validated input, defaults filled in."},
    "status": {"type": "string", "enum": [s.value for s in JobStatus]},
    "n": {"type": "integer", "minimum": 0, "nullable": True, "description": "heavyLoad's n."},
    "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "result": {"nullable": True, "description": "The kind's result (GET /kinds: result_schema)."},
    "error": {"type": "string", "nullable": True},
    "attempts": {"type": "integer", "minimum": 0},
    "created_at": {"type": "string", "format": "date-time"},
    "started_at": _TIMESTAMP,
    "finished_at": _TIMESTAMP,
    "client": {
        "type": "string",
        "description": "Who submitted it: the client its API key names, operator for the "
        "stage's own key, anonymous on a stage without keys.",
    },
    "lane": {
        "type": "integer",
        "minimum": 0,
        "description": "The lane it runs in (docs/lanes.md): 0 on a stage with one lane.",
    },
    "run_at": {**_TIMESTAMP, "description": "When it may start (null: at once)."},
    "schedule": {
        "type": "string",
        "nullable": True,
        "description": "The name of the client's schedule whose fire made it (POST /schedules).",
    },
}
# Present only when set.
OPTIONAL_JOB_FIELDS: dict[str, Any] = {
    "retry_of": {"type": "string", "format": "uuid", "description": "The job this one retries."},
}


# --- recurring schedules (chalicelib/schedule_service.py) -----------------------------

_SCHEDULE_NAME = {"type": "string", "pattern": f"^{SCHEDULE_NAME.pattern}$"}
_SCHEDULE_NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": _SCHEDULE_NAME,
}
_CLIENT_PARAMETER = {
    "name": "client",
    "in": "query",
    "schema": {"type": "string", "pattern": f"^{RECORDED_CLIENT.pattern}$"},
    "description": "The operator's choice of client (ignored for any other caller).",
}
_SCHEDULE_NOT_FOUND = "No such schedule, or another client's (the same answer)."
_BAD_CLIENT = "A malformed ?client= (invalid_client)."


def _schedule_paths() -> dict[str, Any]:
    schedule = _json(_ref("Schedule"), "The schedule.")
    unavailable = _error("The job store or EventBridge Scheduler is unavailable; retry.")

    def state_change(summary: str) -> dict[str, Any]:
        return {
            "summary": summary,
            "parameters": [_SCHEDULE_NAME_PARAMETER, _CLIENT_PARAMETER],
            "responses": {
                "200": schedule,
                "400": _error(_BAD_CLIENT),
                "404": _error(_SCHEDULE_NOT_FOUND),
                "415": {"description": "An unsupported Content-Type."},
                "503": unavailable,
            },
        }

    return {
        "/schedules": {
            "get": {
                "summary": "List the caller's recurring schedules (the operator: everyone's)",
                "parameters": [_CLIENT_PARAMETER],
                "responses": {
                    "200": _json(_ref("ScheduleList"), "The schedules, by client and name."),
                    "400": _error("An unknown parameter, or a malformed client."),
                    "503": unavailable,
                },
            },
            "post": {
                "summary": "Create a recurring schedule: a job of a kind at each fire time",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ScheduleRequest")}},
                },
                "responses": {
                    "201": {**schedule, "headers": {"Location": {"schema": {"type": "string"}}}},
                    "200": {
                        **_json(_ref("Schedule"), "The same schedule was created already."),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "400": _error(
                        "A bad field: invalid_name, unknown_kind, invalid_input, "
                        "invalid_schedule (EventBridge Scheduler's rate or cron syntax, the "
                        "supported subset), invalid_timezone (an IANA name), unknown_field."
                    ),
                    "409": _error(
                        "schedule_exists: another definition has this name; "
                        "too_many_schedules: the client is at its cap."
                    ),
                    "413": _error(f"The body is over {MAX_BODY_BYTES} bytes."),
                    "415": {"description": "An unsupported Content-Type."},
                    "503": unavailable,
                },
            },
        },
        "/schedules/{name}": {
            "get": {
                "summary": "One schedule, with its next fire time",
                "parameters": [_SCHEDULE_NAME_PARAMETER, _CLIENT_PARAMETER],
                "responses": {
                    "200": schedule,
                    "400": _error(_BAD_CLIENT),
                    "404": _error(_SCHEDULE_NOT_FOUND),
                    "503": unavailable,
                },
            },
            "delete": {
                "summary": "Delete a schedule (its jobs stay)",
                "parameters": [_SCHEDULE_NAME_PARAMETER, _CLIENT_PARAMETER],
                "responses": {
                    "204": {"description": "Deleted."},
                    "400": _error(_BAD_CLIENT),
                    "404": _error(_SCHEDULE_NOT_FOUND),
                    "503": unavailable,
                },
            },
        },
        "/schedules/{name}/pause": {
            "post": state_change("Pause a schedule: it fires nothing until resumed")
        },
        "/schedules/{name}/resume": {
            "post": state_change("Resume a schedule; the fires missed while paused are skipped")
        },
    }


def _schedule_schemas() -> dict[str, Any]:
    expression = {
        "type": "string",
        "maxLength": MAX_EXPRESSION_LENGTH,
        "description": "EventBridge Scheduler's rate(value unit) or cron(minutes hours "
        "day-of-month month day-of-week year); L, W and # are not supported.",
        "example": "cron(0 2 * * ? *)",
    }
    timezone = {
        "type": "string",
        "maxLength": MAX_TIMEZONE_LENGTH,
        "description": "An IANA time zone name.",
        "default": DEFAULT_TIMEZONE,
    }
    kind = {"type": "string", "enum": sorted(KINDS)}
    return {
        "ScheduleRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "kind", "schedule"],
            "properties": {
                "name": _SCHEDULE_NAME,
                "kind": kind,
                "input": {"type": "object", "description": "The kind's input (GET /kinds)."},
                "schedule": expression,
                "timezone": timezone,
            },
        },
        "Schedule": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "name",
                "kind",
                "input",
                "schedule",
                "timezone",
                "state",
                "client",
                "created_at",
                "next_fire_at",
                "last_error",
            ],
            "properties": {
                "name": _SCHEDULE_NAME,
                "kind": {"type": "string"},
                "input": {"type": "object"},
                "schedule": {"type": "string"},
                "timezone": {"type": "string"},
                "state": {"type": "string", "enum": list(STATES)},
                "client": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "next_fire_at": {
                    **_TIMESTAMP,
                    "description": "When it fires next (null: paused, or never again).",
                },
                "last_error": {
                    "type": "string",
                    "nullable": True,
                    "description": "Why its last fire made no job (its client's quota).",
                },
            },
        },
        "ScheduleList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["schedules"],
            "properties": {"schedules": {"type": "array", "items": _ref("Schedule")}},
        },
    }


# --- webhook endpoints (chalicelib/webhooks/service.py) ---------------------------------

# An endpoint's id as the API makes them (``wh_`` and 32 hex digits). An id of another
# shape names nothing: 404, as any unknown id.
_WEBHOOK_ID = {
    "name": "webhook_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{ENDPOINT_ID.pattern}$"},
}
_WEBHOOK_NOT_FOUND = "webhook_not_found: no such endpoint, or another client's (the same answer)."


def _webhook_paths() -> dict[str, Any]:
    unavailable = _error("The job store is unavailable; retry.")
    not_found = _error(_WEBHOOK_NOT_FOUND)
    with_secret = _json(_ref("WebhookWithSecret"), "The endpoint and its new signing secret.")
    return {
        "/webhooks": {
            "get": {
                "summary": "List the caller's webhook endpoints (the operator: everyone's)",
                "parameters": [_CLIENT_PARAMETER],
                "responses": {
                    "200": _json(_ref("WebhookList"), "The endpoints, by client and age."),
                    "400": _error("An unknown parameter, or a malformed client."),
                    "503": unavailable,
                },
            },
            "post": {
                "summary": "Register a webhook endpoint; the answer holds its signing "
                "secret, which no other answer shows",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("WebhookRequest")}},
                },
                "responses": {
                    "201": {
                        **with_secret,
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "400": _error("A bad field: invalid_url, invalid_events, unknown_field."),
                    "409": _error("too_many_webhooks: the client is at its cap."),
                    "413": _error(f"The body is over {MAX_BODY_BYTES} bytes."),
                    "415": {"description": "An unsupported Content-Type."},
                    "503": unavailable,
                },
            },
        },
        "/webhooks/{webhook_id}": {
            "get": {
                "summary": "One webhook endpoint (without its secret)",
                "parameters": [_WEBHOOK_ID],
                "responses": {
                    "200": _json(_ref("Webhook"), "The endpoint."),
                    "404": not_found,
                    "503": unavailable,
                },
            },
            "delete": {
                "summary": "Delete a webhook endpoint: nothing more is delivered to it",
                "parameters": [_WEBHOOK_ID],
                "responses": {
                    "204": {"description": "Deleted."},
                    "404": not_found,
                    "503": unavailable,
                },
            },
        },
        "/webhooks/{webhook_id}/rotate": {
            "post": {
                "summary": "Give an endpoint a new signing secret; the previous one keeps "
                "signing beside it for 24 hours",
                "parameters": [_WEBHOOK_ID],
                "responses": {
                    "200": with_secret,
                    "404": not_found,
                    "415": {"description": "An unsupported Content-Type."},
                    "503": unavailable,
                },
            }
        },
        "/webhooks/{webhook_id}/deliveries": {
            "get": {
                "summary": "An endpoint's recent delivery attempts, newest first",
                "parameters": [_WEBHOOK_ID],
                "responses": {
                    "200": _json(_ref("WebhookDeliveries"), "The recent attempts."),
                    "404": not_found,
                    "503": unavailable,
                },
            }
        },
    }


def _webhook_schemas() -> dict[str, Any]:
    events = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)},
    }
    endpoint_properties: dict[str, Any] = {
        "id": {"type": "string", "pattern": f"^{ENDPOINT_ID.pattern}$"},
        "client": {"type": "string"},
        "url": {"type": "string"},
        "events": events,
        "created_at": {"type": "string", "format": "date-time"},
        "rotated_at": {**_TIMESTAMP, "description": "The last rotation (null: never)."},
        "previous_secret_expires_at": {
            **_TIMESTAMP,
            "description": "Until when the secret before the last rotation still signs.",
        },
    }
    return {
        "WebhookRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "url": {
                    "type": "string",
                    "maxLength": MAX_URL_LENGTH,
                    "description": "Where events are POSTed: https (http too on the local "
                    "stage), to a public address.",
                    "example": "https://example.com/hooks/jobs",
                },
                "events": {
                    **events,
                    "description": "The event types to deliver (default: all but job.progress).",
                    "default": list(DEFAULT_EVENTS),
                },
            },
        },
        "Webhook": {
            "type": "object",
            "additionalProperties": False,
            "required": list(endpoint_properties),
            "properties": endpoint_properties,
        },
        "WebhookWithSecret": {
            "type": "object",
            "additionalProperties": False,
            "required": [*endpoint_properties, "secret"],
            "properties": {
                **endpoint_properties,
                "secret": {
                    "type": "string",
                    "pattern": f"^{SECRET_PREFIX}[A-Za-z0-9+/=]+$",
                    "description": "The Standard Webhooks signing secret; shown only here.",
                },
            },
        },
        "WebhookList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["webhooks"],
            "properties": {"webhooks": {"type": "array", "items": _ref("Webhook")}},
        },
        "WebhookDeliveries": {
            "type": "object",
            "additionalProperties": False,
            "required": ["deliveries"],
            "properties": {
                "deliveries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": [
                            "event_id",
                            "event_type",
                            "attempted_at",
                            "attempt",
                            "status_code",
                            "delivered",
                            "error",
                        ],
                        "properties": {
                            "event_id": {"type": "string"},
                            "event_type": {"type": "string"},
                            "attempted_at": {"type": "string", "format": "date-time"},
                            "attempt": {"type": "integer", "minimum": 1},
                            "status_code": {"type": "integer", "nullable": True},
                            "delivered": {"type": "boolean"},
                            "error": {"type": "string", "nullable": True},
                        },
                    },
                }
            },
        },
    }
