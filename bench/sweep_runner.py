"""Runs of the recovery sweep, as the local event source runs it, timed.

    python -m bench.sweep_runner --project-dir DIR --stage STAGE [--runs N]

Loads the project as ``infra.event_source`` does, takes the app's scheduled handler
(there is one: the recovery sweep), starts one execution environment for it (a process
that imports the app, as a cold start) and invokes it ``--runs`` times with
EventBridge's scheduled event. Prints one line, ``RESULT`` and JSON: each invocation's
duration in ms (Lambda's Duration: the init excluded) and its status (the handler's own
log lines may come before it). AWS settings come from the
environment (``AWS_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import boto3

from infra.event_source import (  # the event source's own pieces, not a copy
    FunctionRuntime,
    InstanceSpec,
    import_world,
    instance_environment,
    load_project,
    scheduled_event,
)

RESULT = "RESULT"


def run(project_dir: str, stage: str, runs: int) -> list[dict[str, object]]:
    base_environment = dict(os.environ)
    project = load_project(project_dir, stage)
    if len(project.schedule_sources) != 1:
        raise RuntimeError(f"expected one scheduled handler, found {project.schedule_sources}")
    function = project.schedule_sources[0].function
    region = boto3.session.Session().region_name or "us-east-1"
    spec = InstanceSpec(
        project_dir=project.project_dir,
        handler=function.handler,
        function_name=function.function_name,
        memory_size=function.memory_size,
        timeout_seconds=function.timeout_seconds,
        environment=instance_environment(base_environment, function, region, project.project_dir),
        import_world=import_world(project.project_dir).to_wire(),
    )
    runtime = FunctionRuntime(function, spec)
    rule = f"arn:aws:events:{region}:123456789012:rule/{function.function_name}"
    results: list[dict[str, object]] = []
    try:
        for _ in range(runs):
            if not runtime.reserve(timeout=60):
                raise RuntimeError("the sweep's instance is still busy")
            try:
                invocation = runtime.invoke(scheduled_event(rule, region, time.time()))
            finally:
                runtime.release()
            results.append(
                {
                    "duration_ms": round(invocation.duration_ms, 3),
                    "status": invocation.result.status.value,
                    "error": invocation.result.error,
                }
            )
    finally:
        runtime.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_runner")
    parser.add_argument("--project-dir", required=True)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(RESULT, json.dumps(run(args.project_dir, args.stage, args.runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
