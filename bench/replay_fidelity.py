"""Does a trace replay reproduce the trace? Replays a window of a trace at 1x against the embedded
mock fleet and compares, from the mock's ledger (what the servers really received), the arrival
count and the input/output token means with the trace's own rows for that window, read here
independently of the harness's reader. Targets (issue 5): count within 1%, token means within 2%.

    .venv/bin/python bench/replay_fidelity.py [--seconds 60] [--start-s 0]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.results.reader import read_ledger  # noqa: E402
from harness.runner import prepare, run_loaded, run_with_uvloop  # noqa: E402

TRACE = ROOT / "data" / "traces" / "azure_llm_2023_conv.csv"


def trace_window(start_s: float, seconds: float) -> pd.DataFrame:
    with TRACE.open() as f:
        rows = [
            (r["TIMESTAMP"][:26], int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            for r in csv.DictReader(f)
        ]
    df = pd.DataFrame(rows, columns=["ts", "tokens_in", "tokens_out"])
    t = pd.to_datetime(df["ts"])
    offset = (t - t.iloc[0]).dt.total_seconds()
    return df[(offset >= start_s) & (offset < start_s + seconds)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--start-s", type=float, default=0.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for sub in ("fleets", "policies"):
            shutil.copytree(ROOT / "profiles" / sub, base / sub)
        (base / "p.toml").write_text(
            f"""
name = "replay-fidelity"
duration_s = {args.seconds}
[target]
fleet = "fleets/multicloud.toml"
[client]
connections = 512
request_timeout_s = 120
[[scenarios]]
name = "conv"
routes = [{{ endpoint = "azure-eastus", deployment = "gpt-4o" }}]
[scenarios.trace]
file = "{TRACE}"
format = "azure2023"
start_s = {args.start_s}
"""
        )
        outcome = run_with_uvloop(
            run_loaded(prepare(base / "p.toml"), base / "results", progress=False, report=False)
        )
        ledger = read_ledger(outcome.run_dir)
        assert ledger is not None
    served = ledger[ledger["status"] == 200]
    expected = trace_window(args.start_s, args.seconds)
    count_err = len(served) / len(expected) - 1
    in_err = served["tokens_in"].mean() / expected["tokens_in"].mean() - 1
    out_err = served["tokens_out"].mean() / expected["tokens_out"].mean() - 1
    print(f"trace window: {args.start_s:g}..{args.start_s + args.seconds:g} s of {TRACE.name} at 1x")
    print(f"{'':24}{'trace':>12}{'ledger':>12}{'error':>10}")
    rows = [
        ("arrivals", len(expected), len(served), count_err, "d"),
        ("input tokens (mean)", expected["tokens_in"].mean(), served["tokens_in"].mean(), in_err, ".1f"),
        ("output tokens (mean)", expected["tokens_out"].mean(), served["tokens_out"].mean(), out_err, ".1f"),
    ]
    for label, want, got, err, fmt in rows:
        print(f"{label:24}{want:>12{fmt}}{got:>12{fmt}}{err:>+10.2%}")
    lag = outcome.summary["validity"]["schedule_lag_p99_ms"]
    print(f"verdict: {outcome.verdict}; schedule lag p99 {lag:.2f} ms")
    ok = abs(count_err) <= 0.01 and abs(in_err) <= 0.02 and abs(out_err) <= 0.02
    print("targets (count 1%, token means 2%):", "met" if ok else "MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
