"""Results: Record, the streaming Parquet writer, readers, derived metrics, summary, run dirs."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.errors import InputError
from harness.results import (
    LEDGER,
    PARTS,
    RECORD_FIELDS,
    RECORD_SCHEMA,
    REQUESTS,
    SUMMARY,
    SUMMARY_SCHEMA_VERSION,
    Record,
    RecordWriter,
    itl_ms,
    latency_ms,
    new_run_dir,
    read_ledger,
    read_records,
    schedule_lag_ms,
    summarize,
    tokens_per_s,
    tpot_ms,
    ttft_ms,
    write_json,
    write_summary,
)
from harness.results.schema import LEDGER_SCHEMA

MS = 1_000_000  # ns


def synthetic(i: int) -> Record:
    """A record whose optional fields are null on a pattern, so nulls are exercised."""
    outcome = ("ok", "ok", "ok", "error", "timeout", "dropped", "cancelled")[i % 7]
    sent = None if outcome == "dropped" else i * MS + (i % 5) * 1000
    tokens = [sent + (k + 1) * 7 * MS for k in range(i % 4)] if sent is not None and i % 3 else None
    return Record(
        request_id=f"req-{i:06d}",
        index=i,
        scenario=("chat", "embed")[i % 2],
        intended_ns=i * MS,
        worker=i % 3,
        session_id=f"s{i // 10}" if i % 2 else None,
        turn=i % 10 if i % 2 else None,
        model="gpt-4o",
        endpoint=f"azure-{i % 2}",
        deployment="gpt-4o",
        store=None if i % 3 == 0 else bool(i % 2),
        sent_ns=sent,
        first_byte_ns=None if sent is None else sent + 2 * MS,
        first_token_ns=tokens[0] if tokens else None,
        done_ns=None if sent is None else sent + 40 * MS + i,
        token_ns=tokens,
        outcome=outcome,
        error_kind="http_5xx" if outcome == "error" else None,
        error_detail="boom" if outcome == "error" else None,
        status=500 if outcome == "error" else (200 if outcome == "ok" else 0),
        attempts=1,
        tokens_in=12,
        tokens_out=len(tokens) if tokens else None,
        usage_from_server=i % 2 == 0,
        chunks=len(tokens or ()),
        bytes_out=100 + i,
        bytes_in=2**40 + i,
        fp_cloud="azure" if outcome == "ok" else None,
        fp_region="eastus" if outcome == "ok" else None,
        response_id=f"chatcmpl-{i}" if outcome == "ok" else None,
    )


def write_run(path: Path, records: list[Record], batch_rows: int = 8192) -> None:
    with RecordWriter(path, batch_rows=batch_rows) as w:
        for r in records:
            w.add(r)


# -- Record ---------------------------------------------------------------------------------


def test_record_fields_match_schema_in_order() -> None:
    """Record's slots and as_row() follow RECORD_FIELDS exactly, in order."""
    assert Record.__slots__ == RECORD_FIELDS
    r = synthetic(8)
    assert r.as_row() == tuple(getattr(r, name) for name in RECORD_FIELDS)


def test_record_defaults() -> None:
    """A record built from its identity fields alone has null timestamps and outcome ok."""
    r = Record(request_id="r1", index=0, scenario="chat", intended_ns=5)
    assert r.sent_ns is None
    assert r.done_ns is None
    assert r.token_ns is None
    assert r.outcome == "ok"
    assert len(r.as_row()) == len(RECORD_FIELDS)


# -- writer and reader ----------------------------------------------------------------------


def test_writer_round_trip_preserves_values_nulls_and_lists(tmp_path: Path) -> None:
    """Thousands of records written and read back keep every value, null and token_ns list."""
    records = [synthetic(i) for i in range(3000)]
    write_run(tmp_path / REQUESTS, records, batch_rows=1000)
    df = read_records(tmp_path)
    assert len(df) == 3000
    assert list(df.columns) == list(RECORD_FIELDS)
    for i in (0, 1, 2, 3, 5, 6, 7, 1234, 2999):
        expected = records[i].as_row()
        row = df.iloc[i]
        for name, want in zip(RECORD_FIELDS, expected, strict=True):
            got = row[name]
            if want is None:
                assert got is None or pd.isna(got), (i, name, got)
            elif name == "token_ns":
                assert list(got) == want, (i, name)
            else:
                assert got == want, (i, name, got, want)
    assert df["bytes_in"].max() == 2**40 + 2999
    assert int(df["token_ns"].isna().sum()) == sum(r.token_ns is None for r in records)


def test_written_file_has_the_record_schema(tmp_path: Path) -> None:
    """The Parquet file carries RECORD_SCHEMA including its version metadata."""
    write_run(tmp_path / REQUESTS, [synthetic(i) for i in range(10)])
    schema = pq.read_schema(tmp_path / REQUESTS)
    assert schema.equals(RECORD_SCHEMA)  # Parquet names the list item "element"; Arrow treats it as equal
    assert schema.metadata == RECORD_SCHEMA.metadata


def test_empty_writer_gives_valid_zero_row_file(tmp_path: Path) -> None:
    """Closing a writer that got no records leaves a valid Parquet file with the schema and no rows."""
    path = tmp_path / REQUESTS
    with RecordWriter(path) as w:
        pass
    assert w.rows_written == 0
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.schema.equals(RECORD_SCHEMA)
    df = read_records(tmp_path)
    assert len(df) == 0
    assert list(df.columns) == list(RECORD_FIELDS)


def test_batch_boundaries(tmp_path: Path) -> None:
    """3×batch+1 records give four row groups and every row."""
    batch = 50
    path = tmp_path / REQUESTS
    records = [synthetic(i) for i in range(3 * batch + 1)]
    w = RecordWriter(path, batch_rows=batch)
    for r in records:
        w.add(r)
    w.flush()
    assert w.rows_written == 3 * batch + 1
    w.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 3 * batch + 1
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [batch] * 3 + [1]
    assert read_records(tmp_path)["index"].tolist() == list(range(3 * batch + 1))


def test_close_renames_atomically_and_is_idempotent(tmp_path: Path) -> None:
    """Before close() only the .partial exists, after it only the final file; closing twice is fine."""
    path = tmp_path / REQUESTS
    partial = tmp_path / (REQUESTS + ".partial")
    w = RecordWriter(path, batch_rows=4)
    for i in range(10):
        w.add(synthetic(i))
    w.flush()
    assert partial.exists()
    assert not path.exists()
    w.close()
    w.close()
    assert path.exists()
    assert not partial.exists()
    assert pq.read_metadata(path).num_rows == 10
    with pytest.raises(RuntimeError, match="closed"):
        w.add(synthetic(11))


def test_interrupted_run_still_leaves_a_valid_file(tmp_path: Path) -> None:
    """An exception inside the with-block still closes the writer into a readable file."""
    path = tmp_path / REQUESTS
    with pytest.raises(KeyboardInterrupt), RecordWriter(path, batch_rows=8) as w:
        for i in range(20):
            w.add(synthetic(i))
        raise KeyboardInterrupt
    assert pq.read_metadata(path).num_rows == 20


def test_writer_thread_exception_surfaces_at_close(tmp_path: Path) -> None:
    """A batch the writer thread cannot convert raises at close() and leaves only the .partial."""
    path = tmp_path / REQUESTS
    w = RecordWriter(path, batch_rows=2)
    bad = synthetic(1)
    bad.intended_ns = "not a number"  # type: ignore[assignment]
    for r in (synthetic(0), bad, synthetic(2), synthetic(3), synthetic(4)):
        w.add(r)
    with pytest.raises(pa.ArrowInvalid, match="not a number"):
        w.close()
    assert not path.exists()
    assert (tmp_path / (REQUESTS + ".partial")).exists()


def test_null_in_required_field_is_an_error(tmp_path: Path) -> None:
    """A null in a non-nullable schema field is refused, naming the field."""
    w = RecordWriter(tmp_path / REQUESTS, batch_rows=1)
    bad = synthetic(0)
    bad.endpoint = None  # type: ignore[assignment]
    w.add(bad)
    with pytest.raises(ValueError, match="'endpoint'"):
        w.close()


def test_read_records_concatenates_parts(tmp_path: Path) -> None:
    """With parts/*.parquet present, read_records returns all parts' rows, renumbered 0..n-1."""
    (tmp_path / PARTS).mkdir()
    write_run(tmp_path / PARTS / "worker-0.parquet", [synthetic(i) for i in range(0, 10)])
    write_run(tmp_path / PARTS / "worker-1.parquet", [synthetic(i) for i in range(10, 25)])
    df = read_records(tmp_path)
    assert len(df) == 25
    assert sorted(df["index"].tolist()) == list(range(25))
    assert df.index.tolist() == list(range(25))


def test_read_records_without_records_is_an_input_error(tmp_path: Path) -> None:
    """A directory without records raises InputError naming the run dir."""
    with pytest.raises(InputError, match=str(tmp_path)) as info:
        read_records(tmp_path)
    assert "\n" not in info.value.one_line()
    (tmp_path / (REQUESTS + ".partial")).write_bytes(b"")
    with pytest.raises(InputError, match="killed"):
        read_records(tmp_path)


def test_read_ledger(tmp_path: Path) -> None:
    """read_ledger returns None without a ledger and a DataFrame with one."""
    assert read_ledger(tmp_path) is None
    pq.write_table(LEDGER_SCHEMA.empty_table(), tmp_path / LEDGER)
    ledger = read_ledger(tmp_path)
    assert ledger is not None
    assert len(ledger) == 0
    assert "cloud" in ledger.columns


# -- derive ---------------------------------------------------------------------------------


def hand_made() -> pd.DataFrame:
    """Three requests with round numbers (ns): ok streamed, ok late, error after one token."""
    return pd.DataFrame(
        {
            "intended_ns": [0, 100 * MS, 200 * MS],
            "sent_ns": [1 * MS, 150 * MS, 201 * MS],
            "first_token_ns": [11 * MS, 170 * MS, 221 * MS],
            "done_ns": [41 * MS, 250 * MS, 300 * MS],
            "token_ns": [[11 * MS, 21 * MS, 31 * MS, 41 * MS], [170 * MS, 250 * MS], [221 * MS]],
            "outcome": ["ok", "ok", "error"],
            "tokens_out": [4, 2, 1],
            "tokens_in": [10, 10, 10],
        }
    )


def test_latency_from_intended_and_from_sent() -> None:
    """Latency is done minus origin for ok rows only, in ms."""
    df = hand_made()
    assert latency_ms(df, "intended").tolist() == [41.0, 150.0]
    assert latency_ms(df, "sent").tolist() == [40.0, 100.0]
    assert latency_ms(df).index.tolist() == [0, 1]
    with pytest.raises(ValueError, match="origin"):
        latency_ms(df, "planned")  # type: ignore[arg-type]


def test_ttft_and_schedule_lag() -> None:
    """TTFT counts every row with a first token; schedule lag is sent minus intended."""
    df = hand_made()
    assert ttft_ms(df, "intended").tolist() == [11.0, 70.0, 21.0]
    assert ttft_ms(df, "sent").tolist() == [10.0, 20.0, 20.0]
    assert schedule_lag_ms(df).tolist() == [1.0, 50.0, 1.0]


def test_itl_from_token_lists() -> None:
    """ITL is every consecutive difference inside each row's token_ns, never across rows."""
    df = hand_made()
    assert itl_ms(df).tolist() == [10.0, 10.0, 10.0, 80.0]
    with_gaps = pd.DataFrame(
        {"token_ns": [None, [], [5 * MS], [0, 2 * MS], None, [], [1, 3 * MS + 1, 4 * MS + 1]]}
    )
    assert itl_ms(with_gaps).tolist() == [2.0, 3.0, 1.0]
    assert itl_ms(pd.DataFrame({"token_ns": [None, None]})).size == 0


def test_itl_on_arrow_columns_from_parquet(tmp_path: Path) -> None:
    """ITL over the Arrow list column read from Parquet equals a per-row Python computation."""
    records = [synthetic(i) for i in range(500)]
    write_run(tmp_path / REQUESTS, records, batch_rows=64)
    df = read_records(tmp_path)
    expected = [
        (b - a) / 1e6 for r in records if r.token_ns for a, b in zip(r.token_ns, r.token_ns[1:], strict=False)
    ]
    assert itl_ms(df).tolist() == expected


def test_tpot() -> None:
    """TPOT is (done - first token) / (tokens_out - 1) for ok rows with more than one token."""
    df = hand_made()
    assert tpot_ms(df).tolist() == [10.0, 80.0]


def test_tokens_per_s() -> None:
    """Output throughput counts ok rows' tokens over the given or observed duration."""
    df = hand_made()
    assert tokens_per_s(df, 2.0) == 3.0
    assert tokens_per_s(df) == pytest.approx(6 / 0.3)
    assert tokens_per_s(df, 0.0) is None


# -- summary --------------------------------------------------------------------------------


def assert_strict_json(obj: Any) -> None:
    """orjson can serialize it and the text has no NaN or Infinity."""

    def refuse(name: str) -> float:
        raise AssertionError(f"non-finite number in JSON: {name}")

    json.loads(orjson.dumps(obj), parse_constant=refuse)

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, float):
            assert math.isfinite(o)

    walk(obj)


def test_summarize_counts_invariant_and_shape(tmp_path: Path) -> None:
    """The summary's counts add up to planned, rates and percentiles are filled, JSON is strict."""
    records = [synthetic(i) for i in range(700)]
    write_run(tmp_path / REQUESTS, records)
    df = read_records(tmp_path)
    s = summarize(df, duration_s=0.7, planned_rate_rps=1000.0, meta={"run_id": "x", "seed": 1})
    assert s["schema_version"] == SUMMARY_SCHEMA_VERSION
    assert s["meta"] == {"run_id": "x", "seed": 1}
    c = s["counts"]
    assert c == {
        "planned": 700,
        "ok": 300,
        "error": 100,
        "timeout": 100,
        "dropped": 100,
        "cancelled": 100,
        "invariant_holds": True,
    }
    assert s["rate"]["achieved_rps"] == pytest.approx(600 / 0.7)
    assert s["rate"]["completed_rps"] == pytest.approx(300 / 0.7)
    assert s["errors_by_kind"] == {"http_5xx": 100}
    assert s["status_codes"] == {"0": 300, "200": 300, "500": 100}
    lat = s["latency_ms"]
    assert set(lat["from_intended"]) == {"count", "p50", "p90", "p99", "p99.9", "mean", "max"}
    assert lat["from_intended"]["count"] == 300
    assert s["itl_ms"]["p50"] == pytest.approx(7.0, rel=1e-3)
    assert s["tokens"]["usage_from_server_fraction"] is not None
    assert s["by_endpoint"]["azure-0"]["requests"] == 350
    assert s["by_endpoint"]["azure-0"]["fp_cloud"] == {"azure": s["by_endpoint"]["azure-0"]["ok"]}
    assert_strict_json(s)
    write_summary(tmp_path / SUMMARY, s)
    assert orjson.loads((tmp_path / SUMMARY).read_bytes()) == s


def test_summary_flags_a_broken_invariant() -> None:
    """An outcome outside the vocabulary makes invariant_holds false."""
    df = hand_made().assign(
        outcome=["ok", "ok", "weird"],
        scenario="chat",
        endpoint="e",
        status=200,
        error_kind=None,
        usage_from_server=True,
        fp_cloud=None,
        fp_region=None,
    )
    s = summarize(df, duration_s=1.0, planned_rate_rps=3.0, meta={})
    assert s["counts"]["invariant_holds"] is False


def test_summary_with_zero_ok_requests_has_no_nan(tmp_path: Path) -> None:
    """A run where every request failed or was dropped gives nulls, never NaN."""
    records = [synthetic(i) for i in range(40)]
    for r in records:
        if r.outcome == "ok":
            r.outcome = "timeout"
            r.error_kind = "timeout_read"
        r.token_ns = None
        r.first_token_ns = None
    write_run(tmp_path / REQUESTS, records)
    s = summarize(read_records(tmp_path), duration_s=1.0, planned_rate_rps=40.0, meta={})
    assert s["counts"]["ok"] == 0
    assert s["latency_ms"]["from_intended"]["p99"] is None
    assert s["latency_ms"]["from_sent"]["mean"] is None
    assert s["ttft_ms"]["from_intended"]["p50"] is None
    assert s["itl_ms"]["max"] is None
    assert s["tokens"]["usage_from_server_fraction"] is None
    assert s["by_scenario"]["chat"]["latency_ms"]["from_intended"]["p99"] is None
    assert_strict_json(s)


def test_summary_of_an_empty_run(tmp_path: Path) -> None:
    """A run with no records summarizes to zero counts, empty groups and nulls."""
    write_run(tmp_path / REQUESTS, [])
    s = summarize(read_records(tmp_path), duration_s=0.0, planned_rate_rps=10.0, meta={})
    assert s["counts"]["planned"] == 0
    assert s["counts"]["invariant_holds"] is True
    assert s["rate"]["achieved_rps"] is None
    assert s["by_scenario"] == {}
    assert_strict_json(s)


def test_latency_from_intended_at_least_from_sent(tmp_path: Path) -> None:
    """Every latency percentile measured from intended is at least the one measured from sent."""
    rng = np.random.default_rng(11)
    records = []
    for i in range(2000):
        lag = int(rng.exponential(20 * MS))
        service = int(rng.lognormal(17, 0.8))
        records.append(
            Record(
                request_id=f"r{i}",
                index=i,
                scenario="chat",
                intended_ns=i * MS,
                endpoint="e",
                model="m",
                deployment="d",
                sent_ns=i * MS + lag,
                done_ns=i * MS + lag + service,
                status=200,
                attempts=1,
            )
        )
    write_run(tmp_path / REQUESTS, records)
    s = summarize(read_records(tmp_path), duration_s=2.0, planned_rate_rps=1000.0, meta={})
    lat = s["latency_ms"]
    for key in ("p50", "p90", "p99", "p99.9", "mean", "max"):
        assert lat["from_intended"][key] >= lat["from_sent"][key], key
    assert s["schedule_lag_ms"]["count"] == 2000


def test_summary_by_scenario_groups(tmp_path: Path) -> None:
    """by_scenario has one entry per scenario whose counts add up to the run's counts."""
    write_run(tmp_path / REQUESTS, [synthetic(i) for i in range(140)])
    df = read_records(tmp_path)
    s = summarize(df, duration_s=1.0, planned_rate_rps=140.0, meta={})
    groups = s["by_scenario"]
    assert set(groups) == {"chat", "embed"}
    for outcome in ("planned", "ok", "error", "timeout", "dropped", "cancelled"):
        assert groups["chat"]["counts"][outcome] + groups["embed"]["counts"][outcome] == s["counts"][outcome]
    chat = df[df["scenario"] == "chat"]
    assert groups["chat"]["counts"]["planned"] == len(chat)
    assert groups["chat"]["latency_ms"]["from_intended"]["p50"] is not None
    assert set(groups["chat"]["ttft_ms"]["from_intended"]) == {"p50", "p99"}


def test_summary_percentiles_equal_merged_histograms(tmp_path: Path) -> None:
    """Summary percentiles equal those of worker histograms recorded in ns and merged."""
    from harness.metrics import LatencyHistogram

    records = [synthetic(i) for i in range(300)]
    write_run(tmp_path / REQUESTS, records)
    s = summarize(read_records(tmp_path), duration_s=1.0, planned_rate_rps=300.0, meta={})
    workers = [LatencyHistogram() for _ in range(3)]
    for r in records:
        if r.outcome == "ok" and r.done_ns is not None:
            workers[r.worker].record_ns(r.done_ns - r.intended_ns)
    merged = LatencyHistogram()
    for w in workers:
        merged.merge(LatencyHistogram.decode(w.encode()))
    assert s["latency_ms"]["from_intended"] == merged.stats_ms()


# -- run directory --------------------------------------------------------------------------


def test_new_run_dir_naming_and_collisions(tmp_path: Path) -> None:
    """Run dirs are named <UTC stamp>-<profile>, with -2, -3 appended on collision."""
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    root = tmp_path / "results"
    first = new_run_dir(root, "smoke", now)
    second = new_run_dir(root, "smoke", now)
    third = new_run_dir(root, "smoke", now)
    assert first.name == "20260304T050607Z-smoke"
    assert second.name == "20260304T050607Z-smoke-2"
    assert third.name == "20260304T050607Z-smoke-3"
    assert all(p.is_dir() for p in (first, second, third))
    assert new_run_dir(root, "a b/c", now).name == "20260304T050607Z-a-b-c"


def test_new_run_dir_converts_to_utc(tmp_path: Path) -> None:
    """A timezone-aware time is converted to UTC in the name."""
    from datetime import timedelta, timezone

    cet = datetime(2026, 1, 1, 1, 30, 0, tzinfo=timezone(timedelta(hours=1)))
    assert new_run_dir(tmp_path, "p", cet).name == "20260101T003000Z-p"


def test_write_json_is_atomic_and_indented(tmp_path: Path) -> None:
    """write_json replaces the file in one step and leaves no temporary file behind."""
    path = tmp_path / "x.json"
    write_json(path, {"a": 1, "b": [1, 2]})
    write_json(path, {"a": 2, "t": datetime(2026, 1, 1, tzinfo=UTC)})
    text = path.read_text()
    assert text.startswith("{\n  ")
    assert orjson.loads(text)["a"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_row_groups_stay_batch_rows_when_slices_do_not_divide_them(tmp_path: Path) -> None:
    """Rows are converted in slices on the caller's thread; a row group is still batch_rows."""
    path = tmp_path / REQUESTS
    with RecordWriter(path, batch_rows=1000) as w:
        for i in range(3500):
            w.add(synthetic(i))
    meta = pq.read_metadata(path)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 1000, 500]
    assert pq.read_table(path).column("index").to_pylist() == list(range(3500))


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes only")
def test_writer_thread_runs_in_the_idle_scheduling_class(tmp_path: Path) -> None:
    """The file-writing thread never takes a time slice from the event loop's thread."""
    w = RecordWriter(tmp_path / REQUESTS)
    try:
        native_id = w._thread.native_id
        deadline = time.monotonic() + 5
        while os.sched_getscheduler(native_id) != os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.sched_getscheduler(native_id) == os.SCHED_IDLE
        assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller's thread is untouched
    finally:
        w.close()


def test_long_token_lists_end_a_slice_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice stops at SLICE_TOKENS token timestamps (stream records convert in short slices,
    not 128 rows at once), and the file still holds every row, in order, in batch_rows groups."""
    import harness.results.writer as writer_mod

    sizes: list[tuple[int, int]] = []
    convert = writer_mod._to_batch

    def spy(rows: list[Any]) -> pa.RecordBatch:
        batch = convert(rows)
        tokens = batch.column(batch.schema.get_field_index("token_ns"))
        sizes.append((len(rows), sum(len(t) for t in tokens.to_pylist() if t)))
        return batch

    monkeypatch.setattr(writer_mod, "_to_batch", spy)
    path = tmp_path / REQUESTS
    with RecordWriter(path, batch_rows=500) as w:
        for i in range(1200):
            record = synthetic(i)
            if i % 2:
                record.sent_ns = record.sent_ns or i * MS
                record.token_ns = [i * MS + k for k in range(40)]
            w.add(record)
    per_row = writer_mod.SLICE_TOKENS // 20  # every other record carries 40 timestamps
    assert max(n for n, _ in sizes) <= per_row + 1 < writer_mod.SLICE_ROWS
    assert all(t < writer_mod.SLICE_TOKENS + 40 for _, t in sizes)
    meta = pq.read_metadata(path)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [500, 500, 200]
    assert pq.read_table(path).column("index").to_pylist() == list(range(1200))
