"""Capacity search: expansion, bisection and stopping rules (probe results injected), and the knee."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.capacity import SearchPlan, knee_svg, scaled, search
from harness.errors import ExitCode, InputError
from harness.profile import load_profile
from harness.runner import RunOutcome
from harness.workload import planned_rate_rps
from tests.conftest import PROFILES

LOADED = load_profile(PROFILES / "smoke.toml")


def fake_outcome(rate: float, code: ExitCode) -> RunOutcome:
    summary = {
        "counts": {"planned": 100, "error": 0, "timeout": 0},
        "latency_ms": {"from_intended": {"p99": 10.0 if code == ExitCode.PASS else 900.0}},
        "ttft_ms": {"from_intended": {"p99": 5.0}},
        "rate": {"achieved_rps": rate},
    }
    verdict = "PASS" if code == ExitCode.PASS else "FAIL"
    return RunOutcome(Path("/nonexistent"), code, verdict, [], summary, {})


def probe_with_knee(knee: float, bound_at: float | None = None):  # type: ignore[no-untyped-def]
    calls: list[float] = []

    def run(loaded, where):  # type: ignore[no-untyped-def]
        rate = planned_rate_rps(loaded.profile)
        calls.append(rate)
        if bound_at is not None and rate >= bound_at:
            return fake_outcome(rate, ExitCode.HARNESS_BOUND)
        return fake_outcome(rate, ExitCode.PASS if rate <= knee else ExitCode.THRESHOLDS_FAILED)

    return run, calls


def test_scaling_keeps_the_mix_and_sets_duration() -> None:
    """Scaling sets the total rate and step duration and keeps the scenarios' proportions."""
    out = scaled(LOADED, 250.0, 3.0)
    assert planned_rate_rps(out.profile) == pytest.approx(250.0)
    assert out.profile.duration_s == 3.0
    assert LOADED.profile.duration_s == 20  # the original is untouched


def test_expand_then_bisect_to_precision() -> None:
    """The answer is the highest passing rate, within the requested precision of the true knee."""
    run, calls = probe_with_knee(83.0)
    result = search(LOADED, SearchPlan(start_rps=10, max_rps=10_000, precision=0.02), Path("/tmp"), run)
    assert result.answer_rps is not None and result.first_failing_rps is not None
    assert result.answer_rps <= 83.0 < result.first_failing_rps
    assert (result.first_failing_rps - result.answer_rps) / result.answer_rps <= 0.02
    assert calls[:4] == [10, 20, 40, 80]  # doubling until the first failure at 160
    assert "bisected" in result.stopped_because


def test_harness_bound_probe_stops_the_search() -> None:
    """A harness-bound probe ends the search: the generator's limit is not reported as capacity."""
    run, _ = probe_with_knee(10_000.0, bound_at=300.0)
    result = search(LOADED, SearchPlan(start_rps=100, max_rps=10_000), Path("/tmp"), run)
    assert result.answer_rps == 200
    assert "harness-bound" in result.stopped_because


def test_failing_at_start_and_passing_at_max() -> None:
    """Failing at the start rate gives no answer; passing at max reports max as a lower bound."""
    run, _ = probe_with_knee(5.0)
    result = search(LOADED, SearchPlan(start_rps=10, max_rps=100), Path("/tmp"), run)
    assert result.answer_rps is None and "start_rps" in result.stopped_because
    run, _ = probe_with_knee(1e9)
    result = search(LOADED, SearchPlan(start_rps=10, max_rps=100), Path("/tmp"), run)
    assert result.answer_rps == 100 and "at least" in result.stopped_because


def test_invalid_plan_is_an_input_error() -> None:
    """Impossible search bounds are rejected with a hint."""
    with pytest.raises(InputError, match="start-rps"):
        SearchPlan(start_rps=100, max_rps=10)


def test_knee_plot_is_svg() -> None:
    """The knee plot renders as standalone SVG with the answer marked."""
    pytest.importorskip("matplotlib")
    run, _ = probe_with_knee(83.0)
    result = search(LOADED, SearchPlan(start_rps=10, max_rps=1000), Path("/tmp"), run)
    svg = knee_svg(result)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
