"""A local stand-in for Lambda's SQS event source mapping, for any Chalice app.

``chalice local`` serves routes but ignores ``@app.on_sqs_message`` handlers. This runner
does for them what Lambda's event source mapping does on AWS::

    python -m infra.event_source --project-dir DIR --stage STAGE [--burst] [--poll-seconds N]
                                 [--mode exact|aws] [--pollers N]

What it reproduces, and how:

- **The deployed configuration, read the way Chalice reads it.** The project is loaded
  with ``CLIFactory(project_dir).create_config_obj(stage)`` and ``config.chalice_app``
  (the stage's environment variables are in ``os.environ`` before ``app.py`` is imported,
  as under the ``chalice`` CLI). Every ``on_sqs_message`` handler in ``app.event_sources``
  is served, with its queue, batch size and batching window from the decorator and its
  reserved concurrency, timeout, memory size and environment variables from
  ``config.scope(stage, name)``. Nothing is copied or typed a second time.
- **Polling, in one of two modes** (``--mode``, else ``$EVENT_SOURCE_MODE``, else
  ``exact``; the first log line names it, e.g. ``mode=aws pollers=5``; see ``modes``).
  Both long-poll ReceiveMessage (batch size ≤ 10 per call, all system and message
  attributes), honouring the batching window, and never run more invocations of a
  function at once than its reserved concurrency (``DEFAULT_CONCURRENCY`` when unset),
  capped by the mapping's ``maximum_concurrency``.

  - ``exact``: a function's poller only receives when one of the function's instance
    slots is free, so no message is taken that cannot run now.
  - ``aws`` (``pollers``): as AWS documents the mapping, five pollers (``--pollers``)
    receive whether or not concurrency is free; an invocation that finds none is
    throttled and retried with exponential backoff until the batch's visibility timeout,
    then dropped (it comes back with its receive count raised, and SQS's redrive policy
    applies). On a FIFO queue SQS keeps one batch in flight per message group.
- **The event.** Lambda's exact SQS event (``sqs_message_to_record``), checked against
  AWS's documented sample.
- **Execution environments.** Each function gets up to ``concurrency`` instances, each an
  interpreter of its own (``bootstrap.py``, run with ``python -I`` in the task root) that
  imports the app once with the function's environment (a cold start) and then serves
  invocations (warm). It calls the very object Lambda calls, the function's handler
  string (``app.<function>``) resolved in the imported module, with ``(event, context)``;
  the context is Chalice's own ``chalice.local.LambdaContext``. An invocation that
  outlives the function's timeout has its instance killed ("Task timed out after N
  seconds"); the next one cold-starts.
- **The package's imports only.** An instance can import the standard library, boto3
  and its dependencies (Lambda's runtime) and what ``chalice package`` would zip: app.py,
  chalicelib/, vendor/, Chalice's runtime (``chalice.app``) and the ``requirements.txt``
  dependencies (``deployment``). Anything else installed locally (moto, requests,
  pytest, the project's ``infra``) raises ModuleNotFoundError, as it would on AWS.
- **Settling the batch** (``settle_batch``): a normal return deletes the batch; a
  ``batchItemFailures`` response deletes all but the listed records; an exception, a
  timeout, a dead instance or a malformed response deletes nothing and leaves visibility
  alone, so the messages come back after the queue's visibility timeout and SQS's own
  redrive policy moves them to the dead-letter queue after ``maxReceiveCount``.
- **Shutdown.** SIGINT/SIGTERM (Ctrl-C, or whatever stops ``make worker`` or ``make run``)
  stop polling: no receive starts. Invocations in flight are interrupted, their instances
  terminated, and their messages left alone: they come back as the function left them
  (its own visibility change, such as a job's hold, else the queue's visibility timeout),
  as after an execution environment that crashed on AWS. Every receive still open (a long
  poll, up to ``--poll-seconds``, 20 by default) is let finish, and whatever a receive
  returned that no invocation took (a batch just received, a batching window being
  collected, a throttled batch backing off in ``aws`` mode) is made visible again at once
  (ChangeMessageVisibility 0 with its receipt handle), so a worker started next picks up
  every queued message at once: on the job queue's one FIFO message group nothing waits
  for a visibility timeout. Then the runner exits 0 with no child left; it waits at most
  the poll time plus 2 s, and a second signal stops the wait. ``make pause`` does not
  signal: it disables the mapping (``mappings``), and nothing is received meanwhile.
  SIGKILL (or a crash) leaves no chance to clean up: a long poll left open in SQS takes
  the next message for nobody. So each receive on a FIFO queue is journalled with its
  ``ReceiveRequestAttemptId`` until its messages are invoked or released, and a runner
  starting up retries the receives of dead runners and releases what they took
  (``receives``): the message is visible again at most 22 s after that receive started,
  if a runner starts within 5 minutes, else when its visibility timeout ends. The
  instances of a killed runner exit by themselves within a second (``bootstrap``: an
  idle one reads EOF, a busy one notices it was orphaned). ``--burst`` drains instead:
  it exits 0 once a receive on every queue came back empty with no invocation in flight
  (what tests want; a message hidden by its visibility timeout after a failure is not
  waited for). Tested in ``tests/infra/event_source/test_shutdown.py`` and
  ``tests/e2e/test_worker_restart.py``.

DynamoDB Streams handlers (``@app.on_dynamodb_record``) are served too, when the process
is given the stream's ARN as ``chalice deploy`` is (``make run`` passes it): ``streams``
reads the stream as Lambda's DynamoDB event source does, with bisection, the retry bound
and the on-failure queue set through its ``EVENT_SOURCE_STREAM_*`` variables.

Where it differs from AWS, knowingly:

- In ``exact`` mode (the default): AWS runs about five pollers per mapping regardless of
  reserved concurrency and *throttles* the batches it cannot run; they go back to the
  queue and their receive count rises (with a low ``maxReceiveCount`` a message can reach
  the DLQ without ever running), the function idles while held batches back off, and a
  standard queue's messages start out of order. ``exact`` never over-receives, so none
  of that happens: receive counts rise only on real failures. ``aws`` mode reproduces it;
  it does not model the mapping's scaling steps (up by 300 pollers a minute, down to two
  at low traffic) nor its reduced concurrency after function errors, and AWS does not
  publish its backoff curve (``modes.ThrottleBackoff`` says which one is used, and why).
- It behaves as a mapping with ``FunctionResponseTypes: [ReportBatchItemFailures]``.
  Chalice cannot set that; the deployment must (e.g. ``chalice package
  --merge-template``), or AWS ignores the response and deletes the whole batch.
- Not reproduced: memory limits and memory-proportional CPU, the 6 MB payload limit,
  Lambda's back-off after failures (both modes), throttled scheduled invocations (run as
  in ``exact`` mode), and the visibility extension AWS applies when batching window +
  function timeout exceed the queue's visibility timeout. Instances inherit the runner's
  environment variables (its endpoint and credentials stand in for the execution role)
  on top of which Lambda's reserved variables and the function's own are set; only their
  imports are confined to the package.
- Like ``CreateEventSourceMapping``, it refuses a function timeout longer than the
  queue's visibility timeout.
- Like ``UpdateEventSourceMapping``'s ``Enabled``, a function's SQS mapping can be disabled
  and enabled while the runner runs (``mappings.set_enabled``: a small file per stage and
  function, re-read before every receive). Disabled, nothing is received: messages wait
  and none is lost; the runner reports ``Disabled`` once no receive is in flight
  (``mappings.wait_for_state``), as AWS's State field goes Disabling -> Disabled.

AWS is reached only through boto3's standard settings (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, credentials from the environment): the same runner works against
moto, LocalStack or a real account.

Scheduled handlers (``@app.schedule`` with a ``rate(...)`` expression, as EventBridge
runs them) are served too, by ``ScheduleEventSource``: every period it invokes the
function with EventBridge's "Scheduled Event", first one period after start, as a new
rule does. ``--schedule-period-seconds`` shortens every period (for tests that cannot wait
a minute); cron expressions are reported as not emulated.

Extending: another kind of trigger is one more class with the ``EventSource`` shape, and
one more list in ``ProjectSettings``; instances, concurrency, timeouts and logging are
shared through ``FunctionRuntime``.

The package, one module per concern, each depending only on those above it; it imports
nothing from the project around it, so it can be copied into another Chalice project::

    settings.py     the project's settings, read through Chalice (``load_project``)
    modes.py        exact or aws, and the AWS parameters of aws mode (``Mode``, backoff)
    event.py        Lambda's SQS event (``sqs_event``, ``sqs_message_to_record``)
    settlement.py   settling a batch after an invocation (``settle_batch``)
    mappings.py     a mapping's Enabled state, per stage and function (``MappingGate``)
    receives.py     receives in flight, journalled; taking back a killed runner's (``recover``)
    deployment.py   what an instance may import: the package and the runtime (``import_world``)
    bootstrap.py    an instance's program: the import guard and the runtime loop (a script)
    instances.py    execution environments: one interpreter per instance (``FunctionRuntime``)
    sources.py      event sources: SQS polling (exact) and schedules (``SQSEventSource``, ...)
    pollers.py      SQS polling in aws mode: throttles and backoff (``PollingSQSEventSource``)
    runner.py       the command line and the loop that runs the sources (``main``)
    __main__.py     ``python -m infra.event_source``
"""

from .deployment import ImportWorld, import_world
from .event import sqs_event, sqs_message_to_record
from .instances import (
    INIT_TIMEOUT_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
    FunctionRuntime,
    Instance,
    InstanceSpec,
    Invocation,
    RuntimeClosed,
    instance_environment,
)
from .modes import DEFAULT_MODE, DEFAULT_POLLERS, MODE_VARIABLE, Mode, ThrottleBackoff
from .pollers import PollingSQSEventSource
from .receives import ReceiveJournal, recover, release
from .runner import main, run_sources
from .settings import (
    DEFAULT_CONCURRENCY,
    RATE_UNIT_SECONDS,
    FunctionSettings,
    ProjectSettings,
    ScheduleSourceSettings,
    SQSSourceSettings,
    effective_concurrency,
    function_settings,
    load_project,
)
from .settlement import InvocationResult, InvocationStatus, Outcome, Settlement, settle_batch
from .sources import (
    MAX_MESSAGES_PER_RECEIVE,
    MAX_WAIT_SECONDS,
    EventSource,
    ReceiveFn,
    ScheduleEventSource,
    SourceError,
    SQSEventSource,
    collect_batch,
    scheduled_event,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MODE",
    "DEFAULT_POLLERS",
    "INIT_TIMEOUT_SECONDS",
    "MAX_MESSAGES_PER_RECEIVE",
    "MAX_WAIT_SECONDS",
    "MODE_VARIABLE",
    "RATE_UNIT_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "EventSource",
    "FunctionRuntime",
    "FunctionSettings",
    "ImportWorld",
    "Instance",
    "InstanceSpec",
    "Invocation",
    "InvocationResult",
    "InvocationStatus",
    "Mode",
    "Outcome",
    "PollingSQSEventSource",
    "ProjectSettings",
    "ReceiveFn",
    "ReceiveJournal",
    "RuntimeClosed",
    "SQSEventSource",
    "SQSSourceSettings",
    "ScheduleEventSource",
    "ScheduleSourceSettings",
    "Settlement",
    "SourceError",
    "ThrottleBackoff",
    "collect_batch",
    "effective_concurrency",
    "function_settings",
    "import_world",
    "instance_environment",
    "load_project",
    "main",
    "recover",
    "release",
    "run_sources",
    "scheduled_event",
    "settle_batch",
    "sqs_event",
    "sqs_message_to_record",
]
