"""API Gateway access for a stage whose routes require an API key (JOBS_REQUIRE_API_KEY).

A usage plan ``<app>-<stage>`` on the REST API's stage, throttled per key (:class:`Throttle`,
overridden by API_RATE_LIMIT / API_BURST_LIMIT), the stage's own key ``<app>-<stage>`` in
it (:func:`ensure_api_access`, called by ``deploy``), and per-client keys
``<app>-<stage>-<client>`` (:func:`ensure_client_key`, ``make api-key STAGE= CLIENT=``),
each with the plan's whole rate. Every ``ensure_*`` finds by name, then creates or updates,
so running it again is harmless. :func:`remove_api_access` runs before ``chalice delete``
(lifecycle.py). packaging.py declares the same plan, key and membership in CloudFormation.

Calls API Gateway only. What a failure leaves behind: two usage plans or keys with the same
name stop it with DeployError before any change (delete the extras). An API Gateway error
part-way leaves a plan without its key, or a key outside the plan, whose requests API
Gateway refuses until ``deploy`` runs again. The key guards the API's routes, not the
worker: jobs already queued are not affected.

The local stage (``make run``) has no REST API in its emulator: ``chalice local`` stands in
for it (infra/local_api.py), and accepts a key of the emulator's API Gateway when it is in
the stage's usage plan, as API Gateway does. ``make api-key STAGE=local [CLIENT=]`` makes
that plan (with no API stage), the key and its membership in the running emulator
(:func:`local_api_key`); DeployError if no emulator answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from chalicelib import clients
from chalicelib import config as settings
from infra import emulator, stack
from infra.deploy.chalice_project import (
    LOCAL_STAGE,
    PROJECT_DIR,
    DeployError,
    local_client,
    requires_api_key,
    resource_name,
)

# Environment variables that override the usage plan's throttling (one place they are spelled).
RATE_LIMIT = "API_RATE_LIMIT"
BURST_LIMIT = "API_BURST_LIMIT"


@dataclass(frozen=True)
class Throttle:
    """Request limits of a stage's usage plan, per API key.

    The worker runs one job at a time and a job takes seconds to minutes, so a client that
    submits faster than about one job a second only makes the queue longer.
    """

    # Steady-state requests per second, per key. A dashboard tab polls GET /jobs with the key
    # at most once a second (less when idle), and a CLI at the same time submits, lists or
    # cancels now and then (`jobs watch` reads GET /jobs/{id}, which needs no key): 5/s keeps
    # both inside the budget. Give each further client its own key (make api-key CLIENT=...).
    rate_limit: float = 5.0
    # Requests allowed at once above the steady rate (the token bucket's size): a script
    # submitting a small batch, or a page opening with its first reads.
    burst_limit: int = 10

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Throttle:
        """Defaults overridden by ``API_RATE_LIMIT`` / ``API_BURST_LIMIT``; DeployError if bad."""
        try:
            throttle = cls(
                rate_limit=float(env.get(RATE_LIMIT) or cls.rate_limit),
                burst_limit=int(env.get(BURST_LIMIT) or cls.burst_limit),
            )
        except ValueError as error:
            raise DeployError(f"{RATE_LIMIT} / {BURST_LIMIT}: {error}") from None
        if not 0 < throttle.rate_limit < math.inf or throttle.burst_limit < 1:
            raise DeployError(f"{RATE_LIMIT} must be > 0 and {BURST_LIMIT} >= 1: {throttle}")
        return throttle

    def as_api(self) -> dict[str, Any]:
        return {"rateLimit": self.rate_limit, "burstLimit": self.burst_limit}


@dataclass(frozen=True)
class ApiStage:
    """A deployed REST API's stage, as Chalice recorded it."""

    api_id: str
    stage: str
    url: str

    @property
    def key(self) -> str:
        """The ``apiId:stage`` form usage-plan patch operations use."""
        return f"{self.api_id}:{self.stage}"


# --- usage plan and API key --------------------------------------------------------------


def _pages(apigw: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in apigw.get_paginator(operation).paginate(**kwargs):
        yield from page.get("items", [])


def find_usage_plan(apigw: Any, name: str) -> dict[str, Any] | None:
    """The usage plan named ``name``; DeployError if there are several."""
    return _single(name, "usage plans", [p for p in _pages(apigw, "get_usage_plans")])


def find_api_key(apigw: Any, name: str) -> dict[str, Any] | None:
    """The API key named ``name``, with its value; DeployError if there are several."""
    # nameQuery matches prefixes: keep exact names only.
    keys = _pages(apigw, "get_api_keys", nameQuery=name, includeValues=True)
    return _single(name, "API keys", list(keys))


def _single(name: str, kind: str, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    matches = [item for item in items if item.get("name") == name]
    if len(matches) > 1:
        ids = ", ".join(item["id"] for item in matches)
        raise DeployError(f"several {kind} are named {name} ({ids}): delete the extras")
    return matches[0] if matches else None


def _number(value: float) -> str:
    """A patch value: API Gateway takes numbers as strings ("1", "2.5")."""
    return f"{value:g}"


def ensure_usage_plan(apigw: Any, name: str, api: ApiStage | None, throttle: Throttle) -> str:
    """Create or update usage plan ``name``: only ``api``'s stage (none for the local
    stage, which has no REST API), ``throttle``; its id."""
    plan = find_usage_plan(apigw, name)
    if plan is None:
        created = apigw.create_usage_plan(
            name=name,
            description=f"Throttles requests made with API key {name}",
            apiStages=[] if api is None else [{"apiId": api.api_id, "stage": api.stage}],
            throttle=throttle.as_api(),
        )
        return str(created["id"])
    operations = []
    current = plan.get("throttle", {})
    for field, value in throttle.as_api().items():
        if float(current.get(field, -1)) != float(value):
            operations.append(
                {"op": "replace", "path": f"/throttle/{field}", "value": _number(value)}
            )
    stages = {f"{s['apiId']}:{s['stage']}" for s in plan.get("apiStages", [])}
    wanted = set() if api is None else {api.key}
    # A stage of another API is left from a REST API that was deleted and re-created.
    operations += [{"op": "remove", "path": "/apiStages", "value": s} for s in stages - wanted]
    operations += [{"op": "add", "path": "/apiStages", "value": s} for s in wanted - stages]
    if operations:
        apigw.update_usage_plan(usagePlanId=plan["id"], patchOperations=operations)
    return str(plan["id"])


def ensure_api_key(apigw: Any, name: str) -> dict[str, Any]:
    """The enabled API key named ``name``, created if missing (AWS generates the value)."""
    key = find_api_key(apigw, name)
    if key is None:
        return dict(apigw.create_api_key(name=name, enabled=True))
    if not key.get("enabled"):
        apigw.update_api_key(
            apiKey=key["id"],
            patchOperations=[{"op": "replace", "path": "/enabled", "value": "true"}],
        )
    return key


def ensure_plan_key(apigw: Any, plan_id: str, key_id: str) -> None:
    """Put the API key in the usage plan unless it is there already."""
    members = {k["id"] for k in _pages(apigw, "get_usage_plan_keys", usagePlanId=plan_id)}
    if key_id not in members:
        apigw.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")


def ensure_api_access(apigw: Any, name: str, api: ApiStage, throttle: Throttle) -> dict[str, Any]:
    """Usage plan, API key and plan membership for ``api``, all idempotent; the key."""
    plan_id = ensure_usage_plan(apigw, name, api, throttle)
    key = ensure_api_key(apigw, name)
    ensure_plan_key(apigw, plan_id, key["id"])
    return key


def client_key_name(name: str, client: str) -> str:
    """The name of a client's own API key in the stage's plan (chalicelib.clients names
    keys); DeployError if ``client`` is not 1-64 letters, digits, ``-`` or ``_``, or is a
    name reserved for the operator or the anonymous caller."""
    if not clients.CLIENT_NAME.fullmatch(client):
        raise DeployError(f"client {client!r}: use 1-64 letters, digits, '-' or '_'")
    if not clients.is_client_name(client):
        reserved = ", ".join(sorted(clients.RESERVED))
        raise DeployError(f"client {client!r} is reserved ({reserved}): choose another name")
    return f"{name}-{client}"


def ensure_client_key(apigw: Any, name: str, client: str) -> dict[str, Any]:
    """Client ``client``'s own key in usage plan ``name``, created if missing.

    Usage plans throttle each key separately, so every client with its own key has the
    plan's whole rate: a dashboard left open somewhere cannot starve a CLI elsewhere.
    """
    plan = find_usage_plan(apigw, name)
    if plan is None:
        raise DeployError(f"no usage plan {name}: deploy the stage first")
    key = ensure_api_key(apigw, client_key_name(name, client))
    ensure_plan_key(apigw, plan["id"], key["id"])
    return key


def remove_api_access(apigw: Any, name: str) -> None:
    """Delete usage plan ``name`` (its keys and stages first), API key ``name`` and the
    clients' keys (``name-<client>``, members of the plan; a key of that form outside the
    plan is someone else's and stays).

    API Gateway refuses to delete a plan that still has API stages, and a REST API's stage
    should not be deleted while a plan points at it: so this runs before ``chalice delete``.
    """
    plan = find_usage_plan(apigw, name)
    if plan is not None:
        for member in _pages(apigw, "get_usage_plan_keys", usagePlanId=plan["id"]):
            apigw.delete_usage_plan_key(usagePlanId=plan["id"], keyId=member["id"])
            if str(member.get("name", "")).startswith(f"{name}-"):
                apigw.delete_api_key(apiKey=member["id"])
                print(f"Deleted API key {member['name']}")
        stages = [f"{s['apiId']}:{s['stage']}" for s in plan.get("apiStages", [])]
        if stages:
            apigw.update_usage_plan(
                usagePlanId=plan["id"],
                patchOperations=[
                    {"op": "remove", "path": "/apiStages", "value": s} for s in stages
                ],
            )
        apigw.delete_usage_plan(usagePlanId=plan["id"])
        print(f"Deleted usage plan {name}")
    key = find_api_key(apigw, name)
    if key is not None:
        apigw.delete_api_key(apiKey=key["id"])
        print(f"Deleted API key {name}")


# --- the command -------------------------------------------------------------------------


def api_key(stage: str, project_dir: Path = PROJECT_DIR, client: str | None = None) -> str:
    """The value of the stage's API key, or of ``client``'s own key (created on first use);
    DeployError if the stage requires no key or is not deployed. The local stage's keys
    are made in the running emulator (:func:`local_api_key`)."""
    config = stack.load_chalice_config(stage, project_dir)
    if stage == LOCAL_STAGE:
        return local_api_key(resource_name(config, stage), client)
    if not requires_api_key(config):
        raise DeployError(f"stage {stage} requires no API key ({settings.REQUIRE_API_KEY})")
    name = resource_name(config, stage)
    apigw = boto3.client("apigateway")
    if client is not None:
        created = ensure_client_key(apigw, name, client)
        found = find_api_key(apigw, created["name"])  # the value, whichever way it was made
        return str((found or created)["value"])
    key = find_api_key(apigw, name)
    if key is None:
        raise DeployError(f"no API key {name}: deploy the stage first")
    return str(key["value"])


def local_api_key(name: str, client: str | None = None, apigw: Any = None) -> str:
    """The value of the local stage's key (the operator's, or ``client``'s), made once in
    the running emulator with the stage's usage plan ``name`` (``chalice local`` accepts
    the plan's keys when the app requires keys: ``JOBS_REQUIRE_API_KEY=true make run``).

    ``apigw`` is the emulator's API Gateway client (default: the one ``make run`` serves,
    chalice_project.local_client). DeployError if no emulator answers there, or if
    ``client`` is not a client's name.
    """
    key_name = name if client is None else client_key_name(name, client)
    if apigw is None:
        apigw = local_client("apigateway")
        url = apigw.meta.endpoint_url
        if not emulator.endpoint_answers(url):
            raise DeployError(
                f"no emulator answers at {url}: start the local stack first "
                "(JOBS_REQUIRE_API_KEY=true make run)"
            )
    plan_id = ensure_usage_plan(apigw, name, None, Throttle())
    key = ensure_api_key(apigw, key_name)
    ensure_plan_key(apigw, plan_id, key["id"])
    found = find_api_key(apigw, key_name)  # the value, whichever way it was made
    return str((found or key)["value"])
