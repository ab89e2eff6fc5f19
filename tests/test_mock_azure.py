"""The mock Azure OpenAI endpoint, driven by the official openai SDK against a real port-0 server."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from openai import AsyncAzureOpenAI, AzureOpenAI, OpenAI

from harness.mocks import LatencyModel, Ledger, RunningFleet, start_fleet
from harness.mocks.azure_openai import make_azure_app
from harness.mocks.runtime import NO_FAULTS, Admission, EndpointRuntime, FaultPlan, Rejection
from harness.profile.models import Fleet, FleetEndpoint, Latency
from harness.protocols.azure_openai import (
    EMBEDDING_DIMENSIONS,
    TRUNCATED,
    ChatStreamParser,
    embedding_vector,
    error_kind,
    parse_chat_response,
)
from harness.results.schema import LEDGER_SCHEMA

API_VERSION = "2024-10-21"
FAST = Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=1, jitter_frac=0)


def one_endpoint_fleet(latency: Latency = FAST, cloud: str = "azure", region: str = "swedencentral") -> Fleet:
    return Fleet(
        name="t",
        seed=3,
        endpoints=[
            FleetEndpoint(
                name="ep",
                cloud=cloud,
                region=region,
                deployments=["gpt-4o", "gpt-4o-mini", "emb"],
                latency=latency,
            )
        ],
    )


@pytest.fixture
async def fleet() -> AsyncIterator[RunningFleet]:
    running = await start_fleet(one_endpoint_fleet())
    try:
        yield running
    finally:
        await running.stop()


def url_of(running: RunningFleet) -> str:
    return str(running.endpoints[0]["base_url"])


def ledger_rows(running: RunningFleet) -> list[dict]:
    return running.ledger_table().to_pylist()


async def wait_for_rows(running: RunningFleet, n: int, timeout_s: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s * 100)):  # the server notices a disconnect on its next write
        if len(running.ledgers[0]) >= n or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    return ledger_rows(running)


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi to the world"}]


# --------------------------------------------------------------------------- units


def test_latency_model_formula_and_caps() -> None:
    """TTFT is base plus prefill per prompt token, and the reply length is capped by max_tokens."""
    model = LatencyModel(Latency(ttft_base_ms=50, prefill_us_per_token=1000, itl_ms=20, jitter_frac=0), 1)
    assert model.ttft_s(10) == pytest.approx(0.060)
    assert model.itl_s() == pytest.approx(0.020)
    assert model.decode_s(10) == pytest.approx(0.180)
    assert model.decode_s(1) == 0.0
    assert model.output_tokens(7) == 7
    fixed = LatencyModel(Latency(output_tokens=5, jitter_frac=0), 1)
    assert (fixed.output_tokens(3), fixed.output_tokens(9), fixed.output_tokens(None)) == (3, 5, 5)


def test_latency_model_jitter_is_seeded_and_bounded() -> None:
    """Equal seeds give equal delays, and jitter stays within [1 - j, 1 + j] of the nominal value."""
    lat = Latency(ttft_base_ms=100, prefill_us_per_token=0, itl_ms=10, jitter_frac=0.2)
    a, b = LatencyModel(lat, 42), LatencyModel(lat, 42)
    draws_a = [a.ttft_s(0) for _ in range(200)]
    assert draws_a == [b.ttft_s(0) for _ in range(200)]
    assert all(0.08 <= d <= 0.12 for d in draws_a)
    assert max(draws_a) - min(draws_a) > 0.02


def test_ledger_table_matches_schema_and_resets() -> None:
    """The ledger converts to an Arrow table with exactly LEDGER_SCHEMA and forgets rows on reset."""
    ledger = Ledger()
    assert ledger.to_table().schema.equals(LEDGER_SCHEMA, check_metadata=True)
    ledger.append(
        request_id="r1", endpoint="e", cloud="azure", region="eastus", deployment=None,
        api="chat.completions", stateful=False, response_id=None, status=404, stream=False,
        bytes_in=10, bytes_out=20, tokens_in=0, tokens_out=0, received_wall_ns=1, done_wall_ns=2, pid=3,
    )  # fmt: skip
    table = ledger.to_table()
    assert table.schema.equals(LEDGER_SCHEMA, check_metadata=True)
    assert table.to_pylist()[0]["request_id"] == "r1"
    assert len(ledger.to_parquet_bytes()) > 0
    ledger.reset()
    assert len(ledger) == 0


# --------------------------------------------------------------------------- SDK, sync


async def test_sync_sdk_non_stream(fleet: RunningFleet) -> None:
    """AzureOpenAI gets content, usage, prompt-filter results, both fingerprints and its request id echoed."""
    rid = str(uuid.uuid4())

    def call() -> openai._legacy_response.LegacyAPIResponse:
        with AzureOpenAI(
            azure_endpoint=url_of(fleet), api_key="k", api_version=API_VERSION, max_retries=0
        ) as client:
            return client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES, max_tokens=5, extra_headers={"x-ms-client-request-id": rid}
            )

    raw = await asyncio.to_thread(call)
    completion = raw.parse()
    assert raw.headers["x-mock-cloud"] == "azure"
    assert raw.headers["x-mock-region"] == "swedencentral"
    assert raw.headers["x-ms-region"] == "Sweden Central"
    assert raw.headers["apim-request-id"]
    assert raw.headers["x-ms-client-request-id"] == rid
    assert completion.choices[0].message.content == " the of and to in"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 5)
    assert completion.model_extra is not None
    assert completion.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert completion.id.startswith("chatcmpl-")

    rows = ledger_rows(fleet)
    assert len(rows) == 1
    row = rows[0]
    assert (row["request_id"], row["status"], row["stream"], row["deployment"]) == (rid, 200, False, "gpt-4o")
    assert (row["tokens_in"], row["tokens_out"], row["response_id"]) == (7, 5, completion.id)
    assert (row["api"], row["stateful"], row["pid"], row["cloud"]) == (
        "chat.completions",
        False,
        os.getpid(),
        "azure",
    )
    assert row["bytes_in"] > 0
    assert row["bytes_out"] > 0
    assert row["done_wall_ns"] >= row["received_wall_ns"]


async def test_sync_sdk_stream_with_and_without_usage(fleet: RunningFleet) -> None:
    """A sync stream yields one content chunk per output token, and a usage chunk only when asked."""

    def call(include_usage: bool) -> list:
        with AzureOpenAI(
            azure_endpoint=url_of(fleet), api_key="k", api_version=API_VERSION, max_retries=0
        ) as client:
            extra = {"stream_options": {"include_usage": True}} if include_usage else {}
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=7, stream=True, **extra
            )
            return list(stream)

    for include_usage in (False, True):
        chunks = await asyncio.to_thread(call, include_usage)
        content = [c for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(content) == 7
        usage = [c for c in chunks if c.usage is not None]
        if include_usage:
            assert len(usage) == 1
            assert usage[0].choices == []
            assert (usage[0].usage.prompt_tokens, usage[0].usage.completion_tokens) == (7, 7)
        else:
            assert usage == []
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == ["length"]
        assert chunks[0].choices == []  # the prompt-filter chunk comes first
    rows = ledger_rows(fleet)
    assert [(r["stream"], r["status"], r["tokens_out"]) for r in rows] == [(True, 200, 7), (True, 200, 7)]


# --------------------------------------------------------------------------- SDK, async and v1


async def test_async_sdk_non_stream_and_stream(fleet: RunningFleet) -> None:
    """AsyncAzureOpenAI gets the same replies as the sync client, and each request is ledgered once."""
    async with AsyncAzureOpenAI(
        azure_endpoint=url_of(fleet), api_key="k", api_version=API_VERSION, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=3)
        assert completion.choices[0].message.content == " the of and"
        assert completion.model_extra is not None
        assert "prompt_filter_results" in completion.model_extra
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-ms-client-request-id": "async-stream-1"},
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " the of and to"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    rows = ledger_rows(fleet)
    assert [r["request_id"] for r in rows] == [None, "async-stream-1"]


async def test_openai_client_on_v1_path(fleet: RunningFleet) -> None:
    """The plain OpenAI client on /openai/v1/ authenticates with Bearer and routes by the body's model."""
    async with openai.AsyncOpenAI(
        base_url=url_of(fleet) + "/openai/v1/", api_key="k", max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=2
        )
        completion = raw.parse()
        assert raw.headers["x-mock-cloud"] == "azure"
        assert completion.choices[0].message.content == " the of"
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=3, stream=True
        )
        content = [c async for c in stream if c.choices and c.choices[0].delta.content]
        assert len(content) == 3
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope", messages=MESSAGES)

    def sync_call() -> str | None:
        with OpenAI(base_url=url_of(fleet) + "/openai/v1/", api_key="k", max_retries=0) as client:
            return (
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1)
                .choices[0]
                .message.content
            )

    assert await asyncio.to_thread(sync_call) == " the"
    rows = ledger_rows(fleet)
    assert [(r["deployment"], r["status"]) for r in rows] == [
        ("gpt-4o-mini", 200), ("gpt-4o-mini", 200), ("nope", 404), ("gpt-4o", 200),
    ]  # fmt: skip


# --------------------------------------------------------------------------- errors


async def test_errors_are_azure_shaped_fingerprinted_and_ledgered(fleet: RunningFleet) -> None:
    """No key gives 401, no api-version 400, an unknown deployment 404; all fingerprinted and ledgered."""
    base = url_of(fleet) + "/openai/deployments/gpt-4o/chat/completions"
    body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES})
    cases = [
        (base + "?api-version=" + API_VERSION, {}, 401, "401"),
        (base, {"api-key": "k"}, 400, "MissingApiVersionParameter"),
        (base.replace("gpt-4o", "missing") + "?api-version=x", {"api-key": "k"}, 404, "DeploymentNotFound"),
    ]
    async with aiohttp.ClientSession() as session:
        for i, (url, auth, status, code) in enumerate(cases):
            headers = {**auth, "x-ms-client-request-id": f"err-{i}", "Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == status
                assert orjson.loads(await resp.read())["error"]["code"] == code
                assert resp.headers["x-mock-cloud"] == "azure"
                assert resp.headers["apim-request-id"] == f"err-{i}"
                assert resp.headers["x-ms-client-request-id"] == f"err-{i}"

    def sdk_404() -> openai.NotFoundError:
        with (
            AzureOpenAI(
                azure_endpoint=url_of(fleet), api_key="k", api_version=API_VERSION, max_retries=0
            ) as client,
            pytest.raises(openai.NotFoundError) as info,
        ):
            client.chat.completions.create(model="missing", messages=MESSAGES)
        return info.value

    err = await asyncio.to_thread(sdk_404)
    assert err.code == "DeploymentNotFound"
    rows = ledger_rows(fleet)
    assert [(r["request_id"], r["status"]) for r in rows[:3]] == [
        ("err-0", 401),
        ("err-1", 400),
        ("err-2", 404),
    ]
    assert [r["status"] for r in rows] == [401, 400, 404, 404]
    assert all(r["tokens_out"] == 0 and r["bytes_out"] > 0 for r in rows)


# --------------------------------------------------------------------------- timing and disconnects


async def _stream_times(url: str, max_tokens: int) -> tuple[float, list[float]]:
    """(TTFT, arrival times) of the content chunks of one stream, seconds, from just before the send."""
    body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": max_tokens, "stream": True})
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        async with session.post(
            url + "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION,
            data=body,
            headers={"api-key": "k", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            times.extend(
                [
                    time.perf_counter()
                    async for line in resp.content
                    if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line
                ]
            )
    return times[0] - t0, times


async def test_stream_timing_follows_the_latency_model() -> None:
    """With ttft 50 ms and itl 20 ms (no jitter), a 10-token stream shows about those delays."""
    running = await start_fleet(
        one_endpoint_fleet(Latency(ttft_base_ms=50, prefill_us_per_token=0, itl_ms=20, jitter_frac=0))
    )
    try:
        ttft, times = await _stream_times(url_of(running), 10)
    finally:
        await running.stop()
    assert len(times) == 10
    mean_gap = (times[-1] - times[0]) / 9
    assert 0.040 <= ttft <= 0.250
    assert 0.012 <= mean_gap <= 0.045


async def test_client_disconnect_mid_stream_is_ledgered() -> None:
    """A client that leaves mid-stream still gets one ledger row, status 200, with the tokens sent so far."""
    running = await start_fleet(
        one_endpoint_fleet(Latency(ttft_base_ms=1, prefill_us_per_token=0, itl_ms=20, jitter_frac=0))
    )
    try:
        body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 100, "stream": True})
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                url_of(running) + "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION,
                data=body,
                headers={"api-key": "k", "x-ms-client-request-id": "leaver"},
            )
            seen = 0
            async for line in resp.content:
                seen += b'"content":"' in line
                if seen >= 3:
                    break
            resp.close()
        rows = await wait_for_rows(running, 1)
    finally:
        await running.stop()
    assert len(rows) == 1
    assert (rows[0]["request_id"], rows[0]["status"], rows[0]["stream"]) == ("leaver", 200, True)
    assert 1 <= rows[0]["tokens_out"] < 100


# --------------------------------------------------------------------------- scripted runtime


def endpoint_config(
    cloud: str = "azure",
    dialect: str = "azure_openai",
    latency: Latency = FAST,
    region: str = "swedencentral",
) -> FleetEndpoint:
    return FleetEndpoint(
        name="ep",
        cloud=cloud,
        dialect=dialect,
        region=region,
        deployments=["gpt-4o", "gpt-4o-mini", "emb"],
        latency=latency,
    )


class ScriptedRuntime(EndpointRuntime):
    """A runtime whose admissions follow a script: one Rejection or FaultPlan per request, then plain ones."""

    def __init__(
        self,
        endpoint: FleetEndpoint,
        script: list[Rejection | FaultPlan] | None = None,
        rate_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(endpoint, Ledger(), 7)
        self.script = list(script or [])
        self.rate_headers = list(rate_headers or [])
        self.admitted: list[tuple[str, int]] = []

    async def admit(self, deployment: str, est_tokens: int) -> Admission:
        self.admitted.append((deployment, est_tokens))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Rejection):
            return Admission(step, NO_FAULTS)
        return Admission(None, step or NO_FAULTS)

    def rate_limit_headers(self, deployment: str) -> list[tuple[str, str]]:
        return list(self.rate_headers)


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1, port 0; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def rows_of(runtime: EndpointRuntime) -> list[dict]:
    return runtime.ledger.to_table().to_pylist()


async def wait_for_ledger(runtime: EndpointRuntime, n: int, timeout_s: float = 5.0) -> list[dict]:
    for _ in range(int(timeout_s * 100)):  # a handler finishes its row just after the client sees the end
        if len(runtime.ledger) >= n:
            break
        await asyncio.sleep(0.01)
    return rows_of(runtime)


CHAT_PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION


async def read_stream(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, ChatStreamParser, float]:
    """(status, parser after close, seconds to response headers) of one raw streamed request,
    read as the engine reads it; a cut connection ends the read, never the test."""
    parser = ChatStreamParser()
    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json", **headers}
        ) as resp:
            t_headers = time.perf_counter() - t0
            with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                async for data in resp.content.iter_any():
                    parser.feed(data)
            status = resp.status
    parser.close()
    return status, parser, t_headers


STREAM_BODY = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 6, "stream": True})


# --------------------------------------------------------------------------- completions and embeddings


async def test_azure_classic_completions_non_stream_and_stream(fleet: RunningFleet) -> None:
    """AzureOpenAI completions get text, usage and Azure's filter results, streamed or not."""

    def call() -> tuple:
        with AzureOpenAI(
            azure_endpoint=url_of(fleet), api_key="k", api_version=API_VERSION, max_retries=0
        ) as client:
            completion = client.completions.create(model="gpt-4o", prompt="the of and to", max_tokens=4)
            chunks = list(
                client.completions.create(
                    model="gpt-4o-mini",
                    prompt="the of",
                    max_tokens=3,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            return completion, chunks

    completion, chunks = await asyncio.to_thread(call)
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.choices[0].text == " the of and to"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 4)
    assert completion.model_extra is not None
    assert completion.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert completion.choices[0].model_extra["content_filter_results"]["hate"]["filtered"] is False

    assert chunks[0].choices == []  # Azure's prompt-filter chunk
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " the of and"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    rows = ledger_rows(fleet)
    assert [(r["api"], r["stream"], r["status"], r["tokens_in"], r["tokens_out"]) for r in rows] == [
        ("completions", False, 200, 4, 4),
        ("completions", True, 200, 2, 3),
    ]
    assert rows[0]["response_id"] == completion.id


async def test_azure_classic_embeddings_base64_default_and_float(fleet: RunningFleet) -> None:
    """The SDK's default base64 reply decodes to the mock's unit vector, equal to the float reply."""

    def call() -> tuple:
        with AzureOpenAI(
            azure_endpoint=url_of(fleet), api_key="k", api_version=API_VERSION, max_retries=0
        ) as client:
            default = client.embeddings.with_raw_response.create(model="emb", input=["the of", "and"])
            floats = client.embeddings.create(model="emb", input="the of", encoding_format="float")
            return default, floats

    raw, floats = await asyncio.to_thread(call)
    default = raw.parse()
    assert raw.headers["apim-request-id"]
    assert [d.index for d in default.data] == [0, 1]
    expected = embedding_vector("the of").tolist()
    assert default.data[0].embedding == expected
    assert floats.data[0].embedding == expected
    assert default.data[1].embedding == embedding_vector("and").tolist()
    assert len(expected) == EMBEDDING_DIMENSIONS
    assert math.fsum(x * x for x in expected) == pytest.approx(1.0, abs=1e-5)
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (3, 3)
    rows = ledger_rows(fleet)
    assert [(r["api"], r["deployment"], r["status"], r["tokens_in"]) for r in rows] == [
        ("embeddings", "emb", 200, 3),
        ("embeddings", "emb", 200, 2),
    ]


async def test_azure_v1_path_completions_and_embeddings(fleet: RunningFleet) -> None:
    """The plain AsyncOpenAI client on /openai/v1/ reaches completions and embeddings by the body's model."""
    async with openai.AsyncOpenAI(
        base_url=url_of(fleet) + "/openai/v1/", api_key="k", max_retries=0
    ) as client:
        completion = await client.completions.create(model="gpt-4o", prompt="hi", max_tokens=2)
        assert completion.choices[0].text == " the of"
        stream = await client.completions.create(model="gpt-4o", prompt="hi", max_tokens=2, stream=True)
        texts = [c.choices[0].text async for c in stream if c.choices and c.choices[0].text]
        assert texts == [" the", " of"]
        embeddings = await client.embeddings.create(model="emb", input="hi", dimensions=8)
        assert embeddings.data[0].embedding == embedding_vector("hi", 8).tolist()
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="emb", input=[])
    rows = ledger_rows(fleet)
    assert [(r["api"], r["status"]) for r in rows] == [
        ("completions", 200), ("completions", 200), ("embeddings", 200), ("embeddings", 400),
    ]  # fmt: skip


# --------------------------------------------------------------------------- rejections


async def test_sdk_honours_retry_after_ms_on_azure_429() -> None:
    """Two 429s with retry-after-ms 50 are retried by the SDK, which succeeds on the third attempt."""
    reject = Rejection(429, "requests_per_min", retry_after_s=0.05)
    runtime = ScriptedRuntime(endpoint_config(), [reject, reject])
    async with serve_app(make_azure_app(runtime)) as url:

        def call() -> tuple[str | None, float]:
            with AzureOpenAI(
                azure_endpoint=url, api_key="k", api_version=API_VERSION, max_retries=2
            ) as client:
                t0 = time.perf_counter()
                completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
                return completion.choices[0].message.content, time.perf_counter() - t0

        content, elapsed = await asyncio.to_thread(call)
    assert content == " the of"
    assert elapsed >= 0.1
    assert [r["status"] for r in rows_of(runtime)] == [429, 429, 200]


async def test_azure_rejections_are_azure_shaped() -> None:
    """A 429 carries Azure's body, retry-after (ceil) and retry-after-ms, and rate-limit headers; an
    outage is a 503 and an injected fault its own status, both Azure-shaped."""
    script: list[Rejection | FaultPlan] = [
        Rejection(429, "tokens_per_min", retry_after_s=2.3),
        Rejection(503, "outage"),
        Rejection(500, "fault"),
    ]
    runtime = ScriptedRuntime(endpoint_config(), script, [("x-ratelimit-remaining-requests", "9")])
    seen = []
    async with serve_app(make_azure_app(runtime)) as url, aiohttp.ClientSession() as session:
        for _ in range(4):
            async with session.post(url + CHAT_PATH, data=STREAM_BODY, headers={"api-key": "k"}) as resp:
                body = await resp.read()
                seen.append((resp.status, resp.headers, body))
    (s429, h429, b429), (s503, h503, b503), (s500, _, b500), (s200, h200, _) = seen
    assert s429 == 429
    assert orjson.loads(b429) == {
        "error": {"code": "429", "message": "Rate limit is exceeded. Try again in 3 seconds."}
    }
    assert (h429["retry-after"], h429["retry-after-ms"]) == ("3", "2300")
    assert h429["x-ratelimit-remaining-requests"] == "9"
    assert h429["apim-request-id"]
    assert s503 == 503
    assert orjson.loads(b503)["error"]["code"] == "ServiceUnavailable"
    assert "retry-after" not in h503
    assert s500 == 500
    assert orjson.loads(b500)["error"]["code"] == "InternalServerError"
    assert s200 == 200
    assert h200["x-ratelimit-remaining-requests"] == "9"
    assert [r["status"] for r in rows_of(runtime)] == [429, 503, 500, 200]
    assert all(r["stream"] for r in rows_of(runtime))
    assert runtime.admitted[0] == ("gpt-4o", 7 + 6)  # prompt + max_tokens


# --------------------------------------------------------------------------- fault plans


async def test_reset_fault_surfaces_as_connection_error() -> None:
    """A reset before the response makes the SDK raise APIConnectionError; the ledger says 499."""
    runtime = ScriptedRuntime(endpoint_config(), [FaultPlan(reset_before_response=True)])
    async with serve_app(make_azure_app(runtime)) as url:

        def call() -> None:
            with AzureOpenAI(
                azure_endpoint=url, api_key="k", api_version=API_VERSION, max_retries=0
            ) as client:
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)

        with pytest.raises(openai.APIConnectionError):
            await asyncio.to_thread(call)
        rows = await wait_for_ledger(runtime, 1)
    assert [(r["status"], r["bytes_out"], r["tokens_out"]) for r in rows] == [(499, 0, 0)]


async def test_disconnect_fault_truncates_the_stream() -> None:
    """A disconnect after 4 chunks (prompt filter, role, two tokens) leaves a truncated stream."""
    runtime = ScriptedRuntime(endpoint_config(), [FaultPlan(disconnect_after_chunks=4)])
    async with serve_app(make_azure_app(runtime)) as url:
        status, parser, _ = await read_stream(url + CHAT_PATH, STREAM_BODY, {"api-key": "k"})
        rows = await wait_for_ledger(runtime, 1)
    assert status == 200
    assert parser.content_chunks == 2
    assert parser.error == TRUNCATED
    assert error_kind(parser.error) == "reset"
    assert [(r["status"], r["stream"], r["tokens_out"]) for r in rows] == [(200, True, 2)]


async def test_malformed_fault_is_a_protocol_error() -> None:
    """A malformed chunk in place of the third token stops the parser with a 'malformed' error."""
    runtime = ScriptedRuntime(endpoint_config(), [FaultPlan(malformed_at_chunk=4)])
    async with serve_app(make_azure_app(runtime)) as url:
        status, parser, _ = await read_stream(url + CHAT_PATH, STREAM_BODY, {"api-key": "k"})
        rows = await wait_for_ledger(runtime, 1)
    assert status == 200
    assert parser.content_chunks == 2
    assert parser.error is not None
    assert parser.error.startswith("malformed ")
    assert error_kind(parser.error) == "protocol"
    assert [r["status"] for r in rows] == [200]


async def test_fault_index_past_the_end_hits_done() -> None:
    """A disconnect drawn past the last chunk still cuts the stream: every token arrives, [DONE] does not."""
    runtime = ScriptedRuntime(endpoint_config(), [FaultPlan(disconnect_after_chunks=10_000)])
    async with serve_app(make_azure_app(runtime)) as url:
        _, parser, _ = await read_stream(url + CHAT_PATH, STREAM_BODY, {"api-key": "k"})
    assert parser.content_chunks == 6
    assert parser.finish_reason == "length"
    assert parser.error == TRUNCATED


async def test_first_byte_delay_is_measurable() -> None:
    """A 200 ms first-byte delay holds back the response headers by at least that long."""
    runtime = ScriptedRuntime(endpoint_config(), [FaultPlan(first_byte_delay_s=0.2)])
    async with serve_app(make_azure_app(runtime)) as url:
        _, slow, t_slow = await read_stream(url + CHAT_PATH, STREAM_BODY, {"api-key": "k"})
        _, fast, t_fast = await read_stream(url + CHAT_PATH, STREAM_BODY, {"api-key": "k"})
    assert slow.done and fast.done
    assert t_slow >= 0.2
    assert t_fast < t_slow


async def test_non_stream_faults_cut_or_corrupt_the_body() -> None:
    """On a non-stream reply a disconnect cuts the body short and a malformed fault sends invalid JSON."""
    script: list[Rejection | FaultPlan] = [
        FaultPlan(disconnect_after_chunks=1),
        FaultPlan(malformed_at_chunk=0),
    ]
    runtime = ScriptedRuntime(endpoint_config(), script)
    body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 3})
    async with serve_app(make_azure_app(runtime)) as url, aiohttp.ClientSession() as session:
        async with session.post(url + CHAT_PATH, data=body, headers={"api-key": "k"}) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        async with session.post(url + CHAT_PATH, data=body, headers={"api-key": "k"}) as resp:
            result = parse_chat_response(await resp.read())
        rows = await wait_for_ledger(runtime, 2)
    assert result.error is not None
    assert result.error.startswith("malformed body")
    assert [(r["status"], r["tokens_out"]) for r in rows] == [(200, 0), (200, 0)]
