"""Deploy a Chalice stage to AWS, tear it down, or package it for a pipeline.

    python -m infra.deploy deploy  --stage dev    # stack, then `chalice deploy`, then API key
    python -m infra.deploy destroy --stage dev    # API key, `chalice delete`, then the stack
    python -m infra.deploy package --stage prod   # out/prod/: SAM template + deployment.zip
    python -m infra.deploy api-key --stage prod [--client alice]  # print a key (per client)
    python -m infra.deploy api-key --stage local [--client alice] # in `make run`'s emulator
    python -m infra.deploy pause   --stage prod   # the worker stops taking jobs (none lost)
    python -m infra.deploy resume  --stage prod   # and takes them again, in order

Where it deploys is whatever boto3's standard settings say (``AWS_PROFILE``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, credentials, ``AWS_ENDPOINT_URL``); nothing here
assumes the local emulator, except ``pause``, ``resume`` and ``api-key`` for the local
stage, which act on `make run`'s. Every command is idempotent: re-running ``deploy``
updates the stage in place, re-running ``destroy`` deletes whatever is left.

What a stage is made of, and who owns it:

- the stack ``<app>-<stage>`` (infra/template.yaml: queues, job table), applied by
  :func:`infra.stack.apply_stage`, which also writes its outputs into the stage's
  ``environment_variables`` and the per-function IAM policy files;
- the functions, their roles, the SQS event sources, the schedule and the REST API:
  ``chalice deploy``, recorded by Chalice in ``.chalice/deployed/<stage>.json``, a record
  kept in AWS between runs (infra/deploy/state.py) so any clone can deploy and destroy;
- the recursion setting of the functions in the SQS -> Lambda -> SQS loop, and operations
  (infra/operations.py: alarms, dashboard, log retention, access logs, stack ``-ops``);
- for a stage whose ``environment_variables`` set ``JOBS_REQUIRE_API_KEY=true``: a usage
  plan (throttled per key) on the REST API's stage, an API key and the key's membership of
  the plan, all named ``<app>-<stage>``, and per-client keys ``<app>-<stage>-<client>``.

Before creating anything, ``deploy`` checks the account can give the worker its reserved
concurrency. ``destroy`` deletes all of it, the job table and the dead-letter queue included:
job records are results of recomputable jobs that expire after ``JOBS_RETENTION_DAYS`` anyway.
"""

from __future__ import annotations

import argparse
import os
import sys

from infra import operations
from infra.deploy.access import Throttle, api_key
from infra.deploy.chalice_project import DeployError
from infra.deploy.lifecycle import deploy, destroy
from infra.deploy.packaging import package
from infra.deploy.pause import set_paused

# The deploy parameter that subscribes an address to the stage's alarms.
ALARM_EMAIL = "ALARM_EMAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", choices=["deploy", "destroy", "package", "api-key", "pause", "resume"]
    )
    parser.add_argument("--stage", required=True)
    parser.add_argument("--client", help="api-key: this client's own key (created if missing)")
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy":
            given = os.environ.get(ALARM_EMAIL)  # unset: keep the stage's current address
            alarm_email = None if given is None else given.strip()
            deploy(args.stage, Throttle.from_mapping(os.environ), alarm_email=alarm_email)
        elif args.command == "destroy":
            destroy(args.stage)
        elif args.command == "package":
            alarm_email = os.environ.get(ALARM_EMAIL, "").strip()
            out_dir = package(
                args.stage, Throttle.from_mapping(os.environ), alarm_email=alarm_email
            )
            print(f"Packaged stage {args.stage} in {out_dir}")
        elif args.command in ("pause", "resume"):
            switched = set_paused(args.stage, paused=args.command == "pause")
            state = "paused: jobs wait in the queue" if args.command == "pause" else "resumed"
            print(f"{switched}: {state}")
        else:
            print(api_key(args.stage, client=args.client or None))
    except (DeployError, operations.OperationsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
