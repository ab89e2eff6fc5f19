"""Trace replay readers: every format in data/traces, windows, scaling, sessions, bad rows, laziness."""

from __future__ import annotations

import csv
import itertools
import json
import re
import statistics
import tempfile
import tracemalloc
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.errors import HarnessError, ProfileError, TraceError
from harness.profile.load import load_model
from harness.profile.models import Profile
from harness.profile.trace import Trace
from harness.workload.traces import TraceRequest, TraceStream, read_trace
from harness.workload.traces.values import IsoClock

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "traces"
SUMMARY = {s["file"]: s for s in json.loads((DATA / "traces_summary.json").read_text())}
NS = 1_000_000_000

CONV = "azure_llm_2023_conv.csv"
BURST3 = "burstgpt_3_first400_sessions.csv"
MOON = "mooncake_fast25_conversation_trace.jsonl"
MOON_SESSIONS = "mooncake_fast25_conversation_inferred_sessions.csv"


def replay(file: str, fmt: str, base: Path = DATA, seed: int = 0, **options: Any) -> tuple[list, TraceStream]:
    stream = read_trace(Trace(file=file, format=fmt, **options), base, seed=seed)
    return list(stream), stream


def mean(values: Any) -> float:
    return statistics.fmean(values)


def assert_ordered(reqs: list[TraceRequest]) -> None:
    assert all(a.offset_ns <= b.offset_ns for a, b in itertools.pairwise(reqs))


# --------------------------------------------------------------------------- each format


@pytest.mark.parametrize(
    ("file", "fmt"),
    [
        ("azure_llm_2023_code.csv", "azure2023"),
        (CONV, "azure2023"),
        (MOON, "mooncake"),
        ("mooncake_fast25_synthetic_trace.jsonl", "mooncake"),
    ],
)
def test_public_trace_matches_its_published_statistics(file: str, fmt: str) -> None:
    """Azure and Mooncake traces replay every row, in order, with the README's span and token means."""
    reqs, stream = replay(file, fmt)
    s = SUMMARY[file]
    assert len(reqs) == stream.stats.rows_yielded == stream.stats.rows_read == s["rows"]
    assert_ordered(reqs)
    assert reqs[0].offset_ns == 0
    assert round(stream.stats.span_s, 1) == s["span_s"]
    assert round(mean(r.tokens_in for r in reqs), 1) == s["in_mean"]
    assert round(mean(r.tokens_out for r in reqs), 1) == s["out_mean"]
    assert max(r.tokens_in for r in reqs) == s["in_max"]
    assert all(r.session_id is None and r.turn is None for r in reqs)


def test_azure_keeps_all_seven_fractional_digits() -> None:
    """Azure 2023 timestamps keep their 100 ns digit: the third row is 0.0981890 s after the first."""
    reqs, _ = replay("azure_llm_2023_code.csv", "azure2023")
    assert [r.offset_ns for r in reqs[:3]] == [0, 52_000_000, 98_189_000]
    assert (reqs[0].line, reqs[0].tokens_in, reqs[0].tokens_out) == (2, 4808, 10)


def test_azure_2024_timestamps_with_utc_offset(tmp_path: Path) -> None:
    """The 2024 week-long layout (six digits and +00:00) reads on the same clock as the 2023 one."""
    (tmp_path / "w.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.004000+00:00,100,10\n"
        "2024-05-10 00:00:01.5+00:00,200,20\n"
        "2024-05-10 02:00:02.000001+02:00,300,30\n"
    )
    reqs, _ = replay("w.csv", "azure2024", tmp_path)
    assert [r.offset_ns for r in reqs] == [0, 1_496_000_000, 1_996_001_000]
    assert [r.tokens_in for r in reqs] == [100, 200, 300]


ZONES = {"": 0, "+00:00": 0, "Z": 0, "+05:30": 19_800, "-08:00": -28_800}


@settings(max_examples=150, deadline=None)
@given(
    stamps=st.lists(
        st.tuples(st.integers(0, 59), st.integers(0, 9_999_999), st.sampled_from(sorted(ZONES))), max_size=12
    )
)
def test_iso_timestamps_parse_exactly(stamps: list[tuple[int, int, str]]) -> None:
    """ISO timestamps (7 digits, any zone) parse to exact ns, also on the same-minute fast path."""
    clock = IsoClock()
    minute_s = int(datetime(2023, 11, 16, 18, 17, tzinfo=UTC).timestamp())
    for second, frac, zone in stamps:
        text = f"2023-11-16 18:17:{second:02d}.{frac:07d}{zone}"
        assert clock.ns(text) == (minute_s + second - ZONES[zone]) * NS + frac * 100


def test_burstgpt_v1_skips_and_counts_failed_requests() -> None:
    """BurstGPT v1: rows with 0 response tokens are failed requests, skipped and counted; the rest replay."""
    reqs, stream = replay("burstgpt_1_first400.csv", "burstgpt")
    s = SUMMARY["burstgpt_1_first400.csv"]
    assert stream.stats.skipped == {"failed_request": s["zero_token_rows"]}
    assert len(reqs) == 400 - s["zero_token_rows"]
    assert all(r.tokens_out > 0 for r in reqs)
    assert round(mean(r.tokens_in for r in reqs), 1) == s["nonzero_in_mean"]
    assert round(mean(r.tokens_out for r in reqs), 1) == s["nonzero_out_mean"]
    assert stream.stats.span_s == s["span_s"]
    assert all(r.session_id is None for r in reqs)


def test_burstgpt_v3_sessions_turns_and_think_time() -> None:
    """BurstGPT v3 (parsed by column name): session ids, turns counted 1..n, think time from Elapsed time."""
    reqs, stream = replay(BURST3, "burstgpt")
    assert stream.stats.skipped == {"failed_request": 1}
    by_session: dict[str, list[TraceRequest]] = defaultdict(list)
    for r in reqs:
        if r.session_id is not None:
            by_session[r.session_id].append(r)
    assert len(by_session) == stream.stats.sessions_kept == 134
    assert sum(map(len, by_session.values())) == 393
    assert max(map(len, by_session.values())) == 24
    for turns in by_session.values():
        assert [r.turn for r in turns] == list(range(1, len(turns) + 1))
        assert turns[0].think_s is None
        assert all(r.think_s is not None and r.think_s >= 0 for r in turns[1:])
    # Independent check of one think time: arrival - (previous arrival + previous Elapsed time).
    with (DATA / BURST3).open() as fh:
        rows = [row for row in csv.DictReader(fh) if row["Response tokens"] != "0"]
    sid = next(s for s, turns in by_session.items() if len(turns) >= 3)
    mine = [row for row in rows if row["Session ID"] == sid]
    expected = max(
        0.0, float(mine[1]["Timestamp"]) - float(mine[0]["Timestamp"]) - float(mine[0]["Elapsed time"])
    )
    assert by_session[sid][1].think_s == pytest.approx(expected)
    with (DATA / BURST3).open() as fh:
        api_lines = {i + 2 for i, row in enumerate(csv.DictReader(fh)) if row["Log Type"] == "API log"}
    api = [r for r in reqs if r.line in api_lines]
    assert len(api) == 6 and all(r.session_id is None and r.turn is None for r in api)


def test_mooncake_prefix_blocks_match_the_inferred_sessions_csv() -> None:
    """Mooncake JSONL prefix_blocks (leading 512-token blocks seen before) equal the derived CSV's column."""
    jsonl, _ = replay(MOON, "mooncake")
    sessions, stream = replay(MOON_SESSIONS, "mooncake_sessions")
    assert len(jsonl) == len(sessions) == 12031
    assert [r.prefix_blocks for r in jsonl] == [r.prefix_blocks for r in sessions]
    assert [r.offset_ns for r in jsonl] == [r.offset_ns for r in sessions]
    assert stream.stats.sessions_kept == SUMMARY[MOON]["inferred_sessions"]
    assert max(r.turn or 0 for r in sessions) == SUMMARY[MOON]["inferred_max_turns"]
    assert jsonl[0].prefix_blocks == 0 and jsonl[1].prefix_blocks == 1  # block 0 is the shared system prompt


def test_mooncake_spread_bucket_spreads_bursts_within_their_bucket() -> None:
    """spread_bucket_ms spreads same-timestamp Mooncake rows evenly inside their 3 s bucket, keeping order."""
    plain, _ = replay(MOON, "mooncake")
    spread, _ = replay(MOON, "mooncake", spread_bucket_ms=3000)
    assert len({r.offset_ns for r in plain}) == 1180
    assert len({r.offset_ns for r in spread}) == 12031
    assert_ordered(spread)
    assert [r.line for r in spread] == [r.line for r in plain]
    for p, s in zip(plain, spread, strict=True):
        assert p.offset_ns <= s.offset_ns < p.offset_ns + 3 * NS
    first_bucket = [s.offset_ns for p, s in zip(plain, spread, strict=True) if p.offset_ns == 0]
    step = 3 * NS // len(first_bucket)
    assert first_bucket == [i * 3 * NS // len(first_bucket) for i in range(len(first_bucket))]
    assert first_bucket[1] - first_bucket[0] == step


# --------------------------------------------------------------------------- window and time


@pytest.mark.parametrize("start_s", [0, 600])
def test_window_gives_exactly_the_rows_of_that_minute(start_s: int) -> None:
    """window_s=60 on Azure conv yields exactly the rows of that trace minute, with their token means."""
    with (DATA / CONV).open() as fh:
        rows = [
            (datetime.fromisoformat(r["TIMESTAMP"][:26]), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            for r in csv.DictReader(fh)
        ]
    t0 = rows[0][0]
    minute = [r for r in rows if start_s <= (r[0] - t0).total_seconds() < start_s + 60]
    before = sum(1 for r in rows if (r[0] - t0).total_seconds() < start_s)
    reqs, stream = replay(CONV, "azure2023", start_s=start_s, window_s=60)
    assert len(reqs) == len(minute) > 150
    assert [r.line for r in reqs] == list(range(before + 2, before + 2 + len(minute)))
    assert mean(r.tokens_in for r in reqs) == mean(r[1] for r in minute)
    assert mean(r.tokens_out for r in reqs) == mean(r[2] for r in minute)
    assert all(0 <= r.offset_ns < 60 * NS for r in reqs)
    assert stream.stats.skipped == ({"before_start": before} if before else {})
    assert stream.stats.rows_read == before + len(minute) + 1  # reading stopped at the window's end


def test_time_scale_divides_offsets() -> None:
    """time_scale=2 replays twice as fast: every offset is half the unscaled one."""
    plain, _ = replay(CONV, "azure2023", window_s=120)
    fast, stream = replay(CONV, "azure2023", window_s=120, time_scale=2.0)
    assert [r.line for r in fast] == [r.line for r in plain]
    assert [r.offset_ns for r in fast] == [round(r.offset_ns / 2) for r in plain]
    assert stream.stats.time_scale == 2.0


def test_rate_rps_rescales_to_the_requested_mean_rate() -> None:
    """rate_rps rescales time so the replayed rows' mean rate, (rows-1)/span, is the requested rate."""
    reqs, stream = replay(CONV, "azure2023", window_s=300, rate_rps=50.0)
    plain, _ = replay(CONV, "azure2023", window_s=300)
    assert len(reqs) == len(plain)
    rate = (len(reqs) - 1) / stream.stats.span_s
    assert rate == pytest.approx(50.0, rel=1e-6)
    expected_scale = 50.0 * (plain[-1].offset_ns / NS) / (len(plain) - 1)
    assert stream.stats.time_scale == pytest.approx(expected_scale)
    assert [r.offset_ns for r in reqs] == [round(r.offset_ns / stream.stats.time_scale) for r in plain]


def test_rate_rps_needs_two_rows(tmp_path: Path) -> None:
    """Rescaling a replay of fewer than two rows is a TraceError with a hint."""
    (tmp_path / "one.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6,1,1\n")
    with pytest.raises(TraceError, match="cannot rescale") as err:
        replay("one.csv", "azure2023", tmp_path, rate_rps=5)
    assert "window_s" in err.value.hint


def test_token_clamps_count_clamped_rows() -> None:
    """max_prompt_tokens / max_output_tokens clamp token counts and count the clamped rows."""
    plain, _ = replay(CONV, "azure2023")
    reqs, stream = replay(CONV, "azure2023", max_prompt_tokens=2000, max_output_tokens=300)
    assert max(r.tokens_in for r in reqs) == 2000 and max(r.tokens_out for r in reqs) == 300
    assert stream.stats.rows_clamped == sum(1 for r in plain if r.tokens_in > 2000 or r.tokens_out > 300)
    assert [r.tokens_in for r in reqs] == [min(r.tokens_in, 2000) for r in plain]


# --------------------------------------------------------------------------- sessions


def sessions_of(reqs: list[TraceRequest]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for r in reqs:
        if r.session_id is not None:
            out[r.session_id].append(r.line)
    return out


@pytest.mark.parametrize(("file", "fmt"), [(BURST3, "burstgpt"), (MOON_SESSIONS, "mooncake_sessions")])
def test_session_sampling_keeps_whole_sessions(file: str, fmt: str) -> None:
    """sample_sessions keeps or drops whole sessions, about the requested fraction, the same for a seed."""
    full = sessions_of(replay(file, fmt)[0])
    reqs, stream = replay(file, fmt, seed=7, sample_sessions=0.5)
    kept = sessions_of(reqs)
    assert all(kept[s] == full[s] for s in kept)  # every kept session has all its rows
    assert stream.stats.sessions_kept == len(kept)
    assert stream.stats.sessions_kept + stream.stats.sessions_dropped == len(full)
    assert 0.35 < len(kept) / len(full) < 0.65
    dropped_rows = sum(len(full[s]) for s in full if s not in kept)
    sessionless = stream.stats.skipped["sampled_out"] - dropped_rows
    assert sessionless >= 0
    again = sessions_of(replay(file, fmt, seed=7, sample_sessions=0.5)[0])
    other = sessions_of(replay(file, fmt, seed=8, sample_sessions=0.5)[0])
    assert again == kept and other != kept


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


SESSION_COLUMNS = {
    "arrival_delta": "gap_ms",
    "arrival_delta_unit": "ms",
    "tokens_in": "prompt",
    "tokens_out": "completion",
    "session_id": "conv",
    "turn": "turn",
    "think": "think_s",
}
# Three sessions: (session, turn, gap since its previous turn in ms, prompt, completion, think s).
SESSION_ROWS = [
    ("a", 1, 0, 100, 10, None),
    ("b", 1, 500, 50, 5, None),
    ("a", 2, 1000, 220, 20, 0.8),
    ("c", 1, 1200, 70, 7, None),
    ("b", 2, 900, 120, 12, 0.5),
    ("a", 3, 1500, 400, 30, 1.2),
]
EXPECTED_OFFSETS_MS = {
    ("a", 1): 0,
    ("b", 1): 500,
    ("a", 2): 1000,
    ("c", 1): 1200,
    ("b", 2): 1400,
    ("a", 3): 2500,
}


def session_dicts(rows: list[tuple]) -> list[dict[str, Any]]:
    keys = ("conv", "turn", "gap_ms", "prompt", "completion", "think_s")
    return [{k: v for k, v in zip(keys, row, strict=True) if v is not None} for row in rows]


def test_generic_jsonl_sessions_with_per_session_deltas(tmp_path: Path) -> None:
    """Generic JSONL with per-session deltas, turn index and think time replays at the summed offsets."""
    write_jsonl(tmp_path / "s.jsonl", session_dicts(SESSION_ROWS))
    reqs, stream = replay("s.jsonl", "jsonl", tmp_path, columns=SESSION_COLUMNS)
    assert [(r.session_id, r.turn, r.offset_ns // 1_000_000) for r in reqs] == [
        (s, t, EXPECTED_OFFSETS_MS[s, t]) for s, t, *_ in SESSION_ROWS
    ]
    assert [r.think_s for r in reqs] == [row[5] for row in SESSION_ROWS]
    assert [r.tokens_in for r in reqs] == [row[3] for row in SESSION_ROWS]
    assert stream.stats.sessions_kept == 3


def test_generic_jsonl_grouped_by_session_needs_a_reorder_window(tmp_path: Path) -> None:
    """A file grouped by session is out of time order: an error naming the line, or reorder_window_s."""
    grouped = sorted(SESSION_ROWS, key=lambda r: (r[0], r[1]))
    write_jsonl(tmp_path / "g.jsonl", session_dicts(grouped))
    with pytest.raises(TraceError, match=r"g\.jsonl:4: arrives 2 s before line 3") as err:
        replay("g.jsonl", "jsonl", tmp_path, columns=SESSION_COLUMNS)
    assert "reorder_window_s" in str(err.value)
    reqs, _ = replay("g.jsonl", "jsonl", tmp_path, columns=SESSION_COLUMNS, reorder_window_s=3)
    assert [(r.session_id, r.turn) for r in reqs] == [(s, t) for s, t, *_ in SESSION_ROWS]
    assert_ordered(reqs)
    skipped, stream = replay("g.jsonl", "jsonl", tmp_path, columns=SESSION_COLUMNS, on_bad_row="skip")
    assert stream.stats.skipped == {"out_of_order": 3}
    assert len(skipped) == 3


def test_generic_csv_with_iso_arrivals_counts_turns(tmp_path: Path) -> None:
    """A generic CSV with ISO arrival times and a session column counts turns per session in file order."""
    (tmp_path / "t.csv").write_text(
        "when,user,in,out\n"
        "2025-01-01T00:00:00Z,u1,10,1\n"
        "2025-01-01T00:00:00.25Z,u2,20,2\n"
        "2025-01-01T00:00:01Z,u1,30,3\n"
    )
    columns = {
        "arrival": "when",
        "arrival_unit": "iso",
        "tokens_in": "in",
        "tokens_out": "out",
        "session_id": "user",
    }
    reqs, _ = replay("t.csv", "csv", tmp_path, columns=columns)
    assert [(r.offset_ns, r.session_id, r.turn) for r in reqs] == [
        (0, "u1", 1),
        (250_000_000, "u2", 1),
        (NS, "u1", 2),
    ]


def test_generic_csv_absolute_milliseconds_without_sessions(tmp_path: Path) -> None:
    """A generic CSV with absolute ms arrivals and no session column yields stateless rows."""
    (tmp_path / "m.csv").write_text("ts,a,b\n1000.5,1,2\n1001,3,4\n2000,5,6\n")
    columns = {"arrival": "ts", "arrival_unit": "ms", "tokens_in": "a", "tokens_out": "b"}
    reqs, _ = replay("m.csv", "csv", tmp_path, columns=columns)
    assert [r.offset_ns for r in reqs] == [0, 500_000, 999_500_000]
    assert all(r.session_id is None and r.turn is None and r.think_s is None for r in reqs)


# --------------------------------------------------------------------------- bad input


def test_bad_rows_name_file_and_line_or_are_counted(tmp_path: Path) -> None:
    """A bad row raises TraceError '<file>:<line>: ...' with a hint, or with on_bad_row='skip' is counted."""
    (tmp_path / "bad.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.0,lots,44\n"
        "2023-11-16 18:15:48.0,10\n"
        "not a time,10,10\n"
        "2023-11-16 18:15:45.0,10,10\n"
        "2023-11-16 18:15:49.0,-3,10\n"
        "2023-11-16 18:15:50.0,12,13\n"
    )
    with pytest.raises(TraceError) as err:
        replay("bad.csv", "azure2023", tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'bad.csv'}:3: ContextTokens 'lots' is not a whole number")
    assert "on_bad_row" in err.value.hint
    reqs, stream = replay("bad.csv", "azure2023", tmp_path, on_bad_row="skip")
    assert [r.line for r in reqs] == [2, 8]
    assert stream.stats.rows_read == 7
    assert stream.stats.skipped == {"bad_value": 3, "wrong_field_count": 1, "out_of_order": 1}


def test_unreadable_files_are_trace_errors(tmp_path: Path) -> None:
    """A missing file, an empty file or a header without the needed columns is a one-line TraceError."""
    with pytest.raises(TraceError, match="trace file not found"):
        read_trace(Trace(file="nope.csv", format="azure2023"), tmp_path, seed=0)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TraceError, match="empty"):
        replay("empty.csv", "burstgpt", tmp_path)
    (tmp_path / "h.csv").write_text("Timestamp,Request tokens\n1,2\n")
    with pytest.raises(TraceError, match=r"h\.csv:1: the header lacks column\(s\) 'Response tokens'"):
        replay("h.csv", "burstgpt", tmp_path)
    columns = {"arrival": "t", "tokens_in": "i", "tokens_out": "o", "session_id": "sess"}
    (tmp_path / "g.csv").write_text("t,i,o\n1,2,3\n")
    with pytest.raises(TraceError, match="'sess'"):
        replay("g.csv", "csv", tmp_path, columns=columns)


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    """JSONL lines that are not objects, lack keys or hold wrong types are bad rows with their lines."""
    (tmp_path / "m.jsonl").write_bytes(
        b'{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}\n'
        b"\n"
        b"{oops\n"
        b"[1, 2]\n"
        b'{"timestamp": 1}\n'
        b'{"timestamp": 2, "input_length": 1.5, "output_length": 1}\n'
        b'{"timestamp": 3, "input_length": 5, "output_length": 1, "hash_ids": "x"}\n'
        b'{"timestamp": 4, "input_length": 7, "output_length": 2, "hash_ids": [0, 9]}\n'
    )
    with pytest.raises(TraceError, match=r"m\.jsonl:3: not valid JSON"):
        replay("m.jsonl", "mooncake", tmp_path)
    reqs, stream = replay("m.jsonl", "mooncake", tmp_path, on_bad_row="skip")
    assert [(r.line, r.prefix_blocks) for r in reqs] == [(1, 0), (8, 1)]
    assert stream.stats.skipped == {"bad_json": 2, "bad_value": 3}


def test_trace_settings_are_validated_with_actionable_messages() -> None:
    """Trace settings that contradict each other are rejected with a sentence saying what to change."""
    columns = {"arrival": "t", "tokens_in": "i", "tokens_out": "o"}
    cases = [
        ({"format": "csv"}, "needs a [columns] table"),
        ({"format": "azure2023", "columns": columns}, "has fixed columns"),
        ({"format": "azure2023", "rate_rps": 5, "time_scale": 2}, "either rate_rps"),
        ({"format": "burstgpt", "spread_bucket_ms": 3000}, "only applies to the mooncake"),
        ({"format": "csv", "columns": {**columns, "arrival_delta": "d"}}, "exactly one of columns.arrival"),
        (
            {"format": "csv", "columns": {"arrival_delta": "d", "tokens_in": "i", "tokens_out": "o"}},
            "needs columns",
        ),
        ({"format": "azure2023", "sample_sessions": 0}, "greater than 0"),
        ({"format": "azure2023", "window": 60}, "Extra inputs"),
    ]
    for extra, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            Trace.model_validate({"file": "x", **extra})


def test_profile_scenario_takes_a_trace_instead_of_an_arrival(tmp_path: Path) -> None:
    """A scenario with [trace] validates; both or neither of arrival and trace is a profile problem."""
    head = 'name = "t"\nduration_s = 10\n[target.endpoints.a]\nbase_url = "http://127.0.0.1:1"\n'
    scenario = '[[scenarios]]\nname = "s"\n[[scenarios.routes]]\nendpoint = "a"\ndeployment = "d"\n'
    trace = '[scenarios.trace]\nfile = "x.csv"\nformat = "azure2023"\nwindow_s = 60\n'
    arrival = '[scenarios.arrival]\nprocess = "constant"\nrate_rps = 1\n'
    (tmp_path / "ok.toml").write_text(head + scenario + trace)
    profile = load_model(tmp_path / "ok.toml", Profile)
    assert profile.scenarios[0].trace is not None and profile.scenarios[0].trace.window_s == 60
    for name, body in [("both.toml", trace + arrival), ("neither.toml", "")]:
        (tmp_path / name).write_text(head + scenario + body)
        with pytest.raises(
            ProfileError, match=r"scenarios\[0\]: a scenario needs exactly one of \[arrival\]"
        ):
            load_model(tmp_path / name, Profile)


# --------------------------------------------------------------------------- robustness and laziness

FORMAT_HEADERS = {
    "azure2023": "TIMESTAMP,ContextTokens,GeneratedTokens",
    "burstgpt": "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,"
    "Log Type",
    "mooncake_sessions": "row,timestamp_ms,input_length,output_length,inferred_session,inferred_turn,"
    "inferred_parent_row,shared_prefix_blocks",
    "csv": "t,i,o,s,k",
}
GENERIC_COLUMNS = {"arrival": "t", "tokens_in": "i", "tokens_out": "o", "session_id": "s", "think": "k"}
ATOMS = (
    "|0|1|-1|7|12.5|1e400|nan|inf|-0|99999999999999999999999999999|abc|2023-11-16 18:17:03.9799600|"
    '2024-05-10 00:00:00.004000+00:00|2023-02-30 10:00:00|9999-12-31 23:59:59Z|"|""|\x00|\ufffd|١٢| 3 |s1|{|'
    "true|2023-11-16 24:61:61+99:99"
).split("|")
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(ATOMS),
    st.lists(st.integers(min_value=-3, max_value=2**64), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
JSON_KEYS = st.sampled_from(
    ["timestamp", "input_length", "output_length", "hash_ids", "t", "i", "o", "s", "k", "x"]
)


def csv_bodies(fmt: str) -> st.SearchStrategy[bytes]:
    width = FORMAT_HEADERS[fmt].count(",") + 1
    field = st.sampled_from(ATOMS)
    line = st.lists(field, min_size=width - 1, max_size=width + 1).map(",".join)
    return st.lists(line, max_size=8).map(
        lambda ls: "\n".join([FORMAT_HEADERS[fmt], *ls]).encode(errors="surrogatepass")
    )


def jsonl_bodies() -> st.SearchStrategy[bytes]:
    obj = st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=6).map(lambda d: json.dumps(d).encode())
    line = st.one_of(obj, st.binary(max_size=20))
    return st.lists(line, max_size=8).map(b"\n".join)


def trace_for(fmt: str, **options: Any) -> Trace:
    columns = GENERIC_COLUMNS if fmt in ("csv", "jsonl") else None
    return Trace(file="f", format=fmt, columns=columns, **options)


FUZZ_FORMATS = ["azure2023", "burstgpt", "mooncake", "mooncake_sessions", "csv", "jsonl"]


@pytest.mark.parametrize("fmt", FUZZ_FORMATS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_files_raise_only_harness_errors(fmt: str, data: st.DataObject) -> None:
    """Random bytes or mangled rows give requests or a HarnessError, never another exception."""
    structured = jsonl_bodies() if fmt in ("mooncake", "jsonl") else csv_bodies(fmt)
    body = data.draw(st.one_of(st.binary(max_size=200), structured))
    options = data.draw(
        st.fixed_dictionaries(
            {
                "on_bad_row": st.sampled_from(["error", "skip"]),
                "reorder_window_s": st.sampled_from([0.0, 5.0]),
                "sample_sessions": st.sampled_from([1.0, 0.5]),
                "start_s": st.sampled_from([0.0, 1.0]),
            }
        )
    )
    if fmt.startswith("mooncake"):
        options["spread_bucket_ms"] = data.draw(st.sampled_from([None, 3000.0]))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f").write_bytes(body)
        try:
            reqs = list(read_trace(trace_for(fmt, **options), Path(tmp), seed=1))
        except HarnessError:
            return
    assert_ordered(reqs)
    assert all(r.offset_ns >= 0 and r.tokens_in >= 0 and r.tokens_out >= 0 for r in reqs)


def test_large_trace_is_read_lazily(tmp_path: Path) -> None:
    """A 500k-row trace yields its first request after reading one row; memory stays flat while streaming."""
    path = tmp_path / "big.csv"
    tails = [f"{i // 20:02d}.{i % 20:02d}00000,{i},{i % 50 + 1}" for i in range(1000)]
    with path.open("w") as fh:
        fh.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for minute in range(500):  # 500 minutes of 1000 rows each
            prefix = f"2023-11-16 {10 + minute // 60:02d}:{minute % 60:02d}:"
            fh.write(prefix + f"\n{prefix}".join(tails) + "\n")
    assert path.stat().st_size > 15_000_000
    tracemalloc.start()
    try:
        stream = read_trace(Trace(file="big.csv", format="azure2023"), tmp_path, seed=0)
        first = next(stream)
        _, peak_first = tracemalloc.get_traced_memory()
        assert stream.stats.rows_read == 1
        for _ in itertools.islice(stream, 3_000):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stream.close()
    assert (first.line, first.offset_ns, first.tokens_in) == (2, 0, 0)
    assert peak_first < 1_000_000
    assert peak < 1_000_000  # 3000 more rows streamed: memory did not grow with them
    assert stream.stats.rows_yielded == 3_001
