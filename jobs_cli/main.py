"""The ``jobs`` command: parse the command line, run one command, exit with its status.

Exit statuses:
  0    done; for a job, it is queued, running or succeeded
  1    the job failed or was cancelled (submit --wait, status, watch)
  2    bad usage, or the API could not be reached or answered with an error
  130  interrupted (Ctrl-C)

Errors are one line on stderr (``jobs: …``), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn, TextIO

from rich.console import Console, RenderableType

from jobs_cli import __version__, render
from jobs_cli.client import DEFAULT_URL, FINAL_STATUSES, MAX_WAIT_SECONDS, Api, CliError, Job
from jobs_cli.signing import NoCredentials, sigv4_for
from jobs_cli.watch import watch

EXIT_OK = 0
EXIT_JOB_UNSUCCESSFUL = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
UNSUCCESSFUL = frozenset({"failed", "cancelled"})

DESCRIPTION = """\
Submit, follow and cancel heavy-jobs jobs over the HTTP API.

The API is at --url, else $JOBS_URL, else http://127.0.0.1:8000 (`make run`). On a stage
that requires an API key (prod), pass --api-key or set $JOBS_API_KEY: every request sends
it, to that address only (a redirect elsewhere is not followed). A client's key sees that
client's jobs only; the stage's own key (the operator's) sees every client's.

On a stage that authenticates with IAM, pass --auth iam or set $JOBS_AUTH=iam: every
request is signed (AWS Signature Version 4, service execute-api) with the credentials
the AWS CLI would use (AWS_PROFILE, `aws sso login`, environment variables, an instance
or container role), for the region in the API's host name, else the profile's. The
client is the signing principal: a role's sessions share its jobs.
"""
EPILOG = """\
exit statuses: 0 done (a job queued, running or succeeded), 1 the job failed or was
cancelled, 2 bad usage or an API/connection error (one line on stderr).

examples:
  jobs submit 300000000 --wait          prints the result once the job succeeded
  jobs kinds                            the kinds of job and their fields
  jobs submit countPrimes below=1e9 --wait
  id=$(jobs submit 5_000_000_000) && jobs watch "$id"
  jobs list --status running
  jobs list --client alice              the operator's view of one client's jobs
  jobs --url https://abc.execute-api.eu-west-1.amazonaws.com/prod --api-key KEY submit 10
  AWS_PROFILE=ci jobs --auth iam --url https://abc.execute-api.eu-west-1.amazonaws.com/iam list
"""
# How the CLI authenticates: the stage settings' names (chalicelib.config.Auth), which
# the CLI does not import (it installs without the service's code).
AUTH_CHOICES = ("none", "api_key", "iam")


class UsageError(CliError):
    """The command line does not make sense."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def count(text: str) -> int:
    """n as a person types it: 300000000, 300_000_000, 300,000,000 or 3e8."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    if re.fullmatch(r"[0-9]+", cleaned):
        return int(cleaned)
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?[eE][0-9]{1,3}", cleaned):
        try:
            value = Decimal(cleaned)
        except InvalidOperation:
            value = Decimal("NaN")
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
    raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")


def _add_shared_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options that work before or after the command (`jobs --url U list`, `jobs list
    --url U`). A command's copy defaults to SUPPRESS, so leaving it out there keeps the
    value given before the command. (argparse's ``parents`` would share one action
    object between the parsers, and with it their defaults.)"""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--url", help=f"the API's base URL (default: $JOBS_URL, else {DEFAULT_URL})", **default
    )
    parser.add_argument("--api-key", help="sent as x-api-key (default: $JOBS_API_KEY)", **default)
    parser.add_argument(
        "--auth",
        choices=AUTH_CHOICES,
        help="iam: sign every request with your AWS credentials (default: $JOBS_AUTH, else "
        "api_key with a key, none without)",
        **default,
    )
    parser.add_argument(
        "--json", action="store_true", help="print the API's JSON answer", **default
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="jobs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_shared_options(parser, top=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser(
        "submit", help="queue a job: KIND FIELD=VALUE..., or N to count to; print its id"
    )
    submit.add_argument(
        "target",
        metavar="KIND",
        help="a kind (see `jobs kinds`), or N for heavyLoad: 300000000, 3e8 or 300_000_000",
    )
    submit.add_argument(
        "fields",
        nargs="*",
        default=[],  # else argparse calls it required when KIND is missing
        metavar="FIELD=VALUE",
        help="the kind's input, e.g. below=1e9",
    )
    submit.add_argument(
        "--wait", action="store_true", help="wait for the job to finish and print its result"
    )
    commands.add_parser("kinds", help="list the kinds of job and their input fields")
    for name, text in (
        ("status", "show a job (exit 1 if it failed or was cancelled)"),
        ("watch", "follow a job with a live progress bar until it finishes"),
        ("cancel", "cancel a queued or running job"),
        ("retry", "run a failed or cancelled job again, as a new job; print its id"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("job_id", metavar="ID")
    listing = commands.add_parser("list", help="list jobs, newest first")
    listing.add_argument(
        "--status", help="only jobs in this status: queued, running, succeeded, failed, cancelled"
    )
    listing.add_argument("--kind", help="only jobs of this kind (see `jobs kinds`)")
    listing.add_argument(
        "--client", help="only this client's jobs (the operator's key; a client's own name)"
    )
    listing.add_argument("--limit", type=int, help="at most this many (1 to 100; default 20)")
    listing.add_argument("--cursor", help="the next page, as printed after a full page")
    for command in commands.choices.values():
        _add_shared_options(command, top=False)
    return parser


# What `jobs list` says when the API reports the worker paused (GET /jobs "paused").
PAUSED_LINE = "paused: the worker takes no jobs; queued jobs wait until `make resume`"


class Output:
    """Where a command writes: results on stdout, progress and notes on stderr."""

    def __init__(self, stdout: TextIO, stderr: TextIO, as_json: bool) -> None:
        self.as_json = as_json
        self.out = _console(stdout)
        self.err = _console(stderr)
        self.interactive = stderr.isatty()

    def table(self, table: RenderableType) -> None:
        if self.out.is_terminal:
            self.out.print(table)
            return
        # In a pipe or file: no padding after the last column.
        with self.out.capture() as captured:
            self.out.print(table)
        self.out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))

    def json(self, value: Any) -> None:
        self.out.print_json(json.dumps(value), highlight=False)

    def note(self, text: str) -> None:
        """A hint for a person at a terminal; nothing when stderr is a pipe or file."""
        if self.interactive:
            self.err.print(text, markup=False, highlight=False)


def _console(file: TextIO) -> Console:
    # Not a terminal: lines as wide as they need (rich would otherwise fit 80 columns
    # and cut the job ids that scripts read).
    return Console(
        file=file, highlight=False, soft_wrap=False, width=None if file.isatty() else 1000
    )


def _now() -> datetime:
    return datetime.now(UTC)


# --- the commands ---------------------------------------------------------------------


def submit(args: argparse.Namespace, api: Api, output: Output) -> int:
    post = _submission(args, api)
    if not args.wait:
        _, accepted = post(None)
        if output.as_json:
            output.json(accepted)
        else:
            output.out.print(accepted["job_id"], markup=False)
            output.note(f"queued; follow it with: jobs watch {accepted['job_id']}")
        return EXIT_OK
    # The server holds each request open until the job finishes or MAX_WAIT_SECONDS
    # pass (Prefer: wait, then ?wait=): no polling loop here.
    _, job = post(MAX_WAIT_SECONDS)
    while job.get("status") not in FINAL_STATUSES:
        job = api.job(str(job["job_id"]), wait=MAX_WAIT_SECONDS)
    if output.as_json:
        output.json(job)
    elif job["status"] == "succeeded":
        output.out.print(render.result_text(job.get("result")), markup=False)
    return _job_exit(job, output)


def _submission(args: argparse.Namespace, api: Api) -> Callable[[int | None], tuple[int, Job]]:
    """How to post the job the command line describes: N (POST /heavy, as before kinds)
    or a kind and its fields (POST /jobs), read per the kind's input schema."""
    target: str = args.target
    if target[:1].isdigit():
        try:
            n = count(target)
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"argument N: {error} (see `jobs submit --help`)") from None
        if args.fields:
            raise UsageError(
                f"N takes no FIELD=VALUE; name the kind: jobs submit KIND {args.fields[0]}"
            )
        return lambda wait: api.submit(n, wait=wait)
    kinds = {str(kind.get("kind")): kind for kind in api.kinds()}
    if target not in kinds:
        raise UsageError(f"no kind {target!r}; kinds: {', '.join(sorted(kinds))}")
    input = parse_fields(kinds[target], args.fields)
    return lambda wait: api.submit_job(target, input, wait=wait)


def parse_fields(kind: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` arguments as the kind's input, each value read as its schema's type
    says (integers as ``count`` reads n). The API checks the limits."""
    schema = kind.get("input_schema") or {}
    properties: dict[str, Any] = schema.get("properties") or {}
    name = kind.get("kind")
    input: dict[str, Any] = {}
    for text in fields:
        field, sep, raw = text.partition("=")
        if not sep or not field:
            raise UsageError(f"not FIELD=VALUE: {text!r}")
        if field not in properties:
            known = ", ".join(properties) or "none"
            raise UsageError(f"{name} has no field {field!r}; fields: {known}")
        if field in input:
            raise UsageError(f"{field} given twice")
        input[field] = _field_value(field, properties[field], raw)
    missing = [f for f in schema.get("required") or [] if f not in input]
    if missing:
        raise UsageError(f"{name} needs {', '.join(f'{f}=...' for f in missing)}")
    return input


def _field_value(field: str, schema: Mapping[str, Any], raw: str) -> Any:
    kind = schema.get("type")
    try:
        if kind == "integer":
            return count(raw)
        if kind == "number":
            value = float(raw.replace("_", ""))
            if not math.isfinite(value):
                raise ValueError
            return value
    except (argparse.ArgumentTypeError, ValueError):
        raise UsageError(
            f"{field}: not {'a whole number' if kind == 'integer' else 'a number'}: {raw!r}"
        ) from None
    if kind == "boolean":
        word = raw.strip().lower()
        if word not in BOOLEANS:
            raise UsageError(f"{field}: not true or false: {raw!r}")
        return BOOLEANS[word]
    enum = schema.get("enum")
    if enum is not None and raw not in enum:
        raise UsageError(f"{field}: one of {', '.join(map(str, enum))}, not {raw!r}")
    return raw


BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def kinds(args: argparse.Namespace, api: Api, output: Output) -> int:
    listed = api.kinds()
    if output.as_json:
        output.json({"kinds": listed})
    else:
        output.table(render.kind_list(listed))
    return EXIT_OK


def retry(args: argparse.Namespace, api: Api, output: Output) -> int:
    job = api.retry(args.job_id)
    if output.as_json:
        output.json(job)
    else:
        output.out.print(job["job_id"], markup=False)
        output.note(f"queued again; follow it with: jobs watch {job['job_id']}")
    return EXIT_OK


def status(args: argparse.Namespace, api: Api, output: Output) -> int:
    job = api.job(args.job_id)
    if output.as_json:
        output.json(job)
    else:
        output.table(render.job_details(job, _now()))
    return EXIT_JOB_UNSUCCESSFUL if job.get("status") in UNSUCCESSFUL else EXIT_OK


def watch_job(args: argparse.Namespace, api: Api, output: Output) -> int:
    job = watch(api, args.job_id, output.err)
    if output.as_json:
        output.json(job)
    else:
        output.out.print(render.outcome(job, _now()), markup=False)
    return EXIT_JOB_UNSUCCESSFUL if job.get("status") in UNSUCCESSFUL else EXIT_OK


def list_jobs(args: argparse.Namespace, api: Api, output: Output) -> int:
    page = api.jobs(
        status=args.status, limit=args.limit, cursor=args.cursor, kind=args.kind, client=args.client
    )
    if output.as_json:
        output.json(page)
        return EXIT_OK
    jobs = page.get("jobs") or []
    if page.get("paused") is True:
        # On stderr, in a pipe too: stdout stays the table scripts read.
        output.err.print(PAUSED_LINE, markup=False, highlight=False)
    if jobs:
        output.table(render.job_list(jobs, _now()))
    else:
        output.out.print("no jobs", markup=False)
    if page.get("next"):
        output.note(f"more: jobs list --cursor {page['next']}")
    return EXIT_OK


def cancel(args: argparse.Namespace, api: Api, output: Output) -> int:
    job = api.cancel(args.job_id)
    if output.as_json:
        output.json(job)
    else:
        output.out.print(f"{job.get('status')} {job.get('job_id')}", markup=False)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Api, Output], int]] = {
    "submit": submit,
    "status": status,
    "watch": watch_job,
    "list": list_jobs,
    "cancel": cancel,
    "kinds": kinds,
    "retry": retry,
}


def api_for(args: argparse.Namespace, env: Mapping[str, str]) -> Api:
    """The API the options, else the environment, else the local stack point at, and how
    to authenticate to it (UsageError for a key on an IAM stage, or api_key without one)."""
    base_url = args.url or env.get("JOBS_URL") or DEFAULT_URL
    api_key = args.api_key or env.get("JOBS_API_KEY") or None
    auth = (args.auth or env.get("JOBS_AUTH") or ("api_key" if api_key else "none")).lower()
    if auth not in AUTH_CHOICES:
        raise UsageError(f"$JOBS_AUTH must be one of {', '.join(AUTH_CHOICES)}, got {auth!r}")
    if auth == "iam" and api_key:
        raise UsageError("an IAM stage takes no API key: drop --api-key / $JOBS_API_KEY")
    if auth == "api_key" and not api_key:
        raise UsageError("--auth api_key needs a key: --api-key or $JOBS_API_KEY")
    try:
        signer = sigv4_for(base_url) if auth == "iam" else None
    except NoCredentials as error:
        raise CliError(f"--auth iam: {error}") from None
    return Api(base_url=base_url, api_key=api_key, signer=signer)


def _job_exit(job: Job, output: Output) -> int:
    if job.get("status") == "failed":
        _error(f"job {job.get('job_id')} failed: {job.get('error')}")
        return EXIT_JOB_UNSUCCESSFUL
    if job.get("status") == "cancelled":
        _error(f"job {job.get('job_id')} was cancelled")
        return EXIT_JOB_UNSUCCESSFUL
    return EXIT_OK


def _error(message: str) -> None:
    print(f"jobs: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        args = build_parser().parse_args(argv)
        api = api_for(args, env)
        output = Output(sys.stdout, sys.stderr, as_json=args.json)
        return COMMANDS[args.command](args, api, output)
    except CliError as error:
        _error(str(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (`jobs list | head -1`): point it at /dev/null so the
        # interpreter's last flush does not complain too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
