"""Stream records to one Parquet file with bounded memory, off the caller's thread.

The caller (an asyncio event loop on the hot path) only appends a row tuple to a list:
``add`` is O(1) and never touches pyarrow. Every ``batch_rows`` rows the list is handed to a
single background thread through a bounded queue; that thread transposes the rows into
columns, builds a ``pa.RecordBatch`` of ``RECORD_SCHEMA`` and writes it as one zstd row group.

Memory is bounded by ``(max_pending_batches + 2) * batch_rows`` rows. If the disk cannot keep
up, ``add`` blocks on the full queue: the run slows down visibly (schedule lag) instead of
growing without bound.

Rows are kept as tuples on the caller's side and transposed to columns in the writer thread
(``zip(*rows)``, in C) because one tuple append costs the event loop about a quarter of
appending to 38 column lists.

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


def _to_batch(rows: list[_Row]) -> pa.RecordBatch:
    """Rows in ``RECORD_FIELDS`` order → one RecordBatch; ``ValueError`` on a null required field."""
    columns = list(zip(*rows, strict=True))
    arrays = [pa.array(col, type=field.type) for col, field in zip(columns, RECORD_SCHEMA, strict=True)]
    for i, name in _REQUIRED:
        nulls = arrays[i].null_count
        if nulls:
            first = next(r for r in rows if r[i] is None)
            raise ValueError(
                f"record field {name!r} is null in {nulls} row(s) (first: request_id={first[0]!r}); "
                "the record schema requires a value"
            )
    return pa.RecordBatch.from_arrays(arrays, schema=RECORD_SCHEMA)


class RecordWriter:
    """Writes ``Record``s to one Parquet file in row groups of ``batch_rows``; see the module docstring."""

    __slots__ = (
        "_closed",
        "_error",
        "_parquet",
        "_queue",
        "_rows",
        "_rows_written",
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
        self._rows_written = 0
        self._error: BaseException | None = None
        self._closed = False
        # opened here, on the caller's thread, so a bad path fails at once rather than at close()
        self._parquet = pq.ParquetWriter(str(self.partial_path), RECORD_SCHEMA, compression="zstd")
        self._queue: queue.Queue[list[_Row] | None] = queue.Queue(maxsize=max(1, max_pending_batches))
        self._thread = threading.Thread(target=self._run, name="harness-record-writer", daemon=True)
        self._thread.start()

    # -- caller's side (hot path) ----------------------------------------------------------

    def add(self, record: Record) -> None:
        """Queue one record; O(1) except every ``batch_rows``-th call, which hands a batch over."""
        if self._closed:
            raise RuntimeError(f"RecordWriter for {self.path} is closed")
        rows = self._rows
        rows.append(record.as_row())
        if len(rows) >= self.batch_rows:
            self._hand_over()

    def _hand_over(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            self._queue.put(rows)

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
        q = self._queue
        while True:
            rows = q.get()
            try:
                if rows is None:
                    return
                if self._error is None:  # after a failure, keep draining so add() never blocks
                    self._parquet.write_batch(_to_batch(rows))
                    self._rows_written += len(rows)
            except BaseException as exc:  # surfaced by flush()/close() on the caller's thread
                self._error = exc
            finally:
                q.task_done()
