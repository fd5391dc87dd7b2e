"""Signing the CLI's requests to an IAM stage (``--auth iam``) with AWS Signature Version 4.

An IAM stage's API Gateway lets a request through only if it is signed by an IAM
principal allowed ``execute-api:Invoke`` on it (API Gateway Developer Guide, "Control
access to a REST API with IAM permissions"). :class:`SigV4` signs each request as the
AWS SDKs do, with botocore's own signer (``botocore.auth.SigV4Auth``, service
``execute-api``), just before it is sent:

- the credentials come from botocore's standard chain (environment variables, the shared
  credentials and config files and their profiles, SSO, container and instance roles),
  as every AWS command finds them; refreshable ones (an assumed role's, SSO's) are
  refreshed when they near their expiry, and each request is signed with the credentials
  current at that moment;
- the region is the one in the API's host (``<api-id>.execute-api.<region>.amazonaws.com``)
  when it names one, else the chain's (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the
  profile's ``region``);
- the signed headers are ``host``, ``x-amz-date``, ``x-amz-security-token`` (temporary
  credentials) and ``content-type`` when the request has a body; the body is signed by
  its hash. Other headers (User-Agent, Accept-Encoding, Connection) are left out: a proxy
  on the way may change them without breaking the signature.

A signature holds for one request: a redirect within the API's origin is signed again
(``jobs_cli.client.KeySession``), and one to another origin is never followed, so
neither the signature nor the session token reaches another host.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError
from requests import PreparedRequest
from requests.auth import AuthBase

SERVICE = "execute-api"
# https://<api-id>.execute-api.<region>.amazonaws.com[.cn]
_EXECUTE_API_HOST = re.compile(r"[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?")
# What the signature covers besides host and the x-amz-* headers the signer adds.
SIGNED_HEADERS = ("content-type",)


class NoCredentials(Exception):
    """No AWS credentials, or no region, to sign with: the message says which."""


def region_of(url: str) -> str | None:
    """The region an execute-api URL names (``…execute-api.eu-west-1.amazonaws.com``)."""
    match = _EXECUTE_API_HOST.fullmatch(urlsplit(url).hostname or "")
    return match.group(1) if match else None


class SigV4(AuthBase):
    """requests' auth hook that signs each request for ``execute-api`` in ``region``."""

    def __init__(self, credentials: Any, region: str) -> None:
        self.credentials = credentials  # botocore Credentials, refreshable or not
        self.region = region

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        headers = {
            name: value for name, value in request.headers.items() if name.lower() in SIGNED_HEADERS
        }
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            request.headers.pop(name, None)  # an earlier signature's, on a redirect
        signed = AWSRequest(
            method=request.method, url=request.url, data=request.body or b"", headers=headers
        )
        frozen = self.credentials.get_frozen_credentials()
        SigV4Auth(frozen, SERVICE, self.region).add_auth(signed)
        for name, value in signed.headers.items():
            if name.lower() not in SIGNED_HEADERS:
                request.headers[name] = value
        return request


def sigv4_for(base_url: str, session: Any = None) -> SigV4:
    """A signer for the API at ``base_url`` with the standard chain's credentials;
    NoCredentials, naming what is missing, if the chain has none or no region is known."""
    try:
        session = session or botocore.session.Session()
        credentials = session.get_credentials()
        chain_region = session.get_config_variable("region")
    except BotoCoreError as error:  # a profile that does not exist, a broken config file
        raise NoCredentials(str(error)) from None
    if credentials is None:
        raise NoCredentials(
            "no AWS credentials to sign with (AWS_PROFILE, `aws configure`, `aws sso login`,"
            " or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    region = region_of(base_url) or chain_region
    if not region:
        raise NoCredentials(
            "no AWS region to sign for: the URL names none; set AWS_REGION or the profile's"
        )
    return SigV4(credentials, region)
