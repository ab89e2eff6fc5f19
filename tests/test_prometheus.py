"""Live Prometheus metrics: the exporter's series, and a scrape of a real short run's endpoint."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from harness.errors import ExitCode
from harness.metrics.prometheus import PrometheusExporter
from harness.results.record import Record
from harness.runner import prepare, run_loaded

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "profiles" / "policies" / "azure-stateless-exclusive.toml"


LABELS = {"scenario": "chat", "class": "stateless", "cloud": "azure", "region": "eastus"}


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``, from an exposition text."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def record(outcome: str = "ok", **fields: object) -> Record:
    base: dict[str, object] = {
        "request_id": "r",
        "index": 0,
        "scenario": "chat",
        "intended_ns": 0,
        "sent_ns": 1_000_000,
        "first_token_ns": 30_000_000,
        "done_ns": 200_000_000,
        "outcome": outcome,
        "mock_cloud": "azure",
        "mock_region": "eastus",
    }
    base.update(fields)
    return Record(**base)  # type: ignore[arg-type]


def test_exporter_series_carry_scenario_class_cloud_region() -> None:
    """observe() and update() produce labelled counters, histograms and gauges."""
    exporter = PrometheusExporter(classify=lambda rec: "stateless")
    exporter.observe(record(), violated=False)
    exporter.observe(record("error", error_kind="http_429", first_token_ns=None), violated=False)
    exporter.observe(
        record("dropped", error_kind="in_flight_cap", mock_cloud=None, mock_region=None, first_token_ns=None),
        violated=False,
    )
    exporter.observe(record(mock_cloud="aws", mock_region="us-east-1"), violated=True)
    exporter.update(SimpleNamespace(sent=10, in_flight=3, planned=12), now=100.0)
    exporter.update(SimpleNamespace(sent=60, in_flight=4, planned=62), now=101.0)
    text = generate_latest(exporter.registry).decode()
    assert value(text, "harness_requests_total", **LABELS, outcome="ok") == 1.0
    assert value(text, "harness_errors_total", **LABELS, kind="http_429") == 1.0
    assert (
        value(text, "harness_dropped_total", cloud="unknown", region="unknown", reason="in_flight_cap") == 1.0
    )
    assert value(text, "harness_violations_total", **{**LABELS, "cloud": "aws", "region": "us-east-1"}) == 1.0
    assert value(text, "harness_request_latency_seconds_bucket", **LABELS, le="0.25") == 1.0
    assert value(text, "harness_request_latency_seconds_bucket", **LABELS, le="0.1") == 0.0
    assert value(text, "harness_ttft_seconds_bucket", **LABELS, le="0.05") == 1.0
    assert value(text, "harness_achieved_rate_rps") == 50.0
    assert value(text, "harness_in_flight") == 4.0


def write_profile(tmp_path: Path) -> Path:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        """
name = "prom"
seed = 1

[[endpoints]]
name = "azure-eastus"
cloud = "azure"
region = "eastus"
deployments = ["gpt-4o"]
auth_verify = "bearer"
latency = { ttft_base_ms = 5, prefill_us_per_token = 0, itl_ms = 2, jitter_frac = 0 }
""",
        encoding="utf-8",
    )
    profile = tmp_path / "prom.toml"
    profile.write_text(
        f"""
name = "prom"
seed = 3
duration_s = 3

[target]
fleet = "fleet.toml"
policy = "{POLICY.as_posix()}"

[[scenarios]]
name = "chat"
max_tokens = 4
arrival = {{ process = "constant", rate_rps = 40 }}
routes = [{{ endpoint = "azure-eastus", deployment = "gpt-4o" }}]
""",
        encoding="utf-8",
    )
    return profile


async def test_scrape_during_a_real_run_finds_labelled_series(tmp_path: Path) -> None:
    """A short run with --prometheus-port 0 serves /metrics on loopback while it runs, with the
    labelled request, latency and in-flight series; the run (bearer-verifying mock) passes."""
    loaded = prepare(write_profile(tmp_path))
    stream = io.StringIO()
    console = Console(file=stream, width=200)
    run = asyncio.ensure_future(
        run_loaded(
            loaded,
            tmp_path / "results",
            console=console,
            progress=False,
            report=False,
            prometheus=("127.0.0.1", 0),
        )
    )
    url = None
    for _ in range(300):
        match = re.search(r"prometheus metrics: (http://127\.0\.0\.1:\d+/metrics)", stream.getvalue())
        if match:
            url = match.group(1)
            break
        await asyncio.sleep(0.05)
    assert url is not None, stream.getvalue()
    scraped = ""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(url) as resp:
                assert resp.status == 200
                scraped = await resp.text()
            if value(scraped, "harness_requests_total", outcome="ok") and not run.done():
                await asyncio.sleep(1.2)  # one more gauge update with a rate
                async with session.get(url) as resp:
                    scraped = await resp.text()
                break
            await asyncio.sleep(0.1)
    outcome = await asyncio.wait_for(run, timeout=60)
    assert (value(scraped, "harness_requests_total", **LABELS, outcome="ok") or 0) > 0
    assert (value(scraped, "harness_request_latency_seconds_count", **LABELS) or 0) > 0
    assert (value(scraped, "harness_ttft_seconds_count", **LABELS) or 0) > 0
    assert value(scraped, "harness_in_flight") is not None
    assert (value(scraped, "harness_achieved_rate_rps") or 0) > 0
    # a loaded CI machine may make the run harness-bound (schedule lag); the metrics are the point here
    assert outcome.exit_code in (ExitCode.PASS, ExitCode.HARNESS_BOUND), outcome.reasons
    assert outcome.summary["counts"]["ok"] == outcome.summary["counts"]["planned"] == 120
