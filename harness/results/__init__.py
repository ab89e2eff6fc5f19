"""The run directory and its data: the record schema, the streaming Parquet writer, readers,
derived metrics and the JSON summary.

Names are imported lazily (PEP 562) so that the engine's worker processes, which only need
``Record`` and ``RecordWriter``, do not pay for importing pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.results.derive import (
        itl_ms,
        latency_ms,
        outcome_counts,
        run_span_s,
        schedule_lag_ms,
        tokens_per_s,
        tpot_ms,
        ttft_ms,
    )
    from harness.results.reader import read_ledger, read_records, record_files
    from harness.results.record import Record
    from harness.results.rundir import (
        COMPLIANCE,
        JUNIT_XML,
        LEDGER,
        PARTS,
        PROFILE,
        REPORT_HTML,
        REQUESTS,
        RUN_LOG,
        SUMMARY,
        TIMESERIES,
        new_run_dir,
        write_json,
    )
    from harness.results.schema import (
        ERROR_KINDS,
        LEDGER_FIELDS,
        LEDGER_SCHEMA,
        OUTCOMES,
        RECORD_FIELDS,
        RECORD_SCHEMA,
        RECORD_SCHEMA_VERSION,
    )
    from harness.results.summary import SUMMARY_SCHEMA_VERSION, summarize, write_summary
    from harness.results.writer import RecordWriter

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "ERROR_KINDS",
            "LEDGER_FIELDS",
            "LEDGER_SCHEMA",
            "OUTCOMES",
            "RECORD_FIELDS",
            "RECORD_SCHEMA",
            "RECORD_SCHEMA_VERSION",
        ),
        "schema",
    ),
    "Record": "record",
    "RecordWriter": "writer",
    **dict.fromkeys(("read_records", "read_ledger", "record_files"), "reader"),
    **dict.fromkeys(
        (
            "itl_ms",
            "latency_ms",
            "outcome_counts",
            "run_span_s",
            "schedule_lag_ms",
            "tokens_per_s",
            "tpot_ms",
            "ttft_ms",
        ),
        "derive",
    ),
    **dict.fromkeys(("SUMMARY_SCHEMA_VERSION", "summarize", "write_summary"), "summary"),
    **dict.fromkeys(
        (
            "COMPLIANCE",
            "JUNIT_XML",
            "LEDGER",
            "PARTS",
            "PROFILE",
            "REPORT_HTML",
            "REQUESTS",
            "RUN_LOG",
            "SUMMARY",
            "TIMESERIES",
            "new_run_dir",
            "write_json",
        ),
        "rundir",
    ),
}

__all__ = [
    "COMPLIANCE",
    "ERROR_KINDS",
    "JUNIT_XML",
    "LEDGER",
    "LEDGER_FIELDS",
    "LEDGER_SCHEMA",
    "OUTCOMES",
    "PARTS",
    "PROFILE",
    "RECORD_FIELDS",
    "RECORD_SCHEMA",
    "RECORD_SCHEMA_VERSION",
    "REPORT_HTML",
    "REQUESTS",
    "RUN_LOG",
    "SUMMARY",
    "SUMMARY_SCHEMA_VERSION",
    "TIMESERIES",
    "Record",
    "RecordWriter",
    "itl_ms",
    "latency_ms",
    "new_run_dir",
    "outcome_counts",
    "read_ledger",
    "read_records",
    "record_files",
    "run_span_s",
    "schedule_lag_ms",
    "summarize",
    "tokens_per_s",
    "tpot_ms",
    "ttft_ms",
    "write_json",
    "write_summary",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
