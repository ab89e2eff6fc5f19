"""summary.md: the run's verdict and key numbers as Markdown for a CI job page.

GitHub-flavoured Markdown tables only (no HTML), so it renders on GitHub step summaries, GitLab
and most CI job pages. The helpers that pick and format the numbers are shared with the HTML
report so both say the same thing.
"""

from __future__ import annotations

from typing import Any, Final

PERCENTILE_KEYS: Final = ("p50", "p90", "p99", "p99.9", "mean", "max")


def latency_rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, stats block) of every latency-like metric of the summary, in display order."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for label, path in (
        ("latency (from intended)", ("latency_ms", "from_intended")),
        ("latency (from sent)", ("latency_ms", "from_sent")),
        ("TTFT (from intended)", ("ttft_ms", "from_intended")),
        ("TTFT (from sent)", ("ttft_ms", "from_sent")),
        ("inter-token latency", ("itl_ms",)),
        ("time per output token", ("tpot_ms",)),
        ("schedule lag", ("schedule_lag_ms",)),
    ):
        block: Any = summary
        for key in path:
            block = block.get(key) if isinstance(block, dict) else None
        if isinstance(block, dict):
            rows.append((label, block))
    return rows


def fmt_num(value: Any, digits: int = 1) -> str:
    """A number with thousands separators, ``—`` for a missing one."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def fmt_observed(value: Any, unit: str = "") -> str:
    """A threshold's observed value or limit in its summary.json unit (``ms``, ``fraction``,
    ``count``, ``rps``, ``tokens/s``) as the gate prints it: ``912.3 ms``, ``0.42%``, ``17``."""
    if value is None:
        return "no data"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if unit == "ms":
        return f"{value:,.1f} ms" if value >= 10 else f"{value:.3g} ms"
    if unit == "fraction":
        return f"{value * 100:.3g}%"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:,.1f} {unit}" if unit else f"{value:.4g}"


def verdict_of(summary: dict[str, Any]) -> tuple[str, list[str]]:
    """(PASS/FAIL/INTERRUPTED/UNKNOWN, reasons) from the summary's verdict section."""
    verdict = summary.get("verdict") or {}
    return str(verdict.get("result") or "UNKNOWN"), [str(r) for r in verdict.get("reasons") or []]


def compliance_rules(compliance: dict[str, Any]) -> list[tuple[str, int]]:
    """(rule id, violations) for every rule of the policy in policy order, then any other rule
    (e.g. ``(default)``) that has violations."""
    by_rule: dict[str, int] = {str(k): int(v) for k, v in (compliance.get("by_rule") or {}).items()}
    ordered = [str(r) for r in compliance.get("rules") or []]
    ordered += [r for r in by_rule if r not in ordered]
    return [(rule, by_rule.get(rule, 0)) for rule in ordered]


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    aligns = [("---:" if a == "r" else "---") for a in (align or "l" * len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render_markdown(summary: dict[str, Any], compliance: dict[str, Any] | None) -> str:
    """The whole summary.md text."""
    meta = summary.get("meta", {})
    result, reasons = verdict_of(summary)
    lines = [f"# {result} — run `{meta.get('run_id', '?')}`", ""]
    facts = [f"profile **{meta.get('profile', '?')}**"]
    if meta.get("policy"):
        facts.append(f"policy `{meta['policy']}`")
    if meta.get("started_at"):
        facts.append(f"started {meta['started_at']}")
    if "exit_code" in (summary.get("verdict") or {}):
        facts.append(f"exit code {summary['verdict']['exit_code']}")
    lines += [" · ".join(facts), ""]
    lines += [f"- {r}" for r in reasons] or ["All checks held."]

    counts, rate = summary.get("counts", {}), summary.get("rate", {})
    lines += ["", "## Requests", ""]
    cols = ["planned", "ok", "error", "timeout", "dropped", "cancelled"]
    lines += _table(
        [*cols, "achieved rps", "planned rps", "tokens out/s"],
        [
            [fmt_num(counts.get(c)) for c in cols]
            + [
                fmt_num(rate.get("achieved_rps")),
                fmt_num(rate.get("planned_rps")),
                fmt_num(summary.get("tokens", {}).get("out_per_s")),
            ]
        ],
        "r" * (len(cols) + 3),
    )

    lines += ["", "## Latency (ms)", ""]
    lines += _table(
        ["metric", *PERCENTILE_KEYS, "count"],
        [
            [label] + [fmt_num(block.get(k)) for k in PERCENTILE_KEYS] + [fmt_num(block.get("count"))]
            for label, block in latency_rows(summary)
        ],
        "l" + "r" * (len(PERCENTILE_KEYS) + 1),
    )

    errors = summary.get("errors_by_kind") or {}
    lines += ["", "## Errors by kind", ""]
    if errors:
        lines += _table(["kind", "requests"], [[k, fmt_num(v)] for k, v in errors.items()], "lr")
    else:
        lines.append("No errors.")

    lines += ["", "## Compliance", ""]
    lines += _compliance_lines(compliance if compliance is not None else summary.get("compliance"))

    lines += ["", "## Thresholds", ""]
    thresholds = summary.get("thresholds")
    if thresholds:
        lines += _table(
            ["threshold", "observed", "limit", "result"],
            [
                [
                    f"`{t.get('expression', '?')}`" + (" (built-in)" if t.get("builtin") else ""),
                    fmt_observed(t.get("observed"), str(t.get("unit", ""))),
                    fmt_observed(t.get("limit"), str(t.get("unit", ""))) if "limit" in t else "—",
                    "pass" if t.get("passed") else "**FAIL**",
                ]
                for t in thresholds
            ],
            "lrrl",
        )
    else:
        lines.append("No thresholds were evaluated for this run.")

    validity = summary.get("validity")
    if validity:
        lines += ["", "## Validity", ""]
        bound = (
            "**yes**: " + "; ".join(validity.get("reasons") or []) if validity.get("harness_bound") else "no"
        )
        lines.append(
            f"Harness-bound: {bound}. Schedule lag p99 {fmt_num(validity.get('schedule_lag_p99_ms'))} ms, "
            f"event-loop lag p99 {fmt_num(validity.get('event_loop_lag_p99_ms'))} ms."
        )
    lines += ["", "_Regenerate with `harness report <run dir>`; plots are in report.html._", ""]
    return "\n".join(lines)


def _compliance_lines(compliance: dict[str, Any] | None) -> list[str]:
    if not compliance:
        return ["No compliance judgement for this run (no compliance.json)."]
    lines = [
        f"Policy `{compliance.get('policy', '?')}`: **{str(compliance.get('verdict', '?')).upper()}**, "
        f"{fmt_num(compliance.get('violations_total', 0))} violation(s) of "
        f"{fmt_num(compliance.get('judged', 0))} served requests judged.",
        "",
    ]
    rules = compliance_rules(compliance)
    if rules:
        lines += _table(
            ["rule", "violations"], [[f"`{r}`", fmt_num(n) if n else "0"] for r, n in rules], "lr"
        )
        lines.append("")
    by_kind = compliance.get("by_kind") or {}
    if by_kind:
        lines.append("By kind: " + ", ".join(f"{k} {v}" for k, v in by_kind.items()) + ".")
    served = compliance.get("served_by_cloud") or {}
    if served:
        lines.append("Served by cloud: " + ", ".join(f"{k} {v}" for k, v in served.items()) + ".")
    lines += router_lines(compliance.get("router_self_test"))
    return lines


def router_lines(st: dict[str, Any] | None) -> list[str]:
    """The reference router's self-test: its injections against the judgement, and failovers."""
    if not st:
        return []
    state = "consistent" if st.get("consistent") else "**INCONSISTENT**"
    lines = ["", f"Reference router self-test: {state} (its injection log against the judgement)."]
    rows = [
        [f"`{name}`", fmt_num(s["applied"]), fmt_num(s["reported"]), f"`{s['expected_kind']}`"]
        for name, s in (st.get("switches") or {}).items()
        if s.get("applied") or s.get("reported")
    ]
    if rows:
        lines += ["", *_table(["switch", "injected", "reported", "as"], rows, "lrrl"), ""]
    if st.get("unexplained_violations"):
        lines.append(f"Violations no injection explains: {fmt_num(st['unexplained_violations'])}.")
    if st.get("failovers"):
        where = ", ".join(f"{k} {v}" for k, v in (st.get("failovers_by_backend") or {}).items())
        first, last = fmt_num(st.get("first_failover_s"), 2), fmt_num(st.get("last_failover_s"), 2)
        outside = fmt_num(st.get("failovers_left_allowed_set"))
        lines.append(
            f"Failovers: {fmt_num(st['failovers'])} (from {where}); first at {first} s, last at {last} s "
            f"after the load started; outside the allowed set: {outside}."
        )
    return lines
