"""`harness run` end to end: embedded fleet subprocess, engine, results, verdict and exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import ExitCode
from tests.conftest import PROFILES, run_cli


def shipped_profile(name: str, tmp_path: Path) -> Path:
    """A shipped profile, unchanged but for relaxed validity bounds.

    These tests check compliance counting and the run directory; validity has its own tests
    (test_verdicts.py). A loaded test machine must not turn them into harness-bound runs.
    """
    text = (PROFILES / name).read_text()
    text = text.replace('fleet = "fleets/', f'fleet = "{PROFILES}/fleets/')
    text = text.replace('policy = "policies/', f'policy = "{PROFILES}/policies/')
    text += "\n[validity]\nmax_schedule_lag_p99_ms = 1000\nmax_event_loop_lag_p99_ms = 1000\n"
    path = tmp_path / name
    path.write_text(text)
    return path


def only_run_dir(results: Path) -> Path:
    dirs = [d for d in results.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_smoke_profile_passes_and_leaves_a_run_directory(tmp_path: Path) -> None:
    """The smoke profile prints PASS, exits 0 and leaves records, ledger, summary and compliance."""
    result = run_cli(
        "run",
        str(shipped_profile("smoke.toml", tmp_path)),
        "--duration-s",
        "5",
        "--results",
        str(tmp_path / "r"),
        "--no-progress",
    )
    assert result.returncode == ExitCode.PASS, result.stdout + result.stderr
    assert "PASS" in result.stdout
    run_dir = only_run_dir(tmp_path / "r")
    for name in (
        "requests.parquet",
        "ledger.parquet",
        "summary.json",
        "compliance.json",
        "profile.resolved.json",
        "run.log",
    ):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["planned"] == sum(counts[k] for k in ("ok", "error", "timeout", "dropped", "cancelled"))
    assert counts["ok"] == counts["planned"] > 300
    assert summary["verdict"]["result"] == "PASS"
    assert summary["ttft_ms"]["from_intended"]["p50"] > 0
    records = pd.read_parquet(run_dir / "requests.parquet")
    ledger = pd.read_parquet(run_dir / "ledger.parquet")
    assert len(records) == counts["planned"]
    assert sorted(records["request_id"]) == sorted(ledger["request_id"])  # every request served exactly once
    assert set(ledger["cloud"]) == {"azure"}
    assert set(ledger["region"]) == {"eastus", "swedencentral"}


def test_misrouted_profile_fails_with_exact_violation_count(tmp_path: Path) -> None:
    """Every request the non-Azure endpoint served is one violation, no more, no less; exit 1."""
    result = run_cli(
        "run",
        str(shipped_profile("smoke-misrouted.toml", tmp_path)),
        "--duration-s",
        "6",
        "--results",
        str(tmp_path / "r"),
        "--no-progress",
    )
    assert result.returncode == ExitCode.COMPLIANCE_FAILED, result.stdout + result.stderr
    assert "FAIL" in result.stdout
    run_dir = only_run_dir(tmp_path / "r")
    ledger = pd.read_parquet(run_dir / "ledger.parquet")
    misrouted = ledger[ledger["cloud"] != "azure"]
    assert len(misrouted) > 20
    compliance = json.loads((run_dir / "compliance.json").read_text())
    assert compliance["verdict"] == "fail"
    assert compliance["violations_total"] == len(misrouted)
    assert compliance["by_kind"] == {"cloud": len(misrouted)}
    assert compliance["by_rule"] == {"stateless-openai-on-azure": len(misrouted)}
    listed = {v["request_id"] for v in compliance["violations"]}
    assert listed == set(misrouted["request_id"])
    assert compliance["reconciliation"]["consistent"]
    assert f"{len(misrouted)} routing violation(s)" in result.stdout
