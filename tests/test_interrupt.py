"""Interrupting `harness run`, a real subprocess with its embedded mock fleet.

The plain SIGINT case (exit 130, partial results, the invariant) is in test_verdicts.py; here:
SIGINT and SIGTERM leave in-flight requests as ``cancelled``/``interrupted`` records that
reconcile with the fleet's ledger and a run directory ``harness report`` accepts; a second signal
stops at once and takes the fleet with it; the fleet dying mid-run ends the run promptly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import ExitCode
from harness.results.schema import OUTCOMES
from tests.conftest import PROFILES, ROOT, run_cli

pytestmark = pytest.mark.slow  # real `harness run` subprocesses with a fleet: seconds each

POLICY = PROFILES / "policies/azure-stateless-exclusive.toml"
# Streams of ~2 s (50 ms TTFT + 40 tokens every 50 ms): at 20 rps about 40 are in flight at any time.
FLEET = """
name = "slow"
seed = 1
[[endpoints]]
name = "az"
cloud = "azure"
region = "eastus"
deployments = ["gpt-4o"]
latency = { ttft_base_ms = 50, prefill_us_per_token = 0, itl_ms = 50, jitter_frac = 0, output_tokens = 40 }
"""


def write_profile(tmp_path: Path, duration_s: float = 30) -> Path:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    profile = tmp_path / "p.toml"
    profile.write_text(f"""
name = "interrupt"
duration_s = {duration_s}
[target]
fleet = "{fleet}"
policy = "{POLICY}"
[validity]  # about interruption, not timing
max_schedule_lag_p99_ms = 5000
max_event_loop_lag_p99_ms = 5000
[[scenarios]]
name = "chat"
arrival = {{ process = "constant", rate_rps = 20 }}
routes = [{{ endpoint = "az", deployment = "gpt-4o" }}]
""")
    return profile


def start_run(profile: Path, results: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(profile), "--results", str(results), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def wait_until_sending(proc: subprocess.Popen[str], results: Path, timeout_s: float = 60) -> Path:
    """Block until the run's fleet is up (its run.log names the endpoint); return the run directory."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        for log in results.glob("*/run.log"):
            if "mock endpoint az" in log.read_text():
                return log.parent
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run did not start its fleet in time")


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_cancels_in_flight_requests_and_report_accepts_the_run(tmp_path: Path, sig: int) -> None:
    """SIGINT or SIGTERM mid-run: exit 130, in-flight requests are cancelled/interrupted records that
    reconcile with the ledger, and `harness report` rebuilds every output of the partial run."""
    results = tmp_path / "r"
    proc = start_run(write_profile(tmp_path), results)
    try:
        run_dir = wait_until_sending(proc, results)
        time.sleep(2.8)  # streams last ~2 s: some have finished, many are in flight
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, out
    assert "Traceback" not in out
    records = pd.read_parquet(run_dir / "requests.parquet")
    summary = json.loads((run_dir / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["planned"] == len(records) == sum(counts[k] for k in OUTCOMES)
    assert summary["meta"]["interrupted"] is True
    cancelled = records[records["outcome"] == "cancelled"]
    assert len(cancelled) >= 5
    assert set(cancelled["error_kind"]) == {"interrupted"}
    assert cancelled["done_ns"].notna().all()
    assert counts["ok"] > 0  # requests that finished before the signal keep their outcome
    recon = json.loads((run_dir / "compliance.json").read_text())["reconciliation"]
    assert recon["in_ledger_not_sent"] == 0 and recon["served_more_than_once"] == 0, recon
    assert recon["sent_not_in_ledger"] == 0, recon  # cancelled streams are on the ledger too

    if sig == signal.SIGINT:
        return  # the run wrote its report itself; rebuilding it from disk once (SIGTERM) is enough
    report = run_cli("report", str(run_dir))
    assert report.returncode == 0, report.stdout + report.stderr
    for name in ("summary.md", "report.html", "junit.xml"):
        assert (run_dir / name).stat().st_size > 0, name


def test_second_signal_stops_at_once_and_takes_the_fleet_with_it(tmp_path: Path) -> None:
    """A second SIGINT while the first is being handled exits 130 at once, and the fleet child exits too."""
    results = tmp_path / "r"
    proc = start_run(write_profile(tmp_path), results)
    try:
        wait_until_sending(proc, results)
        fleet_pids = children(proc.pid)
        assert fleet_pids
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED
    assert stopped_s < 2.0
    deadline = time.monotonic() + 10  # the fleet exits when its stdin pipe (held by the harness) closes
    while any(alive(pid) for pid in fleet_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in fleet_pids)


def test_fleet_dying_mid_run_ends_the_run_promptly_with_partial_results(tmp_path: Path) -> None:
    """The embedded fleet killed mid-run: the run stops early, exits 4, and leaves a run directory
    (records, a summary judged without the ledger) that `harness report` accepts."""
    results = tmp_path / "r"
    proc = start_run(write_profile(tmp_path, duration_s=5), results)
    try:
        run_dir = wait_until_sending(proc, results)
        (fleet_pid,) = children(proc.pid)
        time.sleep(0.5)
        os.kill(fleet_pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INFRASTRUCTURE, out
    assert "Traceback" not in out
    summary = json.loads((run_dir / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["planned"] == sum(counts[k] for k in OUTCOMES)
    assert counts["planned"] < 0.6 * 5 * 20  # stopped early, not after the whole plan
    assert run_cli("report", str(run_dir)).returncode == 0
