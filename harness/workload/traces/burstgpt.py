"""BurstGPT (Azure OpenAI GPT-3.5/GPT-4 traffic): both published schemas, parsed by column name.

v1: ``Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type``;
v2.0 (``BurstGPT_3``) inserts ``Session ID`` and ``Elapsed time`` at positions 2 and 3.
``Timestamp`` is seconds (integer in v1, float in v3) on one clock; the replay starts at the
first row.

Rows with **0 response tokens are requests that failed** in the source system: they are
skipped and counted as ``failed_request`` in the stats, never replayed (they keep their place in
the time order and may set the trace's origin).

Sessions (v3 only): ``Session ID`` is set on conversation rows and empty on API rows (those are
stateless). ``turn`` counts a session's successful rows from 1 in file order. ``think_s`` is the
user's pause before a turn: this row's arrival minus the previous turn's arrival plus its
``Elapsed time`` (submission to complete response), floored at 0; the first turn has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from harness.profile.trace import Trace
from harness.workload.traces.files import CsvRecord, csv_records
from harness.workload.traces.rows import BadRow, RawRow
from harness.workload.traces.values import NS_PER_S, BadValue, decimal_ns, tokens

REQUIRED = ("Timestamp", "Request tokens", "Response tokens")
OPTIONAL = ("Session ID", "Elapsed time")


def read_rows(path: Path, trace: Trace) -> Iterator[RawRow | BadRow]:
    # session id -> (turns so far, previous turn's arrival ns, its elapsed ns): one entry per session
    sessions: dict[str, tuple[int, int, int | None]] = {}
    for rec in csv_records(path, REQUIRED, OPTIONAL):
        if not isinstance(rec, CsvRecord):
            yield rec
            continue
        stamp, req, resp, session, elapsed = rec.values
        try:
            t_ns = decimal_ns(stamp or "", NS_PER_S)
            tokens_in = tokens(req, "Request tokens")
            tokens_out = tokens(resp, "Response tokens")
            elapsed_ns = decimal_ns(elapsed, NS_PER_S) if elapsed and elapsed.strip() else None
            if elapsed_ns is not None and elapsed_ns < 0:
                raise BadValue(f"Elapsed time {elapsed!r} is negative")
        except BadValue as exc:
            yield BadRow(rec.line, "bad_value", str(exc))
            continue
        session_id = session.strip() if session else None
        if tokens_out == 0:
            yield RawRow(rec.line, t_ns, tokens_in, 0, session_id or None, failed=True)
            continue
        if not session_id:
            yield RawRow(rec.line, t_ns, tokens_in, tokens_out)
            continue
        turns, prev_t, prev_elapsed = sessions.get(session_id, (0, 0, None))
        think_s = None
        if turns and prev_elapsed is not None:
            think_s = max(0, t_ns - prev_t - prev_elapsed) / NS_PER_S
        sessions[session_id] = (turns + 1, t_ns, elapsed_ns)
        yield RawRow(rec.line, t_ns, tokens_in, tokens_out, session_id, turns + 1, think_s)
