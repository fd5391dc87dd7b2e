"""How faithfully the SQS event source reproduces Lambda: the two modes, and the parameters
of the ``aws`` mode with the AWS documentation each comes from.

``exact`` (the default) never receives a message it cannot run at once: a function's
poller receives only while holding one of the function's free instance slots. Receive
counts rise only on real failures and nothing is ever throttled, which is simple to
reason about but is *not* what AWS does with reserved concurrency below the mapping's
pollers.

``aws`` is the mapping as the Lambda Developer Guide describes it:

- "Configuring scaling behavior for SQS event source mappings" (services-sqs-scaling):
  for a standard queue Lambda "starts processing five batches at a time with five
  concurrent invocations"; for a FIFO queue it "sends messages to your function in the
  order that it receives them", and concurrency scales to the number of active message
  groups (Knowledge Center "lambda-sqs-scaling").
- Knowledge Center "lambda-sqs-scaling": "Event source mappings don't account for
  reserved concurrency and can process more messages off your queue than can be sent to
  your function."
- "Handling errors for an SQS event source in Lambda" (services-sqs-errorhandling): "If
  the invocation fails due to throttling, Lambda gradually backs off retries [...].
  Lambda continues to retry the message until the message's timestamp exceeds your
  queue's visibility timeout, at which point Lambda drops the message." A dropped
  message becomes visible again when its visibility timeout ends and SQS counts the
  next receive; the queue's redrive policy applies as to any other receive.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

MODE_VARIABLE = "EVENT_SOURCE_MODE"  # the environment variable that selects the mode


class Mode(StrEnum):
    """How the SQS event source decides when to receive."""

    EXACT = "exact"  # receive only with a free instance slot: nothing is ever throttled
    AWS = "aws"  # pollers receive regardless of concurrency; throttles, backoff, release


DEFAULT_MODE = Mode.EXACT

# services-sqs-scaling: a standard-queue mapping starts with five concurrent batches.
# Lambda then adds up to 300 per minute while messages remain and, at low traffic, may
# drop to two; neither scaling step is modelled: the pollers stay at this number.
DEFAULT_POLLERS = 5


def mode_from_environment(environ: Mapping[str, str]) -> Mode:
    """The mode ``$EVENT_SOURCE_MODE`` names (unset or empty: ``DEFAULT_MODE``).

    Raises ``ValueError`` naming the variable and the valid values for anything else.
    """
    raw = environ.get(MODE_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MODE
    try:
        return Mode(raw.lower())
    except ValueError:
        valid = ", ".join(m.value for m in Mode)
        raise ValueError(f"{MODE_VARIABLE}={raw!r}: expected one of {valid}") from None


@dataclass(frozen=True)
class ThrottleBackoff:
    """When a throttled batch is retried: ``first`` seconds after the throttle, then each
    delay ``factor`` times the previous one, never more than ``maximum`` seconds.

    AWS does not publish the curve its SQS pollers use ("gradually backs off"). The
    defaults are the one throttle-retry curve Lambda does document, for throttled
    asynchronous invocations ("How Lambda handles errors and retries with asynchronous
    invocation": "The retry interval increases exponentially from 1 second after the
    first attempt to a maximum of 5 minutes"), read as doubling, since "exponentially"
    names no base and doubling is the usual one.
    """

    first: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0

    def delays(self) -> Iterator[float]:
        """The waits before each retry, endlessly: 1, 2, 4, ... 300, 300, ..."""
        delay = self.first
        while True:
            yield min(delay, self.maximum)
            delay *= self.factor

    def retry_offsets(self, visibility_seconds: float) -> list[float]:
        """Seconds after the receive at which a batch throttled at every attempt is
        retried: every retry that falls before its visibility timeout ends (when SQS
        makes it visible again and Lambda has dropped it)."""
        offsets: list[float] = []
        at = 0.0
        for delay in self.delays():
            at += delay
            if at >= visibility_seconds:
                return offsets
            offsets.append(at)
        raise AssertionError("unreachable: delays() never ends")  # pragma: no cover
