"""The live view of a run (rich): elapsed, achieved vs target rate per scenario, in flight, latency
p50/p99 so far, errors by kind, violations, dropped, and the harness's own lag.

Why this shape: the hot path must not pay for the view. The dispatcher keeps plain integer
counters; :class:`LiveStats` is fed each finished record by the run's sink and does O(1) integer
work (a counter per scenario and outcome, one bucket increment in a coarse log histogram, no
allocation); the view reads everything once per refresh (a few times a second on a terminal,
every few seconds in CI) and only then computes percentiles.

On a terminal the view redraws in place; without a TTY it prints a plain line every few seconds
so job logs stay readable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

# Coarse log-linear latency buckets: 8 per power of two (≤ 9% wide), from 1 µs to ~18 min.
_SUB = 8
_SUB_BITS = 3
_BUCKETS = 64 * _SUB


def _bucket(us: int) -> int:
    if us < _SUB:
        return max(us, 0)
    shift = us.bit_length() - _SUB_BITS - 1
    return min(((shift + 1) << _SUB_BITS) + ((us >> shift) & (_SUB - 1)), _BUCKETS - 1)


def _bucket_mid_us(b: int) -> float:
    if b < _SUB:
        return float(b)
    shift = (b >> _SUB_BITS) - 1
    low = (_SUB + (b & (_SUB - 1))) << shift
    return low + (1 << shift) / 2


class _Counters(Protocol):
    sent: int
    in_flight: int
    ok: int
    error: int
    timeout: int
    dropped: int


class _Percentiles(Protocol):
    def percentile_ms(self, q: float) -> float | None: ...


@dataclass(slots=True)
class ScenarioRate:
    name: str
    target_rps: float  # 0 for a closed loop (no planned rate)
    sent: int


@dataclass(slots=True)
class Snapshot:
    elapsed_s: float
    duration_s: float
    target_rps: float
    sent: int
    in_flight: int
    ok: int
    errors: int
    timeouts: int
    dropped: int
    violations: int
    scenarios: list[ScenarioRate] = field(default_factory=list)
    latency_p50_ms: float | None = None  # from the intended send time, ok requests so far
    latency_p99_ms: float | None = None
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    schedule_lag_p99_ms: float | None = None
    loop_lag_p99_ms: float | None = None


class LiveStats:
    """What the view needs that plain dispatcher counters do not give: per-scenario sends, errors
    by kind and a latency distribution so far. ``add`` is the run sink's per-record call."""

    __slots__ = ("_hist", "_index", "errors_by_kind", "names", "sent", "targets")

    def __init__(self, scenarios: Sequence[tuple[str, float]]) -> None:
        self.names = [name for name, _ in scenarios]
        self.targets = [rate for _, rate in scenarios]
        self._index = {name: i for i, name in enumerate(self.names)}
        self.sent = [0] * len(self.names)
        self.errors_by_kind: dict[str, int] = {}
        self._hist = [0] * _BUCKETS

    def add(self, rec: Any) -> None:
        """Count one finished record (any outcome)."""
        if rec.sent_ns is not None:
            i = self._index.get(rec.scenario)
            if i is not None:
                self.sent[i] += 1
        outcome = rec.outcome
        if outcome == "ok":
            if rec.done_ns is not None:
                self._hist[_bucket((rec.done_ns - rec.intended_ns) // 1000)] += 1
        elif outcome != "dropped":
            kind = rec.error_kind or outcome
            self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

    def latency_ms(self, q: float) -> float | None:
        """The q-th percentile (0–100) of ok latency so far, to about 5%; None before the first."""
        total = sum(self._hist)
        if total == 0:
            return None
        rank = q / 100 * total
        seen = 0
        for b, n in enumerate(self._hist):
            seen += n
            if n and seen >= rank:
                return _bucket_mid_us(b) / 1000
        return None

    def snapshot(
        self,
        elapsed_s: float,
        duration_s: float,
        counters: _Counters,
        violations: int,
        schedule_lag: _Percentiles | None = None,
        loop_lag: _Percentiles | None = None,
    ) -> Snapshot:
        """Everything the view shows, read once (percentiles computed here, off the hot path)."""
        return Snapshot(
            elapsed_s,
            duration_s,
            sum(self.targets),
            counters.sent,
            counters.in_flight,
            counters.ok,
            counters.error,
            counters.timeout,
            counters.dropped,
            violations,
            scenarios=[
                ScenarioRate(n, t, s) for n, t, s in zip(self.names, self.targets, self.sent, strict=True)
            ],
            latency_p50_ms=self.latency_ms(50),
            latency_p99_ms=self.latency_ms(99),
            errors_by_kind=dict(self.errors_by_kind),
            schedule_lag_p99_ms=schedule_lag.percentile_ms(99) if schedule_lag is not None else None,
            loop_lag_p99_ms=loop_lag.percentile_ms(99) if loop_lag is not None else None,
        )


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}ms" if v < 100 else f"{v:.0f}ms"


def render(s: Snapshot) -> Text:
    """The one-line summary (plus a line per scenario and for errors when there is more to say)."""
    achieved = s.sent / s.elapsed_s if s.elapsed_s > 0 else 0.0
    line = Text()
    line.append(f"{s.elapsed_s:6.1f}/{s.duration_s:.0f}s  ", style="bold")
    target = f"{s.target_rps:.0f}" if s.target_rps > 0 else "closed"
    line.append(f"rate {achieved:8.1f}/{target} rps  ")
    line.append(f"in flight {s.in_flight:5d}  ")
    line.append(f"ok {s.ok:7d}  ")
    if s.latency_p50_ms is not None:
        line.append(f"p50 {_ms(s.latency_p50_ms)} p99 {_ms(s.latency_p99_ms)}  ")
    line.append(f"errors {s.errors + s.timeouts:5d}  ", style="red" if s.errors + s.timeouts else "")
    line.append(f"dropped {s.dropped:5d}  ", style="yellow" if s.dropped else "")
    line.append(f"violations {s.violations:5d}", style="bold red" if s.violations else "green")
    if s.schedule_lag_p99_ms is not None or s.loop_lag_p99_ms is not None:
        lag = max(s.schedule_lag_p99_ms or 0.0, s.loop_lag_p99_ms or 0.0)
        line.append(
            f"  lag p99 {_ms(s.schedule_lag_p99_ms)} loop {_ms(s.loop_lag_p99_ms)}",
            style="yellow" if lag > 20 else "",
        )
    return line


def render_details(s: Snapshot) -> Text | None:
    """Per-scenario rates (when more than one scenario) and errors by kind, or None."""
    parts = []
    if len(s.scenarios) > 1:
        rates = []
        for sc in s.scenarios:
            got = sc.sent / s.elapsed_s if s.elapsed_s > 0 else 0.0
            rates.append(
                f"{sc.name} {got:.1f}/{sc.target_rps:.0f}" if sc.target_rps else f"{sc.name} {got:.1f}"
            )
        parts.append("  scenarios (rps): " + ", ".join(rates))
    if s.errors_by_kind:
        kinds = sorted(s.errors_by_kind.items(), key=lambda kv: -kv[1])
        parts.append("  errors: " + ", ".join(f"{k} {n}" for k, n in kinds))
    return Text("\n".join(parts), style="dim") if parts else None


def render_all(s: Snapshot) -> Group:
    details = render_details(s)
    return Group(render(s), details) if details is not None else Group(render(s))


async def show_progress(
    snapshot: Callable[[], Snapshot], console: Console, *, plain_every_s: float = 5.0
) -> None:
    """Redraw until cancelled. Cheap: one snapshot and one render per refresh."""
    if console.is_terminal:
        with Live(render_all(snapshot()), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                await asyncio.sleep(0.5)
                live.update(render_all(snapshot()))
    else:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            if time.monotonic() - last >= plain_every_s:
                last = time.monotonic()
                console.print(render_all(snapshot()), soft_wrap=True)
