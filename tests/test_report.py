"""`harness report`: summary.json, summary.md, report.html and junit.xml rebuilt from a run directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from junitparser import Failure, JUnitXml

from harness.report import load_run, plots as P, write_report
from harness.report.junit import render_junit
from harness.report.markdown import render_markdown
from harness.results import derive
from tests.conftest import PROFILES, ROOT

if TYPE_CHECKING:
    from click.testing import Result

RUN_SECONDS = "3"
_RUNS: dict[str, Path] = {}
_ORIGINAL_SUMMARY: dict[str, dict] = {}
_LOCK = threading.Lock()


def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run dirs of short real runs of smoke and smoke-misrouted, made once per test session.

    The two runs start in parallel (each has its own fleet on port 0); their verdict is not
    asserted here (a loaded CI machine may make one harness-bound), only that they finished.
    Test modules share them through this cache; tests that change a run dir copy it first.
    """
    with _LOCK:
        if _RUNS:
            return _RUNS
        root = tmp_path_factory.mktemp("report-runs")
        env = {**os.environ, "COLUMNS": "200"}
        procs = {}
        for name in ("smoke", "smoke-misrouted"):
            results = root / name
            cmd = [sys.executable, "-m", "harness", "run", str(PROFILES / f"{name}.toml")]
            cmd += ["--duration-s", RUN_SECONDS, "--results", str(results), "--no-progress"]
            procs[name] = (
                results,
                subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
            )
        for name, (results, proc) in procs.items():
            output, _ = proc.communicate(timeout=120)
            dirs = [d for d in results.iterdir() if d.is_dir()] if results.is_dir() else []
            assert proc.returncode in (0, 1, 3, 5) and len(dirs) == 1, output.decode(errors="replace")
            _RUNS[name] = dirs[0]
            _ORIGINAL_SUMMARY[name] = json.loads((dirs[0] / "summary.json").read_text())
        return _RUNS


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = real_runs(tmp_path_factory)
    for run_dir in runs.values():
        if not (run_dir / "report.html").exists():
            write_report(run_dir)
    return runs


def cli(*args: str) -> Result:
    """Invoke the `harness` CLI in this process (no interpreter start-up per call)."""
    from typer.testing import CliRunner

    from harness.cli import app

    return CliRunner().invoke(app, list(args))


def copy_run(run_dir: Path, dest: Path, keep: tuple[str, ...] | None = None) -> Path:
    """A copy of a run directory (only the ``keep`` files when given)."""
    target = dest / run_dir.name
    if keep is None:
        shutil.copytree(run_dir, target)
    else:
        target.mkdir(parents=True)
        for name in keep:
            shutil.copy2(run_dir / name, target / name)
    return target


# -- summary.json ------------------------------------------------------------------------------


def test_report_command_writes_every_output(runs: dict[str, Path], tmp_path: Path) -> None:
    """`harness report RUN` exits 0 and writes summary.json, summary.md, report.html and junit.xml."""
    run_dir = copy_run(
        runs["smoke"],
        tmp_path,
        keep=(
            "requests.parquet",
            "ledger.parquet",
            "summary.json",
            "compliance.json",
            "profile.resolved.json",
        ),
    )
    result = cli("report", str(run_dir))
    assert result.exit_code == 0, result.output
    for name in ("summary.json", "summary.md", "report.html", "junit.xml"):
        assert (run_dir / name).stat().st_size > 0, name
        assert f"written: {run_dir / name}" in result.stdout


def test_regenerated_summary_equals_the_runners(runs: dict[str, Path]) -> None:
    """Re-summarizing requests.parquet gives back the runner's summary.json, every section included."""
    for name, run_dir in runs.items():
        regenerated = json.loads((run_dir / "summary.json").read_text())
        assert regenerated == _ORIGINAL_SUMMARY[name], name


def test_report_keeps_sections_it_does_not_compute(runs: dict[str, Path], tmp_path: Path) -> None:
    """Thresholds, verdict and any unknown section of summary.json survive a report; counts are recomputed."""
    run_dir = copy_run(runs["smoke"], tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    thresholds = [
        {
            "expression": "p99(ttft) < 800ms",
            "observed": 80.5,
            "limit": 800.0,
            "unit": "ms",
            "passed": True,
            "builtin": False,
        },
        {
            "expression": "rate(errors) < 1%",
            "observed": 0.02,
            "limit": 0.01,
            "unit": "fraction",
            "passed": False,
            "builtin": False,
            "reason": "error rate 2% > 1%",
        },
        {
            "expression": "dropped == 0",
            "observed": 0,
            "limit": 0,
            "unit": "count",
            "passed": True,
            "builtin": True,
        },
    ]
    summary["thresholds"] = thresholds
    summary["extra_section"] = {"kept": True}
    summary["counts"]["ok"] = -1  # stale: must be recomputed from the records
    (run_dir / "summary.json").write_text(json.dumps(summary))
    write_report(run_dir)
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["thresholds"] == thresholds
    assert after["extra_section"] == {"kept": True}
    assert after["verdict"] == summary["verdict"]
    assert after["counts"]["ok"] == derive.outcome_counts(load_run(run_dir).records)["ok"]
    md = (run_dir / "summary.md").read_text()
    assert "`rate(errors) < 1%`" in md and "**FAIL**" in md and "2%" in md and "(built-in)" in md
    suites = {s.name: s for s in JUnitXml.fromfile(str(run_dir / "junit.xml"))}
    cases = {c.name: c for c in suites["thresholds"]}
    assert set(cases) == {t["expression"] for t in thresholds}
    assert cases["p99(ttft) < 800ms"].is_passed and cases["dropped == 0"].is_passed
    failure = cases["rate(errors) < 1%"].result[0]
    assert isinstance(failure, Failure) and failure.message == "error rate 2% > 1%"
    assert cases["dropped == 0"].classname == "harness.thresholds.builtin"


def test_report_from_records_alone(runs: dict[str, Path], tmp_path: Path) -> None:
    """A run directory holding only requests.parquet still gets every output (no compliance, thresholds)."""
    run_dir = copy_run(runs["smoke"], tmp_path, keep=("requests.parquet",))
    write_report(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    records = load_run(run_dir).records
    assert summary["meta"] == {"run_id": run_dir.name}
    assert summary["counts"]["planned"] == len(records)
    assert summary["rate"]["achieved_rps"] > 0
    assert "No compliance judgement" in (run_dir / "summary.md").read_text()
    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    assert [s.name for s in xml] == ["thresholds", "compliance"] and xml.tests == 0


def test_report_of_a_missing_run_exits_2(tmp_path: Path) -> None:
    """`harness report` on a directory without records fails with exit 2 and a hint."""
    result = cli("report", str(tmp_path))
    assert result.exit_code == 2
    assert "requests.parquet" in result.stderr


# -- summary.md and junit.xml ------------------------------------------------------------------


def test_markdown_summary_has_verdict_counts_latency_errors_and_compliance(runs: dict[str, Path]) -> None:
    """summary.md shows the verdict, the counts, a percentile table, errors and a row per policy rule."""
    run_dir = runs["smoke-misrouted"]
    summary = json.loads((run_dir / "summary.json").read_text())
    compliance = json.loads((run_dir / "compliance.json").read_text())
    md = (run_dir / "summary.md").read_text()
    assert md == render_markdown(summary, compliance)
    assert md.startswith(f"# {summary['verdict']['result']} — run `{summary['meta']['run_id']}`")
    assert f"| {summary['counts']['planned']:,} | {summary['counts']['ok']:,} |" in md
    assert re.search(r"^\| TTFT \(from intended\) \| [\d.,]+ \|", md, re.M)
    assert "## Errors by kind" in md
    for rule in compliance["rules"]:
        assert f"| `{rule}` | {compliance['by_rule'].get(rule, 0)} |" in md
    assert compliance["by_rule"]["stateless-openai-on-azure"] == compliance["violations_total"] > 0


def test_junit_has_a_case_per_rule_and_parses_with_junitparser(runs: dict[str, Path]) -> None:
    """junit.xml parses with junitparser: one case per policy rule, the violated one failed with its count."""
    run_dir = runs["smoke-misrouted"]
    compliance = json.loads((run_dir / "compliance.json").read_text())
    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    suites = {s.name: s for s in xml}
    assert set(suites) == {"thresholds", "compliance"}
    cases = {c.name: c for c in suites["compliance"]}
    assert list(cases) == compliance["rules"]
    n = compliance["violations_total"]
    failed = cases["stateless-openai-on-azure"]
    assert (
        not failed.is_passed
        and failed.result[0].message == f"{n} violation(s) of rule stateless-openai-on-azure"
    )
    assert compliance["violations"][0]["request_id"] in failed.result[0].text
    assert all(cases[r].is_passed for r in compliance["rules"][1:])
    assert suites["compliance"].tests == 3 and suites["compliance"].failures == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    thresholds = summary.get("thresholds") or []
    assert [c.name for c in suites["thresholds"]] == [t["expression"] for t in thresholds]
    assert xml.tests == 3 + len(thresholds)
    assert xml.failures == 1 + sum(not t["passed"] for t in thresholds)


def test_junit_without_thresholds_or_compliance_is_empty_but_valid() -> None:
    """A summary with no thresholds and no compliance gives two empty suites that still parse."""
    text = render_junit({"meta": {"run_id": "r"}}, None)
    xml = JUnitXml.fromstring(text.split("\n", 1)[1])
    assert [s.name for s in xml] == ["thresholds", "compliance"] and xml.tests == 0


# -- report.html -------------------------------------------------------------------------------


def test_html_is_self_contained(runs: dict[str, Path]) -> None:
    """report.html has no script and refers to nothing outside itself; every plot is an inline SVG."""
    html = (runs["smoke-misrouted"] / "report.html").read_text()
    assert "<script" not in html.lower()
    refs = re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)["']""", html)
    assert refs and all(r.startswith(("#", "data:")) for r in refs), {
        r for r in refs if not r.startswith("#")
    }
    assert not re.search(r"url\((?!#)", html)
    assert html.count("<svg") == 9
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "SVG ids collide across plots"
    for title in (
        "Latency and TTFT percentiles over time",
        "Achieved vs planned rate",
        "Requests in flight",
        "Errors by kind over time",
        "Dropped arrivals over time",
        "Traffic share by cloud/region",
        "Routing violations over time",
        "Latency percentile spectrum",
        "TTFT percentile spectrum",
    ):
        assert title in html


def test_report_is_deterministic_and_independent_of_the_path(runs: dict[str, Path], tmp_path: Path) -> None:
    """Rebuilding a copied run gives byte-identical HTML and JSON (no dates, no random ids, no paths)."""
    original = runs["smoke-misrouted"]
    run_dir = copy_run(original, tmp_path)
    write_report(run_dir)
    for name in ("report.html", "summary.json", "summary.md", "junit.xml"):
        assert (run_dir / name).read_bytes() == (original / name).read_bytes(), name


# -- plot series -------------------------------------------------------------------------------


def test_rate_series_accounts_for_every_request(runs: dict[str, Path]) -> None:
    """Planned, achieved and completed rates integrate back to the planned, sent and ok counts."""
    records = load_run(runs["smoke"]).records
    width = P.window_s(records)
    rates = P.rate_series(records, width)
    counts = derive.outcome_counts(records)
    assert round(rates["planned"].sum() * width) == counts["planned"]
    assert round(rates["achieved"].sum() * width) == int(records["sent_ns"].notna().sum())
    assert round(rates["completed"].sum() * width) == counts["ok"]
    assert (np.diff(rates.index.to_numpy()) == width).all()


def test_in_flight_starts_and_ends_at_zero(runs: dict[str, Path]) -> None:
    """In flight is never negative, starts at 0, peaks above 0 and is back to 0 after the last response."""
    series = P.in_flight_series(load_run(runs["smoke"]).records)
    assert series["in_flight"].iloc[0] == 0 and series["in_flight"].iloc[-1] == 0
    assert (series["in_flight"] >= 0).all() and series["in_flight"].max() > 0
    assert len(series) <= P.MAX_STEPS + 2


def test_percentiles_over_time_match_the_histogram(runs: dict[str, Path]) -> None:
    """Per-window p50/p99 are ordered, and a window's values are the histogram percentiles of its requests."""
    from harness.metrics.histogram import LatencyHistogram

    records = load_run(runs["smoke"]).records
    series = P.percentiles_series(records, 1.0)
    filled = series.dropna()
    assert len(filled) >= 2
    assert (filled["latency_p50"] <= filled["latency_p99"]).all() and (
        filled["ttft_p50"] <= filled["ttft_p99"]
    ).all()
    latency = derive.latency_ms(records, "intended")
    intended = records.loc[latency.index, "intended_ns"].astype("int64").to_numpy() / 1e9
    first = latency[(intended >= 1.0) & (intended < 2.0)]
    assert filled.loc[1.0, "latency_p99"] == LatencyHistogram.from_ms(first.to_numpy()).percentile_ms(99)


def test_traffic_share_follows_the_ledger(runs: dict[str, Path]) -> None:
    """Traffic shares sum to 1 per window and the AWS share equals the ledger's count of AWS servings."""
    run = load_run(runs["smoke-misrouted"])
    share = P.traffic_share_series(run.records, run.ledger, 1.0)
    busy = share[share.sum(axis=1) > 0]
    assert np.allclose(busy.sum(axis=1), 1.0)
    expected = {
        f"{c}/{r}" for c, r in run.ledger[["cloud", "region"]].drop_duplicates().itertuples(index=False)
    }
    assert set(share.columns) == expected
    where = P.served_where(run.records, run.ledger)
    assert int((where["cloud"] == "aws").sum()) == int((run.ledger["cloud"] == "aws").sum()) > 0


def test_violation_timeline_joins_every_listed_violation(runs: dict[str, Path]) -> None:
    """Every violation listed in compliance.json is placed at its request's send time, in time order."""
    run = load_run(runs["smoke-misrouted"])
    v = P.violations_series(run.records, run.compliance)
    assert run.compliance is not None and len(v) == run.compliance["violations_listed"] > 0
    sent = run.records.set_index("request_id")["sent_ns"].astype("int64") / 1e9
    assert np.allclose(v["t_s"].to_numpy(), sent.loc[v["request_id"]].to_numpy())
    assert v["t_s"].is_monotonic_increasing and set(v["kind"]) == {"cloud"}


def test_spectrum_is_monotonic_and_reaches_the_maximum(runs: dict[str, Path]) -> None:
    """The percentile spectrum rises with the percentile and ends at the histogram's 1 - 1/n percentile."""
    from harness.metrics.histogram import LatencyHistogram

    values = derive.latency_ms(load_run(runs["smoke"]).records, "intended").to_numpy()
    spec = P.spectrum_series(values)
    assert spec["x"].iloc[0] == 1.0 and np.isclose(spec["x"].iloc[-1], len(values))
    assert spec["value_ms"].is_monotonic_increasing
    assert spec["value_ms"].iloc[-1] == LatencyHistogram.from_ms(values).percentile_ms(
        100 * (1 - 1 / len(values))
    )


def _synthetic_records() -> pd.DataFrame:
    """Six hand-made records: 2 ok, 2 errors of two kinds, a timeout and a dropped arrival."""
    s = 1_000_000_000
    rows = [
        ("ok", None, 0, 0, 1 * s),
        ("ok", None, 1 * s, 1 * s, 2 * s),
        ("error", "http_429", int(0.5 * s), int(0.5 * s), int(0.6 * s)),
        ("error", "http_5xx", int(1.2 * s), int(1.2 * s), int(1.4 * s)),
        ("timeout", "timeout_read", int(0.1 * s), int(0.1 * s), int(2.5 * s)),
        ("dropped", "in_flight_cap", int(1.5 * s), None, None),
    ]
    return pd.DataFrame(
        {
            "outcome": [r[0] for r in rows],
            "error_kind": [r[1] for r in rows],
            "intended_ns": pd.array([r[2] for r in rows], dtype="Int64"),
            "sent_ns": pd.array([r[3] for r in rows], dtype="Int64"),
            "done_ns": pd.array([r[4] for r in rows], dtype="Int64"),
        }
    )


def test_errors_and_dropped_are_counted_by_kind_and_window() -> None:
    """Errors count by kind in the window of their done time; dropped arrivals in that of intended time."""
    records = _synthetic_records()
    errors = P.errors_series(records, 1.0)
    assert list(errors.index) == [0.0, 1.0, 2.0]
    assert errors.loc[0.0, "http_429"] == 1 and errors.loc[1.0, "http_5xx"] == 1
    assert errors.loc[2.0, "timeout_read"] == 1 and int(errors.to_numpy().sum()) == 3
    dropped = P.dropped_series(records, 1.0)
    assert dropped["in_flight_cap"].tolist() == [0, 1, 0]


def test_error_plot_names_each_kind(tmp_path: Path) -> None:
    """The errors plot is an SVG whose legend names every error kind (text stays text)."""
    plot = P.plot_errors(_synthetic_records(), 1.0)
    assert plot.svg.startswith("<svg") and "<?xml" not in plot.svg
    for kind in ("http_429", "http_5xx", "timeout_read"):
        assert kind in plot.svg


def test_report_summary_of_an_unsent_run_has_empty_plots(runs: dict[str, Path], tmp_path: Path) -> None:
    """Plots of records with no latency at all still render, with a note instead of lines."""
    records = _synthetic_records().iloc[[5]].reset_index(drop=True)
    records["first_token_ns"] = pd.array([None], dtype="Int64")
    records["status"] = pd.array([0], dtype="Int16")
    for c in ("fp_cloud", "fp_region", "mock_cloud", "mock_region"):
        records[c] = [None]
    records["request_id"] = ["r0"]
    plots = [
        P.plot_spectrum(records, "latency"),
        P.plot_traffic_share(records, None, 1.0),
        P.plot_in_flight(records, 1.0),
    ]
    assert "no latency values" in plots[0].svg and "no request reached a server" in plots[1].svg
    assert all(p.svg.count("<path") > 0 for p in plots)


def test_markdown_parses_as_gfm_with_well_formed_tables(runs: dict[str, Path]) -> None:
    """summary.md is valid GitHub-flavoured Markdown: each pipe table parses, rows as wide as headers."""
    from markdown_it import MarkdownIt

    md = (runs["smoke-misrouted"] / "summary.md").read_text()
    tokens = MarkdownIt("commonmark").enable("table").parse(md)  # CommonMark + GFM pipe tables
    pipe_blocks = [b for b in md.split("\n\n") if b.lstrip().startswith("|")]
    tables = [i for i, t in enumerate(tokens) if t.type == "table_open"]
    assert len(tables) == len(pipe_blocks) >= 3, "every pipe block is parsed as a table"
    for start in tables:
        widths, cells = [], 0
        for tok in tokens[start:]:
            if tok.type in ("th_open", "td_open"):
                cells += 1
            elif tok.type == "tr_close":
                widths.append(cells)
                cells = 0
            elif tok.type == "table_close":
                break
        assert len(set(widths)) == 1 and widths[0] >= 2, widths
    assert any(t.type == "heading_open" and t.tag == "h1" for t in tokens)
