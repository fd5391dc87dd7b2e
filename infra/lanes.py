"""A stage's lanes: from its entry in ``.chalice/config.json`` to the app and the worker.

A stage declares ``"lanes": N`` (default 1) and ``"lane_key": "client" | "kind"``
(default ``client``) next to its other settings (Chalice ignores keys it does not know;
docs/lanes.md). Two things must follow from them, and only from them:

- the app's environment (``JOBS_LANES``, ``JOBS_LANE_KEY``: chalicelib.config), which
  spreads jobs over N message groups;
- the worker's reserved concurrency, N: one invocation per lane at once, so every batch
  the event source receives (one in flight per message group) can run, none is throttled,
  and no receive is spent on a throttle (Lambda Developer Guide, "Configuring scaling
  behavior for SQS event source mappings").

``render`` writes both into the stage's entry (applying the stage does it: ``make infra``,
``make run``, ``make deploy``); ``check`` refuses a config where they disagree with
``lanes`` (``make package`` and ``make deploy`` check it, so a hand edit of one of them
cannot ship). With one lane nothing is written: the stage is exactly as before lanes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.config import Config

from chalicelib import config as settings

# The keys of a stage's entry in .chalice/config.json.
LANES_KEY = "lanes"
LANE_KEY_KEY = "lane_key"
# The function whose reserved concurrency is the stage's lanes.
WORKER = "process_job"


class LanesError(Exception):
    """A stage's lanes are declared wrongly, or its config disagrees with them."""


@dataclass(frozen=True)
class StageLanes:
    lanes: int = settings.Settings.lanes
    lane_key: str = settings.Settings.lane_key

    @classmethod
    def from_stage(cls, stage_entry: Mapping[str, Any], stage: str) -> StageLanes:
        """The lanes a stage's entry declares; LanesError naming a bad value."""
        lanes = stage_entry.get(LANES_KEY, cls.lanes)
        if not (isinstance(lanes, int) and not isinstance(lanes, bool) and lanes >= 1):
            raise LanesError(f"stages.{stage}.{LANES_KEY} must be an integer >= 1, got {lanes!r}")
        key = stage_entry.get(LANE_KEY_KEY, cls.lane_key)
        if key not in settings.LANE_KEYS:
            raise LanesError(
                f"stages.{stage}.{LANE_KEY_KEY} must be one of "
                f"{', '.join(settings.LANE_KEYS)}, got {key!r}"
            )
        return cls(lanes, key)

    def environment(self) -> dict[str, str]:
        """The app's settings for these lanes: none with one lane (the defaults)."""
        if self.lanes == 1:
            return {}
        return {settings.LANES: str(self.lanes), settings.LANE_KEY: self.lane_key}


def of_config(config: Config, stage: str) -> StageLanes:
    """The lanes ``stage`` declares in the loaded config."""
    return StageLanes.from_stage(config.config_from_disk.get("stages", {}).get(stage, {}), stage)


def render(stage: str, project_dir: Path) -> bool:
    """Write the app's lane settings and the worker's reserved concurrency from the
    stage's ``lanes`` into its entry of ``.chalice/config.json``; True if it changed. The
    file is only rewritten when a value differs."""
    path = project_dir / ".chalice" / "config.json"
    data = json.loads(path.read_text())
    entry = data.setdefault("stages", {}).setdefault(stage, {})
    lanes = StageLanes.from_stage(entry, stage)
    before = json.dumps(entry, sort_keys=True)
    env = entry.setdefault("environment_variables", {})
    for name in (settings.LANES, settings.LANE_KEY):
        env.pop(name, None)
    env.update(lanes.environment())
    functions = entry.setdefault("lambda_functions", {})
    worker = functions.setdefault(WORKER, {})
    if lanes.lanes == 1:
        worker.pop("reserved_concurrency", None)  # the project's 1, as before lanes
    else:
        worker["reserved_concurrency"] = lanes.lanes
    if not worker:
        del functions[WORKER]
    if not functions:
        del entry["lambda_functions"]
    if json.dumps(entry, sort_keys=True) == before:
        return False
    path.write_text(json.dumps(data, indent=2) + "\n")
    return True


def check(config: Config, stage: str) -> StageLanes:
    """The stage's lanes; LanesError unless the app's environment and the worker's
    reserved concurrency are what ``render`` writes from them."""
    lanes = of_config(config, stage)
    env = config.environment_variables
    wanted = {settings.LANES: str(lanes.lanes), settings.LANE_KEY: lanes.lane_key}
    found = {name: env.get(name, default) for name, default in _DEFAULTS.items()}
    reserved = config.scope(stage, WORKER).reserved_concurrency
    if lanes.lanes == 1:
        wanted.pop(settings.LANE_KEY)  # one lane: the key chooses nothing
        found.pop(settings.LANE_KEY)
    if found != wanted or reserved != lanes.lanes:
        raise LanesError(
            f"stage {stage!r} declares {LANES_KEY} {lanes.lanes} ({LANE_KEY_KEY} "
            f"{lanes.lane_key!r}) but its config has {found} and {WORKER} reserved "
            f"concurrency {reserved}: apply the stage (python -m infra.stack apply --stage "
            f"{stage}) to write them from {LANES_KEY}"
        )
    return lanes


_DEFAULTS = {settings.LANES: str(StageLanes.lanes), settings.LANE_KEY: StageLanes.lane_key}
