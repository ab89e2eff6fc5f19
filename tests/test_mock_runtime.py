"""The mocks' shared runtime: rate limits, queueing, faults, headers and batched due-time sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from harness.mocks.ledger import Ledger
from harness.mocks.runtime import (
    NO_FAULTS,
    DueScheduler,
    EndpointRuntime,
    FaultPlan,
    Rejection,
    TokenBucket,
    go_duration,
    scheduler_for,
)
from harness.profile.models import Capacity, Cloud, Faults, FleetEndpoint, RateLimits


class StepClock:
    """A monotonic clock (seconds) that tests advance by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_runtime(
    *,
    cloud: Cloud = "azure",
    rpm: int | None = None,
    tpm: int | None = None,
    concurrency: int | None = None,
    max_queue: int = 1000,
    faults: Faults | None = None,
    clock: Callable[[], float] | None = None,
    seed: int = 1,
    procs: int = 1,
) -> EndpointRuntime:
    endpoint = FleetEndpoint(
        name="ep",
        cloud=cloud,
        region="eastus",
        deployments=["d"],
        rate_limits=RateLimits(requests_per_min=rpm, tokens_per_min=tpm),
        capacity=Capacity(max_concurrency=concurrency, max_queue=max_queue),
        faults=faults or Faults(),
    )
    return EndpointRuntime(endpoint, Ledger(), seed, clock=clock or StepClock(), procs=procs)


# --------------------------------------------------------------------------- rate limits


async def test_requests_per_min_bucket_rejects_when_empty_and_refills_continuously() -> None:
    """60 rpm admits a burst of 60, refuses the 61st for 1 s, and admits again one second later."""
    clock = StepClock()
    rt = make_runtime(rpm=60, clock=clock)
    for _ in range(60):
        adm = await rt.admit("d", 10)
        assert adm.rejection is None
        adm.release()
    adm = await rt.admit("d", 10)
    assert adm.rejection == Rejection(429, "requests_per_min", pytest.approx(1.0))
    clock.now += 0.5
    adm = await rt.admit("d", 10)
    assert adm.rejection is not None
    assert adm.rejection.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    assert (await rt.admit("d", 10)).rejection is None
    assert rt.rejected["requests_per_min"] == 2


async def test_tokens_per_min_counts_estimated_tokens_and_names_the_bucket() -> None:
    """A request's est_tokens come out of the tokens bucket; a shortfall is a tokens_per_min 429."""
    clock = StepClock()
    rt = make_runtime(tpm=6000, clock=clock)  # 100 tokens/s
    assert (await rt.admit("d", 5000)).rejection is None
    adm = await rt.admit("d", 1500)
    assert adm.rejection is not None
    assert adm.rejection.reason == "tokens_per_min"
    assert adm.rejection.retry_after_s == pytest.approx(5.0)  # 500 missing at 100/s
    clock.now += 5.0
    assert (await rt.admit("d", 1500)).rejection is None


async def test_oversized_request_needs_a_full_bucket_and_retry_after_stays_within_sdk_limit() -> None:
    """A request above the per-minute budget passes on a full bucket; every retry_after is in (0, 60] s."""
    clock = StepClock()
    rt = make_runtime(rpm=1, tpm=100, clock=clock)
    assert (await rt.admit("d", 10_000)).rejection is None
    for step in range(50):
        clock.now += step * 0.37
        adm = await rt.admit("d", 10_000)
        if adm.rejection is not None:
            assert 0 < adm.rejection.retry_after_s <= 60.0  # type: ignore[operator]


async def test_both_buckets_must_hold_enough_and_retry_after_is_the_longer_wait() -> None:
    """With both limits short, the rejection waits for the slower bucket and takes from neither."""
    clock = StepClock()
    rt = make_runtime(rpm=60, tpm=600, clock=clock)  # 1 request/s, 10 tokens/s
    assert (await rt.admit("d", 600)).rejection is None
    adm = await rt.admit("d", 600)
    assert adm.rejection is not None
    assert adm.rejection.retry_after_s == pytest.approx(60.0)
    clock.now += 60.0
    assert (await rt.admit("d", 600)).rejection is None


def test_token_bucket_never_exceeds_capacity() -> None:
    """Refilling over a long idle period stops at the bucket's capacity."""
    bucket = TokenBucket(10, 1.0, now=0.0)
    bucket.take(10)
    assert bucket.refill(1e6) == 10
    assert bucket.full_in_s(1e6) == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.006, "6ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (17.28, "17.28s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (90.5, "1m30.5s"),
        (3600, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_go_duration_matches_go_time_duration_string(seconds: float, text: str) -> None:
    """Durations print as Go's time.Duration.String() does, to the millisecond."""
    assert go_duration(seconds) == text


async def test_azure_headers_carry_limit_and_remaining_per_bucket() -> None:
    """Azure sends x-ratelimit-limit-* and -remaining-* for each configured limit, no reset."""
    rt = make_runtime(cloud="azure", rpm=100, tpm=1000)
    (await rt.admit("d", 250)).release()
    assert dict(rt.rate_limit_headers("d")) == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "750",
    }


async def test_openai_headers_add_go_style_reset_durations() -> None:
    """OpenAI sends limit, remaining and reset (time until full, Go duration) for each bucket."""
    clock = StepClock()
    rt = make_runtime(cloud="openai", rpm=60, tpm=6000, clock=clock)
    (await rt.admit("d", 9000)).release()  # empties the tokens bucket (oversized = whole bucket)
    clock.now += 1.5
    assert dict(rt.rate_limit_headers("d")) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "60",
        "x-ratelimit-reset-requests": "0s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "150",
        "x-ratelimit-reset-tokens": "58.5s",
    }


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
async def test_aws_and_gcp_send_no_rate_limit_headers(cloud: Cloud) -> None:
    """Bedrock and Vertex carry no x-ratelimit-* headers, limited or not."""
    rt = make_runtime(cloud=cloud, rpm=10, tpm=100)
    assert rt.rate_limit_headers("d") == []


def test_unlimited_endpoint_sends_no_rate_limit_headers() -> None:
    """Without configured limits there is no budget to report."""
    assert make_runtime(cloud="openai").rate_limit_headers("d") == []


async def test_each_of_n_processes_enforces_a_share_and_reports_the_total() -> None:
    """With procs=2 a process admits half the rpm burst and reports remaining scaled back up."""
    rt = make_runtime(cloud="azure", rpm=100, procs=2)
    admitted = 0
    for _ in range(100):
        adm = await rt.admit("d", 1)
        admitted += adm.rejection is None
    assert admitted == 50
    assert dict(rt.rate_limit_headers("d"))["x-ratelimit-limit-requests"] == "100"
    assert dict(rt.rate_limit_headers("d"))["x-ratelimit-remaining-requests"] == "0"


# --------------------------------------------------------------------------- queueing


async def test_concurrency_queues_fifo_counts_queue_time_and_rejects_beyond_max_queue() -> None:
    """Beyond max_concurrency requests wait in FIFO order (queued_s from the clock); beyond
    max_queue waiting they get 429 queue_full with retry_after 1 s."""
    clock = StepClock()
    rt = make_runtime(concurrency=2, max_queue=2, clock=clock)
    first = await rt.admit("d", 1)
    second = await rt.admit("d", 1)
    waiting = [asyncio.create_task(rt.admit("d", 1)) for _ in range(2)]
    await asyncio.sleep(0)
    assert rt.counts()["queued"] == 2
    full = await rt.admit("d", 1)
    assert full.rejection == Rejection(429, "queue_full", 1.0)
    clock.now += 0.25
    first.release()
    first.release()  # idempotent: frees one slot, not two
    third = await waiting[0]
    assert third.rejection is None
    assert third.queued_s == pytest.approx(0.25)
    assert not waiting[1].done()
    clock.now += 0.5
    second.release()
    fourth = await waiting[1]
    assert fourth.queued_s == pytest.approx(0.75)
    assert rt.counts()["in_flight"] == 2
    third.release()
    fourth.release()
    assert rt.counts() | {"faults": None} == {
        "pids": [rt.pid],
        "admitted": 4,
        "rejected": {"requests_per_min": 0, "tokens_per_min": 0, "queue_full": 1, "outage": 0, "fault": 0},
        "in_flight": 0,
        "queued": 0,
        "state_items": 0,
        "ledger_rows": 0,
        "faults": None,
    }


async def test_a_cancelled_waiter_leaves_the_queue_and_leaks_no_slot() -> None:
    """Cancelling a queued admit removes it from the queue; the slot goes to the next waiter."""
    rt = make_runtime(concurrency=1, max_queue=5)
    holder = await rt.admit("d", 1)
    doomed = asyncio.create_task(rt.admit("d", 1))
    patient = asyncio.create_task(rt.admit("d", 1))
    await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert rt.counts()["queued"] == 1
    holder.release()
    adm = await patient
    adm.release()
    assert rt.counts()["in_flight"] == 0


async def test_a_waiter_cancelled_just_after_the_handoff_passes_its_slot_on() -> None:
    """If a waiter is cancelled after its slot was handed over but before it ran, the slot moves on."""
    rt = make_runtime(concurrency=1, max_queue=5)
    holder = await rt.admit("d", 1)
    unlucky = asyncio.create_task(rt.admit("d", 1))
    next_in_line = asyncio.create_task(rt.admit("d", 1))
    await asyncio.sleep(0)
    holder.release()  # hands the slot to `unlucky`, whose task has not resumed yet
    unlucky.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    adm = await asyncio.wait_for(next_in_line, timeout=5)
    assert adm.rejection is None
    adm.release()
    assert rt.counts()["in_flight"] == 0


async def test_load_beyond_the_knee_queues_then_rejects_over_http() -> None:
    """On a tiny app of our own, concurrency 2 and queue 2: of 6 simultaneous requests 2 are served
    at once, 2 wait (their latency grows by the queue time) and 2 get 429 queue_full."""
    rt = make_runtime(concurrency=2, max_queue=2, clock=time.monotonic)
    go = asyncio.Event()
    all_arrived = asyncio.Event()
    arrived = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 6:
            all_arrived.set()
        adm = await rt.admit("d", 1)
        try:
            if adm.rejection is not None:
                return web.json_response({"reason": adm.rejection.reason}, status=adm.rejection.status)
            await go.wait()  # the "service time": held until every request has arrived
            return web.json_response({"queued": adm.queued_s > 0})
        finally:
            adm.release()

    app = web.Application()
    app.router.add_post("/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:

            async def call() -> tuple[int, dict[str, Any]]:
                async with session.post(f"http://127.0.0.1:{port}/x") as resp:
                    return resp.status, await resp.json()

            calls = [asyncio.create_task(call()) for _ in range(6)]
            await asyncio.wait_for(all_arrived.wait(), timeout=10)
            go.set()
            results = await asyncio.gather(*calls)
    finally:
        await runner.cleanup()
    assert sorted((s, orjson.dumps(b).decode()) for s, b in results) == [
        (200, '{"queued":false}'),
        (200, '{"queued":false}'),
        (200, '{"queued":true}'),
        (200, '{"queued":true}'),
        (429, '{"reason":"queue_full"}'),
        (429, '{"reason":"queue_full"}'),
    ]


async def test_openai_sdk_retries_after_the_runtimes_retry_after() -> None:
    """A 429 carrying the runtime's retry_after (as retry-after-ms) is retried by the openai SDK."""
    clock = StepClock()  # moved by the handler: as if the retry_after it announced had passed
    rt = make_runtime(cloud="openai", rpm=600, clock=clock)  # 10 requests/s: retry after 0.1 s
    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        adm = await rt.admit("d", 1)
        try:
            headers = rt.rate_limit_headers("d")
            if adm.rejection is not None:
                seen.append(429)
                wait = adm.rejection.retry_after_s or 1.0
                clock.now += wait
                headers += [("retry-after-ms", str(round(wait * 1000))), ("retry-after", str(wait))]
                return web.json_response(
                    {
                        "error": {
                            "message": "Rate limit reached",
                            "type": "requests",
                            "code": "rate_limit_exceeded",
                        }
                    },
                    status=429,
                    headers=headers,
                )
            seen.append(200)
            body = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "d",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
            }
            return web.json_response(body, headers=headers)
        finally:
            adm.release()

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        for _ in range(600):  # drain the bucket
            (await rt.admit("d", 1)).release()
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=2)
        reply = await asyncio.wait_for(
            client.chat.completions.create(model="d", messages=[{"role": "user", "content": "hi"}]),
            timeout=30,
        )
        await client.close()
    finally:
        await runner.cleanup()
    assert reply.choices[0].message.content == "ok"
    assert seen == [429, 200]


# --------------------------------------------------------------------------- faults


async def test_outage_answers_503_before_anything_else() -> None:
    """An outage rejects every request with 503, even within rate limits, and can be switched off."""
    rt = make_runtime(rpm=1000, faults=Faults(outage=True, error_rate=1.0))
    assert (await rt.admit("d", 1)).rejection == Rejection(503, "outage")
    rt.set_faults(Faults())
    adm = await rt.admit("d", 1)
    assert adm.rejection is None
    assert adm.plan is NO_FAULTS


async def test_error_rate_rejects_with_the_configured_status() -> None:
    """error_rate 1 turns every request into a Rejection with error_status and reason fault."""
    rt = make_runtime(faults=Faults(error_rate=1.0, error_status=502))
    assert (await rt.admit("d", 1)).rejection == Rejection(502, "fault")
    assert rt.counts()["in_flight"] == 0


async def test_certain_faults_fill_the_plan() -> None:
    """With every fault rate at 1 the plan resets, delays the first byte, and picks chunks in [1, 8]."""
    faults = Faults(
        reset_rate=1,
        slow_first_byte_rate=1,
        slow_first_byte_ms=250,
        midstream_disconnect_rate=1,
        malformed_rate=1,
    )
    rt = make_runtime(faults=faults)
    seen_disconnect: set[int] = set()
    for _ in range(200):
        plan = (await rt.admit("d", 1)).plan
        assert plan.reset_before_response
        assert plan.first_byte_delay_s == 0.25
        assert plan.disconnect_after_chunks is not None
        assert plan.malformed_at_chunk is not None
        assert 1 <= plan.malformed_at_chunk <= 8
        seen_disconnect.add(plan.disconnect_after_chunks)
    assert seen_disconnect == set(range(1, 9))


async def test_fault_draws_are_seeded_and_near_their_rate() -> None:
    """The same seed draws the same fault sequence; a 0.3 error rate errs on roughly 30% of requests."""

    async def outcomes(seed: int) -> list[Rejection | FaultPlan]:
        rt = make_runtime(faults=Faults(error_rate=0.3, midstream_disconnect_rate=0.2), seed=seed)
        out: list[Rejection | FaultPlan] = []
        for _ in range(2000):
            adm = await rt.admit("d", 1)
            out.append(adm.rejection or adm.plan)
            adm.release()
        return out

    a, b, c = await outcomes(5), await outcomes(5), await outcomes(6)
    assert a == b
    assert a != c
    errors = sum(isinstance(x, Rejection) for x in a)
    assert 500 <= errors <= 700


# --------------------------------------------------------------------------- sleeping


class RecordingLoop:
    """Delegates to the running loop but records call_at, so tests can count timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self._loop = loop
        self.now = now
        self.calls: list[tuple[float, Any, tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[None]:
        return self._loop.create_future()

    def call_at(self, when: float, callback: Any, *args: Any) -> None:
        self.calls.append((when, callback, args))

    def fire_due(self) -> None:
        due = [c for c in self.calls if c[0] <= self.now]
        self.calls = [c for c in self.calls if c[0] > self.now]
        for _, callback, args in due:
            callback(*args)


async def test_sleepers_in_the_same_millisecond_share_one_timer() -> None:
    """Thousands of sleepers due within the same ms slot arm a single loop timer and all wake together."""
    fake = RecordingLoop(asyncio.get_running_loop(), now=10.0)
    sched = DueScheduler(fake, timer=fake)
    futures = [sched.sleep_until(10.0201 + i * 1e-7) for i in range(1000)]
    later = sched.sleep_until(10.0212)
    assert sched.timers == 2
    assert [c[0] for c in fake.calls] == [pytest.approx(10.020), pytest.approx(10.021)]
    fake.now = 10.020
    fake.fire_due()
    assert all(f.done() for f in futures)
    assert not later.done()
    fake.now = 10.021
    fake.fire_due()
    assert later.done()
    assert sched.pending() == 0


async def test_past_due_sleep_is_already_done_and_cancelled_sleepers_are_skipped() -> None:
    """A due time in the past needs no timer; a cancelled sleeper does not break its slot's wake-up."""
    fake = RecordingLoop(asyncio.get_running_loop(), now=5.0)
    sched = DueScheduler(fake, timer=fake)
    assert sched.sleep_until(4.0).done()
    assert sched.timers == 0
    a, b = sched.sleep_until(5.01), sched.sleep_until(5.01)
    a.cancel()
    fake.now = 5.01
    fake.fire_due()
    assert b.done()
    assert not b.cancelled()


async def test_runtime_sleep_until_wakes_on_time_on_a_real_loop() -> None:
    """Streams sleeping through runtime.sleep_until wake in due order, never earlier than half a
    millisecond before their due time, on one scheduler shared by the loop."""
    rt = make_runtime()
    loop = asyncio.get_running_loop()
    start = loop.time()
    woke: list[tuple[float, float]] = []

    async def stream(offset: float) -> None:
        due = start + offset
        for _ in range(3):
            due += 0.01
            await rt.sleep_until(due)
            woke.append((due, loop.time()))

    await asyncio.wait_for(asyncio.gather(*(stream(i * 0.0005) for i in range(50))), timeout=30)
    assert len(woke) == 150
    assert all(now >= due - 0.0005 - 1e-9 for due, now in woke)
    assert scheduler_for(loop) is rt._sched
    assert scheduler_for(loop).timers <= 150
