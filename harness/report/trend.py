"""Trends across runs: a run index (index.parquet) and a self-contained trend.html.

``harness trend RESULTS_DIR`` reads the summary.json of every run directory directly under
RESULTS_DIR (runs without one are listed as skipped; ``harness report`` can rebuild it) and
writes two files into RESULTS_DIR:

  index.parquet  one row per run: run id, profile, start time, verdict, exit code and the key
                 metrics (``INDEX_METRICS``), plus ``regressions``, the metrics flagged below
  trend.html     per profile, each metric across its runs in start-time order, the rolling
                 baseline, and the flagged runs marked; a table of the runs

Regression rule. A run's metric is flagged when it is worse than the **median of the same
metric over the previous 5 runs of the same profile** by more than 10 % of that median
(latencies and error rate: higher is worse; tokens/s: lower is worse). The error rate must
also be worse by at least 0.1 percentage point, so a clean history does not flag one error.
A run needs at least 3 previous runs to be judged. Runs whose own results are untrustworthy
(exit code 3 harness-bound, 130 interrupted) are plotted but never used as history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from harness.errors import ExitCode, InputError
from harness.report import read_json, write_text
from harness.report.html import page
from harness.report.markdown import fmt_num
from harness.report.plots import svg_text
from harness.results.rundir import SUMMARY

INDEX_PARQUET: Final = "index.parquet"
TREND_HTML: Final = "trend.html"

WINDOW: Final = 5
MIN_HISTORY: Final = 3
THRESHOLD: Final = 0.10
ERROR_RATE_MIN_DELTA: Final = 0.001
_UNTRUSTED: Final = (int(ExitCode.HARNESS_BOUND), int(ExitCode.INTERRUPTED))


@dataclass(frozen=True, slots=True)
class TrendMetric:
    """A column of the index: where it comes from in summary.json and which way is worse."""

    column: str
    label: str
    path: tuple[str, ...]
    higher_is_worse: bool = True


INDEX_METRICS: Final = (
    TrendMetric("latency_p50_ms", "latency p50 (ms)", ("latency_ms", "from_intended", "p50")),
    TrendMetric("latency_p99_ms", "latency p99 (ms)", ("latency_ms", "from_intended", "p99")),
    TrendMetric("ttft_p50_ms", "TTFT p50 (ms)", ("ttft_ms", "from_intended", "p50")),
    TrendMetric("ttft_p99_ms", "TTFT p99 (ms)", ("ttft_ms", "from_intended", "p99")),
    TrendMetric("itl_p50_ms", "ITL p50 (ms)", ("itl_ms", "p50")),
    TrendMetric("itl_p99_ms", "ITL p99 (ms)", ("itl_ms", "p99")),
    TrendMetric("error_rate", "error rate", ("error_rate",)),
    TrendMetric("tokens_per_s", "tokens/s", ("tokens", "out_per_s"), higher_is_worse=False),
)

INDEX_SCHEMA: Final = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_dir", pa.string(), nullable=False),
        pa.field("profile", pa.string()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("verdict", pa.string()),
        pa.field("exit_code", pa.int16()),
        pa.field("planned", pa.int64()),
        pa.field("ok", pa.int64()),
        pa.field("achieved_rps", pa.float64()),
        pa.field("violations", pa.int64()),
        *(pa.field(m.column, pa.float64()) for m in INDEX_METRICS),
        pa.field("regressions", pa.list_(pa.string()), nullable=False),
    ],
    metadata={"harness.index_schema_version": "1"},
)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _started(meta: dict[str, Any], run_id: str) -> datetime | None:
    for value in (meta.get("started_at"), run_id.split("-", 1)[0]):
        if not isinstance(value, str):
            continue
        for parse in (datetime.fromisoformat, lambda v: datetime.strptime(v, "%Y%m%dT%H%M%SZ")):
            try:
                t = parse(value)
            except ValueError:
                continue
            return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None


def index_row(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The index row of one run, from its summary.json (``regressions`` left empty)."""
    meta = summary.get("meta", {})
    run_id = str(meta.get("run_id") or run_dir.name)
    counts = summary.get("counts", {})
    planned = counts.get("planned")
    failed = (counts.get("error") or 0) + (counts.get("timeout") or 0)
    derived = {"error_rate": failed / planned if planned else None}
    row: dict[str, Any] = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "profile": meta.get("profile"),
        "started_at": _started(meta, run_id),
        "verdict": _get(summary, ("verdict", "result")),
        "exit_code": _get(summary, ("verdict", "exit_code")),
        "planned": planned,
        "ok": counts.get("ok"),
        "achieved_rps": _number(_get(summary, ("rate", "achieved_rps"))),
        "violations": _get(summary, ("compliance", "violations_total")),
        "regressions": [],
    }
    for m in INDEX_METRICS:
        row[m.column] = _number(derived[m.column] if m.column in derived else _get(summary, m.path))
    return row


def build_index(results_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """(index, skipped): one row per run directory under ``results_dir`` with a summary.json,
    sorted by profile and start time, regressions flagged; skipped lists the other directories."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InputError(
            f"{results_dir}: no such directory", "pass the directory that holds the run directories"
        )
    rows, skipped = [], []
    for child in sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            summary = read_json(child / SUMMARY)
        except InputError:
            summary = None
        if summary is None:
            skipped.append(child.name)
            continue
        rows.append(index_row(child, summary))
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    index = table.to_pandas(types_mapper=pd.ArrowDtype)
    index = index.sort_values(["profile", "started_at", "run_id"], kind="stable").reset_index(drop=True)
    return flag_regressions(index), skipped


def flag_regressions(
    index: pd.DataFrame, *, window: int = WINDOW, threshold: float = THRESHOLD, min_history: int = MIN_HISTORY
) -> pd.DataFrame:
    """``index`` with ``regressions`` set per the module's rule, and a ``baseline_<metric>``
    column per metric (the rolling median the run was judged against, NaN when not judged)."""
    index = index.copy()
    flags: list[list[str]] = [[] for _ in range(len(index))]
    trusted = ~index["exit_code"].astype("float64").isin(_UNTRUSTED).to_numpy()
    for m in INDEX_METRICS:
        baseline = np.full(len(index), np.nan)
        values = index[m.column].astype("float64").to_numpy(na_value=np.nan)
        for positions in index.groupby("profile", sort=False, dropna=False).indices.values():
            history: list[float] = []
            for pos in positions:  # already in start-time order
                value = values[pos]
                if len(history) >= min_history and not np.isnan(value):
                    median = float(np.median(history[-window:]))
                    baseline[pos] = median
                    worse_by = (value - median) if m.higher_is_worse else (median - value)
                    floor = ERROR_RATE_MIN_DELTA if m.column == "error_rate" else 0.0
                    if worse_by > threshold * abs(median) and worse_by > floor:
                        flags[pos].append(m.column)
                if trusted[pos] and not np.isnan(value):
                    history.append(value)
        index[f"baseline_{m.column}"] = baseline
    index["regressions"] = pd.Series(flags, index=index.index, dtype=pd.ArrowDtype(pa.list_(pa.string())))
    return index


def write_index(index: pd.DataFrame, path: Path) -> None:
    """index.parquet: the ``INDEX_SCHEMA`` columns only (the baselines are recomputed on read)."""
    table = pa.Table.from_pandas(index[INDEX_SCHEMA.names], schema=INDEX_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata(INDEX_SCHEMA.metadata)  # no pandas metadata: any reader works
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


# -- trend.html ------------------------------------------------------------------------------


def _flags(value: Any) -> set[str]:
    """The flagged metric names of an index cell (a list, an array or a missing value)."""
    if value is None or value is pd.NA:
        return set()
    return {str(v) for v in value}


def _time_labels(runs: pd.DataFrame) -> list[str]:
    """Start times as short tick labels: to the minute, or to the second when minutes repeat."""
    times = list(runs["started_at"])
    for fmt in ("%m-%d %H:%M", "%m-%d %H:%M:%S"):
        labels = [
            t.strftime(fmt) if isinstance(t, datetime) else str(r)
            for t, r in zip(times, runs["run_id"], strict=True)
        ]
        if len(set(labels)) == len(labels):
            break
    return labels


def _profile_figure(runs: pd.DataFrame, key: str) -> str:
    n = len(INDEX_METRICS)
    cols = 2
    rows = math.ceil(n / cols)
    height = 2.4 * rows
    fig = Figure(figsize=(10.0, height))  # fixed margins: a layout engine doubles the drawing time
    fig.subplots_adjust(
        left=0.06, right=0.97, bottom=0.4 / height, top=1 - 0.3 / height, hspace=0.55, wspace=0.15
    )
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    x = np.arange(len(runs))
    labels = _time_labels(runs)
    for ax, m in zip(axes, INDEX_METRICS, strict=False):
        values = runs[m.column].astype("float64").to_numpy(na_value=np.nan)
        base = runs[f"baseline_{m.column}"].astype("float64").to_numpy(na_value=np.nan)
        flagged = np.array([m.column in _flags(f) for f in runs["regressions"]], dtype=bool)
        ax.plot(x, values, marker="o", markersize=3, color="C0", linewidth=1.2, label=m.label)
        ax.plot(x, base, color="0.5", linestyle="--", linewidth=1.0, label="median of previous 5")
        if flagged.any():
            ax.plot(x[flagged], values[flagged], "x", color="C3", markersize=9, mew=2, label="regression")
        ax.set_title(m.label, fontsize="medium", loc="left")
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        finite = np.concatenate([values[~np.isnan(values)], base[~np.isnan(base)]])
        top = float(finite.max()) if finite.size else 0.0
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)  # headroom for the × markers
        step = max(1, math.ceil(len(x) / 5))
        ax.set_xticks(x[::step], labels[::step], fontsize="x-small")
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(loc="lower left", fontsize="x-small")
    return svg_text(fig, key)


def render_trend_html(index: pd.DataFrame, skipped: list[str], results_dir: Path) -> str:
    """The whole trend.html text."""
    from html import escape

    parts = [
        f"<h1>Trend of <code>{escape(str(results_dir))}</code></h1>",
        f"<p class='muted'>{len(index)} run(s); a run's metric is marked as a regression when it is "
        f"worse than the median of the previous {WINDOW} runs of the same profile by more than "
        f"{THRESHOLD:.0%} (at least {MIN_HISTORY} previous runs needed).</p>",
    ]
    if index.empty:
        parts.append("<p>No run directories with a summary.json.</p>")
    for i, (profile, group) in enumerate(index.groupby("profile", sort=True, dropna=False)):
        name = "(no profile)" if profile is None or profile is pd.NA else str(profile)
        runs = group.reset_index(drop=True)
        parts.append(f"<h2 id='profile-{i}'>{escape(name)}</h2>")
        parts.append(
            f"<figure id='trend-{i}'>{_profile_figure(runs, f'trend-{i}')}"
            f"<figcaption>Each metric across the runs of {escape(name)}, oldest first; dashed: the "
            "median it was judged against; ×: regression.</figcaption></figure>"
        )
        header = "".join(
            f"<th>{escape(h)}</th>" for h in ("started", "run", "verdict", *(m.label for m in INDEX_METRICS))
        )
        body = []
        for _, r in runs.iloc[::-1].iterrows():
            flagged = _flags(r["regressions"])
            cells = [
                escape(str(r["started_at"])[:19]),
                f"<code>{escape(str(r['run_id']))}</code>",
                escape(str(r["verdict"])),
            ]
            for m in INDEX_METRICS:
                value = r[m.column]
                text = (
                    "—"
                    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
                    else (f"{value:.2%}" if m.column == "error_rate" else fmt_num(float(value)))
                )
                cells.append(f"<span class='bad'>{text} ▲</span>" if m.column in flagged else text)
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append(f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    if skipped:
        parts.append(
            "<p class='muted'>Skipped (no summary.json; <code>harness report</code> rebuilds it): "
            + ", ".join(f"<code>{escape(s)}</code>" for s in skipped)
            + "</p>"
        )
    return page(f"harness trend — {results_dir}", "".join(parts))


def write_trend(results_dir: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Build the index of ``results_dir`` and write index.parquet and trend.html into it."""
    results_dir = Path(results_dir)
    index, skipped = build_index(results_dir)
    paths = [results_dir / INDEX_PARQUET, results_dir / TREND_HTML]
    write_index(index, paths[0])
    write_text(paths[1], render_trend_html(index, skipped, results_dir))
    return index, paths
