"""Adapter: API Gateway's API keys, read to learn which client a request's key belongs to.

API Gateway tells the API function only the id of the key a request was authorized with
(``requestContext.identity.apiKeyId``); the key's *name* says whose it is
(``chalicelib.clients.client_of_key``). ``ApiKeys.name_of`` reads it with GetApiKey
(API Gateway REST API Reference, "GetApiKey") once per key id and process, then from
memory: a warm API function pays nothing per request, and a new sandbox one call per key
it sees. A key renamed after it was read keeps its old name in a warm sandbox until that
sandbox is recycled; rotate a key by making a new one under the name instead (what
``make api-key`` does), which a sandbox reads afresh.

What a failure costs: nothing in the job lane (only the API reads keys). A key API Gateway
no longer knows (deleted between the authorization and the read) is None, which the API
refuses like any key of no client; any other failure is StoreUnavailable (503: retry).
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import StoreUnavailable


class ApiKeys:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._names: dict[str, str] = {}
        # `chalice local` serves requests on threads; Lambda one at a time.
        self._lock = threading.Lock()

    def name_of(self, key_id: str) -> str | None:
        """The name of the API key ``key_id``; None if API Gateway knows no such key."""
        with self._lock:
            if key_id in self._names:
                return self._names[key_id]
        try:
            response = self._client.get_api_key(apiKey=key_id, includeValue=False)
        except ClientError as error:
            if error.response["Error"]["Code"] != "NotFoundException":
                raise StoreUnavailable(f"API Gateway GetApiKey failed: {error}") from error
            name = None
        except BotoCoreError as error:
            raise StoreUnavailable(f"API Gateway GetApiKey failed: {error}") from error
        else:
            name = response.get("name")
        if name is not None:  # a missing key is not remembered: it may be made yet
            with self._lock:
                self._names[key_id] = name
        return name
