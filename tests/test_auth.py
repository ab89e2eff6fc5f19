"""Cloud authentication end to end on loopback: providers, the engine's per-request headers and the
verifying mocks (Entra refresh off the request path, SigV4 accepted and tampering refused, Vertex ADC)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from unittest import mock

import aiohttp
import boto3
import botocore.config
import botocore.exceptions
import google.oauth2.credentials
import orjson
import pytest
import yarl
from aiohttp import web

from harness.auth import (
    EntraProvider,
    GoogleADCProvider,
    SigV4Provider,
    StaticHeaders,
    api_key_provider,
    build_provider,
)
from harness.auth.mock import StaticAwsCredentials, mock_auth, mock_aws_credentials
from harness.auth.sigv4 import Frozen, SigV4Signer, botocore_sign
from harness.clock import RunEpoch
from harness.engine.dispatch import Dispatcher
from harness.engine.targets import ResolvedEndpoint, prepare_routes
from harness.mocks import RunningFleet, start_fleet
from harness.mocks.auth_verify import (
    MOCK_AWS_ACCESS_KEY_ID,
    MOCK_AWS_SECRET_ACCESS_KEY,
    bearer_problem,
    sigv4_problem,
)
from harness.profile.models import Endpoint, Fleet, FleetEndpoint, Latency, Profile
from harness.protocols import azure_openai as azure_wire, bedrock as bedrock_wire, vertex as vertex_wire
from harness.results.record import Record
from harness.workload import build_plan

FAST = Latency(ttft_base_ms=2, prefill_us_per_token=0, itl_ms=1, jitter_frac=0, output_tokens=4)
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
GEMINI = "gemini-2.0-flash-001"


@pytest.fixture(autouse=True)
def _no_cloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real credentials or metadata lookups leak into these tests."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@asynccontextmanager
async def fleet_of(*endpoints: FleetEndpoint) -> AsyncIterator[RunningFleet]:
    running = await start_fleet(Fleet(name="auth", endpoints=list(endpoints)))
    try:
        yield running
    finally:
        await running.stop()


def jwt(exp: float, secret_marker: str = "sig") -> str:
    """An unsigned JWT-shaped token with an ``exp`` claim (what the bearer check reads)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': int(exp), 'aud': 'cog'})}.{secret_marker}"


class AccessToken(NamedTuple):
    token: str
    expires_on: int


class SlowCredential:
    """A token service that takes 0.5 s per token and hands out 2-second tokens (sync: blocks)."""

    def __init__(self, lifetime_s: float = 2.0, delay_s: float = 0.5) -> None:
        self.lifetime_s = lifetime_s
        self.delay_s = delay_s
        self.calls = 0

    def get_token(self, scope: str) -> AccessToken:
        assert scope == "https://cognitiveservices.azure.com/.default"
        self.calls += 1
        time.sleep(self.delay_s)
        exp = time.time() + self.lifetime_s
        return AccessToken(jwt(exp), int(exp))


class AsyncSlowCredential(SlowCredential):
    """The same token service behind an async ``get_token`` (as azure.identity.aio has)."""

    async def get_token(self, scope: str) -> AccessToken:  # type: ignore[override]
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        exp = time.time() + self.lifetime_s
        return AccessToken(jwt(exp), int(exp))


class NaiveOnPathBearer:
    """The anti-pattern, as a control: fetches a token in ``headers()`` when the cached one is
    about to expire, blocking the loop for the token service's delay."""

    kind = "naive"
    static = False

    def __init__(self, credential: SlowCredential) -> None:
        self.credential = credential
        self.token: AccessToken | None = None

    async def start(self) -> None:
        return None

    def headers(self, method: str, url: str, body: bytes) -> dict[str, str]:
        if self.token is None or self.token.expires_on - time.time() < 1.0:
            self.token = self.credential.get_token("https://cognitiveservices.azure.com/.default")
        return {"Authorization": f"Bearer {self.token.token}"}

    async def close(self) -> None:
        return None


def chat_profile(transport: str, rate_rps: float, duration_s: float) -> Profile:
    return Profile.model_validate(
        {
            "name": "auth-test",
            "seed": 5,
            "duration_s": duration_s,
            "target": {"endpoints": {"az": {"base_url": "http://127.0.0.1:1"}}},
            "client": {"transport": transport, "connections": 64},
            "scenarios": [
                {
                    "name": "chat",
                    "stream": True,
                    "max_tokens": 4,
                    "arrival": {"process": "constant", "rate_rps": rate_rps},
                    "routes": [{"endpoint": "az", "deployment": "gpt-4o"}],
                }
            ],
        }
    )


async def dispatch(prof: Profile, base_url: str, auth: Any) -> tuple[list[Record], Dispatcher]:
    endpoints = {"az": ResolvedEndpoint("az", "azure_openai", base_url, None, auth=auth)}
    records: list[Record] = []
    epoch = RunEpoch.now(lead_ns=50_000_000)
    dispatcher = Dispatcher(prepare_routes(prof, endpoints), prof.client, epoch, records.append)
    await asyncio.wait_for(dispatcher.run(build_plan(prof)), timeout=30)
    return records, dispatcher


AZURE_BEARER = FleetEndpoint(
    name="az",
    cloud="azure",
    dialect="azure_openai",
    region="eastus",
    deployments=["gpt-4o"],
    latency=FAST,
    auth_verify="bearer",
)


# --------------------------------------------------------------------------- Entra ID


@pytest.mark.parametrize(
    ("transport", "credential_cls"), [("lean", SlowCredential), ("aiohttp", AsyncSlowCredential)]
)
async def test_entra_refresh_stays_off_the_request_path(transport: str, credential_cls: type) -> None:
    """A slow token service (0.5 s, 2 s tokens) is refreshed in the background: schedule lag p99
    stays low and every request carries an unexpired token the verifying mock accepts."""
    credential = credential_cls()
    provider = EntraProvider(credential)
    async with fleet_of(AZURE_BEARER) as fleet:
        await provider.start()
        try:
            records, dispatcher = await dispatch(
                chat_profile(transport, 100, 3.0), fleet.endpoints[0]["base_url"], provider
            )
        finally:
            await provider.close()
        ledger = fleet.ledger_table().to_pylist()
    assert len(records) == 300
    assert {r.outcome for r in records} == {"ok"}, {r.error_detail for r in records}
    assert {row["status"] for row in ledger} == {200} and len(ledger) == 300
    assert credential.calls >= 3, "the token was refreshed while the run went on"
    assert provider.refreshes >= 3
    lag_p99 = dispatcher.schedule_lag.percentile_ms(99) or 0.0
    assert lag_p99 < 50.0, f"schedule lag p99 {lag_p99:.1f} ms (a refresh on the request path adds 500)"


async def test_control_refreshing_on_the_request_path_raises_schedule_lag() -> None:
    """Control for the test above: fetching the same slow token inside headers() stalls the loop."""
    provider = NaiveOnPathBearer(SlowCredential())
    async with fleet_of(AZURE_BEARER) as fleet:
        _, dispatcher = await dispatch(
            chat_profile("lean", 100, 1.5), fleet.endpoints[0]["base_url"], provider
        )
    assert (dispatcher.schedule_lag.percentile_ms(99) or 0.0) > 100.0


async def test_bearer_check_refuses_expired_and_malformed_tokens() -> None:
    """The verifying mock's bearer check: well-formed and unexpired passes, the rest is refused."""
    now = time.time()
    assert bearer_problem(f"Bearer {jwt(now + 60)}") is None
    assert bearer_problem("Bearer ya29.opaque-google-token") is None
    assert bearer_problem(f"Bearer {jwt(now - 1)}") is not None
    assert bearer_problem("Bearer bad token") is not None
    assert bearer_problem("Basic dXNlcjpwYXNz") is not None
    assert bearer_problem(None) is not None
    async with fleet_of(AZURE_BEARER) as fleet, aiohttp.ClientSession() as session:
        url = (
            fleet.endpoints[0]["base_url"]
            + "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        )
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {jwt(now - 5)}"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "401"
        async with session.post(url, json=body, headers={"api-key": "k"}) as resp:
            assert resp.status == 401, "a bearer-verifying endpoint does not take an api-key"
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {jwt(now + 60)}"}) as resp:
            assert resp.status == 200


# --------------------------------------------------------------------------- SigV4

BEDROCK_SIGV4 = FleetEndpoint(
    name="bedrock",
    cloud="aws",
    dialect="bedrock",
    region="us-east-1",
    deployments=[CLAUDE],
    latency=FAST,
    auth_verify="sigv4",
)


def test_signer_matches_botocore_byte_for_byte() -> None:
    """Our cached signer produces exactly botocore SigV4Auth's headers, with and without a session token."""
    url = "http://127.0.0.1:8443/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse?b=2&a=1"
    body = b'{"messages": []}'
    when = datetime.datetime(2026, 11, 22, 3, 4, 5)
    for token in (None, "FwoGZXIvYXdzEXAMPLE"):
        creds = Frozen(MOCK_AWS_ACCESS_KEY_ID, MOCK_AWS_SECRET_ACCESS_KEY, token)
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            reference = botocore_sign(creds, "us-east-1", "bedrock", "POST", url, body)
        ours = SigV4Signer(creds, "us-east-1", "bedrock").sign("POST", url, body, "20261122T030405Z")
        assert ours == reference


async def send_bedrock(
    session: aiohttp.ClientSession,
    base_url: str,
    provider: Any,
    *,
    tamper_body: bool = False,
    tamper_header: str | None = None,
) -> tuple[int, str, bytes]:
    template = bedrock_wire.BedrockRequestTemplate(
        base_url, CLAUDE, "converse", prompt="hello there", max_tokens=4
    )
    headers = template.headers_for("req-1")
    if provider is not None:
        headers.update(provider.headers("POST", template.url, template.body))
    body = template.body
    if tamper_body:
        body = body.replace(b"hello", b"HELLO")
    if tamper_header is not None:
        headers[tamper_header] = "20200101T000000Z" if tamper_header == "X-Amz-Date" else "evil.example"
    # encoded=True: send the path exactly as signed (%3A stays %3A; yarl would otherwise decode it)
    async with session.post(yarl.URL(template.url, encoded=True), data=body, headers=headers) as resp:
        return resp.status, resp.headers.get("x-amzn-ErrorType", "").split(":")[0], await resp.read()


async def test_sigv4_signed_requests_are_accepted_and_tampered_ones_refused() -> None:
    """Our SigV4 provider's requests pass the verifying Bedrock mock; changing the body or a signed
    header after signing, a foreign access key or no signature at all gets Bedrock's 403s."""
    good = SigV4Provider("us-east-1", credentials=mock_aws_credentials())
    session_token = SigV4Provider(
        "us-east-1",
        credentials=StaticAwsCredentials(
            MOCK_AWS_ACCESS_KEY_ID, MOCK_AWS_SECRET_ACCESS_KEY, "FwoGZXIvEXAMPLE"
        ),
    )
    foreign = SigV4Provider("us-east-1", credentials=StaticAwsCredentials("AKIAFOREIGN000000000", "x" * 40))
    wrong_region = SigV4Provider("eu-west-1", credentials=mock_aws_credentials())
    providers = (good, session_token, foreign, wrong_region)
    async with fleet_of(BEDROCK_SIGV4) as fleet, aiohttp.ClientSession() as session:
        for p in providers:
            await p.start()
        try:
            url = fleet.endpoints[0]["base_url"]
            status, _, body = await send_bedrock(session, url, good)
            assert status == 200, body
            assert bedrock_wire.parse_converse_response(body).error is None
            assert (await send_bedrock(session, url, session_token))[0] == 200
            assert (await send_bedrock(session, url, good, tamper_body=True))[:2] == (
                403,
                "InvalidSignatureException",
            )
            assert (await send_bedrock(session, url, good, tamper_header="X-Amz-Date"))[:2] == (
                403,
                "InvalidSignatureException",
            )
            assert (await send_bedrock(session, url, good, tamper_header="Host"))[:2] == (
                403,
                "InvalidSignatureException",
            )
            assert (await send_bedrock(session, url, foreign))[:2] == (403, "UnrecognizedClientException")
            assert (await send_bedrock(session, url, wrong_region))[:2] == (403, "InvalidSignatureException")
            assert (await send_bedrock(session, url, None))[:2] == (
                403,
                "MissingAuthenticationTokenException",
            )
        finally:
            for p in providers:
                await p.close()
        statuses = [row["status"] for row in fleet.ledger_table().to_pylist()]
    assert statuses == [200, 200, 403, 403, 403, 403, 403, 403], "refusals are ledgered like any answer"


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_dispatcher_signs_every_request_with_sigv4(transport: str) -> None:
    """The engine merges a fresh SigV4 signature into every request on both transports; a server
    recomputing each signature from the bytes it received accepts them all."""
    failures: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        raw = await request.read()
        failure = sigv4_problem(request, raw, "us-east-1")
        if failure is not None:
            failures.append(failure.code)
            return web.Response(status=403, body=b'{"message": "no"}', content_type="application/json")
        body = azure_wire.chat_completion_body("chatcmpl-1", 1, "gpt-4o", "hi there", 5, 2)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/openai/deployments/{d}/chat/completions", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    provider = SigV4Provider("us-east-1", credentials=mock_aws_credentials())
    await provider.start()
    try:
        prof = chat_profile(transport, 50, 1.0)
        prof = Profile.model_validate(
            {**prof.model_dump(), "scenarios": [{**prof.scenarios[0].model_dump(), "stream": False}]}
        )
        records, _ = await dispatch(prof, f"http://127.0.0.1:{runner.addresses[0][1]}", provider)
    finally:
        await provider.close()
        await runner.cleanup()
    assert failures == []
    assert len(records) == 50 and {r.outcome for r in records} == {"ok"}


async def test_boto3_is_accepted_by_the_verifying_mock() -> None:
    """Unchanged boto3 signing with the fleet's dummy credentials is accepted; a wrong key is not."""
    async with fleet_of(BEDROCK_SIGV4) as fleet:
        url = fleet.endpoints[0]["base_url"]

        def converse(key: str, secret: str) -> Any:
            client = boto3.client(
                "bedrock-runtime",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id=key,
                aws_secret_access_key=secret,
                config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
            )
            return client.converse(
                modelId=CLAUDE,
                messages=[{"role": "user", "content": [{"text": "hi"}]}],
                inferenceConfig={"maxTokens": 3},
            )

        ok = await asyncio.wait_for(
            asyncio.to_thread(converse, MOCK_AWS_ACCESS_KEY_ID, MOCK_AWS_SECRET_ACCESS_KEY), timeout=30
        )
        assert ok["stopReason"] in ("max_tokens", "end_turn")
        for key, secret, code in (
            (MOCK_AWS_ACCESS_KEY_ID, "not-the-secret", "InvalidSignatureException"),
            ("AKIAFOREIGN000000000", MOCK_AWS_SECRET_ACCESS_KEY, "UnrecognizedClientException"),
        ):
            with pytest.raises(botocore.exceptions.ClientError) as info:
                await asyncio.wait_for(asyncio.to_thread(converse, key, secret), timeout=30)
            assert info.value.response["Error"]["Code"] == code
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_sigv4_caches_within_a_second_and_reads_the_botocore_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials come from botocore's chain (here the environment); a second request in the same
    second reuses the signed headers, a new second signs again."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOCK_AWS_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOCK_AWS_SECRET_ACCESS_KEY)
    provider = build_provider("sigv4", "bedrock", aws_region="us-east-1")
    await provider.start()
    try:
        clock = [1_790_000_000.2]
        with mock.patch("harness.auth.sigv4.time.time", side_effect=lambda: clock[0]):
            first = provider.headers("POST", "http://127.0.0.1:1/model/m/converse", b"{}")
            clock[0] += 0.5
            assert provider.headers("POST", "http://127.0.0.1:1/model/m/converse", b"{}") is first
            clock[0] += 1.0
            later = provider.headers("POST", "http://127.0.0.1:1/model/m/converse", b"{}")
        assert later["X-Amz-Date"] != first["X-Amz-Date"]
        assert f"Credential={MOCK_AWS_ACCESS_KEY_ID}/" in first["Authorization"]
    finally:
        await provider.close()


# --------------------------------------------------------------------------- Vertex


VERTEX_BEARER = FleetEndpoint(
    name="vx",
    cloud="gcp",
    dialect="vertex",
    region="us-central1",
    deployments=[GEMINI],
    latency=FAST,
    auth_verify="bearer",
)


async def test_vertex_adc_with_a_token_provider_works_against_the_mock() -> None:
    """google-auth credentials with a token provider (refresh_handler), refreshed in an executor,
    authenticate generateContent on the bearer-verifying Vertex mock."""
    issued: list[str] = []

    def refresh_handler(request: Any, scopes: Any) -> tuple[str, datetime.datetime]:
        token = f"ya29.adc-token-{len(issued)}"
        issued.append(token)
        return token, datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(hours=1)

    credentials = google.oauth2.credentials.Credentials(token=None, refresh_handler=refresh_handler)
    provider = GoogleADCProvider(credentials)
    async with fleet_of(VERTEX_BEARER) as fleet, aiohttp.ClientSession() as session:
        await provider.start()
        try:
            template = vertex_wire.GenerateRequestTemplate(
                fleet.endpoints[0]["base_url"],
                GEMINI,
                None,
                prompt="hello",
                max_tokens=4,
                stream=False,
                project="proj",
                location="us-central1",
            )
            headers = {**template.headers_for("r1"), **provider.headers("POST", template.url, template.body)}
            async with session.post(template.url, data=template.body, headers=headers) as resp:
                assert resp.status == 200
                result = vertex_wire.parse_generate_response(await resp.read())
            async with session.post(
                template.url, data=template.body, headers=template.headers_for("r2")
            ) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["status"] == "UNAUTHENTICATED"
        finally:
            await provider.close()
    assert result.error is None and result.usage_out == 4
    assert issued == ["ya29.adc-token-0"]
    assert provider.expires_in_s > 3000


async def test_vertex_express_api_key() -> None:
    """Express mode's x-goog-api-key passes an api-key-verifying Vertex mock; no key gets 401."""
    endpoint = VERTEX_BEARER.model_copy(update={"auth_verify": "api-key"})
    key = api_key_provider("vertex", "express-key")
    async with fleet_of(endpoint) as fleet, aiohttp.ClientSession() as session:
        template = vertex_wire.GenerateRequestTemplate(
            fleet.endpoints[0]["base_url"], GEMINI, None, prompt="hi", max_tokens=2, stream=False
        )
        headers = {**template.headers_for("r1"), **key.headers("POST", template.url, template.body)}
        async with session.post(template.url, data=template.body, headers=headers) as resp:
            assert resp.status == 200
        async with session.post(template.url, data=template.body, headers=template.headers_for("r2")) as resp:
            assert resp.status == 401


# --------------------------------------------------------------------------- secrets and config


async def test_secrets_never_appear_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Provider reprs and refresh-failure log lines name the provider, never the token or key."""
    secret = "eyJSECRET.TOKEN.VALUE"

    class FlakyCredential:
        def __init__(self) -> None:
            self.calls = 0

        def get_token(self, scope: str) -> AccessToken:
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError(f"token service down; last token was {secret}")
            return AccessToken(secret, int(time.time() + 0.3))

    caplog.set_level(logging.WARNING, logger="harness.auth")
    entra = EntraProvider(FlakyCredential())
    await entra.start()
    try:
        assert entra.headers("POST", "u", b"")["Authorization"] == f"Bearer {secret}"
        for _ in range(100):
            if "refresh failed" in caplog.text:
                break
            await asyncio.sleep(0.02)
        assert "refresh failed" in caplog.text
    finally:
        await entra.close()
    sig = SigV4Provider(
        "us-east-1", credentials=StaticAwsCredentials(MOCK_AWS_ACCESS_KEY_ID, "S3CR3T" * 7, "T0KEN")
    )
    await sig.start()
    await sig.close()
    key = api_key_provider("azure_openai", "sk-azure-secret")
    endpoint = ResolvedEndpoint("e", "azure_openai", "https://x", "sk-azure-secret", auth=entra)
    texts = [
        repr(entra),
        repr(sig),
        repr(key),
        repr(endpoint),
        repr(Frozen("AKIA", "S3CR3T", "T0KEN")),
        caplog.text,
    ]
    for text in texts:
        for leaked in (secret, "S3CR3T", "T0KEN", "sk-azure-secret"):
            assert leaked not in text, text


def test_static_headers_refuse_header_injection() -> None:
    """A credential with CR/LF is refused without echoing it."""
    with pytest.raises(ValueError) as info:
        StaticHeaders("api-key", {"api-key": "abc\r\nX-Evil: 1"})
    assert "abc" not in str(info.value)
    assert api_key_provider("openai", "k").headers("POST", "u", b"") == {"Authorization": "Bearer k"}
    assert api_key_provider("azure_openai", None).kind == "none"


def test_profile_auth_modes_are_validated() -> None:
    """auth takes the five modes; api_key_env only with api-key; sigv4 needs a region."""
    assert Endpoint(base_url="https://x", auth="entra").auth == "entra"
    assert (
        Endpoint(base_url="https://x", dialect="bedrock", auth="sigv4", region="us-west-2").aws_service
        == "bedrock"
    )
    for bad in (
        {"auth": "entra", "api_key_env": "KEY"},
        {"auth": "sigv4"},
        {"auth": "kerberos"},
    ):
        with pytest.raises(ValueError):
            Endpoint(base_url="https://x", **bad)
    with pytest.raises(ValueError, match="sigv4"):
        FleetEndpoint(name="a", cloud="azure", region="r", deployments=["d"], auth_verify="sigv4")
    assert isinstance(mock_auth("sigv4", "us-east-1"), SigV4Provider)
    assert mock_auth("api-key", "eastus") is None
