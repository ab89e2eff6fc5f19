"""`harness compare` (bootstrap regression verdict against a baseline) and `harness trend` (run index)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.errors import ExitCode, InputError
from harness.report.compare import (
    METRICS,
    bootstrap_clustered_percentiles,
    bootstrap_percentile,
    bootstrap_rate,
    compare_runs,
    judge_delta,
)
from harness.report.trend import INDEX_SCHEMA, build_index, flag_regressions
from harness.results.schema import RECORD_SCHEMA
from tests.test_report import cli, copy_run, real_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return real_runs(tmp_path_factory)


def slowed_copy(run_dir: Path, dest: Path, factor: float) -> Path:
    """A copy of a real run in which every response took ``factor`` times as long after it was sent."""
    target = copy_run(run_dir, dest)
    table = pq.read_table(target / "requests.parquet")
    rows = table.to_pylist()
    for row in rows:
        sent = row["sent_ns"]
        if sent is None:
            continue
        for col in ("first_byte_ns", "first_token_ns", "done_ns"):
            if row[col] is not None:
                row[col] = sent + int((row[col] - sent) * factor)
        if row["token_ns"]:
            row["token_ns"] = [sent + int((t - sent) * factor) for t in row["token_ns"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), target / "requests.parquet")
    return target


# -- bootstrap statistics ----------------------------------------------------------------------


def test_order_statistic_bootstrap_matches_naive_resampling() -> None:
    """The Beta order-statistic shortcut has the distribution of percentiles of explicit resamples."""
    rng = np.random.default_rng(7)
    values = rng.lognormal(3.0, 0.5, size=400)
    fast = bootstrap_percentile(values, 90.0, 20_000, np.random.default_rng(1))
    idx = np.random.default_rng(2).integers(0, values.size, size=(4000, values.size))
    resampled = np.sort(values[idx], axis=1)
    r = int(0.9 * values.size + 0.5)
    naive = resampled[:, r - 1]
    for q in (5, 25, 50, 75, 95):
        assert np.isclose(np.percentile(fast, q), np.percentile(naive, q), rtol=0.02), q


def test_same_distribution_is_unchanged_and_a_shift_is_a_regression() -> None:
    """Two samples of one distribution are `unchanged`; the same sample 20 % slower is `regressed`."""
    base = np.random.default_rng(11).lognormal(4.0, 0.3, size=3000)
    same = np.random.default_rng(12).lognormal(4.0, 0.3, size=3000)
    for q in (50.0, 99.0):
        for current, expected in ((same, "unchanged"), (base * 1.2, "regressed"), (base / 1.2, "improved")):
            b = bootstrap_percentile(base, q, 2000, np.random.default_rng(3))
            c = bootstrap_percentile(current, q, 2000, np.random.default_rng(4))
            low, high = np.quantile(c - b, [0.025, 0.975])
            point = np.percentile(base, q)
            assert judge_delta(point, low, high, higher_is_worse=True, tolerance=0.05) == expected, (
                q,
                expected,
            )


def test_tolerance_absorbs_a_small_but_certain_change() -> None:
    """An interval wholly above zero but inside the tolerance band is `unchanged`; beyond it, `regressed`."""
    assert judge_delta(100.0, 1.0, 4.0, higher_is_worse=True, tolerance=0.05) == "unchanged"
    assert judge_delta(100.0, 6.0, 9.0, higher_is_worse=True, tolerance=0.05) == "regressed"
    assert judge_delta(100.0, -9.0, -6.0, higher_is_worse=False, tolerance=0.05) == "regressed"
    assert judge_delta(100.0, 6.0, 9.0, higher_is_worse=False, tolerance=0.05) == "improved"


def test_one_error_against_a_clean_baseline_is_not_a_regression() -> None:
    """A single error in 300 requests against an error-free baseline stays within noise."""
    rng = np.random.default_rng(5)
    diff = bootstrap_rate(1, 300, 2000, rng) - bootstrap_rate(0, 300, 2000, rng)
    low, high = np.quantile(diff, [0.025, 0.975])
    assert judge_delta(0.0, low, high, higher_is_worse=True, tolerance=0.05, min_band=0.001) == "unchanged"


def test_clustered_bootstrap_is_wider_than_resampling_single_values() -> None:
    """When a request's values move together, resampling requests gives a wider interval than values."""
    rng = np.random.default_rng(9)
    offsets = rng.normal(10.0, 2.0, size=200)
    values = np.repeat(offsets, 20) + rng.normal(0.0, 0.1, size=4000)
    clustered = bootstrap_clustered_percentiles(
        values, np.full(200, 20), (50.0,), 2000, np.random.default_rng(1)
    )[0]
    iid = bootstrap_percentile(values, 50.0, 2000, np.random.default_rng(1))
    width = lambda reps: float(np.subtract(*np.quantile(reps, [0.975, 0.025])))  # noqa: E731
    assert width(clustered) > 2.5 * width(iid)
    assert abs(np.median(clustered) - np.median(values)) < 0.5


def test_subsampling_keeps_the_estimate_and_widens_the_interval() -> None:
    """Above max_samples the sample is subsampled: the percentile stays put and the interval widens."""
    values = np.random.default_rng(3).lognormal(2.0, 0.4, size=50_000)
    full = bootstrap_percentile(values, 99.0, 2000, np.random.default_rng(1))
    sub = bootstrap_percentile(values, 99.0, 2000, np.random.default_rng(1), max_samples=5000)
    assert abs(np.median(sub) / np.median(full) - 1) < 0.05
    assert np.ptp(np.quantile(sub, [0.025, 0.975])) > np.ptp(np.quantile(full, [0.025, 0.975]))


# -- compare on real runs ----------------------------------------------------------------------


def test_compare_a_run_with_itself_changes_nothing(runs: dict[str, Path], tmp_path: Path) -> None:
    """`harness compare RUN RUN` exits 0, writes compare.json/.md and finds every delta zero and unchanged."""
    result = cli("compare", str(runs["smoke"]), str(runs["smoke"]), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "compare.json").read_text())
    assert [m["metric"] for m in data["metrics"]] == [m.key for m in METRICS]
    for m in data["metrics"]:
        assert m["verdict"] == "unchanged" and m["delta"] == 0, m
        assert m["ci_low"] <= 0 <= m["ci_high"]
    assert data["verdict"] == "ok" and data["regressed"] == []
    assert (tmp_path / "compare.md").read_text().startswith("# No regression")


def test_compare_flags_a_slower_run_and_exits_5(runs: dict[str, Path], tmp_path: Path) -> None:
    """A real run copied with 1.5x slower responses regresses latency, TTFT and ITL (exit 5), not tokens/s."""
    slow = slowed_copy(runs["smoke"], tmp_path / "slow", 1.5)
    result = cli("compare", str(slow), str(runs["smoke"]))
    assert result.exit_code == ExitCode.THRESHOLDS_FAILED, result.output
    assert "REGRESSED" in result.output
    data = json.loads((slow / "compare.json").read_text())
    verdicts = {m["metric"]: m["verdict"] for m in data["metrics"]}
    # not ITL p50: on a loaded machine most tokens arrive in one read, so it is 0 in both runs
    for key in ("latency_ms.p50", "latency_ms.p99", "ttft_ms.p50", "itl_ms.p99"):
        assert verdicts[key] == "regressed", key
    assert verdicts["tokens_per_s"] == "unchanged" and verdicts["error_rate"] == "unchanged"
    p50 = next(m for m in data["metrics"] if m["metric"] == "latency_ms.p50")
    assert 0.4 < p50["delta_rel"] < 0.6 and p50["ci_low_rel"] > 0.05
    assert re.search(r"\| latency_ms\.p50 \| .* \| \*\*regressed\*\* \|", (slow / "compare.md").read_text())


def test_compare_the_other_way_round_is_an_improvement(runs: dict[str, Path], tmp_path: Path) -> None:
    """The baseline against its slower copy improves and exits 0; the comparison is seeded and repeatable."""
    slow = slowed_copy(runs["smoke"], tmp_path, 1.5)
    first = compare_runs(runs["smoke"], slow, seed=3)
    assert first["verdict"] == "ok"
    assert {m["metric"]: m["verdict"] for m in first["metrics"]}["latency_ms.p99"] == "improved"
    assert compare_runs(runs["smoke"], slow, seed=3) == first


def test_compare_rejects_unbounded_resamples(runs: dict[str, Path]) -> None:
    """Resamples outside 100..100,000 are an input error (exit 2), not a slow run."""
    with pytest.raises(InputError, match="resamples"):
        compare_runs(runs["smoke"], runs["smoke"], resamples=10**7)
    result = cli("compare", str(runs["smoke"]), str(runs["smoke"]), "--resamples", "10")
    assert result.exit_code == ExitCode.INVALID_INPUT


# -- trend -------------------------------------------------------------------------------------


def history(
    runs: dict[str, Path], root: Path, p99_factors: list[float], exit_codes: list[int] | None = None
) -> Path:
    """A results dir: the two real runs plus one copy of the smoke run per factor, a day apart,
    each with its latency p99 scaled by the factor (and the given exit code)."""
    root.mkdir()
    for run_dir in runs.values():
        shutil.copytree(run_dir, root / run_dir.name)
    base = json.loads((runs["smoke"] / "summary.json").read_text())
    for i, factor in enumerate(p99_factors):
        summary = json.loads(json.dumps(base))
        run_id = f"202601{i + 1:02d}T000000Z-smoke"
        summary["meta"].update(run_id=run_id, started_at=f"2026-01-{i + 1:02d}T00:00:00+00:00")
        summary["latency_ms"]["from_intended"]["p99"] = 100.0 * factor
        summary["verdict"]["exit_code"] = exit_codes[i] if exit_codes else 0
        (root / run_id).mkdir()
        (root / run_id / "summary.json").write_text(json.dumps(summary))
    (root / "not-a-run").mkdir()
    return root


def test_trend_flags_a_run_worse_than_the_median_of_the_previous_five(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Only runs over 10 % above the median of the previous 5 are flagged; the first 3 are not judged."""
    root = history(runs, tmp_path / "results", [1.0, 1.05, 0.95, 1.0, 2.0, 1.08, 1.3])
    index, skipped = build_index(root)
    assert skipped == ["not-a-run"]
    smoke = index[index["profile"] == "smoke"].reset_index(drop=True)
    assert len(smoke) == 8  # 7 history runs + the real smoke run, which started last
    flagged = {r.run_id: list(r.regressions) for r in smoke.itertuples()}
    assert flagged["20260105T000000Z-smoke"] == ["latency_p99_ms"]  # 200 vs median(100, 105, 95, 100)
    assert flagged["20260106T000000Z-smoke"] == []  # 108 vs median(100, 105, 95, 100, 200) = 100: +8 %
    # 130 vs median(105, 95, 100, 200, 108) = 105
    assert flagged["20260107T000000Z-smoke"] == ["latency_p99_ms"]
    assert smoke["baseline_latency_p99_ms"].iloc[:3].isna().all()
    assert smoke["baseline_latency_p99_ms"].iloc[6] == 105.0


def test_untrusted_runs_are_not_history(runs: dict[str, Path], tmp_path: Path) -> None:
    """A harness-bound run is indexed but never part of the median later runs are judged against."""
    root = history(runs, tmp_path / "results", [1.0, 1.0, 1.0, 0.5, 1.0], exit_codes=[0, 0, 0, 3, 0])
    smoke = build_index(root)[0].query("profile == 'smoke'").reset_index(drop=True)
    assert smoke["baseline_latency_p99_ms"].iloc[4] == 100.0  # median(100, 100, 100), the 50 left out
    assert list(smoke["regressions"].iloc[3]) == []  # judged itself, better than history


def test_lower_tokens_per_s_is_a_regression() -> None:
    """Throughput is judged the other way round: 20 % fewer tokens/s than the median is flagged."""
    rows = [
        {
            "run_id": f"r{i}",
            "run_dir": f"r{i}",
            "profile": "p",
            "started_at": pd.Timestamp(2026, 1, i + 1, tz="UTC"),
            "exit_code": 0,
            "tokens_per_s": v,
            "regressions": [],
        }
        for i, v in enumerate([100.0, 100.0, 100.0, 80.0, 120.0])
    ]
    index = pd.DataFrame(rows)
    for column in INDEX_SCHEMA.names:
        if column not in index:
            index[column] = None
    flagged = flag_regressions(index)["regressions"].map(list).tolist()
    assert flagged == [[], [], [], ["tokens_per_s"], []]


def test_trend_command_writes_a_readable_index_and_a_self_contained_page(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """`harness trend` writes index.parquet (a row per run, any reader) and trend.html (chart per profile)."""
    root = history(runs, tmp_path / "results", [1.0, 1.0, 1.0, 1.5])
    result = cli("trend", str(root))
    assert result.exit_code == 0, result.output
    assert "20260104T000000Z-smoke: latency_p99_ms" in result.output
    index = pd.read_parquet(root / "index.parquet")
    assert len(index) == 6 and set(index["profile"]) == {"smoke", "smoke-misrouted"}
    assert pq.read_schema(root / "index.parquet").names == INDEX_SCHEMA.names
    real = index.set_index("run_id").loc[runs["smoke-misrouted"].name]
    summary = json.loads((runs["smoke-misrouted"] / "summary.json").read_text())
    assert real["verdict"] == summary["verdict"]["result"] and real["violations"] > 0
    assert real["latency_p99_ms"] == summary["latency_ms"]["from_intended"]["p99"]
    html = (root / "trend.html").read_text()
    assert html.count("<svg") == 2 and "<script" not in html
    refs = re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)["']""", html)
    assert all(r.startswith(("#", "data:")) for r in refs)
