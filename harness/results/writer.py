"""Stream records to one Parquet file with bounded memory; the file I/O off the caller's thread.

The caller (an asyncio event loop on the hot path) appends a row tuple per record. Every
``SLICE_ROWS`` rows (fewer for stream records with many token timestamps: ``SLICE_TOKENS``) it
converts them to one Arrow ``RecordBatch`` of ``RECORD_SCHEMA`` (~2 µs a row, ~0.2 ms per
slice); every ``batch_rows`` rows the slices go to a single background thread through a bounded
queue, which writes them as one zstd row group.

Why the conversion runs on the caller's thread: turning Python objects into Arrow arrays holds
the GIL inside C calls, and a second thread doing it competes with the event loop for both the
GIL and the core (runs pin the generator to one). With an 8,192-row batch converted in the
writer thread, a 10k rps open loop had a schedule-lag p99 of 4 ms and p99.9 of 30 ms, against
0.13 ms with no records written at all (bench/open_loop.py, docs/benchmarks.md); small slices on
the loop cost the same CPU in bounded, predictable pieces. What is left to the thread (Parquet
encoding, compression, the write) releases the GIL.

Memory is bounded by ``(max_pending_batches + 2) * batch_rows`` rows. If the disk cannot keep
up, ``add`` blocks on the full queue: the run slows down visibly (schedule lag) instead of
growing without bound. A record that cannot be converted (a wrong type, a null in a required
field) does not raise from ``add``: like a write error, it is re-raised by ``flush``/``close``,
and nothing after it is written.

The file is written as ``<path>.partial`` (``path.with_suffix(".parquet.partial")``) and
renamed to ``path`` by ``close()``: a run that was interrupted but closed its writer leaves
a valid file; a killed run leaves only the ``.partial``.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from harness.results.record import Record
from harness.results.schema import RECORD_SCHEMA

_Row = tuple[Any, ...]
_REQUIRED = tuple((i, f.name) for i, f in enumerate(RECORD_SCHEMA) if not f.nullable)
SLICE_ROWS = 128  # rows converted at a time on the caller's thread (module docstring)
SLICE_TOKENS = 768
"""A slice also ends once its rows carry this many token timestamps. Each costs ~0.2 µs to
convert, so a slice of 20-token stream records stops at ~38 rows (~0.2 ms, like 128 plain rows)
instead of taking ~0.7 ms of the loop at once. At 800 streams/s the engine's loop-lag p99 was
0.40 ms against 0.73–0.79 ms (bench/fidelity.py, A/B)."""


_ROW_TYPE = pa.struct(list(RECORD_SCHEMA))


def _to_batch(rows: list[_Row]) -> pa.RecordBatch:
    """Rows in ``RECORD_FIELDS`` order → one RecordBatch; ``ValueError`` on a null required field.

    One ``pa.array`` call over the row tuples as a struct type: a fixed cost per call about a
    third of converting 38 columns one by one, so small slices stay cheap (~1.5 µs a row at
    128 rows against ~2.6 µs by columns)."""
    batch = pa.RecordBatch.from_struct_array(pa.array(rows, type=_ROW_TYPE))
    for i, name in _REQUIRED:
        nulls = batch.column(i).null_count
        if nulls:
            first = next(r for r in rows if r[i] is None)
            raise ValueError(
                f"record field {name!r} is null in {nulls} row(s) (first: request_id={first[0]!r}); "
                "the record schema requires a value"
            )
    return batch


def _background_priority() -> None:
    """Put the calling thread in Linux's ``SCHED_IDLE`` class: it runs only when nothing else on
    its core wants to, and yields the core at once when the event loop's thread wakes. Without
    it, on a core shared with the loop (a pinned generator), the scheduler gave the writer
    time slices of a few ms in the middle of the loop's work. Elsewhere a no-op."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread, on Linux
    except (AttributeError, OSError):
        pass


def _warm_up() -> None:
    """The first conversion in a process costs ~180 ms (pyarrow sets up its converters); pay it
    when the writer opens, before a run's clock starts, not on the first slice of the run."""
    _to_batch([Record(request_id="warm-up", index=0, scenario="", intended_ns=0, token_ns=[0]).as_row()])


class RecordWriter:
    """Writes ``Record``s to one Parquet file in row groups of ``batch_rows``; see the module docstring."""

    __slots__ = (
        "_batches",
        "_closed",
        "_error",
        "_parquet",
        "_pending_rows",
        "_queue",
        "_rows",
        "_rows_written",
        "_slice_rows",
        "_slice_tokens",
        "_thread",
        "batch_rows",
        "partial_path",
        "path",
    )

    def __init__(self, path: Path, batch_rows: int = 8192, *, max_pending_batches: int = 4) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.path = Path(path)
        self.partial_path = self.path.with_suffix(".parquet.partial")
        self.batch_rows = batch_rows
        self._rows: list[_Row] = []
        self._slice_rows = min(SLICE_ROWS, batch_rows)
        self._slice_tokens = 0  # token timestamps in the rows not yet converted
        self._batches: list[pa.RecordBatch] = []  # converted slices not yet handed over
        self._pending_rows = 0  # rows in self._batches
        self._rows_written = 0
        self._error: BaseException | None = None
        self._closed = False
        _warm_up()
        # opened here, on the caller's thread, so a bad path fails at once rather than at close()
        self._parquet = pq.ParquetWriter(str(self.partial_path), RECORD_SCHEMA, compression="zstd")
        self._queue: queue.Queue[list[pa.RecordBatch] | None] = queue.Queue(
            maxsize=max(1, max_pending_batches)
        )
        self._thread = threading.Thread(target=self._run, name="harness-record-writer", daemon=True)
        self._thread.start()

    # -- caller's side (hot path) ----------------------------------------------------------

    def add(self, record: Record) -> None:
        """Queue one record; O(1) except when it completes a slice (``SLICE_ROWS`` rows or
        ``SLICE_TOKENS`` token timestamps), which it converts."""
        if self._closed:
            raise RuntimeError(f"RecordWriter for {self.path} is closed")
        rows = self._rows
        rows.append(record.as_row())
        tokens = record.token_ns
        if tokens:
            self._slice_tokens += len(tokens)
        if len(rows) >= self._slice_rows or self._slice_tokens >= SLICE_TOKENS:
            self._convert()

    def _convert(self) -> None:
        rows, self._rows = self._rows, []
        self._slice_tokens = 0
        if not rows or self._error is not None:
            return
        try:
            self._batches.append(_to_batch(rows))
        except Exception as exc:  # surfaced by flush()/close(), as a write error would be
            self._error = exc
            return
        self._pending_rows += len(rows)
        if self._pending_rows >= self.batch_rows:
            self._hand_over_batches()
        # the next slice ends where the row group does: row groups stay exactly batch_rows
        self._slice_rows = min(SLICE_ROWS, self.batch_rows - self._pending_rows)

    def _hand_over_batches(self) -> None:
        batches, self._batches = self._batches, []
        self._pending_rows = 0
        self._slice_rows = min(SLICE_ROWS, self.batch_rows)
        if batches:
            self._queue.put(batches)

    def _hand_over(self) -> None:
        self._convert()
        self._hand_over_batches()

    def flush(self) -> None:
        """Hand over the pending rows and wait until the writer thread has written them."""
        if self._closed:
            return
        self._hand_over()
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Write what is pending, finish the file and rename it into place. Idempotent.

        Re-raises an exception from the writer thread; the ``.partial`` file is then left as is.
        """
        if self._closed:
            return
        self._hand_over()
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._parquet.close()
        except Exception as exc:
            if self._error is None:
                self._error = exc
        self._raise_if_failed()
        fd = os.open(self.partial_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.partial_path, self.path)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def rows_written(self) -> int:
        """Rows the writer thread has written to the file so far."""
        return self._rows_written

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        _background_priority()
        q = self._queue
        while True:
            batches = q.get()
            try:
                if batches is None:
                    return
                if self._error is None:  # after a failure, keep draining so add() never blocks
                    # combined first: writing a many-chunk table held the GIL for ms at a time
                    table = pa.Table.from_batches(batches, schema=RECORD_SCHEMA).combine_chunks()
                    self._parquet.write_table(table, row_group_size=table.num_rows)  # one row group
                    self._rows_written += table.num_rows
            except BaseException as exc:  # surfaced by flush()/close() on the caller's thread
                self._error = exc
            finally:
                q.task_done()
