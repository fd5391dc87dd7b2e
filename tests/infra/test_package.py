"""`make package` for pipelines: needs no AWS, merges the stack in, and passes cfn-lint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib import config as settings
from infra import deploy, stack
from tests.infra.harness import VENV, isolated_environment, run_make

STAGES = ("dev", "prod")
# Any AWS call fails at once: this endpoint refuses connections, and there are no credentials.
DEAD_END = "http://127.0.0.1:9"


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV / "bin" / "cfn-lint"), str(path)], capture_output=True, text=True, check=False
    )


def test_template_passes_cfn_lint() -> None:
    result = cfn_lint(stack.TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def packaged(project_copy: Path) -> dict[str, Path]:
    """`make package` for each stage with no AWS account: no credentials, region or endpoint.

    The package index stays reachable: Chalice bundles requirements.txt from it (pip's
    PIP_INDEX_URL or PIP_FIND_LINKS can point it at a mirror or a wheelhouse instead).
    """
    env = isolated_environment(AWS_ENDPOINT_URL=DEAD_END)
    for stage in STAGES:
        run_make(project_copy, env, "package", f"STAGE={stage}")
    return {stage: project_copy / "out" / stage for stage in STAGES}


@pytest.mark.parametrize("stage", STAGES)
def test_package_passes_cfn_lint(packaged: dict[str, Path], stage: str) -> None:
    assert (packaged[stage] / "deployment.zip").is_file()
    result = cfn_lint(packaged[stage] / "sam.json")
    assert result.returncode == 0, result.stdout + result.stderr


def load(packaged: dict[str, Path], stage: str) -> dict[str, Any]:
    return dict(json.loads((packaged[stage] / "sam.json").read_text()))


@pytest.mark.parametrize("stage", STAGES)
def test_package_holds_the_stack_under_the_names_the_app_uses(
    packaged: dict[str, Path], stage: str
) -> None:
    resources = load(packaged, stage)["Resources"]
    environment = resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert resources["JobQueue"]["Properties"]["QueueName"] == environment[settings.QUEUE_NAME]
    assert resources["JobTable"]["Properties"]["TableName"] == environment[settings.TABLE_NAME]
    assert resources["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    worker = resources["ProcessJob"]["Properties"]
    assert worker["ReservedConcurrentExecutions"] == 1
    (event,) = worker["Events"].values()
    assert event["Properties"]["Queue"]["Fn::Sub"].endswith(":" + environment[settings.QUEUE_NAME])


@pytest.mark.parametrize("stage", STAGES)
def test_package_parameters_default_to_what_deploy_passes(
    packaged: dict[str, Path], stage: str
) -> None:
    parameters = load(packaged, stage)["Parameters"]
    config = stack.load_chalice_config(stage)
    timeout = config.scope(stage, "process_job").lambda_timeout
    assert int(parameters["VisibilityTimeoutSeconds"]["Default"]) == 6 * timeout
    assert int(parameters["MaxReceiveCount"]["Default"]) >= 5


@pytest.mark.parametrize("stage", STAGES)
def test_package_policies_name_the_packaged_stack_in_any_account(
    packaged: dict[str, Path], stage: str
) -> None:
    text = (packaged[stage] / "sam.json").read_text()
    assert "123456789012" not in text  # no account baked in (moto's, or anyone's)
    assert deploy.ANY_REGION not in text and deploy.ANY_ACCOUNT not in text
    template = load(packaged, stage)
    stack_resources = set(deploy.load_template()["Resources"])
    roles = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) >= 2
    for role in roles:
        (policy,) = role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]:
            for resource in statement["Resource"]:
                if statement["Sid"] == "OwnLogs":
                    assert resource["Fn::Sub"].startswith(
                        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                    )
                else:
                    assert refers_to(resource) in stack_resources


def refers_to(resource: Any) -> str:
    """The template resource an ARN expression names: GetAtt X.Arn, or ${X.Arn}/..."""
    if "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn"
        return str(logical_id)
    variable, _, _ = resource["Fn::Sub"].partition(".Arn}/")
    assert variable.startswith("${")
    return str(variable[2:])


@pytest.mark.parametrize("stage", STAGES)
def test_package_has_the_usage_plan_only_where_a_key_is_required(
    packaged: dict[str, Path], stage: str
) -> None:
    resources = load(packaged, stage)["Resources"]
    types = {r["Type"] for r in resources.values()}
    api_access = {
        "AWS::ApiGateway::UsagePlan",
        "AWS::ApiGateway::ApiKey",
        "AWS::ApiGateway::UsagePlanKey",
    }
    if stage == "dev":
        assert not types & api_access
        return
    assert api_access <= types
    throttle = resources["ApiUsagePlan"]["Properties"]["Throttle"]
    assert throttle == {
        "RateLimit": deploy.Throttle().rate_limit,
        "BurstLimit": deploy.Throttle().burst_limit,
    }
    assert resources["ApiKey"]["Properties"]["Name"] == stack.stack_name("heavy-jobs", stage)


@pytest.mark.parametrize("stage", STAGES)
def test_package_ships_unchecked_bytecode_for_every_module(
    packaged: dict[str, Path], stage: str, tmp_path: Path
) -> None:
    import importlib.util
    import zipfile

    with zipfile.ZipFile(packaged[stage] / "deployment.zip") as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path)
    sources = [n for n in names if n.endswith(".py")]
    assert "app.py" in sources and "chalicelib/worker.py" in sources
    missing = [s for s in sources if importlib.util.cache_from_source(s) not in names]
    assert missing == []
    pyc = (tmp_path / importlib.util.cache_from_source("app.py")).read_bytes()
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, source not checked
    # Lambda's task root is read-only: the entry point imports with nothing written.
    env = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(tmp_path),
        "JOBS_QUEUE_NAME": "q",
        "JOBS_DEAD_LETTER_QUEUE_NAME": "dlq",
        "JOBS_DELAY_QUEUE_NAME": "delay",
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import app, sys; print(sys.modules['app'].__cached__)"],
        env={**env, "PATH": "/usr/bin:/bin"}, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
