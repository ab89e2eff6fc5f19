"""AWS Signature Version 4 for Bedrock, cheap enough for the hot path.

Credentials come from botocore's chain (environment, shared config/credentials profile,
SSO, container and instance roles, web identity), loaded in ``start`` and re-frozen in the
background (in the default executor: the chain may call a metadata service), so the request
path only reads a frozen ``(access key, secret, token)``.

A signature covers the method, the path and query, ``host``, ``x-amz-date`` (one-second
resolution), ``x-amz-security-token`` (temporary credentials) and the body's SHA-256, and
nothing else; other headers (the request id) are sent unsigned, as SigV4 allows. So what can be
cached is cached: per URL the host and canonical URI, per body its hash, per day the signing
key, and per (method, URL, body) the signed headers of the current second; within a second a
request costs a dict lookup, and a new second costs two SHA-256s and one HMAC. The algorithm is
botocore's ``SigV4Auth`` (tests compare the two byte for byte); :func:`botocore_sign` is that
reference, kept for the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

from harness.errors import SecretMissingError

log = logging.getLogger("harness.auth")

ALGORITHM = "AWS4-HMAC-SHA256"
CREDENTIALS_REFRESH_S = 60.0  # how often the chain is asked for fresh frozen credentials


class Frozen(NamedTuple):
    """One set of AWS credentials (botocore's ReadOnlyCredentials has the same fields)."""

    access_key: str
    secret_key: str
    token: str | None

    def __repr__(self) -> str:  # never print the secret or the session token
        token = "***" if self.token else None
        return f"Frozen(access_key={self.access_key[:4]}…, secret_key=***, token={token})"


class _UrlParts(NamedTuple):
    host: str  # the Host header value: port only when not the scheme's default
    canonical_uri: str  # the path URI-encoded once more (non-S3 services), as botocore does
    canonical_query: str


def _url_parts(url: str) -> _UrlParts:
    from botocore.utils import normalize_url_path

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    if parts.port is not None and parts.port != default:
        host = f"{host}:{parts.port}"
    uri = quote(normalize_url_path(parts.path or "/"), safe="/~")
    pairs = sorted(pair.partition("=")[::2] for pair in parts.query.split("&")) if parts.query else []
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return _UrlParts(host, uri, query)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class SigV4Signer:
    """Signs (method, url, body) for one region and service with one set of credentials."""

    __slots__ = ("_bodies", "_cache", "_key", "_key_date", "_urls", "creds", "region", "service")

    def __init__(self, creds: Frozen, region: str, service: str) -> None:
        self.creds = creds
        self.region = region
        self.service = service
        self._urls: dict[str, _UrlParts] = {}
        self._bodies: dict[bytes, str] = {}
        self._key_date = ""
        self._key = b""
        # (method, url, body) -> (the second it was signed in, its headers)
        self._cache: dict[tuple[str, str, bytes], tuple[int, dict[str, str]]] = {}

    def _signing_key(self, date: str) -> bytes:
        if date != self._key_date:
            k = _hmac(f"AWS4{self.creds.secret_key}".encode(), date)
            k = _hmac(k, self.region)
            k = _hmac(k, self.service)
            self._key = _hmac(k, "aws4_request")
            self._key_date = date
        return self._key

    def sign(self, method: str, url: str, body: bytes, amz_date: str) -> dict[str, str]:
        """The headers to add for a request at ``amz_date`` (``YYYYMMDDTHHMMSSZ``, UTC)."""
        u = self._urls.get(url)
        if u is None:
            u = self._urls[url] = _url_parts(url)
        payload = self._bodies.get(body)
        if payload is None:
            if len(self._bodies) > 1024:
                self._bodies.clear()
            payload = self._bodies[body] = hashlib.sha256(body).hexdigest()
        token = self.creds.token
        if token:
            canonical_headers = f"host:{u.host}\nx-amz-date:{amz_date}\nx-amz-security-token:{token}\n"
            signed = "host;x-amz-date;x-amz-security-token"
        else:
            canonical_headers = f"host:{u.host}\nx-amz-date:{amz_date}\n"
            signed = "host;x-amz-date"
        canonical = (
            f"{method}\n{u.canonical_uri}\n{u.canonical_query}\n{canonical_headers}\n{signed}\n{payload}"
        )
        date = amz_date[:8]
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "X-Amz-Date": amz_date,
            "Authorization": (
                f"{ALGORITHM} Credential={self.creds.access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers

    def headers_now(self, method: str, url: str, body: bytes) -> dict[str, str]:
        """Signed headers for now, reused within the same UTC second."""
        now = int(time.time())
        key = (method, url, body)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == now:
            return hit[1]
        headers = self.sign(method, url, body, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (now, headers)
        return headers


def botocore_sign(
    creds: Frozen, region: str, service: str, method: str, url: str, body: bytes
) -> dict[str, str]:
    """Sign with botocore's own ``SigV4Auth`` (the reference; about 10x slower per call)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(creds, service, region).add_auth(request)
    return dict(request.headers.items())


def _frozen(credentials: Any) -> Frozen:
    """Freeze botocore credentials (may refresh them, so may do I/O: call it off the loop)."""
    ro = credentials.get_frozen_credentials()
    return Frozen(ro.access_key, ro.secret_key, ro.token)


class SigV4Provider:
    """Signs every request with SigV4 for ``region`` and ``service`` (``bedrock`` for the runtime).

    Without ``credentials`` (an object with ``get_frozen_credentials()``, as botocore's are),
    botocore's default chain finds them; ``profile`` selects a shared-config profile.
    """

    __slots__ = ("_credentials", "_profile", "_signer", "_task", "region", "service")
    kind = "sigv4"
    static = False

    def __init__(
        self, region: str, service: str = "bedrock", *, credentials: Any = None, profile: str | None = None
    ) -> None:
        self.region = region
        self.service = service
        self._credentials = credentials
        self._profile = profile
        self._signer: SigV4Signer | None = None
        self._task: asyncio.Task[None] | None = None

    def _load_sync(self) -> Frozen:
        if self._credentials is None:
            import botocore.session

            session = botocore.session.Session(profile=self._profile)
            self._credentials = session.get_credentials()
            if self._credentials is None:
                raise LookupError("no credentials in the chain")
        return _frozen(self._credentials)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            creds = await loop.run_in_executor(None, self._load_sync)
        except Exception as exc:
            raise SecretMissingError(
                f"auth = 'sigv4': no AWS credentials ({type(exc).__name__})",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE, "
                "or run with an instance/container role",
            ) from None
        self._signer = SigV4Signer(creds, self.region, self.service)
        self._task = loop.create_task(self._keep_fresh())

    async def _keep_fresh(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CREDENTIALS_REFRESH_S)
            try:
                creds = await loop.run_in_executor(None, self._load_sync)
            except Exception as exc:  # keep signing with what we have; log without secrets
                log.warning(
                    "sigv4 credential refresh failed (%s); keeping the current ones", type(exc).__name__
                )
                continue
            if self._signer is None or creds != self._signer.creds:
                self._signer = SigV4Signer(creds, self.region, self.service)

    def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        signer = self._signer
        if signer is None:
            raise RuntimeError("SigV4Provider.headers() before start()")
        return signer.headers_now(method, url, body)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __repr__(self) -> str:
        creds = "loaded" if self._signer is not None else "not loaded"
        return f"SigV4Provider(region={self.region!r}, service={self.service!r}, credentials={creds})"
