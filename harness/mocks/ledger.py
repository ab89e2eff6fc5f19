"""The mock's ledger: one row per request an endpoint received, the ground truth for compliance.

Append-only and columnar (one Python list per ``LEDGER_FIELDS`` column), so recording a
request is a handful of ``list.append`` calls; Arrow conversion happens only when the ledger
is read (``to_table``), off the request path.
"""

from __future__ import annotations

import inspect

import pyarrow as pa
import pyarrow.parquet as pq

from harness.results.schema import LEDGER_FIELDS, LEDGER_SCHEMA


class Ledger:
    """Rows of ``LEDGER_SCHEMA``, stored column by column."""

    __slots__ = (
        "_api",
        "_bytes_in",
        "_bytes_out",
        "_cloud",
        "_deployment",
        "_done_wall_ns",
        "_endpoint",
        "_pid",
        "_received_wall_ns",
        "_region",
        "_request_id",
        "_response_id",
        "_stateful",
        "_status",
        "_stream",
        "_tokens_in",
        "_tokens_out",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every row."""
        self._request_id: list[str | None] = []
        self._endpoint: list[str] = []
        self._cloud: list[str] = []
        self._region: list[str] = []
        self._deployment: list[str | None] = []
        self._api: list[str] = []
        self._stateful: list[bool] = []
        self._response_id: list[str | None] = []
        self._status: list[int] = []
        self._stream: list[bool] = []
        self._bytes_in: list[int] = []
        self._bytes_out: list[int] = []
        self._tokens_in: list[int] = []
        self._tokens_out: list[int] = []
        self._received_wall_ns: list[int] = []
        self._done_wall_ns: list[int] = []
        self._pid: list[int] = []

    def append(
        self,
        request_id: str | None,
        endpoint: str,
        cloud: str,
        region: str,
        deployment: str | None,
        api: str,
        stateful: bool,
        response_id: str | None,
        status: int,
        stream: bool,
        bytes_in: int,
        bytes_out: int,
        tokens_in: int,
        tokens_out: int,
        received_wall_ns: int,
        done_wall_ns: int,
        pid: int,
    ) -> None:
        """Record one request (every column is required, so a row is never half-filled; the
        hot path passes them positionally, in ``LEDGER_FIELDS`` order)."""
        self._request_id.append(request_id)
        self._endpoint.append(endpoint)
        self._cloud.append(cloud)
        self._region.append(region)
        self._deployment.append(deployment)
        self._api.append(api)
        self._stateful.append(stateful)
        self._response_id.append(response_id)
        self._status.append(status)
        self._stream.append(stream)
        self._bytes_in.append(bytes_in)
        self._bytes_out.append(bytes_out)
        self._tokens_in.append(tokens_in)
        self._tokens_out.append(tokens_out)
        self._received_wall_ns.append(received_wall_ns)
        self._done_wall_ns.append(done_wall_ns)
        self._pid.append(pid)

    def __len__(self) -> int:
        return len(self._request_id)

    def to_table(self) -> pa.Table:
        """A snapshot of the rows as an Arrow table with exactly ``LEDGER_SCHEMA``."""
        n = len(self)
        columns = [pa.array(getattr(self, "_" + f.name)[:n], type=f.type) for f in LEDGER_SCHEMA]
        return pa.Table.from_arrays(columns, schema=LEDGER_SCHEMA)

    def to_parquet_bytes(self) -> bytes:
        """The snapshot as one Parquet file in memory."""
        return table_to_parquet_bytes(self.to_table())


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    """Serialise an Arrow table as a Parquet file held in memory."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def parquet_bytes_to_table(data: bytes) -> pa.Table:
    """Read a Parquet file held in memory back into an Arrow table."""
    return pq.read_table(pa.BufferReader(data))


# The columns and append's parameters must be the schema's, in order; fail at import if they drift.
_params = tuple(inspect.signature(Ledger.append).parameters)[1:]
if _params != LEDGER_FIELDS or tuple(sorted(Ledger.__slots__)) != tuple(
    sorted("_" + f for f in LEDGER_FIELDS)
):
    raise ImportError(f"Ledger does not match LEDGER_FIELDS {LEDGER_FIELDS}")  # pragma: no cover
del _params
