"""What the event-source tests share: AWS's sample events and the toy Chalice project.

The toy project (``fixtures/toy_project``) has two SQS handlers on two queues and one
scheduled handler; see its module docstring for the commands a message can carry.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
TOY_APP = FIXTURES / "toy_project" / "app.py"
REGION = "us-east-1"
STAGE = "dev"


def docs_event(name: str) -> dict[str, Any]:
    """A sample event from AWS's documentation (see the fixture's "source")."""
    event: dict[str, Any] = json.loads((FIXTURES / name).read_text())["event"]
    return event


def shape(value: Any) -> Any:
    """The structure of a JSON value: same keys, value types in place of values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def toy_config(queue_a: str, queue_b: str, records: Path, **stage_overrides: Any) -> dict[str, Any]:
    """The toy project's .chalice/config.json: one stage, per-function overrides."""
    stage: dict[str, Any] = {
        "reserved_concurrency": 1,
        "lambda_timeout": 1,
        "lambda_memory_size": 256,
        "environment_variables": {
            "TOY_QUEUE_A": queue_a,
            "TOY_QUEUE_B": queue_b,
            "TOY_RECORD_FILE": str(records),
            "TOY_STAGE_VAR": "from-stage",
        },
        "lambda_functions": {
            "handle_a": {"environment_variables": {"TOY_FUNCTION_VAR": "only-a"}},
            "handle_b": {"lambda_memory_size": 512},
        },
    }
    stage.update(stage_overrides)
    return {"version": "2.0", "app_name": "toy", "stages": {STAGE: stage}}


def write_toy_project(directory: Path, config: dict[str, Any]) -> Path:
    (directory / ".chalice").mkdir(parents=True)
    shutil.copy(TOY_APP, directory / "app.py")
    (directory / ".chalice" / "config.json").write_text(json.dumps(config, indent=2))
    return directory
