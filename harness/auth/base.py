"""The interface the engine consumes from a credential source, and the static-header providers.

The engine asks a provider for headers once per request, on the event loop, in the hot path,
so ``headers`` must be synchronous, cheap and free of I/O: providers that talk to a token
service do it in ``start`` and in a background task (see :mod:`harness.auth.tokens`), and the
request path only reads what is cached. Secrets never appear in a provider's ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class AuthProvider(Protocol):
    """Credentials for one endpoint, as request headers.

    ``static`` is True when ``headers`` never changes after ``start`` (an API key): the engine
    may then bake the headers into a prebuilt request once. ``headers`` returns a mapping the
    caller must not mutate.
    """

    kind: str
    static: bool

    async def start(self) -> None: ...

    def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]: ...

    async def close(self) -> None: ...


def check_header_value(name: str, value: str) -> str:
    """``value`` if it can go on the wire as one header line, else ValueError naming ``name`` only.

    A token with CR/LF would inject headers; the message never includes the value (a secret).
    """
    if not value or not value.isprintable() or value != value.strip():
        raise ValueError(f"{name}: the credential is empty or has control characters or surrounding spaces")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: the credential is not Latin-1 text") from None
    return value


def encode_header_lines(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` for each header, for a prebuilt HTTP/1.1 request head."""
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")


class StaticHeaders:
    """Fixed credential headers: an API key (Azure ``api-key``, OpenAI ``Authorization: Bearer``,
    Vertex express ``x-goog-api-key``) or nothing at all (``kind = "none"``)."""

    __slots__ = ("_headers", "kind")
    static = True

    def __init__(self, kind: str, headers: Mapping[str, str]) -> None:
        self.kind = kind
        self._headers = {k: check_header_value(k, v) for k, v in headers.items()}

    async def start(self) -> None:
        return None

    def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        return self._headers

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticHeaders({self.kind!r}, headers={sorted(self._headers)}, values=***)"


def api_key_provider(dialect: str, key: str | None) -> StaticHeaders:
    """The API-key header each dialect sends: Azure ``api-key``, OpenAI and Bedrock API keys
    ``Authorization: Bearer``, Vertex express ``x-goog-api-key``; no key: no header (``kind = "none"``)."""
    if key is None:
        return StaticHeaders("none", {})
    if dialect == "azure_openai":
        return StaticHeaders("api-key", {"api-key": key})
    if dialect == "vertex":
        return StaticHeaders("api-key", {"x-goog-api-key": key})
    return StaticHeaders("api-key", {"Authorization": f"Bearer {key}"})
