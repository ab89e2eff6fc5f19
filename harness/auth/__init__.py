"""Cloud credentials as request headers, for the engine's hot path.

The engine consumes :class:`AuthProvider` (``start`` / ``headers`` / ``close``); each mode of
``[target.endpoints.NAME] auth`` has one provider::

    api-key   StaticHeaders       Azure ``api-key``, OpenAI ``Authorization: Bearer``, Vertex
                                  express ``x-goog-api-key``; the key from ``api_key_env``
    entra     EntraProvider       Microsoft Entra ID bearer token (azure-identity), refreshed
                                  in the background before expiry
    sigv4     SigV4Provider       AWS SigV4 per request (botocore's credential chain)
    adc       GoogleADCProvider   GCP Application Default Credentials (google-auth), refreshed
                                  in the background in an executor
    none      StaticHeaders       no credential header

Credentials come only from the environment or the cloud's standard chain, never from a
profile, and no provider's ``repr`` or log line shows one.
"""

from __future__ import annotations

from harness.auth.base import (
    AuthProvider as AuthProvider,
    StaticHeaders as StaticHeaders,
    api_key_provider as api_key_provider,
    check_header_value as check_header_value,
    encode_header_lines as encode_header_lines,
)
from harness.auth.sigv4 import SigV4Provider as SigV4Provider
from harness.auth.tokens import (
    EntraProvider as EntraProvider,
    GoogleADCProvider as GoogleADCProvider,
    RefreshingBearer as RefreshingBearer,
)

AUTH_MODES = ("api-key", "entra", "sigv4", "adc", "none")


def build_provider(
    mode: str,
    dialect: str,
    *,
    api_key: str | None = None,
    aws_region: str | None = None,
    aws_service: str = "bedrock",
) -> AuthProvider:
    """The provider for one endpoint's ``auth`` mode (profile validation has checked the combination)."""
    if mode == "api-key":
        return api_key_provider(dialect, api_key)
    if mode == "none":
        return StaticHeaders("none", {})
    if mode == "entra":
        return EntraProvider()
    if mode == "adc":
        return GoogleADCProvider()
    if mode == "sigv4":
        if not aws_region:
            raise ValueError("auth = 'sigv4' needs aws_region")
        return SigV4Provider(aws_region, aws_service)
    raise ValueError(f"unknown auth mode {mode!r}; one of {', '.join(AUTH_MODES)}")
