"""Mooncake FAST'25 traces: the JSONL request traces and the inferred-sessions CSV derived from one.

JSONL rows are ``{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}``, with
``timestamp`` in milliseconds from the trace start. ``hash_ids`` name the prompt's 512-token
blocks; an id stands for the whole prefix up to its block, so equal leading ids mean a shared,
cacheable prefix. ``prefix_blocks`` is the number of leading blocks already seen in an earlier
request: one set of ids (about 60 bytes per distinct block) is the only state. The JSONL traces
have no session ids.

The inferred-sessions CSV (``row, timestamp_ms, input_length, output_length, inferred_session,
inferred_turn, inferred_parent_row, shared_prefix_blocks``) adds a heuristic session and turn
per request (see data/traces/README.md); it replays as sessions.

The conversation trace's timestamps are quantized to 3 s buckets; ``spread_bucket_ms`` (applied
by the replay pipeline) spreads each bucket's requests evenly instead of sending them as a burst.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from harness.profile.trace import Trace
from harness.workload.traces.files import CsvRecord, csv_records, jsonl_records
from harness.workload.traces.rows import BadRow, RawRow
from harness.workload.traces.values import UNIT_NS, BadValue, decimal_ns, json_time_ns, tokens

MS = UNIT_NS["ms"]
SESSION_COLUMNS = ("timestamp_ms", "input_length", "output_length", "inferred_session", "inferred_turn")


def _prefix_blocks(hash_ids: object, seen: set[int]) -> int | None:
    if hash_ids is None:
        return None
    if not isinstance(hash_ids, list) or not all(type(h) is int for h in hash_ids):
        raise BadValue("hash_ids is not a list of integers")
    shared = 0
    for h in hash_ids:
        if h not in seen:
            break
        shared += 1
    seen.update(hash_ids)
    return shared


def read_rows(path: Path, trace: Trace) -> Iterator[RawRow | BadRow]:
    """The JSONL request trace; ``hash_ids`` is optional (without it ``prefix_blocks`` is None)."""
    seen: set[int] = set()
    for rec in jsonl_records(path):
        if isinstance(rec, BadRow):
            yield rec
            continue
        line, obj = rec
        try:
            missing = [k for k in ("timestamp", "input_length", "output_length") if k not in obj]
            if missing:
                raise BadValue(f"lacks key(s) {', '.join(missing)}")
            yield RawRow(
                line,
                json_time_ns(obj["timestamp"], MS),
                tokens(obj["input_length"], "input_length"),
                tokens(obj["output_length"], "output_length"),
                prefix_blocks=_prefix_blocks(obj.get("hash_ids"), seen),
            )
        except BadValue as exc:
            yield BadRow(line, "bad_value", str(exc))


def read_session_rows(path: Path, trace: Trace) -> Iterator[RawRow | BadRow]:
    """The inferred-sessions CSV: sessions and turns as inferred, shared prefix blocks if present."""
    for rec in csv_records(path, SESSION_COLUMNS, ("shared_prefix_blocks",)):
        if not isinstance(rec, CsvRecord):
            yield rec
            continue
        stamp, tokens_in, tokens_out, session, turn, shared = rec.values
        try:
            yield RawRow(
                rec.line,
                decimal_ns(stamp or "", MS),
                tokens(tokens_in, "input_length"),
                tokens(tokens_out, "output_length"),
                (session or "").strip() or None,
                tokens(turn, "inferred_turn") if turn and turn.strip() else None,
                prefix_blocks=tokens(shared, "shared_prefix_blocks") if shared and shared.strip() else None,
            )
        except BadValue as exc:
            yield BadRow(rec.line, "bad_value", str(exc))
