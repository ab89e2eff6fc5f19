"""The run directory: its name, the names of the files in it, and atomic JSON writes.

``results/<UTC start, YYYYmmddTHHMMSSZ>-<profile name>/`` holds everything one run produced;
reports and gates read only from there, so a run can be re-judged without re-running it.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

REQUESTS: Final = "requests.parquet"
PARTS: Final = "parts"  # one Parquet file per worker process, instead of REQUESTS
LEDGER: Final = "ledger.parquet"
TIMESERIES: Final = "timeseries.parquet"
SUMMARY: Final = "summary.json"
COMPLIANCE: Final = "compliance.json"
PROFILE: Final = "profile.resolved.json"
RUN_LOG: Final = "run.log"
ROUTER_LOG: Final = "router-log.jsonl"  # the reference router's injection log, when [target.router] ran
REPORT_HTML: Final = "report.html"
JUNIT_XML: Final = "junit.xml"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_dir_name(profile_name: str, now: datetime) -> str:
    """``YYYYmmddTHHMMSSZ-<profile>``; a naive ``now`` is taken as UTC, unsafe characters become ``-``."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = _UNSAFE.sub("-", profile_name).strip("-.") or "run"
    return f"{stamp}-{name}"


def new_run_dir(results_root: Path, profile_name: str, now: datetime | None = None) -> Path:
    """Create and return a fresh run directory; ``-2``, ``-3``… are appended if the name is taken."""
    base = run_dir_name(profile_name, now or datetime.now(UTC))
    results_root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = results_root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()  # atomic: two runs started in the same second get different names
        except FileExistsError:
            n += 1
            continue
        return candidate


def _missing_as_null(obj: Any) -> None:
    """pandas' missing-value markers (``pd.NA``, ``pd.NaT``) read from records become JSON null."""
    if type(obj).__name__ in ("NAType", "NaTType"):
        return None
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (a temporary file in the same directory, renamed)."""
    data = (
        orjson.dumps(obj, default=_missing_as_null, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        + b"\n"
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
