"""Thresholds judged while a run is going, for ``[gate] abort_on_fail`` (k6's abortOnFail).

Only what can be known exactly from completed records without re-reading them is judged live:

    errors, http_429, dropped        count / rate (rate over the arrivals planned so far)
    violations                       count / rate (rate over served requests), judged from the
                                     response fingerprint — the ledger is read only after the run
    latency, latency_sent, ttft,     pNN / avg / min / max / count, from HDR histograms filled as
    ttft_sent                        records complete (the same histograms as the final gate)

with no selector or a ``scenario`` selector. Other thresholds are judged only at the end. The
final verdict always comes from the full evaluation of the run directory; an abort only ends
the run early and says which threshold triggered it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.gate.grammar import Threshold, compare
from harness.metrics.histogram import LatencyHistogram
from harness.results.record import Record

LIVE_METRICS = frozenset(
    {"errors", "http_429", "dropped", "violations", "latency", "latency_sent", "ttft", "ttft_sent"}
)


def live_evaluable(t: Threshold) -> bool:
    """Whether ``t`` can be judged from live counters and histograms."""
    return (
        t.metric in LIVE_METRICS
        and not t.baseline
        and all(key == "scenario" for key, _ in t.selectors)
        and not (t.metric in ("errors", "dropped", "violations") and t.selector("kind"))
    )


class _Tally:
    __slots__ = ("dropped", "errors", "hist", "http_429", "planned", "served", "violations")

    def __init__(self) -> None:
        self.planned = self.errors = self.http_429 = self.dropped = self.served = self.violations = 0
        self.hist = {m: LatencyHistogram() for m in ("latency", "latency_sent", "ttft", "ttft_sent")}


@dataclass(frozen=True, slots=True)
class LiveFailure:
    threshold: Threshold
    observed: float


class LiveGate:
    """Accumulates completed records and says which live-evaluable thresholds currently fail."""

    def __init__(self, thresholds: Iterable[Threshold]) -> None:
        self.thresholds = [t for t in thresholds if live_evaluable(t)]
        self._all = _Tally()
        self._by_scenario: dict[str, _Tally] = {}

    def add(self, rec: Record, violated: bool) -> None:
        """Count one completed record (``violated``: the live policy judge's view of it)."""
        tally = self._by_scenario.get(rec.scenario)
        if tally is None:
            tally = self._by_scenario[rec.scenario] = _Tally()
        for t in (self._all, tally):
            t.planned += 1
            outcome = rec.outcome
            if outcome in ("error", "timeout"):
                t.errors += 1
            elif outcome == "dropped":
                t.dropped += 1
            if rec.error_kind == "http_429":
                t.http_429 += 1
            if rec.status > 0:
                t.served += 1
                t.violations += violated
            h = t.hist
            intended, sent = rec.intended_ns, rec.sent_ns
            if outcome == "ok" and rec.done_ns is not None:
                h["latency"].record_ns(rec.done_ns - intended)
                if sent is not None:
                    h["latency_sent"].record_ns(rec.done_ns - sent)
            if rec.first_token_ns is not None:
                h["ttft"].record_ns(rec.first_token_ns - intended)
                if sent is not None:
                    h["ttft_sent"].record_ns(rec.first_token_ns - sent)

    def _observe(self, t: Threshold) -> float | None:
        scenario = t.selector("scenario")
        tally = self._all if scenario is None else self._by_scenario.get(scenario)
        if tally is None:
            return None
        if t.metric in tally.hist:
            hist = tally.hist[t.metric]
            if not hist.count:
                return None
            if t.function == "count":
                return float(hist.count)
            if t.percentile is not None:
                return hist.percentile_ms(t.percentile)
            return {"avg": hist.mean_ms, "min": hist.min_ms, "max": hist.max_ms}[t.function]()
        count = {
            "errors": tally.errors,
            "http_429": tally.http_429,
            "dropped": tally.dropped,
            "violations": tally.violations,
        }[t.metric]
        if t.function == "count":
            return float(count)
        base = tally.served if t.metric == "violations" else tally.planned
        return count / base if base else None

    def failing(self) -> list[LiveFailure]:
        """The live-evaluable thresholds that fail on what has completed so far."""
        out = []
        for t in self.thresholds:
            observed = self._observe(t)
            limit = t.limit
            if observed is not None and limit is not None and not compare(observed, t.op, limit):
                out.append(LiveFailure(t, observed))
        return out
