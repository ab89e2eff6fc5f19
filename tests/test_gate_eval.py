"""Thresholds evaluated on a real short smoke run, the verdict's precedence, and the runner's use of both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.compliance import CompiledPolicy, judge
from harness.compliance.judge import attribute_records
from harness.errors import ExitCode, ProfileError
from harness.gate.evaluate import GateInputError, ThresholdResult, evaluate, load_run, observe
from harness.gate.grammar import parse
from harness.gate.verdict import builtin_thresholds, compose, evaluate_all
from harness.profile.load import load_policy
from harness.runner import prepare
from tests.conftest import PROFILES, run_cli

RUN_THRESHOLDS = ("p99(ttft) < 60s", "rate(errors) < 1%", 'count(violations{cloud="aws"}) == 0')
_RUNS: dict[str, Path] = {}


def smoke_run_dir(factory: pytest.TempPathFactory) -> Path:
    """One 3 s smoke run per test session, shared by the gate test modules (it takes seconds).

    The smoke profile with relaxed lag bounds: on a shared CI machine the generator may lag, and
    these tests are about gates, not about the harness-bound check (tests/test_verdicts.py).
    """
    if "smoke" not in _RUNS:
        root = factory.mktemp("gate-smoke")
        profile = root / "smoke.toml"
        profile.write_text(
            _absolute_paths((PROFILES / "smoke.toml").read_text())
            + "\n[validity]\nmax_schedule_lag_p99_ms = 900\nmax_event_loop_lag_p99_ms = 900\n"
        )
        flags = [x for t in RUN_THRESHOLDS for x in ("--threshold", t)]
        result = run_cli(
            "run", str(profile), "--duration-s", "3", "--results", str(root), "--no-progress", *flags
        )
        assert result.returncode == ExitCode.PASS, result.stdout + result.stderr
        (run_dir,) = [d for d in root.iterdir() if d.is_dir()]
        _RUNS["smoke"] = run_dir
    return _RUNS["smoke"]


def _absolute_paths(text: str) -> str:
    text = text.replace('fleet = "fleets/', f'fleet = "{PROFILES}/fleets/')
    return text.replace('policy = "policies/', f'policy = "{PROFILES}/policies/')


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def run(smoke_run: Path):  # type: ignore[no-untyped-def]
    return load_run(smoke_run)


def region_policy(tmp_path: Path) -> Path:
    """A policy that allows stateless OpenAI calls in Azure eastus only."""
    path = tmp_path / "eastus-only.toml"
    path.write_text(
        'name = "eastus-only"\n[[rules]]\nid = "eastus"\nmatch = { class = "stateless" }\n'
        'allow_clouds = ["azure"]\nallow_regions = ["eastus"]\n'
    )
    return path


def test_runner_writes_thresholds_and_verdict_into_the_summary(smoke_run: Path) -> None:
    """summary.json lists the built-in and --threshold thresholds with observed values and a PASS verdict."""
    summary = json.loads((smoke_run / "summary.json").read_text())
    rows = summary["thresholds"]
    assert [r["expression"] for r in rows] == ["count(goodput) > 0", "rate(dropped) <= 0", *RUN_THRESHOLDS]
    assert [r["builtin"] for r in rows] == [True, True, False, False, False]
    assert all(r["passed"] for r in rows)
    assert {"expression", "observed", "passed", "builtin"} <= set(rows[0])
    assert summary["verdict"] == {"result": "PASS", "exit_code": 0, "reasons": []}
    resolved = json.loads((smoke_run / "profile.resolved.json").read_text())
    assert resolved["thresholds"] == list(RUN_THRESHOLDS)


@pytest.mark.parametrize(
    ("metric", "block"),
    [
        ("latency", ("latency_ms", "from_intended")),
        ("latency_sent", ("latency_ms", "from_sent")),
        ("ttft", ("ttft_ms", "from_intended")),
        ("ttft_sent", ("ttft_ms", "from_sent")),
        ("itl", ("itl_ms",)),
        ("tpot", ("tpot_ms",)),
        ("harness_lag", ("schedule_lag_ms",)),
    ],
)
def test_distribution_values_equal_the_summary(run, metric: str, block: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    """Percentiles, mean, max and count of every distribution metric equal summary.json's numbers."""
    stats = run.summary
    for key in block:
        stats = stats[key]
    for function, key in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p99.9")):
        assert observe(parse(f"{function}({metric}) < 1"), run) == stats[key]
    assert observe(parse(f"avg({metric}) < 1"), run) == stats["mean"]
    assert observe(parse(f"max({metric}) < 1"), run) == stats["max"]
    assert observe(parse(f"count({metric}) < 1"), run) == stats["count"]


def test_counts_and_rates_equal_the_summary(run) -> None:  # type: ignore[no-untyped-def]
    """Goodput, token throughput, errors and drops agree with the summary's counts and rates."""
    s = run.summary
    assert observe(parse("avg(goodput) > 0"), run) == pytest.approx(s["rate"]["completed_rps"])
    assert observe(parse("count(goodput) > 0"), run) == s["counts"]["ok"]
    assert observe(parse("avg(tokens_per_s) > 0"), run) == pytest.approx(s["tokens"]["out_per_s"])
    assert observe(parse("count(errors) == 0"), run) == s["counts"]["error"] + s["counts"]["timeout"]
    assert observe(parse("rate(dropped) == 0"), run) == 0.0
    assert observe(parse("count(http_429) == 0"), run) == 0.0
    assert observe(parse("count(violations) == 0"), run) == s["compliance"]["violations_total"] == 0


def test_passing_and_failing_thresholds(run) -> None:  # type: ignore[no-untyped-def]
    """A generous SLO passes, an impossible one fails with a reason quoting the observed value."""
    ok = evaluate(parse("p99(latency) < 60s"), run)
    assert ok.passed and ok.reason == "" and ok.limit == 60_000
    bad = evaluate(parse("p99(latency) < 1us"), run)
    assert not bad.passed
    assert bad.reason.startswith("p99(latency) < 1us: observed ") and bad.reason.endswith(" ms")
    assert not evaluate(parse("avg(goodput) >= 1000rps"), run).passed
    assert evaluate(parse("errors < 1%"), run).passed


def test_selectors_split_the_run(run) -> None:  # type: ignore[no-untyped-def]
    """Scenario, endpoint, cloud and region selectors pick matching requests; the parts add up."""
    total = observe(parse("count(latency) > 0"), run)
    assert observe(parse('count(latency{scenario="chat"}) > 0'), run) == total
    assert observe(parse('count(latency{cloud="azure",class="stateless"}) > 0'), run) == total
    east = observe(parse('count(latency{region="eastus"}) > 0'), run)
    sweden = observe(parse('count(latency{endpoint="azure-swedencentral"}) > 0'), run)
    assert east and sweden and east + sweden == total
    assert observe(parse('p99(ttft{cloud="aws"}) < 1s'), run) is None


def test_a_threshold_without_data_fails(run) -> None:  # type: ignore[no-untyped-def]
    """A percentile over no requests fails with 'no data' instead of passing vacuously."""
    result = evaluate(parse('p99(ttft{cloud="aws"}) < 1s'), run)
    assert not result.passed and result.observed is None
    assert "no data" in result.reason


def test_unknown_scenario_is_an_input_error(run) -> None:  # type: ignore[no-untyped-def]
    """A selector naming a scenario the run does not have is an error, not a vacuous pass."""
    with pytest.raises(GateInputError, match="scenario='caht' is not in this run"):
        evaluate(parse('count(errors{scenario="caht"}) == 0'), run)


def test_baseline_compares_the_same_function(run) -> None:  # type: ignore[no-untyped-def]
    """A baseline threshold evaluates the same function on the baseline run, times the factor."""
    p95 = observe(parse("p95(latency) < 1"), run)
    same = evaluate(parse("p95(latency) <= baseline * 1.10"), run, baseline=run)
    assert same.passed and same.baseline == p95 and same.limit == pytest.approx(p95 * 1.1)
    faster = evaluate(parse("p95(latency) < baseline * 0.5"), run, baseline=run)
    assert not faster.passed and "baseline" in faster.reason


def test_a_missing_baseline_is_a_clear_error(run) -> None:  # type: ignore[no-untyped-def]
    """A baseline threshold with no baseline run says how to give one."""
    with pytest.raises(GateInputError) as info:
        evaluate(parse("p95(latency) <= baseline"), run)
    assert "--baseline" in info.value.one_line()


def test_rejudged_violations_are_attributed_per_request(smoke_run: Path, tmp_path: Path) -> None:
    """With another policy, violations are counted per region and class, and agree with judge()."""
    rejudged = load_run(smoke_run, policy_file=region_policy(tmp_path))
    sweden = observe(parse('count(latency{region="swedencentral"}) > 0'), rejudged)
    assert rejudged.compliance["violations_total"] == sweden > 0
    assert observe(parse('count(violations{region="swedencentral"}) == 0'), rejudged) == sweden
    assert observe(parse('count(violations{region="eastus"}) == 0'), rejudged) == 0
    assert observe(parse('count(violations{class="stateless",kind="cloud"}) == 0'), rejudged) == sweden
    assert observe(parse('count(violations{rule="eastus"}) == 0'), rejudged) == sweden
    share = observe(parse('rate(violations{scenario="chat"}) == 0'), rejudged)
    assert share == pytest.approx(sweden / rejudged.compliance["judged"])


def test_attribute_records_matches_judge(smoke_run: Path, tmp_path: Path) -> None:
    """attribute_records gives one row per record whose violation kinds count to judge()'s totals."""
    run = load_run(smoke_run)
    policy = CompiledPolicy(load_policy(region_policy(tmp_path)))
    frame = attribute_records(run.records, run.ledger, policy)
    verdict = judge(run.records, run.ledger, policy)
    assert len(frame) == len(run.records) and (frame.index == run.records.index).all()
    assert frame["kind"].value_counts().to_dict() == verdict["by_kind"]
    assert frame["rule"].isin(["eastus"]).all()
    assert set(frame["served_cloud"]) == {"azure"}


def test_builtins_fail_an_empty_run(run) -> None:  # type: ignore[no-untyped-def]
    """The built-in thresholds pass on a healthy run and name the no-success and dropped-load failures."""
    results = evaluate_all(run, [])
    assert [r.builtin for r in results] == [True, True] and all(r.passed for r in results)
    assert [str(t) for t in builtin_thresholds(0.05)] == ["count(goodput) > 0", "rate(dropped) <= 0.05"]


def _result(passed: bool) -> ThresholdResult:
    return ThresholdResult("p99(ttft) < 1ms", 2.0, 1.0, "ms", passed, False, "" if passed else "slow")


@pytest.mark.parametrize(
    ("interrupted", "bound", "violations", "threshold_ok", "code"),
    [
        (False, False, 0, True, ExitCode.PASS),
        (False, False, 0, False, ExitCode.THRESHOLDS_FAILED),
        (False, False, 3, False, ExitCode.COMPLIANCE_FAILED),
        (False, True, 3, False, ExitCode.HARNESS_BOUND),
        (False, True, 0, True, ExitCode.HARNESS_BOUND),
        (True, True, 3, False, ExitCode.INTERRUPTED),
        (True, False, 0, True, ExitCode.INTERRUPTED),
    ],
)
def test_verdict_precedence(
    interrupted: bool, bound: bool, violations: int, threshold_ok: bool, code
) -> None:  # type: ignore[no-untyped-def]
    """interrupted > harness-bound > compliance > thresholds; a harness-bound run never passes."""
    compliance = {"verdict": "fail" if violations else "pass", "violations_total": violations, "policy": "p"}
    verdict = compose(
        [_result(threshold_ok)],
        compliance=compliance,
        harness_bound=["lag"] if bound else [],
        interrupted=interrupted,
    )
    assert verdict.exit_code == code and verdict.result == code.name
    failures = interrupted + bound + bool(violations) + (not threshold_ok)
    assert len(verdict.reasons) == failures
    assert verdict.to_json() == {
        "result": code.name,
        "exit_code": int(code),
        "reasons": list(verdict.reasons),
    }


def _profile(tmp_path: Path, extra: str) -> Path:
    text = _absolute_paths((PROFILES / "smoke.toml").read_text())
    text = text.replace('name = "smoke"', f'name = "smoke"\n{extra}', 1)
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_prepare_reports_every_bad_threshold_with_its_key(tmp_path: Path) -> None:
    """Bad profile and --threshold expressions make one ProfileError keyed thresholds[i] / --threshold[i]."""
    profile = _profile(
        tmp_path,
        'thresholds = ["p99(ttft) < 1s", "p99(errors) < 1", \'count(errors{scenario="nope"}) == 0\', '
        '"p95(latency) <= baseline"]',
    )
    with pytest.raises(ProfileError) as info:
        prepare(profile, thresholds=["p99(ttft) < 800xs"])
    paths = [p.path for p in info.value.problems]
    assert paths == ["thresholds[1]", "--threshold[0]", "thresholds[2]", "thresholds[3]"]
    text = info.value.one_line()
    assert "p99() does not apply to errors" in text and "column 16" in text
    assert "not in this profile" in text and "gate.baseline" in text
    assert info.value.exit_code == ExitCode.INVALID_INPUT


def test_prepare_appends_cli_thresholds(tmp_path: Path) -> None:
    """--threshold expressions are appended to the profile's and kept in the resolved profile."""
    profile = _profile(tmp_path, 'thresholds = ["p99(ttft) < 1s"]')
    loaded = prepare(profile, thresholds=["violations == 0"])
    assert loaded.profile.thresholds == ["p99(ttft) < 1s", "violations == 0"]


def test_prepare_checks_the_baseline_directory(tmp_path: Path) -> None:
    """gate.baseline must name a finished run when a threshold uses it."""
    profile = _profile(
        tmp_path, f'thresholds = ["p95(latency) <= baseline"]\ngate = {{ baseline = "{tmp_path}" }}'
    )
    with pytest.raises(ProfileError, match=r"gate\.baseline: .* is not a finished run directory"):
        prepare(profile)
