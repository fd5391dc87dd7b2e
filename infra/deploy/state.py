"""Chalice's record of a deployed stage, kept with the stage in AWS instead of on one laptop.

``chalice deploy`` writes what it created (functions, roles, event source mappings, the REST
API, schedules) to ``.chalice/deployed/<stage>.json``, which git ignores, and finds them again
only through it: from a clone without the file it creates the SQS mappings a second time
(Lambda answers ResourceConflictException) and ``chalice delete`` deletes nothing.

So the record lives in an SSM parameter of the stage's account and region,
``/<app>-<stage>/chalice/deployed``: restored into the project before ``chalice deploy`` or
``chalice delete``, saved after a deploy, deleted after a delete. SSM because the record must
exist before anything else of the stage does (a deploy's first step reads it), survive the
stage's stacks being replaced, and cost nothing: a standard parameter (4 KB; SSM moves a
larger one to the advanced tier by itself) is free. The record holds resource names and ARNs,
no secret.

A stage deployed before this existed has its record only in the clone that deployed it: the
first deploy from that clone saves it. From any other clone, deploy and destroy stop before
changing anything when the stage's functions exist but no record is found
(:class:`MissingDeployState`), since going on would duplicate or orphan them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

# SSM picks the standard tier when the value fits (free), the advanced tier when not.
TIER = "Intelligent-Tiering"


class MissingDeployState(Exception):
    """The stage's functions exist, but neither AWS nor this clone has Chalice's record."""


def parameter_name(resource_name: str) -> str:
    """The SSM parameter holding the record of the stage whose resources are ``resource_name``."""
    return f"/{resource_name}/chalice/deployed"


def record_path(project_dir: Path, stage: str) -> Path:
    """Where Chalice reads and writes the stage's record."""
    return project_dir / ".chalice" / "deployed" / f"{stage}.json"


def load(ssm: Any, resource_name: str) -> dict[str, Any] | None:
    """The record saved in AWS, or None if there is none."""
    try:
        value = ssm.get_parameter(Name=parameter_name(resource_name))["Parameter"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ParameterNotFound":
            return None
        raise
    return dict(json.loads(value))


def restore(ssm: Any, resource_name: str, project_dir: Path, stage: str) -> str:
    """Put the stage's record where Chalice reads it; say where it came from.

    "aws": the saved record replaced the local file (AWS is the truth: another clone may have
    deployed since); "local": nothing saved, this clone's file is kept (a stage deployed
    before records were saved; the next save uploads it); "none": neither exists.
    """
    saved = load(ssm, resource_name)
    path = record_path(project_dir, stage)
    if saved is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=2) + "\n")
        return "aws"
    return "local" if path.exists() else "none"


def save(ssm: Any, resource_name: str, project_dir: Path, stage: str) -> bool:
    """Save the stage's local record to AWS; False if there is no local record."""
    path = record_path(project_dir, stage)
    if not path.exists():
        return False
    compact = json.dumps(json.loads(path.read_text()), separators=(",", ":"))
    ssm.put_parameter(
        Name=parameter_name(resource_name),
        Description="Chalice's record of this stage's deployed resources (infra/deploy/state.py)",
        Value=compact,
        Type="String",
        Overwrite=True,
        Tier=TIER,
    )
    return True


def forget(ssm: Any, resource_name: str) -> None:
    """Delete the saved record (after ``chalice delete``); nothing if there is none."""
    try:
        ssm.delete_parameter(Name=parameter_name(resource_name))
    except ClientError as error:
        if error.response["Error"]["Code"] != "ParameterNotFound":
            raise


def check_known(source: str, existing_functions: list[str], stage: str) -> None:
    """MissingDeployState if the stage's functions exist but no record was found."""
    if source != "none" or not existing_functions:
        return
    raise MissingDeployState(
        f"stage {stage} has functions ({', '.join(existing_functions)}) but no deploy record "
        "in AWS or in this clone: it was deployed before records were kept in AWS. Run "
        f"`make deploy STAGE={stage}` once from the clone that deployed it (it saves the "
        "record), then deploy or destroy from anywhere"
    )
