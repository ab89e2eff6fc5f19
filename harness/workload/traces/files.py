"""Stream the records of a CSV or JSONL trace file, one at a time, with their line numbers.

Nothing here reads a file whole: CSV goes through the ``csv`` module over a text stream, JSONL
is parsed line by line with orjson. A record that cannot be split or decoded becomes a
``BadRow``; a file that cannot be opened, or a CSV header that lacks a needed column, is a
``TraceError`` (the file is unusable, whatever ``on_bad_row`` says).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from harness.errors import TraceError
from harness.workload.traces.rows import BadRow


def open_error(path: Path, exc: OSError) -> TraceError:
    return TraceError(
        f"{path}: cannot read the trace file ({exc.strerror or exc})",
        "check trace.file; it is relative to the profile file",
    )


class CsvRecord:
    """The fields of one CSV row picked by the columns a reader asked for (``None``: column absent)."""

    __slots__ = ("line", "values")

    def __init__(self, line: int, values: list[str | None]) -> None:
        self.line = line
        self.values = values


def csv_records(
    path: Path, required: Sequence[str], optional: Sequence[str] = ()
) -> Iterator[CsvRecord | BadRow]:
    """Each data row's ``required`` then ``optional`` fields, by header name (never by position).

    Header names are matched after stripping spaces; blank lines are ignored. The text is decoded
    as UTF-8 (a BOM is dropped); undecodable bytes become U+FFFD, so they fail as values, not here.
    """
    try:
        fh = path.open(encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise open_error(path, exc) from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise TraceError(f"{path}:1: the header cannot be read ({exc})", "fix the first line") from None
        if header is None:
            raise TraceError(f"{path}: the file is empty", "a CSV trace starts with a header line")
        index = {name.strip(): i for i, name in enumerate(header)}
        missing = [c for c in required if c not in index]
        if missing:
            raise TraceError(
                f"{path}:1: the header lacks column(s) {', '.join(map(repr, missing))}; "
                f"it has {', '.join(map(repr, index))}"[:400],
                "check trace.format, or the names in trace.columns (they must match the header exactly)",
            )
        width = len(header)
        picks = [index[c] for c in required] + [index.get(c, -1) for c in optional]
        all_present = min(picks, default=0) >= 0
        while True:
            before = reader.line_num
            try:
                fields = next(reader, None)
            except csv.Error as exc:
                if reader.line_num == before:  # the reader cannot move on: the rest is unreadable
                    raise TraceError(f"{path}:{before + 1}: {exc}", "fix or remove that line") from None
                yield BadRow(reader.line_num, "malformed_csv", f"not valid CSV ({exc})")
                continue
            if fields is None:
                return
            if not fields:
                continue
            line = reader.line_num
            if len(fields) != width:
                if len(fields) == 1 and not fields[0].strip():
                    continue  # a line of spaces
                yield BadRow(line, "wrong_field_count", f"has {len(fields)} fields; the header has {width}")
                continue
            yield CsvRecord(
                line,
                [fields[i] for i in picks] if all_present else [fields[i] if i >= 0 else None for i in picks],
            )


def jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]] | BadRow]:
    """Each non-blank line's JSON object with its line number."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise open_error(path, exc) from None
    with fh:
        for line, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield BadRow(line, "bad_json", f"not valid JSON ({str(exc)[:80]})")
                continue
            if not isinstance(obj, dict):
                yield BadRow(line, "bad_json", f"is a JSON {type(obj).__name__}, not an object")
                continue
            yield line, obj
