"""The live view: per-record stats are cheap and exact enough, and the view renders every field."""

from __future__ import annotations

import random

from rich.console import Console

from harness.engine.dispatch import Counters
from harness.metrics.histogram import LatencyHistogram
from harness.metrics.live import LiveStats, render_all
from harness.results.record import Record


def rec(scenario: str, outcome: str, latency_ms: float, kind: str | None = None) -> Record:
    r = Record(request_id="x", index=0, scenario=scenario, intended_ns=1_000_000, outcome=outcome)
    if outcome != "dropped":
        r.sent_ns = 1_000_000
        r.done_ns = 1_000_000 + int(latency_ms * 1e6)
        r.error_kind = kind
    else:
        r.error_kind = "in_flight_cap"
    return r


def test_latency_percentiles_within_bucket_resolution() -> None:
    """The live p50/p99 of ok latencies are within 6% of the exact ones."""
    stats = LiveStats([("chat", 100.0)])
    rng = random.Random(1)
    lat = sorted(rng.lognormvariate(3, 1) for _ in range(20_000))
    for v in lat:
        stats.add(rec("chat", "ok", v))
    for q in (50, 99):
        exact = lat[int(q / 100 * len(lat)) - 1]
        got = stats.latency_ms(q)
        assert got is not None and abs(got - exact) / exact < 0.06


def test_snapshot_counts_scenarios_errors_and_lag() -> None:
    """The snapshot has per-scenario sends, errors by kind (drops apart), lag p99 and renders them all."""
    stats = LiveStats([("chat", 50.0), ("users", 0.0)])
    for r in (
        rec("chat", "ok", 10),
        rec("chat", "error", 5, "http_429"),
        rec("chat", "error", 5, "http_429"),
        rec("users", "timeout", 5, "timeout_read"),
        rec("users", "dropped", 0),
    ):
        stats.add(r)
    counters = Counters()
    counters.sent, counters.ok, counters.error, counters.timeout, counters.dropped = 4, 1, 2, 1, 1
    lag = LatencyHistogram()
    lag.record_ns(3_000_000)
    snap = stats.snapshot(2.0, 10.0, counters, violations=3, schedule_lag=lag, loop_lag=lag)
    assert [(s.name, s.sent) for s in snap.scenarios] == [("chat", 3), ("users", 1)]
    assert snap.errors_by_kind == {"http_429": 2, "timeout_read": 1}
    assert snap.target_rps == 50.0 and snap.schedule_lag_p99_ms is not None
    console = Console(width=200, record=True)
    console.print(render_all(snap))
    text = console.export_text()
    for needle in (
        "rate",
        "in flight",
        "p50",
        "p99",
        "dropped",
        "violations",
        "lag p99",
        "users 0.5",
        "http_429 2",
        "chat 1.5/50",
    ):
        assert needle in text, needle
