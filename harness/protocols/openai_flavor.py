"""What differs between the two flavours of the OpenAI-family wire format: Azure OpenAI and
OpenAI direct (``../shared/protocols.md`` §2, §4). Everything else (chunk framing, parsing,
token counting) is one implementation in :mod:`harness.protocols.azure_openai`, switched by
``flavor``.

=============  ======================================================  =====================================
               ``"azure"``                                             ``"openai"``
=============  ======================================================  =====================================
URL            ``{base}/openai/deployments/{d}/{op}?api-version=V``    ``{base}/v1/{op}``
               (``{base}/openai/v1/{op}`` when V is None: the v1 API)
auth           ``api-key: K`` (or ``Authorization: Bearer K``)         ``Authorization: Bearer K``
request id     ``x-ms-client-request-id``                              ``X-Client-Request-Id``
bodies         ``prompt_filter_results``, ``content_filter_results``   no filter fields
stream start   an empty-choices prompt-filter chunk                    the first chunk carries the reply
errors         ``{"error": {"code": "429", "message": ...}}``          ``{"error": {"message", "type",
                                                                       "param", "code"}}``
=============  ======================================================  =====================================
"""

from __future__ import annotations

import math
from typing import Final, Literal
from urllib.parse import quote

import orjson

Flavor = Literal["azure", "openai"]
FLAVORS: Final = ("azure", "openai")
Auth = Literal["api-key", "bearer"]

CLIENT_REQUEST_ID_HEADER: Final[dict[str, str]] = {
    "azure": "x-ms-client-request-id",
    "openai": "X-Client-Request-Id",
}


def check_flavor(flavor: str) -> Flavor:
    """``flavor`` itself, or ValueError naming the choices."""
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be 'azure' or 'openai', not {flavor!r}")
    return flavor  # type: ignore[return-value]


def request_url(flavor: Flavor, base_url: str, deployment: str, api_version: str | None, op: str) -> str:
    """The URL of operation ``op`` (``chat/completions``, ``completions``, ``embeddings``)."""
    base = base_url.rstrip("/")
    if flavor == "openai":
        return f"{base}/v1/{op}"
    if not api_version:
        return f"{base}/openai/v1/{op}"
    return (
        f"{base}/openai/deployments/{quote(deployment, safe='')}/{op}"
        f"?api-version={quote(api_version, safe='')}"
    )


def resolve_auth(flavor: Flavor, auth: str | None) -> Auth:
    """The auth header style: Azure defaults to ``api-key``; OpenAI takes only ``bearer``."""
    if auth is None:
        return "api-key" if flavor == "azure" else "bearer"
    if auth not in ("api-key", "bearer"):
        raise ValueError(f"auth must be 'api-key' or 'bearer', not {auth!r}")
    if flavor == "openai" and auth != "bearer":
        raise ValueError("OpenAI direct authenticates with a Bearer token only: use auth='bearer'")
    return auth  # type: ignore[return-value]


def auth_headers(auth: Auth, api_key: str | None) -> dict[str, str]:
    """The credential header (none without a key)."""
    if api_key is None:
        return {}
    if auth == "api-key":
        return {"api-key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


# ---------------------------------------------------------------------------------------------
# OpenAI's error bodies (§4)
# ---------------------------------------------------------------------------------------------

MSG_OPENAI_401: Final = (
    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
)


def openai_error_body(
    message: str, type: str | None, param: str | None = None, code: str | None = None
) -> bytes:
    """OpenAI's error body: every key present, ``null`` where unknown."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def go_duration(seconds: float) -> str:
    """A delay the way OpenAI writes it (Go's ``time.Duration.String()``, to the millisecond):
    ``0s``, ``120ms``, ``1.2s``, ``1m30s``, ``1h0m0s``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def openai_rate_limit_message(model: str, kind: Literal["requests", "tokens"], retry_after_s: float) -> str:
    """OpenAI's 429 message for a requests- or tokens-per-minute limit."""
    per_min = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
    return (
        f"Rate limit reached for {model} in organization org-mock on {per_min}. "
        f"Please try again in {go_duration(retry_after_s)}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )


def azure_rate_limit_message(retry_after_s: float) -> str:
    """Azure's short 429 message; the seconds are the ``retry-after`` header's (rounded up)."""
    return f"Rate limit is exceeded. Try again in {retry_after_seconds(retry_after_s)} seconds."


def retry_after_seconds(retry_after_s: float) -> int:
    """The ``retry-after`` header value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(retry_after_s))
