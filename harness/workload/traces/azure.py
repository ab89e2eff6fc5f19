"""Azure LLM inference traces (Splitwise 2023, DynamoLLM 2024 week-long): stateless requests.

Columns ``TIMESTAMP, ContextTokens, GeneratedTokens``. The 2023 files write
``2023-11-16 18:17:03.9799600`` (7 fractional digits, no zone), the 2024 files
``2024-05-10 00:00:00.004000+00:00``; one reader takes both (a missing zone means UTC) and keeps
every digit (100 ns). The traces have no session identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from harness.profile.trace import Trace
from harness.workload.traces.files import CsvRecord, csv_records
from harness.workload.traces.rows import BadRow, RawRow
from harness.workload.traces.values import BadValue, IsoClock, tokens

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def read_rows(path: Path, trace: Trace) -> Iterator[RawRow | BadRow]:
    clock = IsoClock()
    for rec in csv_records(path, COLUMNS):
        if not isinstance(rec, CsvRecord):
            yield rec
            continue
        stamp, tokens_in, tokens_out = rec.values
        try:
            yield RawRow(
                rec.line,
                clock.ns(stamp or ""),
                tokens(tokens_in, "ContextTokens"),
                tokens(tokens_out, "GeneratedTokens"),
            )
        except BadValue as exc:
            yield BadRow(rec.line, "bad_value", str(exc))
