"""What the OpenAPI document promises about the refusals chalicelib.origins and the
listing's cursor make: 403 cross_site_request on every state-changing operation, keyed
stage or not, and 400 invalid_cursor on the listing."""

from __future__ import annotations

import pytest

from chalicelib.config import Auth, Settings
from chalicelib.openapi import CROSS_SITE_REFUSAL, document
from chalicelib.origins import SAFE_METHODS
from tests.chalicelib.test_config import REQUIRED

SETTINGS = Settings.from_mapping(REQUIRED)


@pytest.mark.parametrize("keyed", [False, True])
def test_every_state_changing_operation_declares_the_cross_site_refusal(keyed: bool) -> None:
    doc = document(SETTINGS, auth=Auth.API_KEY if keyed else Auth.NONE)
    changing = {
        f"{method.upper()} {path}": operation["responses"]
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method.upper() not in SAFE_METHODS
    }
    assert set(changing) == {
        "POST /heavy",
        "POST /jobs",
        "POST /jobs/batch",
        "POST /jobs/{job_id}/cancel",
        "POST /jobs/{job_id}/retry",
        "POST /schedules",
        "DELETE /schedules/{name}",
        "POST /schedules/{name}/pause",
        "POST /schedules/{name}/resume",
        "POST /webhooks",
        "DELETE /webhooks/{webhook_id}",
        "POST /webhooks/{webhook_id}/rotate",
    }
    for responses in changing.values():
        assert CROSS_SITE_REFUSAL in responses["403"]["description"]
    reads = [
        operation["responses"].get("403", {}).get("description", "")
        for item in doc["paths"].values()
        for method, operation in item.items()
        if method.upper() in SAFE_METHODS
    ]
    assert not any(CROSS_SITE_REFUSAL in description for description in reads)


def test_the_listing_declares_400_invalid_cursor() -> None:
    listing = document(SETTINGS)["paths"]["/jobs"]["get"]["responses"]
    assert "invalid_cursor" in listing["400"]["description"]
    assert listing["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
