"""infra/deploy/ under moto: usage plan and API keys, throttle settings (access.py), stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra import stack
from infra.deploy import access, chalice_project, lifecycle
from infra.emulator import free_port
from tests.infra.harness import isolated_environment, run_make

NAME = "heavy-jobs-prod"


@pytest.fixture
def apigw() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("apigateway")


def make_api(apigw: Any, stage: str = "prod") -> access.ApiStage:
    """A REST API with one deployed stage, as `chalice deploy` leaves it."""
    api_id = apigw.create_rest_api(name="heavy-jobs")["id"]
    root = apigw.get_resources(restApiId=api_id)["items"][0]["id"]
    apigw.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE")
    apigw.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    apigw.create_deployment(restApiId=api_id, stageName=stage)
    return access.ApiStage(api_id, stage, f"https://{api_id}.example/{stage}/")


def plans_and_keys(apigw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return apigw.get_usage_plans()["items"], apigw.get_api_keys(includeValues=True)["items"]


def test_api_access_is_created_once(apigw: Any) -> None:
    api = make_api(apigw)
    first = access.ensure_api_access(apigw, NAME, api, access.Throttle())
    second = access.ensure_api_access(apigw, NAME, api, access.Throttle())

    plans, keys = plans_and_keys(apigw)
    assert [p["name"] for p in plans] == [NAME]
    assert plans[0]["apiStages"] == [{"apiId": api.api_id, "stage": "prod"}]
    assert plans[0]["throttle"] == access.Throttle().as_api()
    assert [k["id"] for k in keys] == [first["id"]] == [second["id"]]
    members = apigw.get_usage_plan_keys(usagePlanId=plans[0]["id"])["items"]
    assert [m["id"] for m in members] == [first["id"]]


def test_usage_plan_follows_the_throttle_and_a_recreated_api(apigw: Any) -> None:
    old_api = make_api(apigw)
    access.ensure_api_access(apigw, NAME, old_api, access.Throttle())
    new_api = make_api(apigw)  # the REST API was deleted and re-created outside make
    changed = access.Throttle(rate_limit=4, burst_limit=9)

    access.ensure_api_access(apigw, NAME, new_api, changed)

    (plan,), _ = plans_and_keys(apigw)
    assert plan["apiStages"] == [{"apiId": new_api.api_id, "stage": "prod"}]
    assert plan["throttle"] == changed.as_api()


def test_a_similarly_named_key_is_not_ours(apigw: Any) -> None:
    other = apigw.create_api_key(name=NAME + "-ci", enabled=True)
    assert access.find_api_key(apigw, NAME) is None
    access.ensure_api_access(apigw, NAME, make_api(apigw), access.Throttle())
    ours = access.find_api_key(apigw, NAME)
    assert ours is not None and ours["id"] != other["id"]


def test_remove_api_access_deletes_plan_and_key_and_is_idempotent(apigw: Any) -> None:
    access.ensure_api_access(apigw, NAME, make_api(apigw), access.Throttle())
    access.remove_api_access(apigw, NAME)
    access.remove_api_access(apigw, NAME)
    assert plans_and_keys(apigw) == ([], [])


def test_throttle_defaults_and_overrides() -> None:
    assert access.Throttle.from_mapping({}) == access.Throttle()
    override = {access.RATE_LIMIT: "2.5", access.BURST_LIMIT: "10"}
    assert access.Throttle.from_mapping(override) == access.Throttle(2.5, 10)


@pytest.mark.parametrize(
    "env", [{access.RATE_LIMIT: "fast"}, {access.RATE_LIMIT: "0"}, {access.BURST_LIMIT: "0"}]
)
def test_bad_throttle_settings_are_refused_by_name(env: dict[str, str]) -> None:
    with pytest.raises(chalice_project.DeployError, match="API_RATE_LIMIT"):
        access.Throttle.from_mapping(env)


@pytest.mark.parametrize(("stage", "required"), [("dev", False), ("prod", True)])
def test_api_key_requirement_comes_from_the_stage_config(stage: str, required: bool) -> None:
    assert chalice_project.requires_api_key(stack.load_chalice_config(stage)) is required


def test_the_local_stage_is_not_deployable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", os.environ.copy())  # loading the app sets variables
    with pytest.raises(chalice_project.DeployError, match="iam_policy_file"):
        chalice_project.check_deployable(stack.load_chalice_config("local"), "local")


class FailedCreation:
    """A CloudFormation client whose stack's first creation failed."""

    def __init__(self) -> None:
        self.status = lifecycle.FAILED_CREATION

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [{"StackName": StackName, "StackStatus": self.status}]}

    def delete_stack(self, StackName: str) -> None:
        self.status = "DELETE_COMPLETE"

    def get_waiter(self, name: str) -> Any:
        return type("Waiter", (), {"wait": lambda self, **kwargs: None})()


def test_a_failed_first_creation_is_cleared_before_applying() -> None:
    cfn = FailedCreation()
    assert lifecycle.clear_failed_creation(cfn, NAME) is True
    assert cfn.status == "DELETE_COMPLETE"
    assert lifecycle.clear_failed_creation(cfn, NAME) is False


def test_a_clients_key_joins_the_plan_once(apigw: Any) -> None:
    access.ensure_api_access(apigw, NAME, make_api(apigw), access.Throttle())
    first = access.ensure_client_key(apigw, NAME, "alice")
    second = access.ensure_client_key(apigw, NAME, "alice")
    assert first["id"] == second["id"] and first["name"] == f"{NAME}-alice"
    (plan,), _ = plans_and_keys(apigw)
    members = {m["name"] for m in apigw.get_usage_plan_keys(usagePlanId=plan["id"])["items"]}
    assert members == {NAME, f"{NAME}-alice"}


def test_a_client_key_needs_a_deployed_plan_and_a_plain_name(apigw: Any) -> None:
    with pytest.raises(chalice_project.DeployError, match="deploy the stage first"):
        access.ensure_client_key(apigw, NAME, "alice")
    for bad in ("", "a/b", "x" * 65, "two words"):
        with pytest.raises(chalice_project.DeployError, match="letters, digits"):
            access.client_key_name(NAME, bad)
    for reserved in ("operator", "anonymous"):
        with pytest.raises(chalice_project.DeployError, match="reserved"):
            access.client_key_name(NAME, reserved)


def test_removing_access_deletes_client_keys_but_not_lookalikes(apigw: Any) -> None:
    other = apigw.create_api_key(name=NAME + "-ci", enabled=True)  # not in our plan
    access.ensure_api_access(apigw, NAME, make_api(apigw), access.Throttle())
    access.ensure_client_key(apigw, NAME, "alice")
    access.remove_api_access(apigw, NAME)
    plans, keys = plans_and_keys(apigw)
    assert plans == [] and [k["id"] for k in keys] == [other["id"]]


def test_the_default_budget_fits_a_dashboard_tab_and_a_cli_at_once() -> None:
    """A visible dashboard tab reads GET /jobs with the key at most once a second; a CLI
    beside it (submit, list, cancel) must still find the budget, bursts included."""
    dashboard_tab_per_second = 1.0
    throttle = access.Throttle()
    assert throttle.rate_limit >= 2 * dashboard_tab_per_second
    assert throttle.burst_limit >= 2 * throttle.rate_limit


# --- the local stage: keys in the emulator, for the local API (infra/local_api.py) ------

LOCAL_NAME = "heavy-jobs-local"


def test_local_keys_are_made_once_in_the_stages_plan(apigw: Any) -> None:
    operator = access.local_api_key(LOCAL_NAME, apigw=apigw)
    alice = access.local_api_key(LOCAL_NAME, "alice", apigw=apigw)

    assert access.local_api_key(LOCAL_NAME, apigw=apigw) == operator
    assert access.local_api_key(LOCAL_NAME, "alice", apigw=apigw) == alice != operator
    plans, keys = plans_and_keys(apigw)
    assert [(p["name"], p["apiStages"]) for p in plans] == [(LOCAL_NAME, [])]
    assert {k["name"]: k["value"] for k in keys} == {
        LOCAL_NAME: operator,
        f"{LOCAL_NAME}-alice": alice,
    }
    members = apigw.get_usage_plan_keys(usagePlanId=plans[0]["id"])["items"]
    assert {m["name"] for m in members} == {LOCAL_NAME, f"{LOCAL_NAME}-alice"}


def test_a_disabled_local_key_is_enabled_again(apigw: Any) -> None:
    value = access.local_api_key(LOCAL_NAME, "bob", apigw=apigw)
    key = access.find_api_key(apigw, f"{LOCAL_NAME}-bob")
    assert key is not None
    apigw.update_api_key(
        apiKey=key["id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}]
    )

    assert access.local_api_key(LOCAL_NAME, "bob", apigw=apigw) == value
    assert apigw.get_api_key(apiKey=key["id"])["enabled"] is True


@pytest.mark.parametrize("client", ["operator", "anonymous", "no spaces", ""])
def test_a_local_key_needs_a_clients_name(apigw: Any, client: str) -> None:
    with pytest.raises(chalice_project.DeployError, match="client"):
        access.local_api_key(LOCAL_NAME, client, apigw=apigw)
    assert plans_and_keys(apigw) == ([], [])


def test_make_api_key_for_the_local_stage_says_to_start_it_when_no_emulator_answers(
    project_copy: Path,
) -> None:
    env = isolated_environment(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")

    result = run_make(project_copy, env, "api-key", "STAGE=local", "CLIENT=alice", check=False)

    assert result.returncode != 0
    assert "no emulator answers at" in result.stderr
    assert "make run" in result.stderr
