"""The plots of one run: pure series functions over records, and figures drawn as SVG text.

Every ``*_series`` function is a pure function of the records (and ledger or compliance) and
returns a DataFrame, so tests can check the numbers; every ``plot_*`` function draws one figure
with matplotlib's object API (no pyplot, no GUI backend, no global state) and returns a ``Plot``
whose ``svg`` is ready to inline in HTML: no XML prolog, text kept as text, ids salted per plot
so several SVGs on one page never share an id, and no date, so the same run draws the same bytes.

Time axes are seconds from the run epoch (record times are ns offsets from it). Windowed series
use 1 s windows, widened to whole seconds so one plot has at most ``MAX_WINDOWS`` windows.
Percentiles come from ``LatencyHistogram`` (the summary's definition), one histogram per window.
A request is placed in time by:

  latency/TTFT percentiles, planned rate, dropped     intended_ns (its planned send time)
  achieved rate, traffic share, violations            sent_ns
  completed rate, errors                              done_ns (sent_ns, intended_ns if missing)
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import matplotlib
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from harness.metrics.histogram import LatencyHistogram
from harness.results import derive

MAX_WINDOWS: Final = 600
MAX_STEPS: Final = 1000  # samples of the in-flight step function
SPECTRUM_POINTS: Final = 160
_NS_PER_S: Final = 1e9
_FAILED: Final = ("error", "timeout", "cancelled")


@dataclass(frozen=True, slots=True)
class Plot:
    """One figure of a report: an anchor key, a title, a caption saying what is shown, the SVG."""

    key: str
    title: str
    caption: str
    svg: str


# -- series ----------------------------------------------------------------------------------


def _seconds(df: pd.DataFrame, column: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    values, valid = derive.int_column(df, column)
    return values / _NS_PER_S, valid


def _first_of(df: pd.DataFrame, *columns: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Seconds from the first non-null column of each row, in the given order of preference."""
    out = np.zeros(len(df), dtype=np.float64)
    found = np.zeros(len(df), dtype=bool)
    for column in columns:
        t, valid = _seconds(df, column)
        take = valid & ~found
        out[take] = t[take]
        found |= take
    return out, found


def window_s(records: pd.DataFrame) -> float:
    """Window width in seconds: 1, or the whole number of seconds that keeps ``MAX_WINDOWS`` windows."""
    t, valid = _first_of(records, "done_ns", "sent_ns", "intended_ns")
    if not valid.any():
        return 1.0
    return float(max(1, math.ceil(float(t[valid].max()) / MAX_WINDOWS)))


def _windows(records: pd.DataFrame, width_s: float) -> pd.Index:
    """Start times (s) of every window from 0 to the last moment any record has."""
    t, valid = _first_of(records, "done_ns", "sent_ns", "intended_ns")
    last = float(t[valid].max()) if valid.any() else 0.0
    n = math.floor(max(last, 0.0) / width_s) + 1
    return pd.Index(np.arange(n) * width_s, name="t_s")


def _bucket(t_s: npt.NDArray[np.float64], width_s: float) -> npt.NDArray[np.float64]:
    return np.floor(t_s / width_s) * width_s


def percentiles_series(records: pd.DataFrame, width_s: float = 1.0) -> pd.DataFrame:
    """p50 and p99 of latency and TTFT (both from the intended time, ms) per window of intended time.

    Columns ``latency_p50, latency_p99, ttft_p50, ttft_p99``; NaN where a window has no value.
    """
    intended, _ = _seconds(records, "intended_ns")
    columns: dict[str, pd.Series] = {}
    for name, values in (
        ("latency", derive.latency_ms(records, "intended")),
        ("ttft", derive.ttft_ms(records, "intended")),
    ):
        pos = records.index.get_indexer(values.index)
        buckets = _bucket(intended[pos], width_s)
        p50: dict[float, float | None] = {}
        p99: dict[float, float | None] = {}
        for start, group in pd.Series(values.to_numpy(), index=buckets).groupby(level=0, sort=True):
            pct = LatencyHistogram.from_ms(group.to_numpy()).percentiles_ms((50.0, 99.0))
            p50[float(start)], p99[float(start)] = pct["p50"], pct["p99"]
        columns[f"{name}_p50"] = pd.Series(p50, dtype=np.float64)
        columns[f"{name}_p99"] = pd.Series(p99, dtype=np.float64)
    frame = pd.DataFrame(columns).reindex(_windows(records, width_s))
    return frame.astype(np.float64)


def _count_per_window(t_s: npt.NDArray[np.float64], windows: pd.Index, width_s: float) -> pd.Series:
    counts = pd.Series(_bucket(t_s, width_s)).value_counts()
    return counts.reindex(windows, fill_value=0).astype(np.int64)


def rate_series(records: pd.DataFrame, width_s: float = 1.0) -> pd.DataFrame:
    """Requests per second per window: ``planned`` (by intended time), ``achieved`` (sent, by sent
    time) and ``completed`` (ok, by done time)."""
    windows = _windows(records, width_s)
    intended, _ = _seconds(records, "intended_ns")
    sent, sent_ok = _seconds(records, "sent_ns")
    done, done_ok = _seconds(records, "done_ns")
    ok = derive.ok_mask(records)
    return pd.DataFrame(
        {
            "planned": _count_per_window(intended, windows, width_s) / width_s,
            "achieved": _count_per_window(sent[sent_ok], windows, width_s) / width_s,
            "completed": _count_per_window(done[ok & done_ok], windows, width_s) / width_s,
        }
    )


def in_flight_series(records: pd.DataFrame, max_steps: int = MAX_STEPS) -> pd.DataFrame:
    """Requests in flight (sent, not yet done) sampled on a regular grid of at most ``max_steps``.

    ``in_flight(t) = #{sent_ns <= t} - #{done_ns <= t}`` over sent requests; a sent request with
    no done time counts until the end. Columns ``t_s, in_flight``.
    """
    sent, sent_ok = _seconds(records, "sent_ns")
    done, done_ok = _seconds(records, "done_ns")
    if not sent_ok.any():
        return pd.DataFrame({"t_s": [0.0], "in_flight": [0]})
    starts = np.sort(sent[sent_ok])
    ends = np.sort(np.where(done_ok, done, np.inf)[sent_ok])
    last = float(ends[np.isfinite(ends)].max()) if np.isfinite(ends).any() else float(starts[-1])
    step = max(0.001, last / max_steps)
    grid = np.arange(0.0, last + step, step)
    n = np.searchsorted(starts, grid, side="right") - np.searchsorted(ends, grid, side="right")
    return pd.DataFrame({"t_s": grid, "in_flight": n.astype(np.int64)})


def _kinds_per_window(
    t_s: npt.NDArray[np.float64], kinds: pd.Series, windows: pd.Index, width_s: float
) -> pd.DataFrame:
    if len(kinds) == 0:
        return pd.DataFrame(index=windows)
    table = pd.crosstab(_bucket(t_s, width_s), kinds.to_numpy(dtype=object))
    table.columns = [str(c) for c in table.columns]
    return table.reindex(windows, fill_value=0).astype(np.int64)


def errors_series(records: pd.DataFrame, width_s: float = 1.0) -> pd.DataFrame:
    """Failed requests (error, timeout, cancelled) per window of done time, one column per error kind."""
    mask = records["outcome"].isin(_FAILED).to_numpy(dtype=bool, na_value=False)
    failed = records[mask]
    t, _ = _first_of(failed, "done_ns", "sent_ns", "intended_ns")
    kinds = failed["error_kind"].astype(object).where(failed["error_kind"].notna(), failed["outcome"])
    return _kinds_per_window(t, kinds, _windows(records, width_s), width_s)


def dropped_series(records: pd.DataFrame, width_s: float = 1.0) -> pd.DataFrame:
    """Dropped arrivals per window of intended time, one column per reason (error kind)."""
    mask = (records["outcome"] == "dropped").to_numpy(dtype=bool, na_value=False)
    dropped = records[mask]
    t, _ = _seconds(dropped, "intended_ns")
    kinds = dropped["error_kind"].astype(object).fillna("dropped")
    return _kinds_per_window(t, kinds, _windows(records, width_s), width_s)


def served_where(records: pd.DataFrame, ledger: pd.DataFrame | None) -> pd.DataFrame:
    """Cloud and region that served each served request: ledger first, then x-mock-cloud, then the
    fingerprint. Columns ``cloud, region`` (null when unknown), only rows that reached a server."""
    cloud = records["fp_cloud"].astype(object)
    region = records["fp_region"].astype(object)
    for c, r in (("mock_cloud", "mock_region"),):
        has = records[c].notna()
        cloud = cloud.where(~has, records[c].astype(object))
        region = region.where(~has, records[r].astype(object))
    served = (records["status"] > 0).to_numpy(dtype=bool, na_value=False)
    if ledger is not None and len(ledger):
        first = (
            ledger.dropna(subset=["request_id"])
            .groupby("request_id", sort=False)[["cloud", "region"]]
            .first()
        )
        joined = first.reindex(records["request_id"].to_numpy())
        in_ledger = joined["cloud"].notna().to_numpy()
        cloud = cloud.where(~in_ledger, joined["cloud"].to_numpy(dtype=object))
        region = region.where(~in_ledger, joined["region"].to_numpy(dtype=object))
        served |= in_ledger
    return pd.DataFrame({"cloud": cloud, "region": region})[served]


def traffic_share_series(
    records: pd.DataFrame, ledger: pd.DataFrame | None, width_s: float = 1.0
) -> pd.DataFrame:
    """Fraction of served requests per ``cloud/region`` per window of sent time (rows sum to 1)."""
    where = served_where(records, ledger)
    windows = _windows(records, width_s)
    if where.empty:
        return pd.DataFrame(index=windows)
    rows = records.loc[where.index]
    t, _ = _first_of(rows, "sent_ns", "intended_ns")
    labels = where["cloud"].fillna("unknown") + "/" + where["region"].fillna("?")
    counts = _kinds_per_window(t, labels, windows, width_s)
    totals = counts.sum(axis=1).replace(0, np.nan)
    return counts.div(totals, axis=0).fillna(0.0)


def violations_series(records: pd.DataFrame, compliance: dict[str, Any] | None) -> pd.DataFrame:
    """The listed violations of compliance.json joined to their records' sent times.

    Columns ``t_s, request_id, kind, rule`` sorted by time; a violation whose request is not in
    the records (should not happen) is placed at its intended time, or dropped if unknown.
    """
    listed = (compliance or {}).get("violations") or []
    if not listed:
        return pd.DataFrame({"t_s": [], "request_id": [], "kind": [], "rule": []})
    v = pd.DataFrame(listed)[["request_id", "kind", "rule"]]
    t, found = _first_of(records, "sent_ns", "intended_ns")
    times = pd.Series(t[found], index=records["request_id"].to_numpy(dtype=object)[found])
    times = times[~times.index.duplicated()]
    v["t_s"] = times.reindex(v["request_id"].to_numpy()).to_numpy()
    v = v.dropna(subset=["t_s"])
    return v[["t_s", "request_id", "kind", "rule"]].sort_values("t_s", kind="stable").reset_index(drop=True)


def spectrum_series(values_ms: npt.ArrayLike, points: int = SPECTRUM_POINTS) -> pd.DataFrame:
    """HDR percentile spectrum: value (ms) at percentile q for ``x = 1/(1-q)`` log-spaced from 1 to n.

    Beyond ``x = n`` there is no information (the largest value), so the axis stops there (at
    least at x = 10, i.e. p90). Columns ``percentile, x, value_ms``.
    """
    arr = np.asarray(values_ms, dtype=np.float64)
    hist = LatencyHistogram.from_ms(arr)
    if hist.count == 0:
        return pd.DataFrame({"percentile": [], "x": [], "value_ms": []})
    x = np.unique(np.logspace(0.0, math.log10(max(10, hist.count)), points))
    pct = 100.0 * (1.0 - 1.0 / x)
    values = list(hist.percentiles_ms(pct).values())
    return pd.DataFrame({"percentile": pct, "x": x, "value_ms": np.array(values, dtype=np.float64)})


# -- drawing ---------------------------------------------------------------------------------


def _figure(height_in: float = 3.0) -> tuple[Figure, Any]:
    # fixed margins: a layout engine would lay the text out twice, and drawing dominates report time
    fig = Figure(figsize=(9.0, height_in))
    fig.subplots_adjust(left=0.085, right=0.985, bottom=0.5 / height_in, top=1 - 0.12 / height_in)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def svg_text(fig: Figure, key: str) -> str:
    """The figure as an inline ``<svg>`` element: ids salted with ``key``, text as text, no date."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"harness-{key}", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return _prefix_ids(text[text.index("<svg") :].strip(), key)


_ID = re.compile(r'\bid="([^"]+)"')


def _prefix_ids(svg: str, key: str) -> str:
    """Prefix every id of the SVG, and every reference to one, with ``key``.

    matplotlib names its groups ``figure_1``, ``axes_1``… in every figure; inlined side by side,
    those ids would repeat within one HTML page.
    """
    ids = set(_ID.findall(svg))
    if not ids:
        return svg
    names = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    ref = re.compile(rf'(\bid="|href="#|url\(#)({names})(?=[")])')
    return ref.sub(lambda m: f"{m.group(1)}{key}-{m.group(2)}", svg)


def _nothing(ax: Any, message: str, x_max: float = 1e12) -> None:
    """Draw a flat zero line with a note, so an empty plot still reads as a plot (the axes set
    the visible x range)."""
    ax.plot([0.0, x_max], [0, 0], color="0.6", linewidth=1.0, label=message)
    ax.set_ylim(-0.05, 1.0)
    ax.text(0.5, 0.55, message, transform=ax.transAxes, ha="center", color="0.4")


def _end_s(records: pd.DataFrame, width_s: float) -> float:
    """Right edge of the time axes: the end of the last window, shared by every time plot."""
    return float(_windows(records, width_s)[-1]) + width_s


def _time_axis(ax: Any, end_s: float, width_s: float | None = None) -> None:
    label = "seconds since run start"
    if width_s is not None:
        label += f" ({width_s:g} s windows)"
    ax.set_xlabel(label)
    ax.set_xlim(0, end_s)


def _edges(index: pd.Index, width_s: float) -> npt.NDArray[np.float64]:
    starts = index.to_numpy(dtype=np.float64)
    return np.append(starts, starts[-1] + width_s) if starts.size else np.array([0.0, width_s])


def _extend(values: pd.Series) -> npt.NDArray[np.float64]:
    """Values for ``_edges``: the last one repeated so a post-step reaches the window's end."""
    arr = values.to_numpy(dtype=np.float64)
    return np.append(arr, arr[-1]) if arr.size else np.zeros(2)


def plot_percentiles(records: pd.DataFrame, width_s: float) -> Plot:
    series = percentiles_series(records, width_s)
    fig, ax = _figure()
    centres = series.index.to_numpy(dtype=np.float64) + width_s / 2
    for column, color, style, label in (
        ("latency_p50", "C0", "-", "latency p50"),
        ("latency_p99", "C0", "--", "latency p99"),
        ("ttft_p50", "C1", "-", "TTFT p50"),
        ("ttft_p99", "C1", "--", "TTFT p99"),
    ):
        ax.plot(centres, series[column], color=color, linestyle=style, marker=".", markersize=4, label=label)
    top = float(np.nanmax(series.to_numpy())) if series.notna().any().any() else 1.0
    ax.set_ylim(0, top * 1.3)  # headroom for the legend
    ax.set_ylabel("ms (from intended send)")
    _time_axis(ax, _end_s(records, width_s), width_s)
    ax.legend(loc="upper center", fontsize="small", ncols=4)
    return Plot(
        "percentiles-over-time",
        "Latency and TTFT percentiles over time",
        "p50 and p99 per window of planned send time, measured from the planned send time "
        "(so harness or queueing delay shows up as latency).",
        svg_text(fig, "percentiles-over-time"),
    )


def plot_rate(records: pd.DataFrame, width_s: float) -> Plot:
    series = rate_series(records, width_s)
    edges = _edges(series.index, width_s)
    fig, ax = _figure()
    for column, color, style, label in (
        ("planned", "0.45", "--", "planned"),
        ("achieved", "C0", "-", "achieved (sent)"),
        ("completed", "C2", "-", "completed ok"),
    ):
        ax.step(edges, _extend(series[column]), where="post", color=color, linestyle=style, label=label)
    top = float(series.to_numpy().max()) if series.size else 1.0
    ax.set_ylim(0, max(top, 1.0) * 1.3)
    ax.set_ylabel("requests / s")
    _time_axis(ax, float(edges[-1]), width_s)
    ax.legend(loc="upper center", fontsize="small", ncols=3)
    return Plot(
        "rate-over-time",
        "Achieved vs planned rate",
        "Planned arrivals by intended time, sent requests by send time, ok completions by done time. "
        "The last window is usually partial: it holds the tail of completions.",
        svg_text(fig, "rate-over-time"),
    )


def plot_in_flight(records: pd.DataFrame, width_s: float) -> Plot:
    series = in_flight_series(records)
    fig, ax = _figure()
    ax.plot(series["t_s"], series["in_flight"], color="C4", linewidth=1.0, label="in flight")
    ax.fill_between(series["t_s"], series["in_flight"], color="C4", alpha=0.2, linewidth=0)
    ax.set_ylabel("requests in flight")
    ax.set_ylim(bottom=0)
    _time_axis(ax, _end_s(records, width_s))
    return Plot(
        "in-flight",
        "Requests in flight",
        "Sent and not yet done, from each request's sent and done times.",
        svg_text(fig, "in-flight"),
    )


def _stacked_counts(ax: Any, table: pd.DataFrame, width_s: float, empty: str) -> None:
    if table.shape[1] == 0 or int(table.to_numpy().sum()) == 0:
        _nothing(ax, empty)
        return
    bottom = np.zeros(len(table))
    starts = table.index.to_numpy(dtype=np.float64)
    for i, column in enumerate(table.columns):
        values = table[column].to_numpy(dtype=np.float64)
        color = f"C{(i + 3) % 10}"
        ax.bar(starts, values, width=width_s, bottom=bottom, align="edge", color=color, label=column)
        bottom += values
    ax.set_ylim(0, float(bottom.max()) * 1.3)
    ax.set_ylabel(f"requests per {width_s:g} s")
    ax.legend(loc="upper center", fontsize="small", ncols=4)


def plot_errors(records: pd.DataFrame, width_s: float) -> Plot:
    fig, ax = _figure()
    _stacked_counts(ax, errors_series(records, width_s), width_s, "no failed requests")
    _time_axis(ax, _end_s(records, width_s), width_s)
    return Plot(
        "errors-over-time",
        "Errors by kind over time",
        "Requests that ended in error, timeout or cancellation, by error kind, per window of done time.",
        svg_text(fig, "errors-over-time"),
    )


def plot_dropped(records: pd.DataFrame, width_s: float) -> Plot:
    fig, ax = _figure()
    _stacked_counts(ax, dropped_series(records, width_s), width_s, "no dropped arrivals")
    _time_axis(ax, _end_s(records, width_s), width_s)
    return Plot(
        "dropped-over-time",
        "Dropped arrivals over time",
        "Planned arrivals the harness could not start (in-flight cap or lag budget), by intended time.",
        svg_text(fig, "dropped-over-time"),
    )


def plot_traffic_share(records: pd.DataFrame, ledger: pd.DataFrame | None, width_s: float) -> Plot:
    share = traffic_share_series(records, ledger, width_s)
    share = share[share.sum(axis=1) > 0]  # windows where something was sent
    fig, ax = _figure()
    if share.empty:
        _nothing(ax, "no request reached a server")
    else:
        order = share.sum().sort_values(ascending=False).index
        edges = _edges(share.index, width_s)
        ax.stackplot(edges, [_extend(share[c]) for c in order], labels=list(order), step="post", alpha=0.85)
        ax.set_ylim(0, 1.25)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.legend(loc="upper center", fontsize="small", ncols=4)
    ax.set_ylabel("share of served requests")
    _time_axis(ax, _end_s(records, width_s), width_s)
    source = "mock ledger" if ledger is not None else "response headers"
    return Plot(
        "traffic-share",
        "Traffic share by cloud/region",
        f"Where each served request was hosted (cloud/region, from the {source}), per window of send time.",
        svg_text(fig, "traffic-share"),
    )


def plot_violations(records: pd.DataFrame, compliance: dict[str, Any] | None, width_s: float) -> Plot:
    v = violations_series(records, compliance)
    end_s = _end_s(records, width_s)
    fig, ax = _figure()
    total = int((compliance or {}).get("violations_total", len(v)))
    if v.empty:
        _nothing(ax, "no routing violations" if compliance else "no compliance.json")
    else:
        top = 1
        for i, (kind, group) in enumerate(v.groupby("kind", sort=True)):
            color = f"C{(i + 3) % 10}"
            n = len(group)
            top = max(top, n)
            ax.step(
                np.concatenate([[0.0], group["t_s"].to_numpy(), [end_s]]),
                np.concatenate([[0], np.arange(1, n + 1), [n]]),
                where="post",
                color=color,
                label=f"{kind}: cumulative",
            )
            ax.plot(
                group["t_s"], np.zeros(n), "|", color=color, markersize=14, label=f"{kind}: each violation"
            )
        ax.set_ylim(-0.05 * top, top * 1.3)
        ax.set_ylabel("violations")
        ax.legend(loc="upper left", fontsize="small")
    _time_axis(ax, end_s)
    note = f" Only the first {len(v)} of {total} are listed in compliance.json." if total > len(v) else ""
    return Plot(
        "violations",
        "Routing violations over time",
        "Each violation in compliance.json at its request's send time (ticks), and the running count "
        "per kind." + note,
        svg_text(fig, "violations"),
    )


def _spectrum_axis(ax: Any, x_max: float) -> None:
    ax.set_xscale("log")
    ticks = [x for x in (1, 2, 10, 100, 1000, 1e4, 1e5, 1e6, 1e7) if x <= max(x_max, 10) * 1.0001]
    labels = {1: "0%", 2: "50%", 10: "90%", 100: "99%", 1000: "99.9%", 1e4: "99.99%", 1e5: "99.999%"}
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: labels.get(x, f"{100 * (1 - 1 / x):.5g}%")))
    ax.set_xlabel("percentile (axis is 1/(1-q), log scale)")
    ax.set_xlim(1, max(x_max, 10))


def plot_spectrum(records: pd.DataFrame, metric: str) -> Plot:
    fn = derive.latency_ms if metric == "latency" else derive.ttft_ms
    label = "Latency" if metric == "latency" else "TTFT"
    fig, ax = _figure(3.4)
    x_max = 10.0
    drawn = False
    views: tuple[tuple[derive.Origin, str, str], ...] = (("intended", "C0", "-"), ("sent", "C1", "--"))
    for origin, color, style in views:
        spec = spectrum_series(fn(records, origin))
        if spec.empty:
            continue
        drawn = True
        x_max = max(x_max, float(spec["x"].max()))
        ax.plot(spec["x"], spec["value_ms"], color=color, linestyle=style, label=f"from {origin} send time")
    if not drawn:
        _nothing(ax, f"no {'latency' if metric == 'latency' else 'TTFT'} values", 10.0)
    else:
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower right", fontsize="small")
    _spectrum_axis(ax, x_max)
    ax.set_ylabel(f"{label} (ms)")
    key = f"{metric}-spectrum"
    return Plot(
        key,
        f"{label} percentile spectrum",
        "HDR percentile spectrum: the value at each percentile, from the intended send time "
        "(coordinated-omission safe) and from the actual send time; the gap is time spent waiting "
        "for the harness.",
        svg_text(fig, key),
    )


def run_plots(
    records: pd.DataFrame, ledger: pd.DataFrame | None, compliance: dict[str, Any] | None
) -> list[Plot]:
    """Every plot of the run report, in page order."""
    width = window_s(records)
    return [
        plot_percentiles(records, width),
        plot_rate(records, width),
        plot_in_flight(records, width),
        plot_errors(records, width),
        plot_dropped(records, width),
        plot_traffic_share(records, ledger, width),
        plot_violations(records, compliance, width),
        plot_spectrum(records, "latency"),
        plot_spectrum(records, "ttft"),
    ]
