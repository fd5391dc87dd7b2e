"""Who is calling: the client every job belongs to, and what a caller may see.

A stage's guarded routes know who calls in one of three ways (``JOBS_AUTH``,
chalicelib.config.Auth): not at all, by an API key, or by an IAM signature.

On a keyed stage (``JOBS_AUTH=api_key``, or ``JOBS_REQUIRE_API_KEY=true``) each key
belongs to one client, named by the key itself
(:func:`key_name`): the stage's own key ``<app>-<stage>`` is the ``operator``'s, and
``make api-key STAGE=<stage> CLIENT=<name>`` makes ``<app>-<stage>-<name>``, the client
``<name>``'s. The name, not the key's id, is what a job records, so a rotated key (a new
key under the same name) still sees its client's jobs. On a stage without keys (dev,
local by default) every caller is ``anonymous``.

On an IAM stage (``JOBS_AUTH=iam``) the client is the IAM principal that signed the
request (:func:`client_of_principal`): an assumed role's name (every session of the role
is one client), otherwise the principal's ARN. The operator is the principal the stage
names in ``JOBS_OPERATOR_PRINCIPAL`` (:func:`operator_client`); no other principal sees
every job.

A client sees and acts on its own jobs only; the operator sees and acts on every job; on
a stage without keys the one anonymous client sees every job, as before clients existed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

# The stage's own key (the one `make deploy` makes): sees and acts on every client's jobs.
OPERATOR = "operator"
# Every caller of a stage without keys, and the owner of jobs recorded before clients.
ANONYMOUS = "anonymous"
# Names no `make api-key CLIENT=` may take: each means something already.
RESERVED = frozenset({OPERATOR, ANONYMOUS})
# A client's name: what `make api-key CLIENT=` accepts, and what a job's `client` holds.
CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What a job's `client` may hold: a key's client's name, or an IAM principal's client
# (a role's name, or an ARN with every character outside this set percent-encoded). Never
# `#`, which separates the parts of the listing keys (`<client>#<kind>#<status>#<shard>`,
# chalicelib.jobs), nor `&`, which separates those of a listing's name. Bounded so the
# longest listing key stays far below DynamoDB's 2,048-byte partition key.
RECORDED_CLIENT = re.compile(r"[A-Za-z0-9_+=,.@:/%-]{1,1024}")
# The characters of an IAM name (IAM User Guide, "IAM object quotas": role and user names
# are alphanumeric plus +=,.@_-); ARNs add `:` and `/`. Everything else, `#` and `&` among
# them (an IAM path may hold any printable ASCII), is percent-encoded.
_PRINCIPAL_SAFE = "_+=,.@:/-"
ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")
# arn:<partition>:sts::<account>:assumed-role/<role>/<session>: the role, without the
# session (an assumed role's ARN holds no path).
_ASSUMED_ROLE = re.compile(r"arn:[a-z-]+:sts::[0-9]{12}:assumed-role/([^/]+)/[^/]+")
# arn:<partition>:iam::<account>:role/<path/><role>: named as its sessions are.
_ROLE = re.compile(r"arn:[a-z-]+:iam::[0-9]{12}:role/(?:.*/)?([^/]+)")
_ARN = re.compile(r"arn:[a-z-]+:(?:iam|sts)::([0-9]{12}):.+")


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


def client_of_principal(user_arn: str, account: str | None = None) -> str | None:
    """The client an IAM principal is, from the ARN API Gateway names it by
    (``requestContext.identity.userArn``): an assumed role's name, without its session's
    (``arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`` is ``ROLE``, whichever session
    signed), otherwise the ARN itself (a user's: ``arn:aws:iam::ACCT:user/NAME``), with
    any character outside an IAM name's and ``:`` ``/`` percent-encoded, so no ``#`` or
    ``&`` reaches a key. None, which the API refuses, for no ARN, one of no IAM principal,
    one of another account than ``account`` (when given: a role's name is unique in its
    account only), a reserved name, or one too long to record."""
    match = _ARN.fullmatch(user_arn or "")
    if match is None or (account is not None and match.group(1) != account):
        return None
    role = _ASSUMED_ROLE.fullmatch(user_arn)
    client = role.group(1) if role else quote(user_arn, safe=_PRINCIPAL_SAFE)
    if client in RESERVED or not RECORDED_CLIENT.fullmatch(client):
        return None
    return client


def operator_client(principal: str) -> str | None:
    """The client of the principal a stage names its operator (``JOBS_OPERATOR_PRINCIPAL``):
    a role's name as it is, a role's ARN as its name (as its sessions are known), a user's
    ARN as :func:`client_of_principal` records it; None for anything else."""
    if ROLE_NAME.fullmatch(principal):
        return principal if principal not in RESERVED else None
    role = _ROLE.fullmatch(principal)
    if role and ROLE_NAME.fullmatch(role.group(1)):
        return role.group(1) if role.group(1) not in RESERVED else None
    return client_of_principal(principal)


@dataclass(frozen=True)
class Caller:
    """The client a request comes from, and whether it may see every client's jobs."""

    client: str
    # The operator (a keyed stage's own key, an IAM stage's operator principal), or the
    # anonymous caller of a stage without keys.
    sees_all: bool = False

    def may_see(self, owner: str) -> bool:
        """Whether this caller may see (read, wait for, cancel, retry) a job of ``owner``."""
        return self.sees_all or owner == self.client


# The caller of a stage without keys: every job is anonymous's, and it sees them all.
ANONYMOUS_CALLER = Caller(ANONYMOUS, sees_all=True)
OPERATOR_CALLER = Caller(OPERATOR, sees_all=True)
