"""`harness capacity` on the embedded fleet finds the mock's configured knee (issue 7)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import PROFILES, run_cli

KNEE_RPS = 4 / 0.040  # profiles/fleets/knee.toml: max_concurrency / service time


def test_capacity_search_finds_the_knee_within_10_percent(tmp_path: Path) -> None:
    """The highest passing rate lies within 10% of the fleet's knee, and the knee plot is written."""
    # the shipped profile with relaxed validity: a loaded test machine must not stop the search
    text = (
        (PROFILES / "capacity-knee.toml")
        .read_text()
        .replace('fleet = "fleets/', f'fleet = "{PROFILES}/fleets/')
    )
    text = text.replace('policy = "policies/', f'policy = "{PROFILES}/policies/')
    profile = tmp_path / "capacity-knee.toml"
    profile.write_text(
        text + "\n[validity]\nmax_schedule_lag_p99_ms = 1000\nmax_event_loop_lag_p99_ms = 1000\n"
    )
    result = run_cli(
        "capacity",
        str(profile),
        "--start-rps",
        "60",
        "--max-rps",
        "400",
        "--precision",
        "0.05",
        "--step-duration-s",
        "2.5",
        "--results",
        str(tmp_path / "r"),
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (out_dir,) = [d for d in (tmp_path / "r").iterdir() if d.is_dir()]
    capacity = json.loads((out_dir / "capacity.json").read_text())
    answer = capacity["answer_rps"]
    assert abs(answer - KNEE_RPS) / KNEE_RPS <= 0.10, capacity
    assert capacity["first_failing_rps"] > answer
    assert (out_dir / "knee.svg").read_text().lstrip().startswith("<?xml")
    assert len(list((out_dir / "probes").iterdir())) == len(capacity["probes"])
    assert "capacity:" in result.stdout
