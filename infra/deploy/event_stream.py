"""The job table stream's event source mapping (publish_job_events): what Chalice's
``@app.on_dynamodb_record`` cannot set, set by ``make deploy`` and ``make package``.

Chalice's decorator takes only the stream, the batch size, the starting position and the
batching window. The rest is what keeps one bad record from blocking its shard (AWS Lambda
Developer Guide, "Using AWS Lambda with Amazon DynamoDB": error handling, and
"Configuring partial batch response with DynamoDB and Lambda"):

- ``BisectBatchOnFunctionError``: a failed batch is split in two and each half retried;
- ``MaximumRetryAttempts``: a record is retried at most this many times;
- ``DestinationConfig.OnFailure``: the description of a batch given up on goes to the
  stack's JobEventsFailedQueue, and the shard moves on;
- ``FunctionResponseTypes: [ReportBatchItemFailures]``: the function's answer names the
  first record it could not publish, so the records before it are not retried.

``make deploy`` passes the stack's stream to ``chalice deploy`` (its mapping needs the ARN
when Chalice imports app.py) and then updates the mapping Chalice made with these
(:func:`configure`); ``make package`` merges them into the function's DynamoDB event, with
the stream by CloudFormation reference (:func:`package_event`). Values:
chalicelib/events.py, declared once.
"""

from __future__ import annotations

from typing import Any

from chalice.utils import to_cfn_resource_name

from chalicelib.events import STREAM_BISECT_ON_ERROR, STREAM_MAX_RETRY_ATTEMPTS

HANDLER = "publish_job_events"
# The stack outputs the mapping needs.
STREAM_OUTPUT = "TableStreamArn"
FAILED_QUEUE_OUTPUT = "JobEventsFailedQueueArn"
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


def mapping_settings(failed_queue_arn: Any) -> dict[str, Any]:
    """UpdateEventSourceMapping's parameters beyond Chalice's (``failed_queue_arn`` may be
    a CloudFormation expression, for the package)."""
    return {
        "BisectBatchOnFunctionError": STREAM_BISECT_ON_ERROR,
        "MaximumRetryAttempts": STREAM_MAX_RETRY_ATTEMPTS,
        "DestinationConfig": {"OnFailure": {"Destination": failed_queue_arn}},
        "FunctionResponseTypes": [REPORT_BATCH_ITEM_FAILURES],
    }


def configure(lambda_client: Any, function: str, outputs: dict[str, str]) -> list[str]:
    """Give the function's mappings on the stack's stream the settings above; their UUIDs
    (none when Chalice made no mapping on that stream: the caller refuses that)."""
    # Filtered by the stream, then by function here: a FunctionName filter may be matched
    # only as given when the mapping was made (Chalice gives the ARN; moto compares it).
    listed = lambda_client.list_event_source_mappings(EventSourceArn=outputs[STREAM_OUTPUT])
    mappings = [
        mapping
        for mapping in listed["EventSourceMappings"]
        if mapping["FunctionArn"].endswith(f":function:{function}")
    ]
    for mapping in mappings:
        lambda_client.update_event_source_mapping(
            UUID=mapping["UUID"], **mapping_settings(outputs[FAILED_QUEUE_OUTPUT])
        )
    return [mapping["UUID"] for mapping in mappings]


def event_logical_id() -> str:
    """The logical id ``chalice package`` gives the function's DynamoDB event (Chalice's
    app graph names the event source ``<handler>-dynamodb-event-source``)."""
    return to_cfn_resource_name(f"{HANDLER}-dynamodb-event-source")


def package_event(stream: Any, failed_queue: Any) -> dict[str, Any]:
    """The SAM DynamoDB event's properties to merge over Chalice's: the stack's own stream
    (not the ARN the packaging process was given) and the settings above."""
    settings = mapping_settings(failed_queue)
    return {
        "Stream": stream,
        "BisectBatchOnFunctionError": settings["BisectBatchOnFunctionError"],
        "MaximumRetryAttempts": settings["MaximumRetryAttempts"],
        "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": failed_queue}},
        "FunctionResponseTypes": settings["FunctionResponseTypes"],
    }
