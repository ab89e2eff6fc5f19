"""`harness gate RUN_DIR` and `harness run --threshold`: every exit code a gate can give, on a real run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import ExitCode
from tests.conftest import PROFILES, run_cli
from tests.test_gate_eval import region_policy, smoke_run_dir


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run_dir(tmp_path_factory)


def gate(*args: str) -> tuple[int, str]:
    """Run `harness gate` in-process (the subprocess path is covered once below)."""
    result = CliRunner().invoke(app, ["gate", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def gate_json(run_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run_dir / "gate.json").read_text())


def test_gate_passes_and_writes_gate_json(smoke_run: Path) -> None:
    """A passing gate exits 0, prints the threshold table and PASS, and writes gate.json."""
    result = run_cli("gate", str(smoke_run), "--threshold", "p99(latency) < 60s")
    assert result.returncode == ExitCode.PASS, result.stdout + result.stderr
    assert "p99(latency) < 60s" in result.stdout and "PASS" in result.stdout
    written = gate_json(smoke_run)
    assert written["verdict"] == {"result": "PASS", "exit_code": 0, "reasons": []}
    expressions = [t["expression"] for t in written["thresholds"]]
    assert expressions[:2] == ["count(goodput) > 0", "rate(dropped) <= 0"]  # built-ins
    assert expressions[-1] == "p99(latency) < 60s"
    assert 'count(violations{cloud="aws"}) == 0' in expressions  # the run's own, from its profile
    assert written["policy"]["rejudged"] is False


def test_failing_threshold_exits_5(smoke_run: Path) -> None:
    """An SLO the run did not meet fails the gate with exit 5 and says what was observed."""
    code, out = gate(str(smoke_run), "--threshold", "p99(latency) < 1us")
    assert code == ExitCode.THRESHOLDS_FAILED, out
    assert "THRESHOLDS_FAILED" in out and "FAIL" in out
    assert "p99(latency) < 1us: observed" in out
    assert gate_json(smoke_run)["verdict"]["exit_code"] == 5


def test_rejudging_with_another_policy_exits_1(smoke_run: Path, tmp_path: Path) -> None:
    """--policy re-judges compliance from records and ledger: eastus-only makes Sweden a violation (1)."""
    before = (smoke_run / "compliance.json").read_bytes()
    code, out = gate(
        str(smoke_run), "--policy", str(region_policy(tmp_path)), "--threshold", "p99(latency) < 1us"
    )
    assert code == ExitCode.COMPLIANCE_FAILED, out  # compliance outranks the failing threshold
    written = gate_json(smoke_run)
    assert written["policy"]["rejudged"] is True
    assert written["compliance"]["policy"] == "eastus-only"
    assert written["compliance"]["violations_total"] > 0
    assert "routing violation(s) of policy eastus-only" in out
    assert len(written["verdict"]["reasons"]) == 2
    assert (smoke_run / "compliance.json").read_bytes() == before  # the run's own judgement stays


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--threshold", "p99(errors) < 1"), "p99() does not apply to errors"),
        (("--threshold", "p99(ttft) < 800xs"), "column 16 of 'p99(ttft) < 800xs' — see docs/gates.md"),
        (("--threshold", 'count(errors{scenario="caht"}) == 0'), "scenario='caht' is not in this run"),
        (("--threshold", "p95(latency) <= baseline * 1.1"), "pass --baseline RUN_DIR"),
        (("--threshold", "p95(latency) <= baseline", "--baseline", "/nonexistent/run"), "baseline run"),
        (("--policy", "/nonexistent/policy.toml"), "file not found"),
    ],
)
def test_bad_input_exits_2(smoke_run: Path, args: tuple[str, ...], words: str) -> None:
    """Bad expressions, unknown selector values, a missing baseline or policy are exit 2 with the reason."""
    code, out = gate(str(smoke_run), *args)
    assert code == ExitCode.INVALID_INPUT, out
    assert words in " ".join(out.split())


def test_missing_run_directory_exits_2(tmp_path: Path) -> None:
    """Gating a directory that holds no run is an input error, not a crash."""
    code, out = gate(str(tmp_path / "nope"))
    assert code == ExitCode.INVALID_INPUT
    assert "no such run directory" in out


def test_baseline_comparison(smoke_run: Path) -> None:
    """Against itself as baseline, p95 within +10% passes (0) and 'twice as fast' fails (5)."""
    code, out = gate(
        str(smoke_run), "--baseline", str(smoke_run), "--threshold", "p95(latency) <= baseline * 1.10"
    )
    assert code == ExitCode.PASS, out
    row = gate_json(smoke_run)["thresholds"][-1]
    assert row["baseline"] == row["observed"] and row["limit"] == pytest.approx(row["observed"] * 1.1)
    assert gate_json(smoke_run)["baseline"] == str(smoke_run)
    code, out = gate(
        str(smoke_run), "--baseline", str(smoke_run), "--threshold", "p95(latency) < baseline * 0.5"
    )
    assert code == ExitCode.THRESHOLDS_FAILED, out
    assert "baseline" in gate_json(smoke_run)["verdict"]["reasons"][0]


def _edited_copy(smoke_run: Path, tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    copy = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    edit(summary)
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


def test_harness_bound_run_never_passes_the_gate(smoke_run: Path, tmp_path: Path) -> None:
    """A run recorded as harness-bound gates to exit 3 even when its thresholds fail too."""

    def bound(summary: dict) -> None:  # type: ignore[type-arg]
        summary["validity"].update(harness_bound=True, reasons=["event-loop lag p99 90.0 ms > 20 ms"])

    copy = _edited_copy(smoke_run, tmp_path, bound)
    code, out = gate(str(copy), "--threshold", "p99(latency) < 1us")
    assert code == ExitCode.HARNESS_BOUND, out
    assert gate_json(copy)["verdict"]["reasons"][0].startswith("harness-bound (event-loop lag")


def test_interrupted_run_gates_to_130(smoke_run: Path, tmp_path: Path) -> None:
    """A run recorded as interrupted gates to 130, above every other outcome."""

    def interrupted(summary: dict) -> None:  # type: ignore[type-arg]
        summary["meta"]["interrupted"] = True
        summary["validity"]["harness_bound"] = True

    code, out = gate(str(_edited_copy(smoke_run, tmp_path, interrupted)))
    assert code == ExitCode.INTERRUPTED, out


def test_run_rejects_a_bad_threshold_before_starting(tmp_path: Path) -> None:
    """`harness run --threshold` with a bad expression exits 2 and creates no run directory."""
    result = run_cli(
        "run",
        str(PROFILES / "smoke.toml"),
        "--results",
        str(tmp_path),
        "--threshold",
        "p99(latency) < 5 parsecs",
    )
    assert result.returncode == ExitCode.INVALID_INPUT, result.stdout + result.stderr
    assert "--threshold[0]" in result.stderr
    assert not any(tmp_path.iterdir())


def test_run_with_a_failing_threshold_exits_5(smoke_run: Path, tmp_path: Path) -> None:
    """`harness run --threshold` that the run misses exits 5 and records the failure in summary.json."""
    profile = smoke_run.parent / "smoke.toml"  # the shared fixture's relaxed copy of the smoke profile
    result = run_cli(
        "run",
        str(profile),
        "--duration-s",
        "1",
        "--results",
        str(tmp_path),
        "--no-progress",
        "--threshold",
        "p99(ttft) < 1us",
    )
    assert result.returncode == ExitCode.THRESHOLDS_FAILED, result.stdout + result.stderr
    assert "THRESHOLDS_FAILED" in result.stdout
    (run_dir,) = list(tmp_path.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"]["result"] == "THRESHOLDS_FAILED"
    failed = [t for t in summary["thresholds"] if not t["passed"]]
    assert [t["expression"] for t in failed] == ["p99(ttft) < 1us"]
