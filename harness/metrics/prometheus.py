"""Live Prometheus metrics of a running load test, so an SRE can watch a long run in Grafana.

Off by default (``harness run --prometheus-port N``); bound to loopback unless a host is
given. The exporter has its own registry (nothing from the process's default one) and serves
``/metrics`` from prometheus-client's HTTP server thread, so a scrape never runs on the event
loop. ``observe`` is called once per finished record by the run's sink: it looks up cached
label children and does a few counter/histogram updates (a few µs).

Series (labels ``scenario``, ``class`` (stateless/stateful), ``cloud`` and ``region`` of the
serving endpoint as attributed from the response, ``unknown`` when nothing answered)::

    harness_requests_total{…, outcome}        every finished record: ok, error, timeout, dropped, cancelled
    harness_request_latency_seconds{…}        histogram of ok requests' latency from the intended send time
    harness_ttft_seconds{…}                   histogram of time to first token from the intended send time
    harness_errors_total{…, kind}             error and timeout records by error kind (http_429, reset, …)
    harness_dropped_total{…, reason}          arrivals dropped (in_flight_cap, lag_budget)
    harness_violations_total{…}               records the live judge found non-compliant
    harness_achieved_rate_rps                 requests sent per second over the last update interval
    harness_in_flight                         requests in flight at the last update
    harness_sent, harness_planned             requests sent and planned so far (the run's counters)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:  # metrics sits below results in the layering; records are only read here
    from harness.results.record import Record

LABELS = ("scenario", "class", "cloud", "region")
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 30.0)
UNKNOWN = "unknown"

Classify = Callable[["Record"], str]


def _no_class(rec: Record) -> str:
    return UNKNOWN


class PrometheusExporter:
    """Prometheus series of one run, served on ``host:port`` (port 0: any free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, classify: Classify | None = None) -> None:
        self.host = host
        self.port = port
        self.classify = classify or _no_class
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "harness_requests", "Finished requests by outcome", [*LABELS, "outcome"], registry=r
        )
        self.latency = Histogram(
            "harness_request_latency_seconds",
            "Latency of ok requests from the intended send time",
            LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ttft = Histogram(
            "harness_ttft_seconds",
            "Time to first token from the intended send time",
            LABELS,
            buckets=TTFT_BUCKETS_S,
            registry=r,
        )
        self.errors = Counter(
            "harness_errors", "Error and timeout records by kind", [*LABELS, "kind"], registry=r
        )
        self.dropped = Counter(
            "harness_dropped", "Dropped arrivals by reason", [*LABELS, "reason"], registry=r
        )
        self.violations = Counter(
            "harness_violations", "Non-compliant requests (live judge)", LABELS, registry=r
        )
        self.rate = Gauge("harness_achieved_rate_rps", "Requests sent per second, last interval", registry=r)
        self.in_flight = Gauge("harness_in_flight", "Requests in flight", registry=r)
        self.sent = Gauge("harness_sent", "Requests sent so far", registry=r)
        self.planned = Gauge("harness_planned", "Arrivals planned so far", registry=r)
        self._children: dict[tuple[Any, ...], tuple[str, ...]] = {}
        self._server: Any = None
        self._thread: Any = None
        self._last: tuple[float, int] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Serve ``/metrics``; ``port`` then holds the bound port."""
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ------------------------------------------------------------------ updates

    def _labels(self, rec: Record) -> tuple[str, ...]:
        cloud = rec.mock_cloud or rec.fp_cloud
        region = rec.mock_region or rec.fp_region
        key = (rec.scenario, rec.api, rec.store, rec.previous_response_id is None, cloud, region)
        labels = self._children.get(key)
        if labels is None:
            labels = (rec.scenario, self.classify(rec), cloud or UNKNOWN, region or UNKNOWN)
            self._children[key] = labels
        return labels

    def observe(self, rec: Record, violated: bool) -> None:
        """Count one finished record (called by the run's sink, on the event loop)."""
        labels = self._labels(rec)
        outcome = rec.outcome
        self.requests.labels(*labels, outcome).inc()
        if outcome == "ok":
            if rec.done_ns is not None:
                self.latency.labels(*labels).observe((rec.done_ns - rec.intended_ns) / 1e9)
        elif outcome == "dropped":
            self.dropped.labels(*labels, rec.error_kind or UNKNOWN).inc()
        elif outcome in ("error", "timeout"):
            self.errors.labels(*labels, rec.error_kind or UNKNOWN).inc()
        if rec.first_token_ns is not None:
            self.ttft.labels(*labels).observe((rec.first_token_ns - rec.intended_ns) / 1e9)
        if violated:
            self.violations.labels(*labels).inc()

    def update(self, counters: Any, now: float | None = None) -> None:
        """Refresh the gauges from the dispatcher's live counters (``sent``, ``in_flight``, ``planned``)."""
        now = time.monotonic() if now is None else now
        sent = int(counters.sent)
        if self._last is not None and now > self._last[0]:
            self.rate.set((sent - self._last[1]) / (now - self._last[0]))
        self._last = (now, sent)
        self.in_flight.set(counters.in_flight)
        self.sent.set(sent)
        self.planned.set(counters.planned)
