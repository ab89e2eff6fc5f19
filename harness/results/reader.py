"""Read a run directory's Parquet files into pandas DataFrames.

Columns come back as ``pd.ArrowDtype`` (zero-copy from Arrow): nullable integer timestamps
stay exact int64 instead of becoming float64 with NaN, and ``token_ns`` stays an Arrow list
column that ``harness.results.derive`` flattens without a Python loop per row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import InputError
from harness.results.rundir import LEDGER, PARTS, REQUESTS
from harness.results.schema import RECORD_SCHEMA_VERSION

_VERSION_KEY = b"harness.record_schema_version"


def _check_version(table: pa.Table, file: Path) -> None:
    meta = table.schema.metadata or {}
    raw = meta.get(_VERSION_KEY)
    if raw is not None and int(raw) > RECORD_SCHEMA_VERSION:
        raise InputError(
            f"{file}: record schema version {int(raw)} is newer than this harness reads "
            f"({RECORD_SCHEMA_VERSION})",
            "upgrade the harness to read this run",
        )


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def record_files(run_dir: Path) -> list[Path]:
    """The record files of a run: every ``parts/*.parquet`` if there are any, else ``requests.parquet``."""
    run_dir = Path(run_dir)
    parts = sorted((run_dir / PARTS).glob("*.parquet"))
    if parts:
        return parts
    single = run_dir / REQUESTS
    if single.is_file():
        return [single]
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory", "pass the path of a results/<run> directory")
    partial = run_dir / f"{REQUESTS}.partial"
    hint = (
        "the run was killed before its records were closed; the .partial file is not readable"
        if partial.exists() or any((run_dir / PARTS).glob("*.partial"))
        else "pass the path of a results/<run> directory"
    )
    raise InputError(f"{run_dir}: no {REQUESTS} or {PARTS}/*.parquet in this run directory", hint)


def read_records(run_dir: Path) -> pd.DataFrame:
    """All records of a run as one DataFrame (parts concatenated in file-name order, index 0..n-1)."""
    tables = []
    for file in record_files(run_dir):
        table = pq.read_table(file)
        _check_version(table, file)
        tables.append(table)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    return _to_pandas(table)


def read_ledger(run_dir: Path) -> pd.DataFrame | None:
    """The mock fleet's ledger of the run, or ``None`` when no mocks ran."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory", "pass the path of a results/<run> directory")
    file = run_dir / LEDGER
    if not file.is_file():
        return None
    return _to_pandas(pq.read_table(file))
