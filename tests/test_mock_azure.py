"""The mock Azure OpenAI endpoint, driven by the official openai SDK against a real port-0 server."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncAzureOpenAI, AzureOpenAI, OpenAI

from harness.mocks import LatencyModel, Ledger, RunningFleet, start_fleet
from harness.profile.models import Fleet, FleetEndpoint, Latency
from harness.results.schema import LEDGER_SCHEMA

API_VERSION = "2024-10-21"
FAST = Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=1, jitter_frac=0)


def one_endpoint_fleet(latency: Latency = FAST, cloud: str = "azure", region: str = "swedencentral") -> Fleet:
    return Fleet(
        name="t",
        seed=3,
        endpoints=[
            FleetEndpoint(
                name="ep", cloud=cloud, region=region, deployments=["gpt-4o", "gpt-4o-mini"], latency=latency
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
