"""abort_on_fail: live thresholds end a failing run early, after the grace period, with exit 5."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiohttp import web

from harness.errors import ExitCode
from harness.gate.grammar import parse
from harness.gate.live import LiveGate, live_evaluable
from harness.results.record import Record
from tests.test_verdicts import POLICY, run_cli_async, run_dir_of, serve


def rec(
    i: int, outcome: str = "ok", status: int = 200, latency_ms: float = 10, scenario: str = "a"
) -> Record:
    r = Record(
        request_id=str(i),
        index=i,
        scenario=scenario,
        intended_ns=0,
        sent_ns=0,
        status=status,
        outcome=outcome,
        done_ns=int(latency_ms * 1e6),
        first_token_ns=int(latency_ms * 5e5),
    )
    if outcome == "error":
        r.error_kind = "http_429" if status == 429 else "http_5xx"
    return r


def test_live_gate_judges_rates_and_percentiles() -> None:
    """Error rates, violation counts and latency percentiles are judged from completed records."""
    gate = LiveGate(
        [
            parse("rate(errors) < 10%"),
            parse('p99(latency{scenario="a"}) < 50ms'),
            parse("count(violations) == 0"),
            parse("p99(itl) < 5ms"),
        ]
    )
    assert [str(t) for t in gate.thresholds] == [
        "rate(errors) < 10%",
        'p99(latency{scenario="a"}) < 50ms',
        "count(violations) == 0",
    ]  # itl is judged only at the end
    for i in range(95):
        gate.add(rec(i), violated=False)
    assert gate.failing() == []
    for i in range(95, 100):
        gate.add(rec(i, "error", 500), violated=False)
    assert gate.failing() == []  # exactly 5%
    for i in range(100, 110):
        gate.add(rec(i, "error", 429), violated=False)
    assert [f.threshold.metric for f in gate.failing()] == ["errors"]
    gate.add(rec(200, latency_ms=400), violated=True)
    assert {f.threshold.metric for f in gate.failing()} == {"errors", "violations"}
    for i in range(300, 310):
        gate.add(rec(i, latency_ms=400), violated=False)
    assert {f.threshold.metric for f in gate.failing()} == {"errors", "violations", "latency"}


def test_only_exactly_knowable_thresholds_are_live() -> None:
    """Baselines, cloud selectors and kinds that need the ledger are left to the final gate."""
    assert live_evaluable(parse("rate(dropped) < 1%"))
    assert not live_evaluable(parse("p99(latency) < baseline * 1.1"))
    assert not live_evaluable(parse('count(violations{cloud="aws"}) == 0'))
    assert not live_evaluable(parse('count(violations{kind="attestation_mismatch"}) == 0'))


async def test_failing_threshold_aborts_the_run_early(tmp_path: Path) -> None:
    """A run whose error rate fails a threshold stops after the grace period, exit 5, reason given."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"code": "500", "message": "boom"}},
            status=500,
            headers={"x-ms-region": "East US", "apim-request-id": "x"},
        )

    runner, url = await serve(handler)
    profile = tmp_path / "abort.toml"
    profile.write_text(f"""
name = "abort"
duration_s = 60
thresholds = ["rate(errors) < 5%"]
[gate]
abort_on_fail = true
abort_grace_s = 1
[validity]
max_schedule_lag_p99_ms = 1000
max_event_loop_lag_p99_ms = 1000
[target]
policy = "{POLICY}"
[target.endpoints.t]
base_url = "{url}"
cloud = "azure"
[[scenarios]]
name = "chat"
stream = false
arrival = {{ process = "constant", rate_rps = 50 }}
routes = [{{ endpoint = "t", deployment = "d" }}]
""")
    t0 = time.monotonic()
    try:
        code, out = await run_cli_async(
            "run", str(profile), "--results", str(tmp_path / "r"), "--no-progress"
        )
    finally:
        await runner.cleanup()
    assert code == ExitCode.THRESHOLDS_FAILED, out
    assert time.monotonic() - t0 < 30, "the 60 s run ended early"
    summary = json.loads((run_dir_of(tmp_path / "r") / "summary.json").read_text())
    assert summary["meta"]["aborted"].startswith("aborted at")
    assert "rate(errors) < 5%" in summary["meta"]["aborted"]
    counts = summary["counts"]
    assert counts["planned"] == sum(counts[k] for k in ("ok", "error", "timeout", "dropped", "cancelled"))
    assert counts["planned"] < 60 * 50


async def test_passing_run_is_not_aborted(tmp_path: Path) -> None:
    """abort_on_fail leaves a healthy run alone."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0)
        return web.json_response(
            {
                "id": "x",
                "choices": [{"message": {"content": "hi"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            },
            headers={"x-ms-region": "East US", "apim-request-id": "x"},
        )

    runner, url = await serve(handler)
    profile = tmp_path / "ok.toml"
    profile.write_text(f"""
name = "noabort"
duration_s = 2.5
thresholds = ["rate(errors) < 5%"]
[gate]
abort_on_fail = true
abort_grace_s = 0.5
[target]
policy = "{POLICY}"
[target.endpoints.t]
base_url = "{url}"
cloud = "azure"
[validity]
max_event_loop_lag_p99_ms = 500
max_schedule_lag_p99_ms = 500
[[scenarios]]
name = "chat"
stream = false
arrival = {{ process = "constant", rate_rps = 20 }}
routes = [{{ endpoint = "t", deployment = "d" }}]
""")
    try:
        code, out = await run_cli_async(
            "run", str(profile), "--results", str(tmp_path / "r"), "--no-progress"
        )
    finally:
        await runner.cleanup()
    assert code == ExitCode.PASS, out
    summary = json.loads((run_dir_of(tmp_path / "r") / "summary.json").read_text())
    assert summary["meta"]["aborted"] is None
    assert summary["counts"]["ok"] == 50
