"""Reports of finished runs, rebuilt from the run directory alone; never runs load.

``harness report RUN_DIR`` (``write_report``) re-summarizes ``requests.parquet`` and writes

  summary.json   ``harness.results.summarize`` of the records; every other top-level section of
                 the existing summary.json (validity, compliance, verdict, thresholds…) is kept
  summary.md     Markdown for a CI job page (``harness.report.markdown``)
  report.html    one self-contained page with inline SVG plots (``harness.report.html``)
  junit.xml      one testcase per threshold and per compliance rule (``harness.report.junit``)

``harness compare`` (``harness.report.compare``) and ``harness trend`` (``harness.report.trend``)
read run directories the same way, through ``load_run``.

The load-phase duration that rates divide by is the runner's: the profile's ``duration_s``, or
the wall-clock span ``finished_at - started_at`` for an interrupted run (``run_duration_s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from harness.errors import InputError
from harness.results import derive
from harness.results.reader import read_ledger, read_records
from harness.results.rundir import COMPLIANCE, JUNIT_XML, PROFILE, REPORT_HTML, SUMMARY
from harness.results.summary import summarize, write_summary

SUMMARY_MD = "summary.md"

__all__ = [
    "SUMMARY_MD",
    "Run",
    "load_run",
    "read_json",
    "resummarize",
    "run_duration_s",
    "write_report",
    "write_text",
]


@dataclass(frozen=True, slots=True)
class Run:
    """Everything a report needs from one run directory, read once."""

    path: Path
    records: pd.DataFrame
    ledger: pd.DataFrame | None
    summary: dict[str, Any]  # the summary.json on disk ({} when missing)
    compliance: dict[str, Any] | None  # compliance.json, None when missing
    profile: dict[str, Any] | None  # profile.resolved.json, None when missing

    @property
    def run_id(self) -> str:
        return str(self.summary.get("meta", {}).get("run_id") or self.path.name)

    @property
    def duration_s(self) -> float:
        return run_duration_s(self.summary, self.profile, self.records)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or ``None`` when it does not exist; ``InputError`` when unreadable."""
    if not path.is_file():
        return None
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc})", "re-run the profile or restore the file"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object", "re-run the profile or restore the file")
    return data


def load_run(run_dir: Path) -> Run:
    """Read a run directory: records (required), ledger, summary, compliance and resolved profile."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)  # raises InputError naming the directory when it is not a run
    return Run(
        path=run_dir,
        records=records,
        ledger=read_ledger(run_dir),
        summary=read_json(run_dir / SUMMARY) or {},
        compliance=read_json(run_dir / COMPLIANCE),
        profile=read_json(run_dir / PROFILE),
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def run_duration_s(summary: dict[str, Any], profile: dict[str, Any] | None, records: pd.DataFrame) -> float:
    """The load phase length in seconds, as the runner defined it for the summary's rates.

    Interrupted run: ``finished_at - started_at`` (at least 1 ms). Otherwise the resolved
    profile's ``duration_s``; without a profile, the records' span (first intended to last done).
    """
    meta = summary.get("meta", {})
    started, finished = _parse_time(meta.get("started_at")), _parse_time(meta.get("finished_at"))
    if meta.get("interrupted") and started and finished:
        return max(1e-3, (finished - started).total_seconds())
    if profile and isinstance(profile.get("duration_s"), int | float) and profile["duration_s"] > 0:
        return float(profile["duration_s"])
    return derive.run_span_s(records) or 0.0


def resummarize(run: Run) -> dict[str, Any]:
    """``summarize`` of the run's records, with every section the summarizer does not produce kept.

    The planned rate and ``meta`` come from the existing summary; without one, the planned rate
    is the planned request count over the duration and ``meta`` holds only the run id.
    """
    old = run.summary
    duration_s = run.duration_s
    planned_rps = old.get("rate", {}).get("planned_rps")
    if planned_rps is None:
        planned_rps = len(run.records) / duration_s if duration_s > 0 else 0.0
    meta = old.get("meta") or {"run_id": run.path.name}
    fresh = summarize(run.records, duration_s=duration_s, planned_rate_rps=planned_rps, meta=meta)
    for key, value in old.items():
        if key not in fresh:
            fresh[key] = value
    return fresh


def write_report(run_dir: Path) -> list[Path]:
    """Rebuild summary.json, summary.md, report.html and junit.xml of a run; returns their paths."""
    from harness.report.html import render_html
    from harness.report.junit import render_junit
    from harness.report.markdown import render_markdown

    run = load_run(Path(run_dir))
    summary = resummarize(run)
    run = Run(run.path, run.records, run.ledger, summary, run.compliance, run.profile)
    paths = [run.path / SUMMARY, run.path / SUMMARY_MD, run.path / REPORT_HTML, run.path / JUNIT_XML]
    write_summary(paths[0], summary)
    write_text(paths[1], render_markdown(summary, run.compliance))
    write_text(paths[2], render_html(run))
    write_text(paths[3], render_junit(summary, run.compliance))
    return paths


def write_text(path: Path, text: str) -> None:
    """Write text atomically (temporary file renamed), like the JSON files of the run."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
