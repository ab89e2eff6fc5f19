"""The open-loop dispatcher against real aiohttp servers on 127.0.0.1: one record per planned arrival."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter

import pytest
from aiohttp import web

from harness.clock import RunEpoch
from harness.engine.dispatch import YOUNG_GC_EVERY, Dispatcher
from harness.engine.targets import ResolvedEndpoint, prepare_routes
from harness.profile.models import Profile
from harness.protocols import azure_openai as wire
from harness.results.record import Record
from harness.workload import build_plan

TRANSPORT = {"name": "aiohttp"}


@pytest.fixture(autouse=True, params=["aiohttp", "lean"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every engine test runs on both transports: aiohttp and the engine's own lean one."""
    TRANSPORT["name"] = request.param
    return str(request.param)


async def start_server(handler) -> tuple[web.AppRunner, str]:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_post("/openai/deployments/{d}/chat/completions", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def profile(rate_rps: float, duration_s: float, stream: bool = True, **client) -> Profile:  # type: ignore[no-untyped-def]
    return Profile.model_validate(
        {
            "name": "engine-test",
            "seed": 3,
            "duration_s": duration_s,
            "target": {"endpoints": {"t": {"base_url": "http://127.0.0.1:1"}}},
            "client": {"transport": TRANSPORT["name"], **client},
            "scenarios": [
                {
                    "name": "chat",
                    "stream": stream,
                    "arrival": {"process": "constant", "rate_rps": rate_rps},
                    "routes": [{"endpoint": "t", "deployment": "d"}],
                }
            ],
        }
    )


async def run_engine(
    prof: Profile, base_url: str, cancel_after_s: float | None = None
) -> tuple[list[Record], Dispatcher]:
    endpoints = {"t": ResolvedEndpoint("t", "azure_openai", base_url, "k")}
    records: list[Record] = []
    epoch = RunEpoch.now(lead_ns=20_000_000)
    dispatcher = Dispatcher(prepare_routes(prof, endpoints), prof.client, epoch, records.append)
    task = asyncio.ensure_future(dispatcher.run(build_plan(prof)))
    if cancel_after_s is not None:
        await asyncio.sleep(cancel_after_s)
        task.cancel()
    try:
        await asyncio.wait_for(task, timeout=30)
    except asyncio.CancelledError:
        assert cancel_after_s is not None
    return records, dispatcher


def check_invariant(records: list[Record], planned: int) -> Counter[str]:
    outcomes = Counter(r.outcome for r in records)
    assert len(records) == planned, "exactly one record per planned arrival"
    assert len({r.index for r in records}) == planned, "no arrival recorded twice"
    assert sum(outcomes[k] for k in ("ok", "error", "timeout", "dropped", "cancelled")) == planned
    return outcomes


async def test_stalling_target_counts_timeouts_and_drops() -> None:
    """Against a target that never answers, in-flight requests time out and the rest are dropped."""
    stall = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await stall.wait()
        return web.Response()

    runner, url = await start_server(handler)
    try:
        prof = profile(200, 1.0, max_in_flight=20, request_timeout_s=0.5, sock_read_timeout_s=0.4)
        records, dispatcher = await run_engine(prof, url)
    finally:
        stall.set()
        await runner.cleanup()
    outcomes = check_invariant(records, 200)
    assert outcomes["ok"] == 0
    assert outcomes["timeout"] > 0 and outcomes["dropped"] > 0
    assert outcomes["timeout"] + outcomes["dropped"] == 200
    assert {r.error_kind for r in records if r.outcome == "dropped"} == {"in_flight_cap"}
    assert {r.error_kind for r in records if r.outcome == "timeout"} <= {"timeout_read", "timeout_total"}
    assert all(r.sent_ns is None for r in records if r.outcome == "dropped")
    assert dispatcher.counters.in_flight == 0


async def test_streaming_target_timestamps_tokens() -> None:
    """A streaming answer yields TTFT, per-token timestamps and usage from the server."""
    enc = wire.ChunkEncoder("chatcmpl-x", 1, "gpt-4o")

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "x-ms-region": "East US",
                "apim-request-id": request.headers["x-ms-client-request-id"],
            }
        )
        await resp.prepare(request)
        await resp.write(wire.prompt_filter_chunk())
        await resp.write(enc.role())
        for i in range(5):
            await asyncio.sleep(0.005)
            await resp.write(enc.content(f" w{i}"))
        await resp.write(enc.finish())
        await resp.write(enc.usage(7, 5))
        await resp.write(wire.SSE_DONE)
        return resp

    runner, url = await start_server(handler)
    try:
        records, _ = await run_engine(profile(50, 0.2), url)
    finally:
        await runner.cleanup()
    outcomes = check_invariant(records, 10)
    assert outcomes["ok"] == 10
    for r in records:
        assert r.token_ns is not None and len(r.token_ns) == 5
        assert r.intended_ns <= r.sent_ns <= r.first_byte_ns <= r.first_token_ns <= r.done_ns
        assert r.first_token_ns == r.token_ns[0]
        assert (r.tokens_in, r.tokens_out, r.usage_from_server) == (7, 5, True)
        assert (r.fp_cloud, r.fp_region) == ("azure", "eastus")
        assert r.fp_request_id == r.request_id  # the client request id was sent and echoed
        assert r.response_id == "chatcmpl-x"


async def test_errors_are_records_with_kinds() -> None:
    """429s, 500s and a stream cut off before [DONE] are records with their error kinds."""
    calls = Counter[str]()

    async def handler(request: web.Request) -> web.StreamResponse:
        n = calls["n"]
        calls["n"] += 1
        if n % 3 == 0:
            return web.Response(
                status=429,
                body=wire.error_body("429", "Rate limit is exceeded."),
                content_type="application/json",
            )
        if n % 3 == 1:
            return web.Response(
                status=500, body=wire.error_body("500", "boom"), content_type="application/json"
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(wire.ChunkEncoder("c", 1, "m").content(" partial"))
        return resp  # ends without [DONE]

    runner, url = await start_server(handler)
    try:
        records, _ = await run_engine(profile(60, 0.5), url)
    finally:
        await runner.cleanup()
    check_invariant(records, 30)
    kinds = Counter(r.error_kind for r in records)
    assert kinds == {"http_429": 10, "http_5xx": 10, "reset": 10}
    limited = next(r for r in records if r.error_kind == "http_429")
    assert limited.status == 429 and "Rate limit" in (limited.error_detail or "")


async def test_connection_refused_is_a_connect_error() -> None:
    """A target that refuses connections gives connect errors, not a crash."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response()

    runner, url = await start_server(ok)
    await runner.cleanup()  # the port is now closed
    records, _ = await run_engine(profile(40, 0.25, connect_timeout_s=1), url)
    outcomes = check_invariant(records, 10)
    assert outcomes["error"] == 10
    assert {r.error_kind for r in records} == {"connect"}


async def test_cancelling_the_run_records_in_flight_as_cancelled() -> None:
    """Stopping a run mid-way records every in-flight request as cancelled; nothing goes missing."""
    stall = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await stall.wait()
        return web.Response()

    runner, url = await start_server(handler)
    try:
        records, dispatcher = await run_engine(
            profile(100, 5.0, request_timeout_s=30), url, cancel_after_s=0.3
        )
    finally:
        stall.set()
        await runner.cleanup()
    planned = dispatcher.counters.planned
    outcomes = check_invariant(records, planned)
    assert 10 <= planned < 500
    assert outcomes["cancelled"] == planned
    assert {r.error_kind for r in records} == {"interrupted"}


@pytest.mark.parametrize("stream", [False, True])
async def test_lag_budget_drops_late_arrivals(stream: bool) -> None:
    """Arrivals the dispatcher reaches later than the lag budget are dropped, not sent late."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if not stream:
            body = wire.chat_completion_body("id", 1, "m", "hi", 1, 1)
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(wire.ChunkEncoder("c", 1, "m").content(" hi"))
        await resp.write(wire.SSE_DONE)
        return resp

    runner, url = await start_server(handler)
    try:
        prof = profile(100, 1.0, stream=stream, lag_budget_ms=50)
        endpoints = {"t": ResolvedEndpoint("t", "azure_openai", url, "k")}
        records: list[Record] = []
        epoch = RunEpoch.now(lead_ns=0)
        dispatcher = Dispatcher(prepare_routes(prof, endpoints), prof.client, epoch, records.append)
        # the dispatcher starts 500 ms after the epoch: the ~45 arrivals due before 450 ms are more than
        # 50 ms overdue; the generous budget keeps later arrivals safe from a loaded machine's jitter
        await asyncio.sleep(0.5)
        started_ns = time.monotonic_ns() - epoch.monotonic_ns
        await dispatcher.run(build_plan(prof))
    finally:
        await runner.cleanup()
    outcomes = check_invariant(records, 100)
    overdue = [r for r in records if r.intended_ns < started_ns - 50_000_000]
    assert len(overdue) >= 40
    assert all(r.outcome == "dropped" for r in overdue), "every arrival overdue by > budget is dropped"
    assert {r.error_kind for r in records if r.outcome == "dropped"} == {"lag_budget"}
    assert outcomes["ok"] == 100 - outcomes["dropped"] >= 30  # later arrivals were sent, not dropped


async def test_honour_retry_after_retries_and_records_attempts() -> None:
    """With honour-retry-after, 429s carrying retry-after-ms are retried; attempts and wait are recorded."""
    seen = Counter[str]()

    async def handler(request: web.Request) -> web.StreamResponse:
        rid = request.headers["x-ms-client-request-id"]
        seen[rid] += 1
        if seen[rid] <= 2:
            return web.Response(
                status=429,
                body=wire.error_body("429", "Rate limit is exceeded."),
                headers={"retry-after-ms": "30", "retry-after": "1"},
                content_type="application/json",
            )
        return web.Response(
            body=wire.chat_completion_body("id", 1, "m", "hi there", 3, 2), content_type="application/json"
        )

    runner, url = await start_server(handler)
    try:
        prof = profile(20, 0.25, stream=False, retry={"policy": "honour-retry-after", "max_attempts": 3})
        records, _ = await run_engine(prof, url)
        none_prof = profile(20, 0.25, stream=False)
        seen.clear()
        plain, _ = await run_engine(none_prof, url)
    finally:
        await runner.cleanup()
    check_invariant(records, 5)
    for r in records:
        assert (r.outcome, r.attempts, r.status) == ("ok", 3, 200)
        assert r.retry_wait_ns >= 2 * 30_000_000  # waited retry-after-ms (not retry-after) twice
        assert r.attempt_sent_ns is not None and r.sent_ns is not None
        assert r.attempt_sent_ns - r.sent_ns >= r.retry_wait_ns
        assert r.done_ns - r.attempt_sent_ns < r.done_ns - r.sent_ns  # latency without vs with retries
    assert {(r.outcome, r.error_kind, r.attempts) for r in plain} == {("error", "http_429", 1)}


async def test_retry_gives_up_at_max_attempts_and_long_waits() -> None:
    """Retries stop at max_attempts, and a Retry-After beyond max_wait_s is recorded, not waited."""
    wait_ms = {"value": "10"}

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=429, headers={"retry-after-ms": wait_ms["value"]}, body=b"{}")

    runner, url = await start_server(handler)
    try:
        retry = {"policy": "honour-retry-after", "max_attempts": 2, "max_wait_s": 5}
        capped, _ = await run_engine(profile(20, 0.1, stream=False, retry=retry), url)
        wait_ms["value"] = "10000"  # 10 s > max_wait_s
        retry = {"policy": "honour-retry-after", "max_attempts": 5, "max_wait_s": 5}
        too_long, _ = await run_engine(profile(20, 0.1, stream=False, retry=retry), url)
    finally:
        await runner.cleanup()
    assert {(r.outcome, r.error_kind, r.attempts) for r in capped} == {("error", "http_429", 2)}
    assert {(r.outcome, r.error_kind, r.attempts, r.retry_wait_ns) for r in too_long} == {
        ("error", "http_429", 1, 0)
    }


def test_retry_after_parsing() -> None:
    """retry-after-ms wins; retry-after takes seconds or an HTTP date; nonsense means no delay."""
    from datetime import UTC, datetime

    from harness.protocols.retry import retry_after_s

    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "1.5"}) == 1.5
    assert retry_after_s({"retry-after": "Sun, 22 Nov 2026 12:00:30 GMT"}, now=now) == 30.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({"retry-after-ms": "nan", "retry-after": "2"}) == 2.0
    assert retry_after_s({}) is None


async def test_scenario_in_flight_cap_is_its_own() -> None:
    """A scenario's own in-flight cap drops its arrivals without starving another scenario."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(
            body=wire.chat_completion_body("id", 1, "m", "hi", 1, 1), content_type="application/json"
        )

    runner, url = await start_server(handler)
    try:
        prof = Profile.model_validate(
            {
                "name": "two",
                "duration_s": 0.5,
                "target": {"endpoints": {"t": {"base_url": "http://127.0.0.1:1"}}},
                "client": {"connections": 100, "request_timeout_s": 5, "transport": TRANSPORT["name"]},
                "scenarios": [
                    {
                        "name": "capped",
                        "stream": False,
                        "max_in_flight": 3,
                        "arrival": {"process": "constant", "rate_rps": 40},
                        "routes": [{"endpoint": "t", "deployment": "d"}],
                    },
                    {
                        "name": "free",
                        "stream": False,
                        "arrival": {"process": "constant", "rate_rps": 40},
                        "routes": [{"endpoint": "t", "deployment": "d"}],
                    },
                ],
            }
        )
        asyncio.get_running_loop().call_later(0.8, release.set)
        records, _ = await run_engine(prof, url)
    finally:
        release.set()
        await runner.cleanup()
    check_invariant(records, 40)
    by = Counter((r.scenario, r.outcome) for r in records)
    assert by[("capped", "ok")] == 3 and by[("capped", "dropped")] == 17
    assert by[("free", "ok")] == 20


async def test_the_plan_is_out_of_the_collectors_walks_during_dispatch_only() -> None:
    """gc.freeze and rarer young collections while dispatching (the plan is not walked by full
    collections, in-flight state not every 700 allocations), both undone after."""
    seen: list[int] = []
    thresholds: list[tuple[int, int, int]] = []
    before = gc.get_threshold()

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"choices": [], "id": "x", "object": "chat.completion"})

    runner, url = await start_server(handler)
    try:
        prof = profile(50, 0.2, stream=False)
        endpoints = {"t": ResolvedEndpoint("t", "azure_openai", url, "k")}
        epoch = RunEpoch.now(lead_ns=20_000_000)
        plan = build_plan(prof)

        def sink(record: Record) -> None:
            seen.append(gc.get_freeze_count())
            thresholds.append(gc.get_threshold())

        dispatcher = Dispatcher(prepare_routes(prof, endpoints), prof.client, epoch, sink)
        assert gc.get_freeze_count() == 0
        await asyncio.wait_for(dispatcher.run(plan), timeout=30)
    finally:
        await runner.cleanup()
    assert len(seen) == 10 and min(seen) > 10_000  # the modules loaded, at least
    assert gc.get_freeze_count() == 0
    assert set(thresholds) == {(YOUNG_GC_EVERY, before[1], before[2])}
    assert gc.get_threshold() == before
