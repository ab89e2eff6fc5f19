"""The run summary: one schema-versioned, strict-JSON dict computed from the records.

Percentiles, means and maxima come from ``LatencyHistogram`` (1 µs .. 1 h, 3 significant
digits), so they equal what merging the workers' histograms gives. Every number is a plain
``int``/``float`` or ``None``: an empty group yields ``null``, never NaN or infinity.

Shape (all times in ms)::

    schema_version, meta (passed through),
    counts {planned, ok, error, timeout, dropped, cancelled, invariant_holds},
    rate {planned_rps, achieved_rps, completed_rps},
    latency_ms / ttft_ms {from_intended, from_sent: {count, p50, p90, p99, p99.9, mean, max}},
    itl_ms, tpot_ms, schedule_lag_ms {count, p50, p90, p99, p99.9, mean, max},
    tokens {in, out, out_per_s, usage_from_server_fraction}   (ok requests only),
    errors_by_kind {kind: n}, status_codes {"200": n, ...},
    by_scenario {name: {counts, latency_ms {from_intended {p50, p99}}, ttft_ms {from_intended {p50, p99}}}},
    by_endpoint {endpoint: {requests, ok, error, fp_cloud {cloud: n}, fp_region {region: n}}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from harness.metrics.histogram import LatencyHistogram
from harness.results import derive
from harness.results.rundir import write_json
from harness.results.schema import OUTCOMES

SUMMARY_SCHEMA_VERSION: Final = 1

_GROUP_PERCENTILES: Final = (50.0, 99.0)


def _stats(values_ms: pd.Series | np.ndarray) -> dict[str, Any]:
    return LatencyHistogram.from_ms(np.asarray(values_ms, dtype=np.float64)).stats_ms()


def _group_stats(values_ms: pd.Series) -> dict[str, float | None]:
    return LatencyHistogram.from_ms(values_ms.to_numpy(dtype=np.float64)).percentiles_ms(_GROUP_PERCENTILES)


def _rate(n: int, duration_s: float) -> float | None:
    return n / duration_s if duration_s > 0 else None


def _value_counts(s: pd.Series) -> dict[str, int]:
    """Counts of the non-null values, keys as strings, largest first."""
    counts = s.dropna().value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _json_ready(obj: Any) -> Any:
    """Plain Python types only; NaN and infinities become ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def _scenario_block(df: pd.DataFrame) -> dict[str, Any]:
    return {
        "counts": derive.outcome_counts(df),
        "latency_ms": {"from_intended": _group_stats(derive.latency_ms(df, "intended"))},
        "ttft_ms": {"from_intended": _group_stats(derive.ttft_ms(df, "intended"))},
    }


def _endpoint_block(df: pd.DataFrame) -> dict[str, Any]:
    outcome = df["outcome"]
    return {
        "requests": len(df),
        "ok": int((outcome == "ok").sum()),
        "error": int((outcome == "error").sum()),
        "fp_cloud": _value_counts(df["fp_cloud"]),
        "fp_region": _value_counts(df["fp_region"]),
    }


_SCENARIO_COLUMNS: Final = ("outcome", "intended_ns", "sent_ns", "first_token_ns", "done_ns")
_ENDPOINT_COLUMNS: Final = ("outcome", "fp_cloud", "fp_region")


def _groups(df: pd.DataFrame, column: str, needed: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Row groups by ``column``, carrying only the ``needed`` columns (cheaper than every column)."""
    if df.empty:
        return {}
    narrow = df[[column, *needed]]
    return {str(name): part for name, part in narrow.groupby(column, sort=True, dropna=False)}


def summarize(
    df: pd.DataFrame, *, duration_s: float, planned_rate_rps: float, meta: dict[str, Any]
) -> dict[str, Any]:
    """The JSON-ready summary of a run's records (see the module docstring for the shape).

    ``duration_s`` is the run's load phase length (rates divide by it); ``planned_rate_rps``
    the profile's target rate; ``meta`` is copied in unchanged (run id, profile, seed, start
    time, client limits…). ``counts.invariant_holds`` says whether
    ``planned == ok + error + timeout + dropped + cancelled``.
    """
    counts: dict[str, Any] = derive.outcome_counts(df)
    counts["invariant_holds"] = counts["planned"] == sum(counts[o] for o in OUTCOMES)

    _, sent_ok = derive.int_column(df, "sent_ns")
    ok = derive.ok_mask(df)
    tokens_in, tokens_in_ok = derive.int_column(df, "tokens_in")
    tokens_out, tokens_out_ok = derive.int_column(df, "tokens_out")
    usage = df["usage_from_server"].to_numpy(dtype=bool, na_value=False)
    n_ok = int(ok.sum())

    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "meta": dict(meta),
        "counts": counts,
        "rate": {
            "planned_rps": planned_rate_rps,
            "achieved_rps": _rate(int(sent_ok.sum()), duration_s),
            "completed_rps": _rate(n_ok, duration_s),
        },
        "latency_ms": {
            "from_intended": _stats(derive.latency_ms(df, "intended")),
            "from_sent": _stats(derive.latency_ms(df, "sent")),
            # without retries: from the final attempt's send time
            "from_last_attempt": _stats(derive.latency_ms(df, "attempt")),
        },
        "ttft_ms": {
            "from_intended": _stats(derive.ttft_ms(df, "intended")),
            "from_sent": _stats(derive.ttft_ms(df, "sent")),
        },
        "itl_ms": _stats(derive.itl_ms(df)),
        "tpot_ms": _stats(derive.tpot_ms(df)),
        "schedule_lag_ms": _stats(derive.schedule_lag_ms(df)),
        "tokens": {
            "in": int(tokens_in[ok & tokens_in_ok].sum()),
            "out": int(tokens_out[ok & tokens_out_ok].sum()),
            "out_per_s": derive.tokens_per_s(df, duration_s) if duration_s > 0 else None,
            "usage_from_server_fraction": float(usage[ok].sum()) / n_ok if n_ok else None,
        },
        "retries": _retries_block(df),
        "errors_by_kind": _value_counts(df["error_kind"]),
        "status_codes": dict(sorted(_value_counts(df["status"]).items(), key=lambda kv: int(kv[0]))),
        "by_scenario": {
            name: _scenario_block(part) for name, part in _groups(df, "scenario", _SCENARIO_COLUMNS).items()
        },
        "by_endpoint": {
            name: _endpoint_block(part) for name, part in _groups(df, "endpoint", _ENDPOINT_COLUMNS).items()
        },
    }
    return dict(_json_ready(summary))


def _retries_block(df: pd.DataFrame) -> dict[str, Any]:
    """How many requests needed more than one attempt, and how long they waited in total."""
    if "attempts" not in df.columns or "retry_wait_ns" not in df.columns:  # records before schema v2
        return {"retried_requests": 0, "extra_attempts": 0, "retry_wait_s": 0.0}
    attempts = df["attempts"].to_numpy(dtype=np.int64, na_value=0)
    wait = df["retry_wait_ns"].to_numpy(dtype=np.int64, na_value=0)
    return {
        "retried_requests": int((attempts > 1).sum()),
        "extra_attempts": int(np.clip(attempts - 1, 0, None).sum()),
        "retry_wait_s": float(wait.sum()) / 1e9,
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write the summary as indented JSON, atomically."""
    write_json(path, summary)
