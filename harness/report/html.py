"""report.html: one self-contained page per run that works offline.

Everything is inline: the CSS, and every plot as an ``<svg>`` element drawn by
``harness.report.plots``. No script, no web font, no CDN, no image file: the page makes no
request at all (even the favicon is an empty ``data:`` URL), so it can be archived as a CI
artifact and opened years later.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any, Final

from harness.report.markdown import (
    PERCENTILE_KEYS,
    compliance_rules,
    fmt_num,
    fmt_observed,
    latency_rows,
    router_lines,
    verdict_of,
)
from harness.report.plots import Plot, run_plots

if TYPE_CHECKING:
    from harness.report import Run

MAX_VIOLATIONS_SHOWN: Final = 50

CSS: Final = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --pass: #1a7f37; --fail: #cf222e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1100px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; margin: 0 0 4px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600;
         background: var(--fail); } .badge.PASS { background: var(--pass); }
.muted { color: var(--muted); } .bad { color: var(--fail); font-weight: 600; } .good { color: var(--pass); }
table { border-collapse: collapse; margin: 6px 0 10px; } th, td { padding: 3px 10px;
        border-bottom: 1px solid var(--line); text-align: left; } td.n, th.n { text-align: right;
        font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
nav a { margin-right: 12px; } figure { margin: 18px 0; } figcaption { color: var(--muted); font-size: 13px; }
figure svg { width: 100%; height: auto; display: block; }
details.violations td { white-space: nowrap; } summary { cursor: pointer; margin: 6px 0; }
"""


def _table(header: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()

    def cls(i: int) -> str:
        return ' class="n"' if i in numeric else ""

    head = "".join(f"<th{cls(i)}>{escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(value: Any) -> str:
    return escape(str(value))


def _header(summary: dict[str, Any], run_id: str) -> str:
    meta = summary.get("meta", {})
    result, reasons = verdict_of(summary)
    facts = [f"profile <b>{_e(meta.get('profile', '?'))}</b>"]
    for key, label in (("policy", "policy"), ("started_at", "started"), ("seed", "seed")):
        if meta.get(key) is not None:
            facts.append(f"{label} <code>{_e(meta[key])}</code>")
    exit_code = (summary.get("verdict") or {}).get("exit_code")
    if exit_code is not None:
        facts.append(f"exit code <b>{_e(exit_code)}</b>")
    reason_html = "".join(f"<li>{_e(r)}</li>" for r in reasons)
    return (
        f'<h1><span class="badge {_e(result)}">{_e(result)}</span> run <code>{_e(run_id)}</code></h1>'
        f'<p class="muted">{" · ".join(facts)}</p>'
        + (f"<ul>{reason_html}</ul>" if reasons else '<p class="good">All checks held.</p>')
    )


def _requests(summary: dict[str, Any]) -> str:
    counts, rate = summary.get("counts", {}), summary.get("rate", {})
    cols = ["planned", "ok", "error", "timeout", "dropped", "cancelled"]
    row = [fmt_num(counts.get(c)) for c in cols] + [
        fmt_num(rate.get("achieved_rps")),
        fmt_num(rate.get("planned_rps")),
        fmt_num(summary.get("tokens", {}).get("out_per_s")),
    ]
    header = [*cols, "achieved rps", "planned rps", "tokens out/s"]
    return "<h2 id='requests'>Requests</h2>" + _table(header, [row], set(range(len(header))))


def _latency(summary: dict[str, Any]) -> str:
    rows = [
        [escape(label)] + [fmt_num(block.get(k)) for k in PERCENTILE_KEYS] + [fmt_num(block.get("count"))]
        for label, block in latency_rows(summary)
    ]
    header = ["metric (ms)", *PERCENTILE_KEYS, "count"]
    return "<h2 id='latency'>Latency</h2>" + _table(header, rows, set(range(1, len(header))))


def _errors(summary: dict[str, Any]) -> str:
    errors = summary.get("errors_by_kind") or {}
    statuses = summary.get("status_codes") or {}
    html = "<h2 id='errors'>Errors</h2>"
    if errors:
        html += _table(["error kind", "requests"], [[_e(k), fmt_num(v)] for k, v in errors.items()], {1})
    else:
        html += "<p>No errors.</p>"
    if statuses:
        html += _table(["HTTP status", "responses"], [[_e(k), fmt_num(v)] for k, v in statuses.items()], {1})
    return html


def _compliance(compliance: dict[str, Any] | None, summary: dict[str, Any]) -> str:
    html = "<h2 id='compliance'>Compliance</h2>"
    comp = compliance if compliance is not None else summary.get("compliance")
    if not comp:
        return html + "<p>No compliance judgement for this run (no compliance.json).</p>"
    verdict = str(comp.get("verdict", "?")).upper()
    css = "good" if verdict == "PASS" else "bad"
    html += (
        f"<p>Policy <code>{_e(comp.get('policy', '?'))}</code>: <span class='{css}'>{_e(verdict)}</span>, "
        f"{fmt_num(comp.get('violations_total', 0))} violation(s) of {fmt_num(comp.get('judged', 0))} "
        "served requests judged.</p>"
    )
    rules = compliance_rules(comp)
    if rules:
        html += _table(
            ["rule", "violations"],
            [[f"<code>{_e(r)}</code>", f"<span class='bad'>{n:,}</span>" if n else "0"] for r, n in rules],
            {1},
        )
    for key, label in (
        ("by_kind", "violations by kind"),
        ("served_by_cloud", "served by cloud"),
        ("attribution_sources", "attributed by"),
    ):
        values = comp.get(key) or {}
        if values:
            html += f"<p>{label}: " + ", ".join(f"{_e(k)} {fmt_num(v)}" for k, v in values.items()) + "</p>"
    recon = comp.get("reconciliation") or {}
    if recon.get("ledger_available"):
        state = "consistent" if recon.get("consistent") else "<span class='bad'>inconsistent</span>"
        html += (
            f"<p>Ledger reconciliation: {state} (sent {fmt_num(recon.get('sent'))}, ledger rows "
            f"{fmt_num(recon.get('ledger_rows'))}, sent but not in ledger "
            f"{fmt_num(recon.get('sent_not_in_ledger'))}, "
            f"in ledger but not sent {fmt_num(recon.get('in_ledger_not_sent'))}, served more than once "
            f"{fmt_num(recon.get('served_more_than_once'))}).</p>"
        )
    st = comp.get("router_self_test")
    if st:
        rows = [
            [f"<code>{_e(n)}</code>", fmt_num(x["applied"]), fmt_num(x["reported"]), _e(x["expected_kind"])]
            for n, x in (st.get("switches") or {}).items()
            if x.get("applied") or x.get("reported")
        ]
        prose = [line for line in router_lines(st) if line and not line.startswith("|")]
        html += "<h3>Reference router</h3>" + "".join(
            f"<p>{_e(line.replace('**', ''))}</p>" for line in prose
        )
        if rows:
            html += _table(["switch", "injected", "reported", "as"], rows, {1, 2})
    events = (summary.get("meta") or {}).get("fleet_events") or []
    if events:
        html += (
            "<p>Fleet events: "
            + "; ".join(
                f"{_e(e.get('endpoint'))} at {fmt_num(e.get('applied_s'), 2)} s: "
                + ", ".join(f"{_e(k)} {_e(v)}" for k, v in e.items() if k in ("outage", "faults"))
                for e in events
            )
            + "</p>"
        )
    listed = comp.get("violations") or []
    if listed:
        shown = listed[:MAX_VIOLATIONS_SHOWN]
        cols = ("request_id", "kind", "rule", "endpoint", "served_cloud", "served_region", "attribution")
        total = int(comp.get("violations_total", len(listed)))
        what = f"first {len(shown)} of {total:,}" if total > len(shown) else f"all {total:,}"
        table = _table(list(cols), [[f"<code>{_e(v.get(c, ''))}</code>" for c in cols] for v in shown])
        html += f"<details class='violations'><summary>Violating requests ({what})</summary>{table}</details>"
    return html


def _thresholds(summary: dict[str, Any]) -> str:
    html = "<h2 id='thresholds'>Thresholds</h2>"
    thresholds = summary.get("thresholds")
    if not thresholds:
        return html + "<p>No thresholds were evaluated for this run.</p>"
    rows = []
    for t in thresholds:
        unit = str(t.get("unit", ""))
        builtin = " <span class='muted'>built-in</span>" if t.get("builtin") else ""
        result = "<span class='good'>pass</span>" if t.get("passed") else "<span class='bad'>FAIL</span>"
        if not t.get("passed") and t.get("reason"):
            result += f" <span class='muted'>{_e(t['reason'])}</span>"
        rows.append(
            [
                f"<code>{_e(t.get('expression', '?'))}</code>{builtin}",
                _e(fmt_observed(t.get("observed"), unit)),
                _e(fmt_observed(t.get("limit"), unit)) if "limit" in t else "—",
                result,
            ]
        )
    return html + _table(["threshold", "observed", "limit", "result"], rows, {1, 2})


def _validity(summary: dict[str, Any]) -> str:
    validity = summary.get("validity")
    if not validity:
        return ""
    if validity.get("harness_bound"):
        state = "<span class='bad'>harness-bound</span>: " + _e("; ".join(validity.get("reasons") or []))
    else:
        state = "<span class='good'>not harness-bound</span>"
    return (
        "<h2 id='validity'>Validity</h2>"
        f"<p>{state}. Schedule lag p99 {fmt_num(validity.get('schedule_lag_p99_ms'))} ms, "
        f"event-loop lag p99 {fmt_num(validity.get('event_loop_lag_p99_ms'))} ms.</p>"
    )


def _figure(plot: Plot) -> str:
    return (
        f"<figure id='{_e(plot.key)}'><h3>{_e(plot.title)}</h3>{plot.svg}"
        f"<figcaption>{_e(plot.caption)}</figcaption></figure>"
    )


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document around ``body``."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><link rel='icon' href='data:,'><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def render_html(run: Run) -> str:
    """The whole report.html text of a run (its summary should be freshly re-summarized)."""
    summary = run.summary
    plots = run_plots(run.records, run.ledger, run.compliance)
    nav = " ".join(
        f"<a href='#{k}'>{t}</a>"
        for k, t in (
            ("requests", "requests"),
            ("latency", "latency"),
            ("errors", "errors"),
            ("compliance", "compliance"),
            ("thresholds", "thresholds"),
            ("plots", "plots"),
        )
    )
    body = (
        _header(summary, run.run_id)
        + f"<nav>{nav}</nav>"
        + _requests(summary)
        + _latency(summary)
        + _errors(summary)
        + _compliance(run.compliance, summary)
        + _thresholds(summary)
        + _validity(summary)
        + "<h2 id='plots'>Plots</h2>"
        + "".join(_figure(p) for p in plots)
        + f"<p class='muted'>Generated by <code>harness report</code> from the files of run "
        f"<code>{_e(run.run_id)}</code> alone.</p>"
    )
    return page(f"harness report — {run.run_id}", body)
