"""Your own trace, as CSV (columns by header name) or JSONL (top-level keys), mapped by ``TraceColumns``.

Arrival time is absolute (``arrival`` in s, ms, µs, ns or ISO 8601) or per-session
(``arrival_delta``: time since the same session's previous turn; a session's first row gives its
start time on the trace's clock). Without a ``turn`` column, turns are counted per session from 1
in file order. Per-session state is one small entry per session id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from harness.profile.trace import Trace, TraceColumns
from harness.workload.traces.files import CsvRecord, csv_records, jsonl_records
from harness.workload.traces.rows import BadRow, RawRow
from harness.workload.traces.values import UNIT_NS, BadValue, IsoClock, json_time_ns, seconds, tokens


class _Mapper:
    """Turns one record's picked values into a row, keeping per-session turn and time state."""

    __slots__ = ("_arrival_ns", "_clock", "_columns", "_delta_ns", "_sessions", "_think_ns")

    def __init__(self, columns: TraceColumns) -> None:
        self._columns = columns
        self._clock = IsoClock() if columns.arrival_unit == "iso" else None
        self._arrival_ns = UNIT_NS.get(columns.arrival_unit, 1)
        self._delta_ns = UNIT_NS[columns.arrival_delta_unit]
        self._think_ns = UNIT_NS[columns.think_unit]
        self._sessions: dict[str, tuple[int, int]] = {}  # session id -> (turns so far, last arrival ns)

    def names(self) -> tuple[list[str], list[str]]:
        """The required and optional column names, in the order ``row`` takes their values."""
        c = self._columns
        time = c.arrival if c.arrival is not None else c.arrival_delta
        assert time is not None  # TraceColumns guarantees one of them
        optional = [c.session_id, c.turn, c.think]
        return [time, c.tokens_in, c.tokens_out], [n for n in optional if n is not None]

    def row(self, line: int, values: list[object]) -> RawRow:
        c = self._columns
        time, tokens_in, tokens_out, *rest = values
        session = rest.pop(0) if c.session_id is not None else None
        turn_value = rest.pop(0) if c.turn is not None else None
        think_value = rest.pop(0) if c.think is not None else None
        if time is None or time == "":
            raise BadValue(f"the arrival time ({c.arrival or c.arrival_delta}) is empty")
        tin = tokens(tokens_in, c.tokens_in)
        tout = tokens(tokens_out, c.tokens_out)
        session_id = None if session is None or session == "" else str(session).strip() or None
        turn = None if turn_value is None or turn_value == "" else tokens(turn_value, c.turn or "turn")
        think_s = (
            None
            if think_value is None or think_value == ""
            else seconds(think_value, self._think_ns, c.think or "think")
        )
        if self._clock is not None:
            if not isinstance(time, str):
                raise BadValue(f"arrival {time!r} is not an ISO 8601 string")
            t_ns = self._clock.ns(time)
        elif c.arrival is not None:
            t_ns = json_time_ns(time, self._arrival_ns)
        else:
            delta_ns = json_time_ns(time, self._delta_ns)
            if delta_ns < 0:
                raise BadValue(f"arrival_delta {time!r} is negative")
            if session_id is None:
                raise BadValue(f"the session id ({c.session_id}) is empty; arrival_delta needs one")
            t_ns = self._sessions.get(session_id, (0, 0))[1] + delta_ns
        if session_id is not None:
            turns = self._sessions.get(session_id, (0, 0))[0] + 1
            self._sessions[session_id] = (turns, t_ns)
            if turn is None:
                turn = turns
        return RawRow(line, t_ns, tin, tout, session_id, turn, think_s)


def read_csv_rows(path: Path, trace: Trace) -> Iterator[RawRow | BadRow]:
    assert trace.columns is not None  # Trace requires columns for format "csv"
    mapper = _Mapper(trace.columns)
    required, optional = mapper.names()
    for rec in csv_records(path, required + optional):  # every column you name must be in the header
        if not isinstance(rec, CsvRecord):
            yield rec
            continue
        try:
            yield mapper.row(rec.line, [v.strip() if v is not None else None for v in rec.values])
        except BadValue as exc:
            yield BadRow(rec.line, "bad_value", str(exc))


def read_jsonl_rows(path: Path, trace: Trace) -> Iterator[RawRow | BadRow]:
    assert trace.columns is not None  # Trace requires columns for format "jsonl"
    mapper = _Mapper(trace.columns)
    required, optional = mapper.names()
    for rec in jsonl_records(path):
        if isinstance(rec, BadRow):
            yield rec
            continue
        line, obj = rec
        missing = [k for k in required if k not in obj]
        if missing:
            yield BadRow(line, "missing_field", f"lacks key(s) {', '.join(map(repr, missing))}")
            continue
        try:
            yield mapper.row(line, [obj[k] for k in required] + [obj.get(k) for k in optional])
        except BadValue as exc:
            yield BadRow(line, "bad_value", str(exc))
