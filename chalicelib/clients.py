"""Who is calling: the client every job belongs to, and what a caller may see.

A stage either requires an API key on its job routes (``JOBS_REQUIRE_API_KEY=true``) or
does not. On a keyed stage each key belongs to one client, named by the key itself
(:func:`key_name`): the stage's own key ``<app>-<stage>`` is the ``operator``'s, and
``make api-key STAGE=<stage> CLIENT=<name>`` makes ``<app>-<stage>-<name>``, the client
``<name>``'s. The name, not the key's id, is what a job records, so a rotated key (a new
key under the same name) still sees its client's jobs. On a stage without keys (dev,
local by default) every caller is ``anonymous``.

A client sees and acts on its own jobs only; the operator sees and acts on every job; on
a stage without keys the one anonymous client sees every job, as before clients existed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The stage's own key (the one `make deploy` makes): sees and acts on every client's jobs.
OPERATOR = "operator"
# Every caller of a stage without keys, and the owner of jobs recorded before clients.
ANONYMOUS = "anonymous"
# Names no `make api-key CLIENT=` may take: each means something already.
RESERVED = frozenset({OPERATOR, ANONYMOUS})
# A client's name: what `make api-key CLIENT=` accepts, and what a job's `client` holds.
CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_client_name(name: str) -> bool:
    """Whether ``name`` is a client's name a key can be made for (not a reserved one)."""
    return bool(CLIENT_NAME.fullmatch(name)) and name not in RESERVED


def key_name(app_name: str, stage: str, client: str | None = None) -> str:
    """The API key name of ``client`` on ``stage``: the operator's without a client."""
    base = f"{app_name}-{stage}"
    return base if client is None or client == OPERATOR else f"{base}-{client}"


def client_of_key(app_name: str, stage: str, name: str) -> str | None:
    """The client an API key named ``name`` belongs to on ``stage``; None for a key of
    another stage or with a name :func:`key_name` never makes."""
    base = f"{app_name}-{stage}"
    if name == base:
        return OPERATOR
    client = name.removeprefix(f"{base}-")
    return client if client != name and is_client_name(client) else None


@dataclass(frozen=True)
class Caller:
    """The client a request comes from, and whether it may see every client's jobs."""

    client: str
    # The operator, or the anonymous caller of a stage without keys.
    sees_all: bool = False

    def may_see(self, owner: str) -> bool:
        """Whether this caller may see (read, wait for, cancel, retry) a job of ``owner``."""
        return self.sees_all or owner == self.client


# The caller of a stage without keys: every job is anonymous's, and it sees them all.
ANONYMOUS_CALLER = Caller(ANONYMOUS, sees_all=True)
OPERATOR_CALLER = Caller(OPERATOR, sees_all=True)
