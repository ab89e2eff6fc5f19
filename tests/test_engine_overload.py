"""The dispatcher under overload, in closed-loop mode and with its precise timer, on loopback servers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict

import pytest
from aiohttp import web

from harness.clock import RunEpoch
from harness.engine.dispatch import Dispatcher
from harness.engine.targets import ResolvedEndpoint, prepare_routes
from harness.engine.timer import PreciseSleeper
from harness.profile.models import Profile, Validity
from harness.protocols import azure_openai as wire
from harness.results.record import Record
from harness.workload import build_plan
from harness.workload.closed import CLOSED_INDEX_BASE, closed_loops

BODY = wire.chat_completion_body("chatcmpl-t", 1, "gpt-4o", "hi", 8, 1)


@pytest.fixture(params=["aiohttp", "lean"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def start_server(delay_s: float) -> tuple[web.AppRunner, str, list[int]]:
    """A chat target answering after ``delay_s``; the list tracks its concurrency high-water mark."""
    state = [0, 0]  # in progress, max

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        state[0] += 1
        state[1] = max(state[1], state[0])
        try:
            await asyncio.sleep(delay_s)
        finally:
            state[0] -= 1
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/openai/deployments/{d}/chat/completions", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", state


def make_profile(arrival: dict, duration_s: float, transport: str, **client: object) -> Profile:
    return Profile.model_validate(
        {
            "name": "overload",
            "seed": 2,
            "duration_s": duration_s,
            "target": {"endpoints": {"t": {"base_url": "http://127.0.0.1:1"}}},
            "client": {"transport": transport, **client},
            "scenarios": [
                {
                    "name": "chat",
                    "stream": False,
                    "arrival": arrival,
                    "routes": [{"endpoint": "t", "deployment": "d"}],
                }
            ],
        }
    )


async def run(prof: Profile, url: str, sink_cost_s: float = 0.0) -> tuple[list[Record], Dispatcher]:
    records: list[Record] = []

    def sink(rec: Record) -> None:
        records.append(rec)
        if sink_cost_s:  # a CPU-bound record sink: the dispatcher's own loop saturates
            end = time.perf_counter() + sink_cost_s
            while time.perf_counter() < end:
                pass

    endpoints = {"t": ResolvedEndpoint("t", "azure_openai", url, "k")}
    epoch = RunEpoch.now(lead_ns=20_000_000)
    dispatcher = Dispatcher(
        prepare_routes(prof, endpoints), prof.client, epoch, sink, closed=closed_loops(prof)
    )
    await asyncio.wait_for(dispatcher.run(build_plan(prof)), timeout=30)
    return records, dispatcher


def check_accounting(records: list[Record], dispatcher: Dispatcher) -> Counter[str]:
    c = dispatcher.counters
    outcomes = Counter(r.outcome for r in records)
    assert len(records) == c.planned == c.finished(), "one record per arrival, none lost"
    assert len({r.index for r in records}) == len(records), "no arrival recorded twice"
    assert c.sent == len(records) - outcomes["dropped"]
    assert (outcomes["ok"], outcomes["dropped"]) == (c.ok, c.dropped)
    assert c.in_flight == 0 and all(n == 0 for n in dispatcher.scenario_in_flight)
    return outcomes


async def test_target_overload_drops_at_the_cap_and_bounds_in_flight(transport: str) -> None:
    """Offered 4× what a slow target carries: arrivals beyond the cap are dropped, in flight stays bounded."""
    runner, url, server = await start_server(delay_s=0.05)
    try:
        prof = make_profile({"process": "constant", "rate_rps": 1600}, 0.5, transport, max_in_flight=20)
        records, dispatcher = await run(prof, url)
    finally:
        await runner.cleanup()
    outcomes = check_accounting(records, dispatcher)
    assert len(records) == 800
    assert outcomes["ok"] > 0 and outcomes["dropped"] > 400  # 20 slots × 20/s each = 400/s carried
    assert {r.error_kind for r in records if r.outcome == "dropped"} == {"in_flight_cap"}
    assert dispatcher.counters.max_in_flight_seen == 20
    assert server[1] <= 20


async def test_harness_overload_drops_late_arrivals_and_is_harness_bound(transport: str) -> None:
    """When the generator's own CPU saturates, arrivals are dropped and schedule lag marks the run bound."""
    runner, url, _ = await start_server(delay_s=0.0)
    try:
        prof = make_profile(
            {"process": "constant", "rate_rps": 2000}, 0.3, transport, max_in_flight=64, lag_budget_ms=30
        )
        records, dispatcher = await run(prof, url, sink_cost_s=0.001)  # ≤ 1000 records/s: 2× overload
    finally:
        await runner.cleanup()
    outcomes = check_accounting(records, dispatcher)
    assert len(records) == 600
    assert outcomes["dropped"] > 0 and outcomes["ok"] > 0
    # late arrivals (lag budget) or slots held by completions the busy loop has not processed yet
    assert {r.error_kind for r in records if r.outcome == "dropped"} <= {"lag_budget", "in_flight_cap"}
    assert dispatcher.counters.max_in_flight_seen <= 64
    lag_p99_ms = dispatcher.schedule_lag.percentile_ms(99) or 0.0
    assert lag_p99_ms > Validity(max_schedule_lag_p99_ms=5).max_schedule_lag_p99_ms  # the runner's rule


async def test_closed_loop_users_think_between_requests(transport: str) -> None:
    """Closed-loop users never overlap their own requests, wait the think time, and stop at the run's end."""
    runner, url, server = await start_server(delay_s=0.02)
    try:
        arrival = {"process": "closed", "users": 4, "think_time_ms": 30, "ramp_up_s": 0.1}
        prof = make_profile(arrival, 0.8, transport, connections=8)
        records, dispatcher = await run(prof, url)
    finally:
        await runner.cleanup()
    outcomes = check_accounting(records, dispatcher)
    assert outcomes["ok"] == len(records)
    # each user: ≥ 50 ms per cycle (20 ms answer + 30 ms think) over 0.8 s → at most 16 each
    assert 4 * 4 <= len(records) <= 4 * 16
    assert server[1] <= 4 and dispatcher.counters.max_in_flight_seen <= 4
    assert min(r.index for r in records) >= CLOSED_INDEX_BASE
    assert all(r.intended_ns < 800_000_000 for r in records)
    # replay the users: sort by intended time, assign each request to the user that was free
    free: list[int] = []
    by_user: dict[int, list[Record]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: r.intended_ns):
        slot = next((i for i, t in enumerate(free) if t <= rec.intended_ns), None)
        if slot is None:
            slot = len(free)
            free.append(0)
        assert rec.done_ns is not None and rec.sent_ns is not None
        free[slot] = rec.done_ns + 30_000_000
        by_user[slot].append(rec)
    assert len(by_user) == 4, "exactly four users: never more requests overlapping than users"
    for recs in by_user.values():
        for prev, nxt in itertools.pairwise(recs):
            assert nxt.intended_ns - prev.done_ns >= 30_000_000  # type: ignore[operator]


async def test_closed_and_open_scenarios_run_together(transport: str) -> None:
    """A closed-loop scenario runs beside an open-loop one; both end with every request accounted for."""
    runner, url, _ = await start_server(delay_s=0.005)
    try:
        prof = make_profile({"process": "constant", "rate_rps": 100}, 0.5, transport, connections=16)
        data = prof.model_dump(by_alias=True)
        users = {**data["scenarios"][0], "name": "users"}
        users["arrival"] = {"process": "closed", "users": 3, "think_time_ms": 10, "think": "exponential"}
        data["scenarios"].append(users)
        prof = Profile.model_validate(data)
        records, dispatcher = await run(prof, url)
    finally:
        await runner.cleanup()
    check_accounting(records, dispatcher)
    by_scenario = Counter(r.scenario for r in records)
    assert by_scenario["chat"] == 50 and by_scenario["users"] > 5


@pytest.mark.parametrize("precise", [True, False])
async def test_precise_sleeper_never_wakes_early(precise: bool) -> None:
    """The scheduler's sleeper returns only at or after the due time, at once when already due."""
    sleeper = PreciseSleeper(allow_timerfd=precise)
    try:
        assert sleeper.precise == precise or not precise
        now = time.monotonic_ns()
        await sleeper.until(now - 1)  # already due: no wake-up needed
        assert sleeper.wakeups == 0
        for step_us in (300, 1_700, 50, 2_500, 900):
            due = time.monotonic_ns() + step_us * 1000
            await sleeper.until(due)
            assert time.monotonic_ns() >= due
        assert sleeper.wakeups >= 5
    finally:
        sleeper.close()


async def test_connect_time_on_new_connections_only(transport: str) -> None:
    """A request that opened a connection carries its connect time; one that reused a keep-alive one, 0."""
    runner, url, _ = await start_server(delay_s=0.0)
    try:
        prof = make_profile({"process": "constant", "rate_rps": 40}, 0.25, transport, connections=4)
        records, dispatcher = await run(prof, url)
    finally:
        await runner.cleanup()
    records.sort(key=lambda r: r.index)
    assert [r.outcome for r in records] == ["ok"] * 10
    assert records[0].connect_ns > 0
    # mostly sequential: keep-alive connections are reused (a slow machine may open a second one)
    opened = sum(r.connect_ns > 0 for r in records)
    assert 1 <= opened <= dispatcher.counters.max_in_flight_seen < 10
    assert all(r.pool_wait_ns == 0 for r in records)


async def test_pool_wait_is_recorded_when_aiohttp_queues() -> None:
    """With one connection per host, aiohttp queues requests in its pool and the wait lands on the record."""
    runner, url, _ = await start_server(delay_s=0.03)
    try:
        prof = make_profile(
            {"process": "constant", "rate_rps": 100}, 0.05, "aiohttp", connections=8, connections_per_host=1
        )
        records, _ = await run(prof, url)
    finally:
        await runner.cleanup()
    assert [r.outcome for r in records] == ["ok"] * 5
    waited = sorted(r.pool_wait_ns for r in records)
    assert waited[0] == 0 and waited[-1] > 30_000_000  # the last waited for the others' 30 ms answers
    assert sum(r.connect_ns > 0 for r in records) == 1


def test_v2_record_files_still_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A run written with record schema v2 (no pool_wait_ns / connect_ns) is still read and summarized."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.results.reader import read_records
    from harness.results.schema import RECORD_SCHEMA
    from harness.results.summary import summarize

    rec = Record(request_id="r1", index=0, scenario="s", intended_ns=0, sent_ns=10, done_ns=50, status=200)
    v2 = pa.schema(
        [f for f in RECORD_SCHEMA if f.name not in ("pool_wait_ns", "connect_ns")],
        metadata={"harness.record_schema_version": "2"},
    )
    row = dict(zip(RECORD_SCHEMA.names, rec.as_row(), strict=True))
    pq.write_table(pa.Table.from_pylist([row], schema=v2), tmp_path / "requests.parquet")
    df = read_records(tmp_path)
    assert len(df) == 1 and "connect_ns" not in df.columns
    summary = summarize(df, duration_s=1.0, planned_rate_rps=1.0, meta={})
    assert summary["counts"]["ok"] == 1


async def test_closed_users_at_a_full_cap_wait_instead_of_spinning(transport: str) -> None:
    """Closed-loop users with no think time that find the in-flight cap full (an open-loop
    scenario holds it) record a drop and back off: the run ends on time, the event loop is not
    starved, and the drops stay bounded (1 ms doubling to 100 ms per user, not one per spin)."""
    runner, url, _ = await start_server(delay_s=0.2)
    try:
        prof = make_profile(
            {"process": "constant", "rate_rps": 60}, 1.0, transport, connections=16, max_in_flight=8
        )
        data = prof.model_dump(by_alias=True)
        users = {**data["scenarios"][0], "name": "users"}
        users["arrival"] = {"process": "closed", "users": 4, "think_time_ms": 0, "ramp_up_s": 0.3}
        data["scenarios"].append(users)
        prof = Profile.model_validate(data)
        started = time.monotonic()
        records, dispatcher = await run(prof, url)
        took = time.monotonic() - started
    finally:
        await runner.cleanup()
    check_accounting(records, dispatcher)
    dropped_users = sum(1 for r in records if r.scenario == "users" and r.outcome == "dropped")
    assert dropped_users > 0
    assert dropped_users < 4 * 1.0 / 0.001  # far fewer than one per millisecond per user
    assert took < 5
    assert (dispatcher.loop_lag.percentile_ms(99) or 0.0) < 100
