"""What every command reads from the Chalice project, and how it runs ``chalice``.

From the stage's configuration (.chalice/config.json, read by infra.stack): the name of
everything made for the stage (:func:`resource_name`, the stack's name), whether its routes
require an API key (:func:`requires_api_key`), whether it is a stage for AWS at all
(:func:`check_deployable`), and which of its functions form an SQS -> Lambda -> SQS loop
(:func:`looping_handlers`, :func:`sent_queue_outputs`; Lambda lets those recurse only when
told RECURSIVE_LOOP_ALLOW). Also the templates as plain data (:func:`load_template`),
this virtualenv's ``chalice`` (:func:`run_chalice`), a client for the local stage's
emulator (:func:`local_client`), and :class:`DeployError`, the error every command prints
without a traceback (__main__.py).

Calls nothing in AWS. Every failure here is a DeployError raised before anything changed,
except :func:`run_chalice`'s, which leaves whatever that ``chalice`` command had done by
then (lifecycle.py says what that is for ``deploy`` and ``delete``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from chalice.config import Config

from chalicelib import config as settings
from chalicelib import kinds
from infra import emulator, lanes, policies, run, stack

PROJECT_DIR = stack.PROJECT_DIR
# The stage `make run` serves on this machine, against its emulator rather than AWS.
LOCAL_STAGE = run.LOCAL_STAGE
# Continuations and retries are SQS -> Lambda -> SQS loops by design. Lambda stops such a
# chain after about 16 invocations unless the function's recursive loop detection is set
# to Allow (Lambda Developer Guide, "Use Lambda recursive loop detection to prevent infinite
# loops"; API PutFunctionRecursionConfig; SAM/CloudFormation property RecursiveLoop).
RECURSIVE_LOOP_ALLOW = "Allow"


class DeployError(Exception):
    """A deployment step failed in a way the message explains; no traceback needed."""


# --- reading the Chalice project ----------------------------------------------------------


def resource_name(config: Config, stage: str) -> str:
    """The name of everything this module creates for the stage: the stage's stack name."""
    return stack.stack_name(config.app_name, stage)


def requires_api_key(config: Config) -> bool:
    """Whether the stage's routes require an API key: its ``environment_variables``, read
    by the same rule app.py applies to them at import."""
    return settings.api_key_required(config.environment_variables)


def check_deployable(config: Config, stage: str) -> None:
    """Raise DeployError unless every function of the stage has its own IAM policy file,
    every job kind's declaration passes its check, and the app's lane settings and the
    worker's reserved concurrency are those the stage's ``lanes`` make (infra/lanes.py).

    ``autogen_policy`` is off, so a stage without ``iam_policy_file`` (``local``) is not
    meant for AWS: ``chalice deploy`` would fail after the stack was already created. A
    kind's declaration is checked here, at build time, and never at import: on AWS an
    import error is an init error, and the lane would stall on it.
    """
    try:
        kinds.check_declarations(kinds.KINDS.values())
    except kinds.DeclarationError as error:
        raise DeployError(f"a job kind is declared wrongly: {error}") from None
    try:
        lanes.check(config, stage)
    except lanes.LanesError as error:
        raise DeployError(str(error)) from None
    for handler in stack.handler_names(config):
        if not config.scope(stage, handler).iam_policy_file:
            raise DeployError(
                f"stage {stage!r} sets no iam_policy_file for {handler} in "
                ".chalice/config.json: it is not a stage for AWS"
            )


def sent_queue_outputs() -> set[str]:
    """The state stack's outputs (queue ARNs) that some function of the app sends to."""
    return {
        resource
        for grants in policies.GRANTS.values()
        for actions, resources in grants
        if policies.SEND_MESSAGE in actions
        for resource in resources
    }


def looping_handlers(config: Config, sent_queue_names: set[str]) -> list[str]:
    """The SQS handlers in an SQS -> Lambda -> SQS loop: those triggered by a queue the app's
    own functions send to (the worker's queue: continuations and retries; on a design with a
    delay queue, its forwarder too). A dead-letter queue's consumer is not: SQS feeds it."""
    return sorted(
        h for h, queue in stack.queue_consumers(config).items() if queue in sent_queue_names
    )


def load_template(path: Path | None = None) -> dict[str, Any]:
    """A template as plain data, short-form tags (!Sub, !GetAtt) expanded. By default
    infra/template.yaml, with the job table's indexes rendered in (infra.stack.load_template)."""
    if path is None:
        try:
            return stack.load_template()
        except stack.StackError as error:
            raise DeployError(str(error)) from None
    from cfnlint.decode import decode_str  # a dev dependency: only deploying needs it

    template, errors = decode_str(path.read_text())
    if errors:
        raise DeployError(f"{path}: {errors}")
    return dict(json.loads(json.dumps(template)))


def local_client(service: str) -> Any:
    """A client for the local stage's emulator: AWS_ENDPOINT_URL, else where `make run`
    starts one; dummy credentials when none are configured (emulators take any)."""
    session = boto3.session.Session()
    credentials = {}
    if session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return session.client(
        service,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL")
        or emulator.endpoint_url(emulator.default_port()),
        region_name=session.region_name or run.DEFAULT_REGION,
        # An emulator answers at once or is not running: do not retry for long.
        config=BotoConfig(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 2}),
        **credentials,
    )


def run_chalice(args: list[str], project_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """Run this virtualenv's ``chalice`` on ``project_dir``; DeployError if it fails."""
    # The chalice next to this Python: the virtualenv's, not whichever is first on PATH.
    chalice = Path(sys.executable).parent / "chalice"
    if not chalice.exists():
        raise DeployError(f"no {chalice}: run this with the project's virtualenv (make venv)")
    command = [str(chalice), "--project-dir", str(project_dir), *args]
    print("$ chalice " + " ".join(args), flush=True)
    result = subprocess.run(command, env=None if env is None else dict(env), check=False)
    if result.returncode != 0:
        raise DeployError(f"chalice {args[0]} failed with exit status {result.returncode}")
