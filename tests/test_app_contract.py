"""The API's contract as a client reads it, route by route: the status, the whole error
body (code AND message: clients and people read both) and the headers, pinned exactly so
that a change to any of them is a decision, not an accident (issue 13.1)."""

from __future__ import annotations

import boto3
import pytest
from chalice.test import Client

from tests.test_app import JSON

A_JOB_ID = "6f9619ff-8b86-4011-b42d-00c04fc964ff"

UNAVAILABLE = {"error": {"code": "unavailable", "message": "The job store is unavailable; retry."}}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/heavy", b'{"n": 5}'),
        ("POST", "/jobs", b'{"kind": "heavyLoad"}'),
        ("GET", "/jobs", b""),
        ("GET", f"/jobs/{A_JOB_ID}", b""),
        ("GET", f"/jobs/{A_JOB_ID}?wait=1", b""),
        ("POST", f"/jobs/{A_JOB_ID}/cancel", b""),
        ("POST", f"/jobs/{A_JOB_ID}/retry", b""),
    ],
)
def test_every_route_answers_503_with_the_same_body_when_the_store_fails(
    client: Client, aws: dict[str, str], method: str, path: str, body: bytes
) -> None:
    boto3.client("dynamodb").delete_table(TableName=aws["TableName"])

    response = client.http.request(method, path, headers=JSON, body=body)

    assert response.status_code == 503
    assert response.json_body == UNAVAILABLE
