"""Lambda's SQS event, built from the messages of a boto3 ReceiveMessage response."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any


def sqs_message_to_record(
    message: Mapping[str, Any], queue_arn: str, region: str
) -> dict[str, Any]:
    """One record of Lambda's SQS event from one message of a boto3 ReceiveMessage response.

    Keys and value types are Lambda's (see AWS's sample event): camelCase names, system
    attributes copied as SQS returned them (all strings), message attributes with
    lowercase keys, binary values as base64 text and both list keys always present.
    ``md5OfMessageAttributes`` appears only when the message has attributes. Raises
    ``KeyError`` if the message lacks a field every received message has.
    """
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _lambda_message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = queue_arn
    record["awsRegion"] = region
    return record


def sqs_event(messages: Iterable[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """Lambda's SQS event for a batch of received messages: ``{"Records": [...]}``."""
    return {"Records": [sqs_message_to_record(m, queue_arn, region) for m in messages]}


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = _base64(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [_base64(v) for v in value.get("BinaryListValues", [])]
    attribute["dataType"] = value["DataType"]
    return attribute


def _base64(data: bytes) -> str:
    # boto3 hands binary attributes over decoded; Lambda's JSON event carries base64 text.
    return base64.b64encode(data).decode("ascii")
