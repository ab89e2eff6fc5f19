"""Credentials the engine sends to the embedded mock fleet when an endpoint verifies them.

The fleet's dummy AWS credentials are public documentation examples (see
:mod:`harness.mocks.auth_verify`), so the mock can recompute a real SigV4 signature without
any real secret on the machine.
"""

from __future__ import annotations

from typing import Final

from harness.auth.base import AuthProvider, StaticHeaders
from harness.auth.sigv4 import Frozen, SigV4Provider

# AWS's documentation example pair: public, never a real secret (harness.mocks.auth_verify checks it)
MOCK_AWS_ACCESS_KEY_ID: Final = "AKIAIOSFODNN7EXAMPLE"
MOCK_AWS_SECRET_ACCESS_KEY: Final = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
MOCK_BEARER_TOKEN: Final = "mock-token"


class StaticAwsCredentials:
    """A fixed credential set with botocore's ``get_frozen_credentials`` interface."""

    __slots__ = ("_frozen",)

    def __init__(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        self._frozen = Frozen(access_key, secret_key, token)

    def get_frozen_credentials(self) -> Frozen:
        return self._frozen

    def __repr__(self) -> str:
        return f"StaticAwsCredentials({self._frozen!r})"


def mock_aws_credentials() -> StaticAwsCredentials:
    return StaticAwsCredentials(MOCK_AWS_ACCESS_KEY_ID, MOCK_AWS_SECRET_ACCESS_KEY)


def mock_auth(auth_verify: str, region: str) -> AuthProvider | None:
    """The provider for a fleet endpoint's ``auth_verify``; None where the mock key will do."""
    if auth_verify == "sigv4":
        return SigV4Provider(region, "bedrock", credentials=mock_aws_credentials())
    if auth_verify == "bearer":
        return StaticHeaders("bearer", {"Authorization": f"Bearer {MOCK_BEARER_TOKEN}"})
    return None
