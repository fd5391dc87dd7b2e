"""Adapter: the SQS job queue."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable


class JobQueue:
    def __init__(self, client: Any, queue_name: str) -> None:
        self._client = client
        self.queue_name = queue_name
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The queue's URL, looked up once per process (one GetQueueUrl per cold start)."""
        if self._url is None:
            response = self._call("get_queue_url", QueueName=self.queue_name)
            self._url = response["QueueUrl"]
        return self._url

    def send(self, body: str, delay_seconds: int = 0) -> str:
        """Put one message on the queue, visible after ``delay_seconds`` (<= 900)."""
        response = self._call(
            "send_message", QueueUrl=self.url, MessageBody=body, DelaySeconds=delay_seconds
        )
        return str(response["MessageId"])

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"SQS {operation} failed: {error}") from error
