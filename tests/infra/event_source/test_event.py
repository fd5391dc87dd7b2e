"""Unit tests for infra.event_source.event: Lambda's SQS event against AWS's samples."""

from __future__ import annotations

import base64
import json

from infra.event_source import sqs_event, sqs_message_to_record
from tests.infra.event_source.toy import docs_event, shape


def test_record_builder_reproduces_aws_sample_standard_event() -> None:
    expected = docs_event("aws_docs_sqs_event_standard.json")
    # What boto3's ReceiveMessage returned for the two messages of AWS's sample.
    received = [
        {
            "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
            "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "Body": "Test message.",
            "Attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185",
            },
        },
        {
            "MessageId": "2e1424d4-f796-459a-8184-9c92662be6da",
            "ReceiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq...",
            "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "Body": "Test message.",
            "Attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082650636",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082650649",
            },
        },
    ]

    event = sqs_event(received, "arn:aws:sqs:us-east-2:123456789012:my-queue", "us-east-2")

    assert event == expected
    assert shape(event) == shape(expected)  # `==` alone would let 1 == 1.0 through
    assert json.dumps(event) == json.dumps(expected)  # key order too


def test_record_builder_reproduces_aws_sample_fifo_event() -> None:
    expected = docs_event("aws_docs_sqs_event_fifo.json")["Records"][0]
    received = {
        "MessageId": "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5",
        "ReceiptHandle": "AQEBBX8nesZEXmkhsmZeyIE8iQAMig7qw...",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": "Test message.",
        "Attributes": dict(expected["attributes"]),  # SQS's system attributes pass as-is
    }

    record = sqs_message_to_record(
        received, "arn:aws:sqs:us-east-2:123456789012:fifo.fifo", "us-east-2"
    )

    assert record == expected
    assert shape(record) == shape(expected)


def test_message_attributes_take_lambdas_shape() -> None:
    received = {
        "MessageId": "m1",
        "ReceiptHandle": "r1",
        "MD5OfBody": "b",
        "Body": "{}",
        "Attributes": {"ApproximateReceiveCount": "1", "AWSTraceHeader": "Root=1-abc"},
        "MD5OfMessageAttributes": "a",
        "MessageAttributes": {
            "myAttribute": {"StringValue": "myValue", "DataType": "String"},
            "count": {"StringValue": "3", "DataType": "Number.int"},
            "blob": {"BinaryValue": b"\x00\x01\xff", "DataType": "Binary"},
        },
    }

    record = sqs_message_to_record(received, "arn:aws:sqs:us-east-1:1:q", "us-east-1")

    # As in the current AWS sample: lowercase keys, both list keys always present,
    # binary values as base64 text.
    assert record["messageAttributes"] == {
        "myAttribute": {
            "stringValue": "myValue",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {
            "stringValue": "3",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number.int",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01\xff").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert record["md5OfMessageAttributes"] == "a"
    assert record["attributes"]["AWSTraceHeader"] == "Root=1-abc"
