"""The reference router in a run ([target.router]): the judge's findings equal the router's own
log of injections, exactly, and a region outage fails over without leaving Azure."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.report.markdown import router_lines
from harness.results.reader import read_ledger, read_records
from harness.runner import prepare, run_loaded

ROOT = Path(__file__).resolve().parent.parent

PROFILE = """
name = "routed"
seed = 5
duration_s = {duration}
[target]
fleet = "fleets/multicloud.toml"
[target.router]
seed = 11
misroute_rate = {p}
spoof_fingerprint_rate = {p}
duplicate_rate = {p}
break_affinity_rate = {p}
{events}
[client]
connections = 512
[validity]
max_schedule_lag_p99_ms = 5000
max_event_loop_lag_p99_ms = 5000
[[scenarios]]
name = "chat"
prompt_tokens = 16
max_tokens = 4
arrival = {{ process = "constant", rate_rps = {rate} }}
routes = [{{ endpoint = "router", deployment = "gpt-4o" }}]
[[scenarios]]
name = "sessions"
api = "responses"
stream = false
prompt_tokens = 16
max_tokens = 4
arrival = {{ process = "constant", rate_rps = {session_rate} }}
session = {{ turns = 3, think_time = {{ distribution = "constant", mean_ms = 10 }} }}
routes = [{{ endpoint = "router", deployment = "gpt-4o" }}]
"""


async def _run(tmp_path: Path, **fields: object):  # type: ignore[no-untyped-def]
    for sub in ("fleets", "policies"):
        shutil.copytree(ROOT / "profiles" / sub, tmp_path / sub)
    values = {"duration": 3, "p": 0.0, "events": "", "rate": 50, "session_rate": 5, **fields}
    (tmp_path / "p.toml").write_text(PROFILE.format(**values))
    return await run_loaded(prepare(tmp_path / "p.toml"), tmp_path / "results", progress=False, report=False)


async def test_every_injection_is_reported_exactly_and_nothing_else(tmp_path: Path) -> None:
    """With each switch at p = 0.05 over more than 2,000 requests, the violations the harness
    reports are exactly the requests the router says it misrouted, spoofed, duplicated or moved
    off their state holder, each with its own violation kind."""
    outcome = await _run(tmp_path, duration=9, p=0.05, rate=250, session_rate=10)
    records = read_records(outcome.run_dir)
    assert records["sent_ns"].notna().sum() >= 2000
    st = outcome.compliance["router_self_test"]
    for switch, s in st["switches"].items():
        assert s["applied"] > 0, switch
        assert s["reported"] == s["applied"], (switch, s)
    assert st["unexplained_violations"] == 0, st["unexplained_examples"]
    assert st["consistent"]
    by_kind = outcome.compliance["by_kind"]
    assert by_kind == {s["expected_kind"]: s["applied"] for s in st["switches"].values()}
    assert outcome.verdict == "COMPLIANCE_FAILED"


async def test_a_clean_router_run_has_no_violation(tmp_path: Path) -> None:
    """With every switch off, nothing is reported: no false positives."""
    outcome = await _run(tmp_path, duration=3, p=0.0, rate=150, session_rate=10)
    assert outcome.compliance["violations_total"] == 0
    assert outcome.compliance["router_self_test"]["consistent"]
    assert outcome.compliance["reconciliation"]["consistent"]
    assert set(outcome.compliance["served_by_cloud"]) <= {"azure", "openai"}


async def test_region_outage_fails_over_inside_azure(tmp_path: Path) -> None:
    """An Azure region going down mid-run: stateless calls fail over to the other Azure backends,
    none leaves Azure, every call still succeeds, and the failover time is reported."""
    events = '[[target.events]]\nat_s = 1.5\nendpoint = "azure-eastus"\noutage = true\n'
    outcome = await _run(tmp_path, duration=4, rate=60, session_rate=0.0001, events=events)
    records = read_records(outcome.run_dir)
    chat = records[records["scenario"] == "chat"]
    assert (chat["outcome"] == "ok").all()
    ledger = read_ledger(outcome.run_dir)
    served = ledger[ledger["status"] == 200]
    chat_ids = set(chat["request_id"])
    assert set(served.loc[served["request_id"].isin(chat_ids), "cloud"]) == {"azure"}
    refused = ledger[(ledger["endpoint"] == "azure-eastus") & (ledger["status"] == 503)]
    assert len(refused) > 0
    st = outcome.compliance["router_self_test"]
    assert st["failovers"] > 0 and st["failovers_left_allowed_set"] == 0
    assert st["failovers_by_backend"].get("azure-eastus", 0) > 0
    assert 1.4 <= st["first_failover_s"] <= 3.0
    assert outcome.compliance["violations_total"] == 0
    assert outcome.summary["meta"]["fleet_events"][0]["outage"] is True
    shown = "\n".join(router_lines(st))  # what summary.md and report.html say about it
    assert f"first at {st['first_failover_s']:,.2f} s" in shown and "outside the allowed set: 0" in shown
