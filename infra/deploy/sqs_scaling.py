"""How far an SQS event source mapping may scale: what Chalice's deploy leaves unset, set by
``make deploy`` and ``make package`` from each function's reserved concurrency.

On a standard queue, Lambda's pollers scale past a function's reserved concurrency; the
invocations beyond it are throttled, and a throttled batch goes back to the queue when its
visibility timeout ends, its receive count one higher (Lambda Developer Guide, "Configuring
scaling behavior for SQS event source mappings" and "Handling errors for an SQS event
source"). A long enough burst therefore dead-letters messages that never ran (the queue's
redrive after MaxReceiveCount receives). The mapping's ``ScalingConfig.MaximumConcurrency``
stops the pollers at that many concurrent invocations instead, and AWS's rule for it is
"no higher than the function's reserved concurrency" ("Configuring maximum concurrency for
Amazon SQS event sources", same guide). So every SQS handler on a standard queue whose
stage reserves it at least MIN_MAXIMUM_CONCURRENCY gets exactly its reservation
(:func:`maximum_concurrency`): .chalice/config.json's ``reserved_concurrency`` is the one
number, a new SQS handler with a reservation gets it with no further declaration, and a
new reservation of 2 or more moves the cap with it on the next deploy or package. (A
reservation removed, or lowered to 1, leaves the deployed mapping's last cap: the next
package has none, and ``aws lambda update-event-source-mapping --scaling-config '{}'``
clears it on a deployed stage.)

Chalice's ``@app.on_sqs_message(maximum_concurrency=...)`` would be a second number, typed in
app.py for every stage, beside the reservation each stage sets; it stays unset.

``make deploy`` updates the mappings Chalice recorded for the stage (:func:`configure`);
``make package`` merges the setting into each function's SAM SQS event (:func:`package_events`).

What a failure costs: :func:`configure` raises DeployError, naming the handler, when
Chalice recorded no mapping for it, and lets a ClientError through; either way after
``chalice deploy`` succeeded, so the functions run with their mappings uncapped, as they were
before this setting existed: in a burst, deliveries past the reservation are throttled and
may land unrun in the webhooks' dead-letter queue (infra/template.yaml,
WebhookDeadLetterQueue).
Jobs are not touched (the worker's FIFO mapping never gets the setting, below). Running
``make deploy`` again sets it.
"""

from __future__ import annotations

from typing import Any

from chalice.config import Config
from chalice.utils import to_cfn_resource_name

from infra import stack
from infra.deploy.chalice_project import DeployError

# ScalingConfig.MaximumConcurrency's range (Lambda API Reference, "ScalingConfig").
MIN_MAXIMUM_CONCURRENCY = 2
MAX_MAXIMUM_CONCURRENCY = 1000
# A FIFO queue's name ends in this (SQS API Reference, "CreateQueue": QueueName).
FIFO_SUFFIX = ".fifo"


def maximum_concurrency(config: Config, stage: str) -> dict[str, int]:
    """handler -> its SQS mapping's MaximumConcurrency: the stage's reserved concurrency of
    each SQS handler on a standard queue that reserves at least MIN_MAXIMUM_CONCURRENCY
    (at most MAX_MAXIMUM_CONCURRENCY, a cap below the reservation being within AWS's rule).

    Left out, their mappings as Chalice makes them:
    - a FIFO queue's consumer (the worker, process_job): a FIFO mapping runs at most one
      batch per message group at once, and the worker reserves one execution per message
      group (its lanes: infra/lanes.py), so none of its batches is throttled; and that
      reservation may be 1, which MaximumConcurrency's minimum of 2 cannot express;
    - a handler without a reservation: it has no number of its own to be capped at;
    - a reservation of 1 on a standard queue, which no MaximumConcurrency can match: such a
      handler is throttled in a burst, as before.
    Chalice makes one mapping per handler, so each mapping may have its whole reservation.
    """
    limits = {}
    for handler, queue in stack.queue_consumers(config).items():
        if queue.endswith(FIFO_SUFFIX):
            continue
        reserved = config.scope(stage, handler).reserved_concurrency
        if reserved is not None and reserved >= MIN_MAXIMUM_CONCURRENCY:
            limits[handler] = min(reserved, MAX_MAXIMUM_CONCURRENCY)
    return limits


def scaling_config(limit: int) -> dict[str, int]:
    """The mapping's ScalingConfig (UpdateEventSourceMapping's, and SAM's SQS event's)."""
    return {"MaximumConcurrency": limit}


def event_source_name(handler: str) -> str:
    """The name Chalice gives a handler's SQS event source: the key of its mapping in
    ``.chalice/deployed/<stage>.json``, and (CamelCased) its SAM event's logical id."""
    return f"{handler}-sqs-event-source"


def configure(lambda_client: Any, config: Config, stage: str) -> dict[str, int]:
    """Give each mapping Chalice recorded for the stage's capped handlers (see
    :func:`maximum_concurrency`) its ScalingConfig; handler -> MaximumConcurrency.

    ``config`` must be loaded after ``chalice deploy`` (its record of the stage). DeployError
    if the record has no mapping for such a handler.
    """
    deployed = config.deployed_resources(stage)
    configured = {}
    for handler, limit in maximum_concurrency(config, stage).items():
        try:
            uuid = deployed.resource_values(event_source_name(handler))["event_uuid"]
        except ValueError:  # Chalice's "Resource does not exist"
            raise DeployError(f"chalice recorded no SQS mapping of {handler}") from None
        lambda_client.update_event_source_mapping(UUID=uuid, ScalingConfig=scaling_config(limit))
        configured[handler] = limit
    return configured


def package_events(config: Config, stage: str) -> dict[str, dict[str, Any]]:
    """handler -> the SAM ``Events`` to merge over Chalice's for its function: its SQS
    event's ScalingConfig (the event's logical id as ``chalice package`` names it)."""
    return {
        handler: {
            to_cfn_resource_name(event_source_name(handler)): {
                "Properties": {"ScalingConfig": scaling_config(limit)}
            }
        }
        for handler, limit in maximum_concurrency(config, stage).items()
    }
