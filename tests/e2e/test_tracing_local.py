"""Tracing is off locally, without errors or warnings: `make run` has no X-Ray daemon and
no Lambda trace header, so no message carries an AWSTraceHeader and nothing in the
stack's output mentions X-Ray, segments or a missing trace context (what the X-Ray SDK
prints when it runs without one)."""

from __future__ import annotations

import re
from collections.abc import Callable

from chalicelib.jobs import parse_message
from chalicelib.observability import TRACE_ATTRIBUTE, TRACE_HEADER_VARIABLE
from tests.e2e.conftest import Stack

# Whatever an X-Ray SDK, a tracer or this project's propagation could print about tracing.
TRACING_TALK = re.compile(
    rf"x-?ray|segment|trace ?(context|header|id)|{TRACE_HEADER_VARIABLE}|{TRACE_ATTRIBUTE}",
    re.IGNORECASE,
)


def test_make_run_sends_no_trace_header_and_says_nothing_about_tracing(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(worker=False)
    job_id = stack.submit(1000)["job_id"]
    sqs = stack.client("sqs")
    (message,) = sqs.receive_message(
        QueueUrl=stack.outputs["QueueUrl"], MessageSystemAttributeNames=["All"]
    )["Messages"]
    assert parse_message(message["Body"]).job_id == job_id
    assert TRACE_ATTRIBUTE not in message["Attributes"]
    sqs.change_message_visibility(  # back to the worker
        QueueUrl=stack.outputs["QueueUrl"],
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    stack.services.start_worker()

    stack.wait_for_job(job_id, lambda job: job["status"] == "succeeded")

    assert "Job succeeded" in stack.log  # the worker's own lines are in this output
    assert not TRACING_TALK.findall(stack.log), stack.log[-3000:]
