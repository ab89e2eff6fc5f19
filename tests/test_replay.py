"""Trace replay end to end: trace rows become requests at their times and sizes, measured from the
mock fleet's ledger; trace sessions chain their turns on the backend that holds the state."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import orjson
import pandas as pd

from harness.results.reader import read_ledger, read_records
from harness.runner import prepare, run_loaded

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "profiles"
CONV = ROOT / "data" / "traces" / "azure_llm_2023_conv.csv"

RELAXED = "\n[validity]\nmax_schedule_lag_p99_ms = 5000\nmax_event_loop_lag_p99_ms = 5000\n"


def _setup(tmp_path: Path) -> Path:
    for sub in ("fleets", "policies"):
        shutil.copytree(PROFILES / sub, tmp_path / sub)
    (tmp_path / "data").symlink_to(ROOT / "data")
    return tmp_path


def _trace_window(seconds: float) -> pd.DataFrame:
    """The conversation trace's first ``seconds``, read independently of the harness's reader."""
    with CONV.open() as f:
        rows = [
            (r["TIMESTAMP"][:26], int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            for r in csv.DictReader(f)
        ]
    df = pd.DataFrame(rows, columns=["ts", "tokens_in", "tokens_out"])
    t = pd.to_datetime(df["ts"])
    df["offset_s"] = (t - t.iloc[0]).dt.total_seconds()
    return df[df["offset_s"] < seconds]


async def test_azure_trace_replays_its_arrivals_and_token_counts(tmp_path: Path) -> None:
    """8 s of the Azure 2023 conversation trace at 1x: the ledger holds exactly the trace's
    requests of that window, with the trace's prompt and output token means (within 2%)."""
    base = _setup(tmp_path)
    (base / "p.toml").write_text(
        f"""
name = "replay"
duration_s = 8
[target]
fleet = "fleets/multicloud.toml"
[client]
request_timeout_s = 120
{RELAXED}
[[scenarios]]
name = "conv"
stream = false
routes = [{{ endpoint = "azure-eastus", deployment = "gpt-4o" }}]
[scenarios.trace]
file = "data/traces/azure_llm_2023_conv.csv"
format = "azure2023"
"""
    )
    outcome = await run_loaded(prepare(base / "p.toml"), base / "results", progress=False, report=False)
    expected = _trace_window(8)
    ledger = read_ledger(outcome.run_dir)
    records = read_records(outcome.run_dir)
    assert len(records) == len(expected) == outcome.summary["counts"]["ok"]
    served = ledger[ledger["status"] == 200]
    assert len(served) == len(expected)
    assert abs(served["tokens_in"].mean() / expected["tokens_in"].mean() - 1) < 0.02
    assert abs(served["tokens_out"].mean() / expected["tokens_out"].mean() - 1) < 0.02
    # intended times are the trace's offsets
    intended_s = records.sort_values("index")["intended_ns"].to_numpy() / 1e9
    assert abs(intended_s - expected["offset_s"].to_numpy()).max() < 1e-5


async def test_generic_jsonl_sessions_replay_as_chained_turns(tmp_path: Path) -> None:
    """A session-structured JSONL written here replays each session's turns in order, each chained
    to the previous turn's response and served by the endpoint holding it (from the ledger)."""
    base = _setup(tmp_path)
    lines = []
    for s in range(6):
        for turn in range(3):
            delta = 0.1 * s if turn == 0 else 0.05  # a session's first delta is its start
            lines.append({"sid": f"user-{s}", "turn": turn, "dt": delta, "in": 40 + 10 * turn, "out": 8})
    (base / "sessions.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in lines) + b"\n")
    (base / "p.toml").write_text(
        f"""
name = "sessions"
duration_s = 10
[target]
fleet = "fleets/multicloud.toml"
{RELAXED}
[[scenarios]]
name = "s"
api = "responses"
store = true
routes = [
  {{ endpoint = "azure-eastus", deployment = "gpt-4o" }},
  {{ endpoint = "openai-direct", deployment = "gpt-4o" }},
]
[scenarios.trace]
file = "sessions.jsonl"
format = "jsonl"
reorder_window_s = 5
[scenarios.trace.columns]
arrival_delta = "dt"
session_id = "sid"
turn = "turn"
tokens_in = "in"
tokens_out = "out"
"""
    )
    outcome = await run_loaded(prepare(base / "p.toml"), base / "results", progress=False, report=False)
    records = read_records(outcome.run_dir)
    ledger = read_ledger(outcome.run_dir).set_index("request_id")
    assert len(records) == 18 and (records["outcome"] == "ok").all()
    assert outcome.compliance["verdict"] == "pass"
    for _, group in records.groupby("session_id"):
        turns = group.sort_values("turn").reset_index(drop=True)
        assert list(turns["turn"]) == [0, 1, 2]
        assert pd.isna(turns.loc[0, "previous_response_id"])
        for t in (1, 2):
            assert turns.loc[t, "previous_response_id"] == turns.loc[t - 1, "response_id"]
            assert turns.loc[t, "sent_ns"] >= turns.loc[t - 1, "done_ns"]
        assert ledger.loc[list(turns["request_id"]), "endpoint"].nunique() == 1
