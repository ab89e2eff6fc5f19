"""Every profile in profiles/ validates and runs to a verdict on the embedded fleet (a few seconds each)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.results.reader import read_records
from harness.runner import prepare, run_loaded

ROOT = Path(__file__).resolve().parent.parent
PROFILES = sorted((ROOT / "profiles").glob("*.toml"))
# profiles that fail on purpose, and how
EXPECTED_COMPLIANCE = {"smoke-misrouted": "fail"}


def test_the_library_has_every_documented_profile() -> None:
    """The profiles the README of profiles/ documents exist, and each is documented there."""
    readme = (ROOT / "profiles" / "README.md").read_text()
    names = {p.stem for p in PROFILES}
    for name in names:
        assert f"`{name}`" in readme, f"profiles/README.md does not explain {name}"
    for needed in (
        "replay-azure-conv",
        "replay-azure-code",
        "replay-burstgpt-sessions",
        "replay-mooncake",
        "smoke",
        "capacity-ramp",
        "release-gate",
        "nightly",
        "stateful-responses",
        "realtime-sessions",
        "multicloud-mix",
    ):
        assert needed in names


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
async def test_profile_runs_to_a_verdict(path: Path, tmp_path: Path) -> None:
    """The profile, shortened to 2 s (validity relaxed for a loaded CI machine), runs on the embedded
    fleet: every planned request has one record, and routing compliance is as the profile intends."""
    work = tmp_path / "profiles"
    shutil.copytree(ROOT / "profiles", work, ignore=shutil.ignore_patterns("README.md"))
    (tmp_path / "data").symlink_to(ROOT / "data")  # trace profiles read ../data/traces
    copy = work / path.name
    text = copy.read_text()
    copy.write_text(
        text + "\n[validity]\nmax_schedule_lag_p99_ms = 5000\nmax_event_loop_lag_p99_ms = 5000\n"
        if "[validity]" not in text
        else text
    )
    loaded = prepare(copy, duration_s=2)
    outcome = await run_loaded(loaded, tmp_path / "results", progress=False, report=False)
    assert outcome.exit_code not in (ExitCode.INVALID_INPUT, ExitCode.INFRASTRUCTURE)
    records = read_records(outcome.run_dir)
    counts = outcome.summary["counts"]
    assert counts["planned"] == len(records) > 0
    assert counts["planned"] == sum(counts[k] for k in ("ok", "error", "timeout", "dropped", "cancelled"))
    assert outcome.compliance["verdict"] == EXPECTED_COMPLIANCE.get(path.stem, "pass")
    assert outcome.compliance["reconciliation"]["consistent"]
