"""Bearer tokens that are fetched before the run and refreshed in the background, never on the
request path: Microsoft Entra ID (``azure-identity``) and GCP Application Default Credentials
(``google-auth``).

Timing (seconds, wall clock, since token lifetimes are wall-clock facts)::

    lifetime  = expires_at - fetched_at
    margin    = min(margin_s, lifetime / 2)            # refresh well before expiry
    next      = max(min_refresh_s, expires_at - margin - now)

A failed refresh keeps the current token (requests keep flowing; an expired token becomes a
401 record, which is data) and retries with doubling back-off up to ``max_backoff_s``. A sync
token source (``get_token`` of azure-identity's sync credentials, google-auth's ``refresh``)
runs in the default executor, so a slow token service never blocks the event loop; an async
one (``azure.identity.aio``) is awaited on it. Tokens are never logged; a provider's ``repr``
says only whether it has a token and how long it is valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from harness.auth.base import check_header_value
from harness.errors import SecretMissingError

log = logging.getLogger("harness.auth")

ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_LIFETIME_S = 3600.0  # google-auth credentials without an expiry: assume an hour

Fetch = Callable[[], Awaitable[tuple[str, float]]]  # -> (token, expires_at: epoch seconds)


class RefreshingBearer:
    """``Authorization: Bearer <token>`` from ``fetch``, refreshed ahead of expiry by a task."""

    __slots__ = (
        "_expires_at",
        "_extra",
        "_fetch",
        "_fetched_at",
        "_headers",
        "_task",
        "kind",
        "margin_s",
        "max_backoff_s",
        "min_refresh_s",
        "refreshes",
    )
    static = False

    def __init__(
        self,
        kind: str,
        fetch: Fetch,
        *,
        margin_s: float = 300.0,
        min_refresh_s: float = 0.05,
        max_backoff_s: float = 30.0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self._fetch = fetch
        self.margin_s = margin_s
        self.min_refresh_s = min_refresh_s
        self.max_backoff_s = max_backoff_s
        self._extra = dict(extra_headers or {})
        self._headers: dict[str, str] = {}
        self._expires_at = 0.0
        self._fetched_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.refreshes = 0  # successful fetches, the first one included

    async def start(self) -> None:
        """Fetch the first token (errors propagate: nothing can be sent without one), then keep
        it fresh in the background."""
        await self._refresh()
        self._task = asyncio.get_running_loop().create_task(self._keep_fresh())

    def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        return self._headers

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def expires_in_s(self) -> float:
        return self._expires_at - time.time()

    def next_refresh_s(self, now: float | None = None) -> float:
        """Seconds from ``now`` until the next refresh is due (formula in the module docstring)."""
        now = time.time() if now is None else now
        lifetime = max(0.0, self._expires_at - self._fetched_at)
        margin = min(self.margin_s, lifetime / 2)
        return max(self.min_refresh_s, self._expires_at - margin - now)

    async def _refresh(self) -> None:
        token, expires_at = await self._fetch()
        check_header_value(f"{self.kind} token", token)
        headers = {"Authorization": f"Bearer {token}", **self._extra}
        self._fetched_at = time.time()
        self._expires_at = expires_at
        self._headers = headers  # one reference swap: readers see the old or the new dict
        self.refreshes += 1

    async def _keep_fresh(self) -> None:
        backoff = 1.0
        while True:
            await asyncio.sleep(self.next_refresh_s())
            try:
                await self._refresh()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a refresh failure is not fatal: keep the current token
                wait = min(backoff, self.max_backoff_s)
                log.warning(
                    "%s token refresh failed (%s); keeping the current token (expires in %.0f s), "
                    "retrying in %.0f s",
                    self.kind,
                    type(exc).__name__,
                    self.expires_in_s,
                    wait,
                )
                await asyncio.sleep(wait)
                backoff *= 2

    def __repr__(self) -> str:
        state = f"token=set, expires_in_s={self.expires_in_s:.0f}" if self._headers else "token=unset"
        return f"{type(self).__name__}({self.kind!r}, {state})"


# --------------------------------------------------------------------------- Microsoft Entra ID


def _entra_fetch(credential: Any, scope: str) -> Fetch:
    """A fetch over any object with ``get_token(scope)`` returning ``.token`` and ``.expires_on``
    (epoch seconds): azure-identity's async or sync credentials, or a test's own."""
    get_token = credential.get_token
    is_async = inspect.iscoroutinefunction(get_token)

    async def fetch() -> tuple[str, float]:
        if is_async:
            result = await get_token(scope)
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, get_token, scope)
            if inspect.isawaitable(result):  # a sync-looking wrapper around a coroutine
                result = await result
        return str(result.token), float(result.expires_on)

    return fetch


class EntraProvider(RefreshingBearer):
    """Microsoft Entra ID bearer tokens for Azure OpenAI (scope ``cognitiveservices``).

    Without ``credential``, azure-identity's async ``DefaultAzureCredential`` is used (env vars,
    workload identity, managed identity, Azure CLI, ...) and closed with the provider.
    """

    __slots__ = ("_credential", "_owned")

    def __init__(self, credential: Any = None, *, scope: str = ENTRA_SCOPE, margin_s: float = 300.0) -> None:
        self._owned = credential is None
        if credential is None:
            try:
                from azure.identity.aio import DefaultAzureCredential
            except ImportError as exc:  # pragma: no cover - a dependency
                raise SecretMissingError(
                    "auth = 'entra' needs the azure-identity package", "pip install azure-identity"
                ) from exc
            credential = DefaultAzureCredential()
        self._credential = credential
        super().__init__("entra", _entra_fetch(credential, scope), margin_s=margin_s)

    async def start(self) -> None:
        try:
            await super().start()
        except SecretMissingError:
            raise
        except Exception as exc:
            raise SecretMissingError(
                f"auth = 'entra': no Microsoft Entra ID token ({type(exc).__name__})",
                "sign in with `az login`, or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET "
                "(or use a managed/workload identity)",
            ) from None

    async def close(self) -> None:
        await super().close()
        close = getattr(self._credential, "close", None) if self._owned else None
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


# --------------------------------------------------------------------------- GCP ADC


def _expiry_epoch(expiry: datetime | None) -> float:
    """google-auth's ``expiry`` is a naive UTC datetime (or None: assume an hour)."""
    if expiry is None:
        return time.time() + DEFAULT_LIFETIME_S
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    return expiry.timestamp()


class GoogleADCProvider(RefreshingBearer):
    """GCP Application Default Credentials as an OAuth access token, for Vertex AI.

    Without ``credentials``, ``google.auth.default()`` finds them (GOOGLE_APPLICATION_CREDENTIALS,
    gcloud's ADC file, the metadata server). google-auth is synchronous: every refresh runs in
    the default executor. A quota project on the credentials is sent as ``x-goog-user-project``.
    """

    __slots__ = ("_credentials",)

    def __init__(self, credentials: Any = None, *, margin_s: float = 300.0) -> None:
        self._credentials = credentials
        super().__init__("adc", self._fetch_token, margin_s=margin_s)

    def _load(self) -> Any:
        if self._credentials is None:
            import google.auth

            self._credentials, _project = google.auth.default(scopes=[GCP_SCOPE])
        return self._credentials

    def _refresh_sync(self) -> tuple[str, float]:
        import google.auth.transport.requests

        credentials = self._load()
        credentials.refresh(google.auth.transport.requests.Request())
        quota = getattr(credentials, "quota_project_id", None)
        if quota:
            self._extra["x-goog-user-project"] = quota
        return str(credentials.token), _expiry_epoch(credentials.expiry)

    async def _fetch_token(self) -> tuple[str, float]:
        return await asyncio.get_running_loop().run_in_executor(None, self._refresh_sync)

    async def start(self) -> None:
        try:
            await super().start()
        except Exception as exc:
            raise SecretMissingError(
                f"auth = 'adc': no Google Application Default Credentials token ({type(exc).__name__})",
                "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file (or run where the metadata server gives an identity)",
            ) from None
