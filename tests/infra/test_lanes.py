"""infra/lanes.py: a stage's ``lanes`` is the one source of the app's lane settings and
the worker's reserved concurrency; packaging and deploying refuse a config where they
disagree, and the account's concurrency pre-check counts the worker's N."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib import config as settings
from infra import lanes
from infra.deploy import access, chalice_project, lifecycle, packaging
from tests.infra.harness import copy_project, stage_config
from tests.infra.test_operations import account, lambda_stub, no_reservations


def config_path(project: Path) -> Path:
    return project / ".chalice" / "config.json"


def set_stage(project: Path, stage: str, **values: Any) -> None:
    data = json.loads(config_path(project).read_text())
    data["stages"][stage].update(values)
    config_path(project).write_text(json.dumps(data, indent=2) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("lanes"))


@pytest.fixture
def fresh(project: Path) -> Any:
    """The project copy's config.json, restored after the test."""
    saved = config_path(project).read_text()
    yield project
    config_path(project).write_text(saved)


def test_one_lane_renders_nothing_every_stage_is_as_before(fresh: Path) -> None:
    before = config_path(fresh).read_text()
    for stage in ("local", "dev", "prod"):
        assert lanes.render(stage, fresh) is False
    assert config_path(fresh).read_text() == before
    config = stage_config("dev", fresh)
    assert lanes.check(config, "dev") == lanes.StageLanes(1, "client")
    assert config.scope("dev", "process_job").reserved_concurrency == 1


def test_lanes_render_the_apps_settings_and_the_workers_reserved_concurrency(fresh: Path) -> None:
    set_stage(fresh, "dev", lanes=4, lane_key="kind")
    assert lanes.render("dev", fresh) is True
    assert lanes.render("dev", fresh) is False  # unchanged: not rewritten
    config = stage_config("dev", fresh)
    env = config.environment_variables
    assert (env[settings.LANES], env[settings.LANE_KEY]) == ("4", "kind")
    assert config.scope("dev", "process_job").reserved_concurrency == 4
    assert config.scope("dev", "process_job").iam_policy_file  # the rest kept
    assert stage_config("prod", fresh).scope("prod", "process_job").reserved_concurrency == 1
    chalice_project.check_deployable(config, "dev")
    # Back to one lane: the stage is as before lanes again.
    set_stage(fresh, "dev", lanes=1)
    assert lanes.render("dev", fresh) is True
    config = stage_config("dev", fresh)
    assert settings.LANES not in config.environment_variables
    assert config.scope("dev", "process_job").reserved_concurrency == 1


@pytest.mark.parametrize(
    "edit",
    [
        {"lanes": 4},  # declared, never rendered
        {"environment_variables": {settings.LANES: "4"}},  # the app's setting by hand
    ],
    ids=["lanes-not-rendered", "environment-by-hand"],
)
def test_packaging_and_deploying_refuse_a_config_that_disagrees_with_its_lanes(
    fresh: Path, edit: dict[str, Any]
) -> None:
    data = json.loads(config_path(fresh).read_text())
    stage = data["stages"]["dev"]
    for key, value in edit.items():
        if isinstance(value, dict):
            stage[key].update(value)
        else:
            stage[key] = value
    config_path(fresh).write_text(json.dumps(data))
    with pytest.raises(chalice_project.DeployError, match="declares lanes"):
        chalice_project.check_deployable(stage_config("dev", fresh), "dev")


@pytest.mark.parametrize(
    "entry", [{"lanes": 0}, {"lanes": "4"}, {"lanes": 2, "lane_key": "tenant"}]
)
def test_a_bad_lanes_declaration_is_refused_by_name(entry: dict[str, Any]) -> None:
    with pytest.raises(lanes.LanesError, match=r"stages\.dev\.lane"):
        lanes.StageLanes.from_stage(entry, "dev")


def test_the_account_pre_check_counts_the_workers_n(fresh: Path) -> None:
    """With 4 lanes the worker reserves 4: 100 + 10 (the API's) + 1 unreserved was enough
    for one lane, and is 3 short now."""
    set_stage(fresh, "dev", lanes=4)
    lanes.render("dev", fresh)
    config = stage_config("dev", fresh)
    client, stubber = lambda_stub()
    stubber.add_response("get_account_settings", account(unreserved=100 + 10 + 1))
    no_reservations(stubber)
    with stubber, pytest.raises(chalice_project.DeployError, match=r"process_job \(4\)"):
        lifecycle.check_account_concurrency(client, config, "dev")


def test_make_package_refuses_lanes_that_were_never_rendered(fresh: Path) -> None:
    """``make package`` builds without applying the stage: a stage whose ``lanes`` was
    edited by hand is refused before anything is built, naming the fix."""
    set_stage(fresh, "prod", lanes=2)
    with pytest.raises(chalice_project.DeployError, match="apply the stage"):
        packaging.package("prod", access.Throttle(), fresh, fresh / "out")
    assert not (fresh / "out").exists()
