"""Pause and resume a stage's worker: ``make pause|resume STAGE=``.

:func:`set_paused` switches the worker's event source off or on, then records the switch
in the job table's ``control#worker`` item, which the API reports. On AWS the event source
is the worker function's SQS mapping (infra.operations.set_worker_enabled); on the local
stage it is the local event source's mapping state (infra/event_source/mappings.py), and
this waits up to LOCAL_MAPPING_WAIT_SECONDS for a running ``make run`` to take it up.
Paused, queued jobs wait in the queue and none is lost; the job running now finishes its
invocation.

What a failure leaves behind: a stage without a mapping (not deployed) stops with
DeployError and nothing switched. Switched but not recorded (the job table unreachable):
DeployError, and the API reports the previous state until the command runs again. On the
local stage without ``make run`` running, the switch waits in the mapping state for the
next start, which records it; a local event source that does not report the new state in
time: DeployError, with the new state written for it to take up.
"""

from __future__ import annotations

from pathlib import Path

import boto3

from chalicelib import config as settings
from chalicelib.errors import StoreUnavailable
from chalicelib.jobs import utc_now
from chalicelib.store import JobTable
from infra import operations, policies, stack
from infra.deploy.chalice_project import LOCAL_STAGE, PROJECT_DIR, DeployError, local_client
from infra.event_source import mappings

# How long `make pause STAGE=local` waits for the local event source to take it up: a
# receive in flight (a long poll of up to 20 s) returns first.
LOCAL_MAPPING_WAIT_SECONDS = 30.0


def set_paused(stage: str, paused: bool, project_dir: Path = PROJECT_DIR) -> str:
    """Pause (disable) or resume (enable) the worker's event source, then record it in the
    job table's ``control#worker`` item, which the API reports; what was switched.

    Paused, queued jobs wait in the queue and none is lost; the job running now finishes
    its invocation (a continuation or retry waits like the rest). On AWS the event source
    is the function's SQS mapping (UpdateEventSourceMapping). The local stage's is the
    local event source's mapping state (infra/event_source/mappings.py): the runner of a
    running ``make run`` takes it up within a long poll, and this waits until it did.
    """
    config = stack.load_chalice_config(stage, project_dir)
    handler = operations.worker_handler(config)
    if stage == LOCAL_STAGE:
        switched = _set_local_worker_enabled(project_dir, stage, handler, enabled=not paused)
        dynamodb = local_client("dynamodb")
    else:
        switched = policies.lambda_function_name(config.app_name, stage, handler)
        try:
            operations.set_worker_enabled(boto3.client("lambda"), switched, enabled=not paused)
        except operations.OperationsError as error:
            raise DeployError(str(error)) from None
        dynamodb = boto3.client("dynamodb")
    table = JobTable(dynamodb, config.environment_variables[settings.TABLE_NAME])
    try:
        table.record_worker_paused(paused, utc_now())
    except StoreUnavailable as error:
        if stage == LOCAL_STAGE:  # no emulator: `make run` records it when it starts
            return f"{switched}; not recorded in the job table (is `make run` running?)"
        message = f"{switched} switched, but not recorded in the job table: {error}"
        raise DeployError(message) from None
    return switched


def _set_local_worker_enabled(project_dir: Path, stage: str, handler: str, enabled: bool) -> str:
    mappings.set_enabled(project_dir, stage, handler, enabled)
    state = mappings.ENABLED if enabled else mappings.DISABLED
    # A disable takes effect once the receive in flight returns: at most a long poll.
    took = mappings.wait_for_state(
        project_dir, stage, handler, state, timeout=LOCAL_MAPPING_WAIT_SECONDS
    )
    if took is False:
        raise DeployError(f"the local event source did not report {state} for {handler}")
    where = "local event source" if took else "local event source, when it starts"
    return f"{handler} ({where})"
