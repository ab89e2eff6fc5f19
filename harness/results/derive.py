"""Derived metrics, defined once, as pure vectorized functions over a records DataFrame.

The engine records raw facts only (see ``harness.results.schema``); every latency metric the
reports, gates and summaries show is computed here. Inputs are int64 ns offsets from the run
epoch; outputs are **milliseconds** (float64). A function returns only the rows where its
metric exists, as a Series indexed like the input rows it came from, so callers can both
aggregate it and align it with other columns (``df.loc[s.index, "scenario"]``).

Works on any column dtypes: the ``pd.ArrowDtype`` frames ``read_records`` returns, plain numpy
or nullable pandas dtypes, and object columns built by hand in tests.

Origins: latency measured from ``intended_ns`` includes any time the request waited for the
harness to send it (open-loop, coordinated-omission safe); from ``sent_ns`` it is the time the
server and network took. ``from intended >= from sent`` for every request.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness.results.schema import OUTCOMES

Origin = Literal["intended", "sent", "attempt"]
# "attempt": the final attempt's send time, i.e. latency without the retries before it
_ORIGIN_COLUMN: dict[str, str] = {"intended": "intended_ns", "sent": "sent_ns", "attempt": "attempt_sent_ns"}
_NS_PER_MS = 1e6


def int_column(df: pd.DataFrame, column: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """A column as (int64 values with 0 where null, validity mask)."""
    s = df[column]
    valid = s.notna().to_numpy(dtype=bool, na_value=False)
    values = s.to_numpy(dtype=np.int64, na_value=0)
    return values, valid


def ok_mask(df: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Rows whose outcome is ``"ok"``."""
    return (df["outcome"] == "ok").to_numpy(dtype=bool, na_value=False)


def _origin_column(origin: str, df: pd.DataFrame | None = None) -> str:
    if origin == "attempt" and df is not None and "attempt_sent_ns" not in df.columns:
        return "sent_ns"  # records written before retries were recorded (schema v1)
    try:
        return _ORIGIN_COLUMN[origin]
    except KeyError:
        raise ValueError(f"origin must be 'intended', 'sent' or 'attempt', got {origin!r}") from None


def _series(
    values: npt.NDArray[np.float64], df: pd.DataFrame, mask: npt.NDArray[np.bool_], name: str
) -> pd.Series:
    return pd.Series(values, index=df.index[mask], name=name, dtype=np.float64)


def _elapsed_ms(df: pd.DataFrame, end: str, start: str, rows: npt.NDArray[np.bool_], name: str) -> pd.Series:
    end_v, end_ok = int_column(df, end)
    start_v, start_ok = int_column(df, start)
    mask = rows & end_ok & start_ok
    return _series((end_v[mask] - start_v[mask]) / _NS_PER_MS, df, mask, name)


def latency_ms(df: pd.DataFrame, origin: Origin = "intended") -> pd.Series:
    """End-to-end latency of ok requests, ms: ``(done_ns - origin_ns) / 1e6``.

    ``origin="intended"`` (default) measures from the planned send time, ``"sent"`` from the
    moment the request was handed to the transport. Only ``outcome == "ok"`` rows.
    """
    return _elapsed_ms(df, "done_ns", _origin_column(origin, df), ok_mask(df), f"latency_ms_from_{origin}")


def ttft_ms(df: pd.DataFrame, origin: Origin = "intended") -> pd.Series:
    """Time to first token, ms: ``(first_token_ns - origin_ns) / 1e6``.

    Every row with a first token, whatever its outcome (a stream that broke after its first
    token still had one).
    """
    rows = np.ones(len(df), dtype=bool)
    return _elapsed_ms(df, "first_token_ns", _origin_column(origin, df), rows, f"ttft_ms_from_{origin}")


def schedule_lag_ms(df: pd.DataFrame) -> pd.Series:
    """How late the harness sent each request, ms: ``(sent_ns - intended_ns) / 1e6``; sent rows only."""
    rows = np.ones(len(df), dtype=bool)
    return _elapsed_ms(df, "sent_ns", "intended_ns", rows, "schedule_lag_ms")


def tpot_ms(df: pd.DataFrame) -> pd.Series:
    """Time per output token after the first, ms: ``(done_ns - first_token_ns) / (tokens_out - 1) / 1e6``.

    Only ok rows with ``tokens_out > 1`` and both timestamps.
    """
    done, done_ok = int_column(df, "done_ns")
    first, first_ok = int_column(df, "first_token_ns")
    tokens, tokens_ok = int_column(df, "tokens_out")
    mask = ok_mask(df) & done_ok & first_ok & tokens_ok & (tokens > 1)
    values = (done[mask] - first[mask]) / (tokens[mask] - 1) / _NS_PER_MS
    return _series(values, df, mask, "tpot_ms")


def _list_chunks(s: pd.Series) -> list[pa.Array]:
    arr = pa.array(s, type=pa.list_(pa.int64()), from_pandas=True)
    return list(arr.chunks) if isinstance(arr, pa.ChunkedArray) else [arr]


def itl_ms(df: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Inter-token latencies, ms: every consecutive difference inside each row's ``token_ns`` list.

    ``token_ns[i+1] - token_ns[i]`` for all rows (any outcome) and all ``i``, flattened into
    one array; a row with n token times contributes n-1 values. Vectorized: the list column's
    flat values are differenced once and the differences that straddle two rows are dropped.
    """
    out: list[npt.NDArray[np.float64]] = []
    for chunk in _list_chunks(df["token_ns"]):
        flat = pc.list_flatten(chunk).to_numpy(zero_copy_only=False).astype(np.float64)
        if flat.size < 2:
            continue
        lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False)
        diffs = np.diff(flat)
        keep = np.ones(diffs.size, dtype=bool)
        starts = np.cumsum(lengths, dtype=np.int64)[:-1]  # flat index where each later row begins
        straddle = starts - 1
        keep[straddle[(straddle >= 0) & (straddle < diffs.size)]] = False
        d = diffs[keep]
        out.append(d[~np.isnan(d)])
    if not out:
        return np.empty(0, dtype=np.float64)
    return np.concatenate(out) / _NS_PER_MS


def outcome_counts(df: pd.DataFrame) -> dict[str, int]:
    """``{"planned", "ok", "error", "timeout", "dropped", "cancelled"}``; planned is the row count."""
    counts = df["outcome"].value_counts()
    result = {"planned": len(df)}
    for outcome in OUTCOMES:
        result[outcome] = int(counts.get(outcome, 0))
    return result


def run_span_s(df: pd.DataFrame) -> float | None:
    """Seconds from the earliest ``intended_ns`` to the latest ``done_ns``; ``None`` without both."""
    intended, intended_ok = int_column(df, "intended_ns")
    done, done_ok = int_column(df, "done_ns")
    if not intended_ok.any() or not done_ok.any():
        return None
    return float(done[done_ok].max() - intended[intended_ok].min()) / 1e9


def tokens_per_s(df: pd.DataFrame, duration_s: float | None = None) -> float | None:
    """Output throughput, tokens/s: ``sum(tokens_out of ok rows) / duration_s``.

    ``duration_s`` defaults to ``run_span_s(df)``; ``None`` when the duration is unknown or zero.
    """
    if duration_s is None:
        duration_s = run_span_s(df)
    if not duration_s or duration_s <= 0:
        return None
    tokens, tokens_ok = int_column(df, "tokens_out")
    return float(tokens[ok_mask(df) & tokens_ok].sum()) / duration_s
