"""The project's settings, read through Chalice: which functions serve which event sources.

``load_project`` loads a Chalice project exactly as the ``chalice`` CLI does and lists its
``on_sqs_message`` and ``schedule`` handlers with everything ``chalice deploy`` would
configure for their functions (handler, name, concurrency, timeout, memory, environment).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from chalice.app import DynamoDBEventConfig, Rate, ScheduledEventConfig, SQSEventConfig
from chalice.cli.factory import CLIFactory
from chalice.constants import DEFAULT_LAMBDA_MEMORY_SIZE, DEFAULT_LAMBDA_TIMEOUT

# Instances a function may run at once when its reserved concurrency is unset. On AWS
# it would share the account's pool (1,000 by default); locally that would only mean
# as many processes as messages, so cap it at a number a laptop runs comfortably.
DEFAULT_CONCURRENCY = 10


@dataclass(frozen=True)
class FunctionSettings:
    """One Lambda function as ``chalice deploy`` would configure it."""

    name: str  # Chalice's name for it: the key under `lambda_functions` in config.json
    handler: str  # Lambda's handler string, "module.attribute" (e.g. "app.handle_jobs")
    function_name: str  # the deployed function's name: <app>-<stage>-<name>
    concurrency: int  # instances allowed at once
    timeout_seconds: int
    memory_size: int
    environment: dict[str, str] = field(default_factory=dict)  # stage + function scope


@dataclass(frozen=True)
class SQSSourceSettings:
    """One ``@app.on_sqs_message`` handler: its queue, batching and function."""

    function: FunctionSettings
    queue: str | None  # the queue's name, or None when given by ARN
    queue_arn: str | None
    batch_size: int
    batching_window_seconds: int


@dataclass(frozen=True)
class ScheduleSourceSettings:
    """One ``@app.schedule`` handler with a rate: its function and its period."""

    function: FunctionSettings
    expression: str  # as EventBridge shows it, e.g. "rate(1 minute)"
    period_seconds: float


@dataclass(frozen=True)
class StreamSourceSettings:
    """One ``@app.on_dynamodb_record`` handler: its stream, batching and function."""

    function: FunctionSettings
    stream_arn: str
    batch_size: int
    starting_position: str


# EventBridge's rate units, in seconds.
RATE_UNIT_SECONDS = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}


@dataclass(frozen=True)
class ProjectSettings:
    """The event sources of a Chalice app at one stage."""

    app_name: str
    stage: str
    project_dir: str
    sqs_sources: list[SQSSourceSettings]
    schedule_sources: list[ScheduleSourceSettings]
    # Event sources this runner does not serve (yet), as "kind name", so they can be
    # reported rather than silently ignored.
    not_emulated: list[str]
    stream_sources: list[StreamSourceSettings] = field(default_factory=list)


def effective_concurrency(reserved: int | None, maximum: int | None) -> int:
    """How many invocations of a function may run at once.

    The function's reserved concurrency (``DEFAULT_CONCURRENCY`` when unset), capped by
    the event source's ``maximum_concurrency`` when set. 0 means throttled: never invoked.
    Raises ``ValueError`` on a negative value (AWS rejects it too).
    """
    limit = DEFAULT_CONCURRENCY if reserved is None else reserved
    if maximum is not None:
        limit = min(limit, maximum)
    if limit < 0:
        raise ValueError(f"concurrency cannot be negative: {limit}")
    return limit


def function_settings(
    config: Any, stage: str, name: str, handler: str, maximum_concurrency: int | None = None
) -> FunctionSettings:
    """A function's settings from Chalice's ``Config``, scoped as the deployer scopes them.

    Lookup order is Chalice's (stage's function, stage, top-level function, top level);
    unset timeout and memory take Chalice's own defaults.
    """
    scoped = config.scope(stage, name)
    timeout = scoped.lambda_timeout
    memory = scoped.lambda_memory_size
    return FunctionSettings(
        name=name,
        handler=handler,
        # As chalice.deploy.appgraph names the function it deploys.
        function_name=f"{scoped.app_name}-{stage}-{name}",
        concurrency=effective_concurrency(scoped.reserved_concurrency, maximum_concurrency),
        timeout_seconds=DEFAULT_LAMBDA_TIMEOUT if timeout is None else int(timeout),
        memory_size=DEFAULT_LAMBDA_MEMORY_SIZE if memory is None else int(memory),
        environment=dict(scoped.environment_variables),
    )


def load_project(
    project_dir: str, stage: str, environ: MutableMapping[str, str] | None = None
) -> ProjectSettings:
    """Load a Chalice project exactly as the ``chalice`` CLI does, and list its event sources.

    ``environ`` (default ``os.environ``) receives the stage's environment variables before
    ``app.py`` is imported, so an app that reads e.g. its queue name at import time sees
    it. Raises ``RuntimeError`` for a missing or invalid config, and whatever importing
    ``app.py`` raises.
    """
    env = os.environ if environ is None else environ
    project_dir = os.path.abspath(project_dir)
    # The chalice CLI passes os.environ itself; without it CLIFactory copies the
    # environment and app.py would not see the stage's variables.
    factory = CLIFactory(project_dir, environ=env)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    sqs_sources: list[SQSSourceSettings] = []
    schedule_sources: list[ScheduleSourceSettings] = []
    stream_sources: list[StreamSourceSettings] = []
    not_emulated: list[str] = []
    for source in app.event_sources:
        if isinstance(source, SQSEventConfig):
            sqs_sources.append(_sqs_source_settings(config, stage, source))
        elif isinstance(source, ScheduledEventConfig) and isinstance(
            source.schedule_expression, Rate
        ):
            rate = source.schedule_expression
            schedule_sources.append(
                ScheduleSourceSettings(
                    function=function_settings(config, stage, source.name, source.handler_string),
                    expression=rate.to_string(),
                    period_seconds=rate.value * RATE_UNIT_SECONDS[rate.unit],
                )
            )
        elif isinstance(source, DynamoDBEventConfig) and source.stream_arn:
            stream_sources.append(
                StreamSourceSettings(
                    function=function_settings(config, stage, source.name, source.handler_string),
                    stream_arn=source.stream_arn,
                    batch_size=source.batch_size,
                    starting_position=source.starting_position,
                )
            )
        elif isinstance(source, DynamoDBEventConfig):
            not_emulated.append(f"{type(source).__name__} {source.name} (no stream ARN given)")
        else:
            not_emulated.append(f"{type(source).__name__} {source.name}")
    return ProjectSettings(
        app_name=config.app_name,
        stage=stage,
        project_dir=project_dir,
        sqs_sources=sqs_sources,
        schedule_sources=schedule_sources,
        not_emulated=not_emulated,
        stream_sources=stream_sources,
    )


def _sqs_source_settings(config: Any, stage: str, source: SQSEventConfig) -> SQSSourceSettings:
    function = function_settings(
        config, stage, source.name, source.handler_string, source.maximum_concurrency
    )
    return SQSSourceSettings(
        function=function,
        queue=source.queue,
        queue_arn=source.queue_arn,
        batch_size=source.batch_size,
        batching_window_seconds=source.maximum_batching_window_in_seconds,
    )
