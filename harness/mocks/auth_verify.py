"""Credential checks a mock endpoint can make, so authentication is tested end to end on loopback.

A fleet endpoint's ``auth_verify`` picks one (default ``none``: the mocks only check that some
credential header is present, as before)::

    api-key   the dialect's key header is present and non-empty (Azure ``api-key``, OpenAI
              ``Authorization: Bearer``, Vertex ``x-goog-api-key``); any value is accepted
    bearer    ``Authorization: Bearer <token>`` with a well-formed token (RFC 6750 token68
              characters); a JWT-shaped token (three base64url parts) must also decode and
              carry an ``exp`` in the future, so an expired Entra-style token is refused
    sigv4     Bedrock only: the SigV4 signature is recomputed with botocore's ``SigV4Auth`` from
              the request as received (raw path, signed headers, actual body) and the fleet's
              dummy credentials below; a changed body or signed header, another access key, a
              wrong region/service scope or an ``x-amz-date`` more than 5 minutes off is refused

The fleet's dummy AWS credentials are AWS's documentation example pair (no secret): clients
of a ``sigv4`` mock endpoint sign with them, e.g. ``AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE
AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY``, region = the endpoint's.

A refusal is an :class:`AuthFailure` that the dialect's app renders in the cloud's own shape
(Azure/OpenAI 401 JSON, Vertex 401 UNAUTHENTICATED, Bedrock 403 with ``x-amzn-ErrorType``) and
ledgers like any answered request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from calendar import timegm
from collections.abc import Callable
from typing import Final, NamedTuple

import orjson
from aiohttp import web

from harness.auth.mock import (  # the fleet's dummy credentials, shared with the engine
    MOCK_AWS_ACCESS_KEY_ID as MOCK_AWS_ACCESS_KEY_ID,
    MOCK_AWS_SECRET_ACCESS_KEY as MOCK_AWS_SECRET_ACCESS_KEY,
)
from harness.profile.models import FleetEndpoint

SIGV4_SERVICE: Final = "bedrock"
MAX_SKEW_S: Final = 300

MSG_AZURE_KEY: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
MSG_AZURE_TOKEN: Final = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
MSG_OPENAI_KEY: Final = (
    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
)
MSG_GOOGLE: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MSG_AWS_MISSING: Final = "Missing Authentication Token"
MSG_AWS_UNRECOGNIZED: Final = "The security token included in the request is invalid."
MSG_AWS_SIGNATURE: Final = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)

_TOKEN68 = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_AUTH_PARAM = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")


class AuthFailure(NamedTuple):
    """Why a request was refused: the HTTP status, the cloud's error code and its message."""

    status: int
    code: str
    message: str


Verifier = Callable[[web.Request, bytes], AuthFailure | None]


# --------------------------------------------------------------------------- bearer and keys


def _jwt_expired(token: str, now: float) -> bool | None:
    """True/False for a JWT-shaped token with an ``exp``; None when it is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = orjson.loads(payload)
    except (binascii.Error, ValueError):
        return True  # JWT-shaped but unreadable: refused like a bad token
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float):
        return True
    return exp <= now


def bearer_problem(authorization: str | None, now: float | None = None) -> str | None:
    """None when ``authorization`` is a well-formed, unexpired bearer credential, else why not."""
    if not authorization:
        return "no Authorization header"
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return "not a Bearer credential"
    if not _TOKEN68.match(token):
        return "malformed bearer token"
    expired = _jwt_expired(token, time.time() if now is None else now)
    if expired:
        return "expired or unreadable token"
    return None


def _failure(dialect: str, bearer: bool) -> AuthFailure:
    if dialect == "openai":
        return AuthFailure(401, "invalid_api_key", MSG_OPENAI_KEY)
    if dialect == "vertex":
        return AuthFailure(401, "UNAUTHENTICATED", MSG_GOOGLE)
    return AuthFailure(401, "401", MSG_AZURE_TOKEN if bearer else MSG_AZURE_KEY)


def _bearer_verifier(dialect: str) -> Verifier:
    failure = _failure(dialect, True)

    def verify(request: web.Request, body: bytes) -> AuthFailure | None:
        return failure if bearer_problem(request.headers.get("Authorization")) else None

    return verify


_KEY_HEADER: Final = {"azure_openai": "api-key", "vertex": "x-goog-api-key"}


def _api_key_verifier(dialect: str) -> Verifier:
    if dialect == "openai":  # OpenAI's key travels as a bearer token
        return _bearer_verifier(dialect)
    header = _KEY_HEADER[dialect]
    failure = _failure(dialect, False)

    def verify(request: web.Request, body: bytes) -> AuthFailure | None:
        return None if request.headers.get(header, "").strip() else failure

    return verify


# --------------------------------------------------------------------------- SigV4


def _aws_failure(code: str, message: str) -> AuthFailure:
    return AuthFailure(403, code, message)


def _parse_amz_date(value: str) -> float | None:
    try:
        return float(timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def sigv4_problem(
    request: web.Request, body: bytes, region: str, *, secret: str = MOCK_AWS_SECRET_ACCESS_KEY
) -> AuthFailure | None:
    """Recompute the request's SigV4 signature as AWS would; None when it matches."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    headers = request.headers
    authorization = headers.get("Authorization")
    if not authorization:
        return _aws_failure("MissingAuthenticationTokenException", MSG_AWS_MISSING)
    algorithm, _, rest = authorization.partition(" ")
    params = dict(_AUTH_PARAM.findall(rest))
    if algorithm != "AWS4-HMAC-SHA256" or len(params) != 3:
        return _aws_failure(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.",
        )
    scope = params["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return _aws_failure("IncompleteSignatureException", "Credential is malformed.")
    access_key, date, scope_region, service, _ = scope
    if access_key != MOCK_AWS_ACCESS_KEY_ID:
        return _aws_failure("UnrecognizedClientException", MSG_AWS_UNRECOGNIZED)
    amz_date = headers.get("X-Amz-Date", "")
    signed_at = _parse_amz_date(amz_date)
    if signed_at is None:
        return _aws_failure("IncompleteSignatureException", "X-Amz-Date header is missing or malformed.")
    if abs(time.time() - signed_at) > MAX_SKEW_S:
        return _aws_failure(
            "InvalidSignatureException", f"Signature expired: {amz_date} is outside 5 minutes."
        )
    if date != amz_date[:8] or scope_region != region or service != SIGV4_SERVICE:
        return _aws_failure(
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region and service: '{region}', '{SIGV4_SERVICE}'.",
        )
    signed = params["SignedHeaders"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return _aws_failure("InvalidSignatureException", "'Host' and 'X-Amz-Date' must be signed headers.")
    payload_hash = headers.get("X-Amz-Content-SHA256")
    if payload_hash is not None and payload_hash != hashlib.sha256(body).hexdigest():
        return _aws_failure("InvalidSignatureException", MSG_AWS_SIGNATURE)
    aws = AWSRequest(
        method=request.method, url=f"http://{headers.get('Host', '')}{request.raw_path}", data=body
    )
    for name in signed:
        for value in headers.getall(name, ()):
            aws.headers.add_header(name, value)
    aws.context["timestamp"] = amz_date
    signer = SigV4Auth(ReadOnlyCredentials(access_key, secret, None), service, region)
    canonical = signer.canonical_request(aws)
    expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
    if not hmac.compare_digest(expected, params["Signature"]):
        return _aws_failure("InvalidSignatureException", MSG_AWS_SIGNATURE)
    return None


def _sigv4_verifier(region: str) -> Verifier:
    def verify(request: web.Request, body: bytes) -> AuthFailure | None:
        return sigv4_problem(request, body, region)

    return verify


def verifier_for(endpoint: FleetEndpoint) -> Verifier | None:
    """The check the endpoint's ``auth_verify`` asks for, or None (``none``: no check)."""
    mode = endpoint.auth_verify
    if mode == "none":
        return None
    if mode == "sigv4":
        return _sigv4_verifier(endpoint.region)
    if mode == "bearer":
        return _bearer_verifier(endpoint.dialect)
    if endpoint.dialect == "bedrock":
        raise ValueError("a Bedrock endpoint verifies sigv4 or nothing")  # the fleet model refuses it first
    return _api_key_verifier(endpoint.dialect)
