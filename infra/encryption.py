"""A stage's customer-managed KMS key: which resources it encrypts, and with what properties.

A stage may name a key it owns (``kms_key_arn`` with its operations settings, see
infra/operations.py); the project never creates or administers one. Named, the key encrypts
everything the stage stores at rest: the job table, every queue, the alarm topic, the log
groups and the functions' environment. Without one, nothing here changes a template: the
queues keep SSE-SQS and everything else its AWS-owned or AWS-managed key.

The same rule is applied wherever a resource is made: to the state stack
(infra/template.yaml, by infra/stack.py), to the operations stack (infra/operations.yaml,
by infra/operations.py), to the packaged SAM template (infra/deploy/packaging.py), and
through the API to what no stack makes (the functions' log groups and environment, by
infra/operations.py after ``chalice deploy``). What each role may do with the key is
declared next to its other grants, in infra/policies.py; what the key's own policy must
allow is in docs/encryption.md.

Failure: :class:`KeyArnError` (a stage's ``kms_key_arn`` that is not a key's ARN) is raised
while the stage's settings are read, before anything is created. A key whose policy does
not admit a service fails that service's resource in CloudFormation (the stack rolls back;
no job is lost, the stage keeps what it had) or, for a function's environment, fails every
invocation of the function with KMSAccessDeniedException until the key policy or the
role is fixed: the jobs wait in their queue (14 days) meanwhile.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from infra.policies import KEY_STATEMENT, KMS_DECRYPT, KMS_GENERATE_DATA_KEY, SEND_MESSAGE

# A KMS key's ARN (not an alias's): IAM policies and CloudWatch Logs name a key by it
# ("AWS KMS keys" in the AWS KMS Developer Guide: key ARN; CloudWatch Logs'
# AssociateKmsKey: "the Amazon Resource Name (ARN) of the KMS key").
KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")

# How long SQS reuses a data key before asking KMS for a new one (SQS Developer Guide,
# "Key management": KmsDataKeyReusePeriodSeconds, 60 s to 24 h, default 300 s). SQS calls
# KMS once per reuse period for each caller and queue (GenerateDataKey for a sender,
# Decrypt for a receiver), however many messages pass: the stage has nine such pairs
# (six senders, three consumers), so 300 s costs up to 9 x 2 x 288 x 30 = 155,520 KMS
# requests a month and 3600 s at most 12,960, inside KMS's free 20,000 (AWS KMS pricing:
# $0.03 per 10,000 beyond). The longer period only lets one data key protect an hour of
# a queue's messages instead of five minutes; the messages carry a job id and a kind.
DATA_KEY_REUSE_SECONDS = 3600


class KeyArnError(ValueError):
    """A stage names something other than a KMS key's ARN."""


def check_key_arn(value: object, where: str) -> None:
    """KeyArnError unless ``value`` is "" (no key) or a KMS key's ARN."""
    if value == "":
        return
    if not isinstance(value, str) or not KEY_ARN.match(value):
        raise KeyArnError(
            f"{where}: {value!r} is not a KMS key's ARN "
            "(arn:aws:kms:<region>:<account>:key/<key id>; an alias's ARN will not do: "
            "IAM policies and CloudWatch Logs need the key's own)"
        )


def key_region(key_arn: str) -> str:
    """The region of the key: a stage's resources can use a key of their own region only."""
    return key_arn.split(":")[3]


FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
# Every type the stage makes that stores data at rest: key_properties says how each names it.
KEYED_TYPES = (
    "AWS::SQS::Queue",
    "AWS::DynamoDB::Table",
    "AWS::SNS::Topic",
    "AWS::Logs::LogGroup",
    *FUNCTION_TYPES,
)


def key_properties(resource_type: str, key_arn: str) -> dict[str, Any]:
    """The properties that make a resource of ``resource_type`` (one of KEYED_TYPES) use
    ``key_arn``, as CloudFormation names them."""
    if resource_type == "AWS::SQS::Queue":
        return {"KmsMasterKeyId": key_arn, "KmsDataKeyReusePeriodSeconds": DATA_KEY_REUSE_SECONDS}
    if resource_type == "AWS::DynamoDB::Table":
        # The table's indexes and point-in-time backups use the table's key.
        return {
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn}
        }
    if resource_type == "AWS::SNS::Topic":
        return {"KmsMasterKeyId": key_arn}
    if resource_type == "AWS::Logs::LogGroup":
        return {"KmsKeyId": key_arn}
    if resource_type in FUNCTION_TYPES:
        return {"KmsKeyArn": key_arn}
    raise ValueError(f"{resource_type} is not a type the stage's key encrypts")


# What a key replaces: a queue is encrypted either by SQS's own keys or by a KMS key.
REPLACED = {"AWS::SQS::Queue": ("SqsManagedSseEnabled",)}
# Types the stage makes that store nothing a key could cover (configuration, wiring and
# metrics, which their services keep under AWS-owned keys). A type in neither tuple fails
# tests/infra/test_package.py: decide which it is before it ships.
UNKEYED_TYPES = (
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    "AWS::IAM::Role",
    "AWS::Lambda::Permission",
    "AWS::Serverless::Api",
    "AWS::ApiGateway::UsagePlan",
    "AWS::ApiGateway::ApiKey",
    "AWS::ApiGateway::UsagePlanKey",
    # A group's name and tags. The schedules in it are made by the API, not the stack; what
    # they hold (a client's and a schedule's name, as the firing function's input) stays
    # under EventBridge Scheduler's AWS-owned key (docs/encryption.md).
    "AWS::Scheduler::ScheduleGroup",
    # The job events' bus keeps no event (no archive): each is handed to its rules'
    # targets under EventBridge's AWS-owned key (docs/events.md).
    "AWS::Events::EventBus",
    # A rule is a pattern and its targets; a queue policy is a policy document. The events a
    # rule hands to the webhooks queue are encrypted there, by the queue's key.
    "AWS::Events::Rule",
    "AWS::SQS::QueuePolicy",
)


def encrypt(template: Mapping[str, Any], key_arn: str) -> dict[str, Any]:
    """``template`` (plain data) with every resource of a keyed type using ``key_arn``.

    Without a key (``""``) a deep copy of ``template``, unchanged: the stage's resources
    are exactly what they were before keys existed. A resource without a ``Type`` (a
    merge template's partial one) is left alone: its caller knows what it is.
    """
    encrypted = copy.deepcopy(dict(template))
    if not key_arn:
        return encrypted
    for resource in encrypted.get("Resources", {}).values():
        resource_type = resource.get("Type")
        if resource_type not in KEYED_TYPES:
            continue
        properties = resource.setdefault("Properties", {})
        for replaced in REPLACED.get(resource_type, ()):
            properties.pop(replaced, None)
        properties.update(key_properties(resource_type, key_arn))
    for resource in encrypted.get("Resources", {}).values():
        if resource.get("Type") == "AWS::IAM::Role":
            _let_role_send(resource.get("Properties", {}), key_arn)
    return encrypted


def _let_role_send(properties: dict[str, Any], key_arn: str) -> None:
    """A role the template declares itself (not a function's: infra/policies.py grants
    those) that sends to a queue may use the key for it: a producer to a queue encrypted
    with a customer-managed key needs kms:GenerateDataKey and kms:Decrypt on it (Amazon
    SQS Developer Guide, "Key management"). EventBridge Scheduler's role, which
    dead-letters a fire it gave up on, is one."""
    for policy in properties.get("Policies", []):
        statements = policy.get("PolicyDocument", {}).get("Statement", [])
        sends = any(
            SEND_MESSAGE in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            for s in statements
        )
        if sends:
            statements.append(
                {
                    "Sid": KEY_STATEMENT,
                    "Effect": "Allow",
                    "Action": [KMS_DECRYPT, KMS_GENERATE_DATA_KEY],
                    "Resource": key_arn,
                }
            )
