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
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn, TextIO

from rich.console import Console, RenderableType

from jobs_cli import __version__, batch, listen, render, when
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
  jobs submit countPrimes below=1e9 --in 2h30m
  jobs submit 300000000 --at 2026-12-24T09:00:00+01:00
  jobs submit --from jobs.jsonl         one job per line, sent 100 at a time
  jobs schedules create nightly countPrimes below=1e9 --cron '0 2 * * ? *' --timezone Europe/Paris
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
        nargs="?",  # not with --from
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
    later = submit.add_mutually_exclusive_group()
    later.add_argument(
        "--at",
        metavar="TIME",
        help=f"run at this time, with its offset: {when.TIME_EXAMPLE}",
    )
    later.add_argument(
        "--in",
        dest="delay",
        metavar="DURATION",
        help=f"run after this long ({when.DURATION_EXAMPLES})",
    )
    submit.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="submit the jobs in FILE (- for stdin), one JSON object per line:"
        ' {"kind", "input", "run_at"?, "delay_seconds"?, "idempotency_key"?}',
    )
    commands.add_parser("kinds", help="list the kinds of job and their input fields")
    listening = commands.add_parser(
        "listen",
        help="receive your jobs' webhook events on this machine and print them (the local "
        "stage: make run); the endpoint is removed when it stops",
    )
    listening.add_argument(
        "--events",
        nargs="+",
        metavar="TYPE",
        help="the event types, e.g. job.succeeded job.progress (default: all but progress)",
    )
    listening.add_argument(
        "--port", type=int, default=0, help="the loopback port to listen on (default: any)"
    )
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
    _add_schedules(commands)
    for command in commands.choices.values():
        _add_shared_options(command, top=False)
    return parser


def _add_schedules(commands: Any) -> None:
    """``jobs schedules ACTION``: recurring jobs, as POST/GET/DELETE /schedules."""
    schedules = commands.add_parser(
        "schedules", help="recurring jobs: list, show, create, delete, pause, resume"
    )
    actions = schedules.add_subparsers(dest="action", required=True, metavar="ACTION")
    client_help = "another client's (the operator's key)"
    listing = actions.add_parser("list", help="list the schedules")
    listing.add_argument("--client", help="only this client's (the operator's key)")
    for name, text in (
        ("show", "show one schedule and its next fire time"),
        ("delete", "delete a schedule (the jobs it made stay)"),
        ("pause", "pause a schedule: its fire times are skipped until it is resumed"),
        ("resume", "resume a paused schedule from its next fire time"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("name", metavar="NAME")
        action.add_argument("--client", help=client_help)
    create = actions.add_parser(
        "create",
        help="make a schedule: NAME KIND FIELD=VALUE... (--cron EXPR | --rate EXPR)",
        epilog="EXPR is EventBridge's: --cron '0 9 ? * MON-FRI *' (minutes hours"
        " day-of-month month day-of-week year), --rate '15 minutes'",
    )
    create.add_argument("name", metavar="NAME", help="1 to 64 of A-Z a-z 0-9 _ -")
    create.add_argument("kind", metavar="KIND", help="a kind (see `jobs kinds`)")
    create.add_argument(
        "fields", nargs="*", default=[], metavar="FIELD=VALUE", help="the kind's input"
    )
    every = create.add_mutually_exclusive_group(required=True)
    every.add_argument("--cron", metavar="EXPR", help="a cron expression: '0 2 * * ? *'")
    every.add_argument("--rate", metavar="EXPR", help="a rate: '1 hour', '15 minutes'")
    create.add_argument(
        "--timezone",
        metavar="TZ",
        help="the cron's IANA time zone, e.g. Europe/Paris (default UTC)",
    )
    for action in actions.choices.values():
        _add_shared_options(action, top=False)


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
    if args.from_file is not None:
        return submit_file(args, api, output)
    if args.target is None:
        raise UsageError("the following arguments are required: KIND (see `jobs submit --help`)")
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
        later = timing(args)
        return lambda wait: api.submit(n, wait=wait, when=later)
    later = timing(args)
    input = parse_fields(kind_named(api, target), args.fields)
    return lambda wait: api.submit_job(target, input, wait=wait, when=later)


def kind_named(api: Api, name: str) -> dict[str, Any]:
    kinds = {str(kind.get("kind")): kind for kind in api.kinds()}
    if name not in kinds:
        raise UsageError(f"no kind {name!r}; kinds: {', '.join(sorted(kinds))}")
    return kinds[name]


def timing(args: argparse.Namespace) -> dict[str, Any]:
    """``--at`` as ``run_at``, ``--in`` as ``delay_seconds``; nothing for now."""
    try:
        if args.at is not None:
            return {"run_at": when.run_at(args.at)}
        if args.delay is not None:
            return {"delay_seconds": when.delay_seconds(args.delay)}
    except ValueError as error:
        option = "--at" if args.at is not None else "--in"
        raise UsageError(f"argument {option}: {error} (see `jobs submit --help`)") from None
    return {}


def submit_file(args: argparse.Namespace, api: Api, output: Output) -> int:
    """``--from FILE``: every line's job, in batches; job ids on stdout in line order, the
    summary and each failed line on stderr; exit 1 if any line failed."""
    if args.target is not None or args.wait:
        extra = "--wait" if args.wait else args.target
        raise UsageError(f"--from takes no {extra}: each line of the file is one job")
    later = timing(args)
    lines = batch.read_lines(_lines_of(args.from_file), later)
    with _progress(output, len(lines)) as advance:
        batch.send(lines, api.submit_batch, advance)
    summary = batch.summary(lines)
    if output.as_json:
        output.json(
            {
                "results": [{"line": line.number, **line.result} for line in lines],
                "made": summary.made,
                "replayed": summary.replayed,
                "failed": sum(summary.failed.values()),
            }
        )
    else:
        for line in lines:
            if batch.succeeded(line):
                output.out.print(str(line.result["job"].get("job_id")), markup=False)
    for line in lines:
        if not batch.succeeded(line):
            _error(f"line {line.number}: {batch.error_code(line)}: {batch.error_message(line)}")
    output.err.print(summary.text(), markup=False, highlight=False)
    return EXIT_JOB_UNSUCCESSFUL if summary.failed else EXIT_OK


def _lines_of(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().splitlines()
    except OSError as error:
        raise UsageError(f"--from {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--from {path}: not UTF-8 text") from None


@contextmanager
def _progress(output: Output, total: int) -> Iterator[Callable[[int], None]]:
    """A bar on stderr when stderr is a terminal; else nothing (a pipe or a log gets the
    summary only). rich.progress is imported only then."""
    if not output.interactive or total == 0:
        yield lambda done: None
        return
    from rich.progress import Progress

    with Progress(console=output.err, transient=True) as progress:
        task = progress.add_task("submitting", total=total)
        yield lambda done: progress.advance(task, done)


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


def schedules(args: argparse.Namespace, api: Api, output: Output) -> int:
    action: str = args.action
    if action == "list":
        found = api.schedules(client=args.client)
        if output.as_json:
            output.json({"schedules": found})
        elif found:
            output.table(render.schedule_list(found))
        else:
            output.out.print("no schedules", markup=False)
        return EXIT_OK
    if action == "create":
        schedule = api.create_schedule(schedule_body(args, api))
    elif action == "show":
        schedule = api.schedule(args.name, client=args.client)
    elif action == "delete":
        api.delete_schedule(args.name, client=args.client)
        if output.as_json:
            output.json({"deleted": args.name})
        else:
            output.out.print(f"deleted {args.name}", markup=False)
        return EXIT_OK
    else:
        schedule = api.set_schedule_state(args.name, action, client=args.client)
    if output.as_json:
        output.json(schedule)
    elif action == "show":
        output.table(render.schedule_details(schedule))
    elif schedule.get("state") == "paused":
        output.out.print(f"paused {schedule.get('name')}", markup=False)
    else:
        output.out.print(
            f"{schedule.get('state')} {schedule.get('name')}: next fire"
            f" {render.timestamp(schedule.get('next_fire_at'))}",
            markup=False,
        )
    return EXIT_OK


def schedule_body(args: argparse.Namespace, api: Api) -> dict[str, Any]:
    """POST /schedules' body: the kind's input read as ``jobs submit KIND`` reads it, the
    expression wrapped as EventBridge writes it (``cron(...)``, ``rate(...)``)."""
    input = parse_fields(kind_named(api, args.kind), args.fields)
    word, expression = ("cron", args.cron) if args.cron is not None else ("rate", args.rate)
    expression = expression.strip()
    if not (expression.startswith(f"{word}(") and expression.endswith(")")):
        expression = f"{word}({expression})"
    body = {"name": args.name, "kind": args.kind, "input": input, "schedule": expression}
    if args.timezone:
        body["timezone"] = args.timezone
    return body


def listen_events(args: argparse.Namespace, api: Api, output: Output) -> int:
    """Print each event until Ctrl-C; the endpoint is deleted then."""

    def show(event: dict[str, Any]) -> None:
        if output.as_json:
            output.json(event)
        else:
            output.out.print(listen.line(event), markup=False)

    def ready(endpoint_id: str, url: str) -> None:
        output.note(f"listening on {url} as webhook {endpoint_id}; Ctrl-C stops")

    listen.listen(api, args.events, args.port, show, ready, threading.Event())
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Api, Output], int]] = {
    "listen": listen_events,
    "schedules": schedules,
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
