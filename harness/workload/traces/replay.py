"""The replay pipeline: a format reader's rows → ordered, cut, sampled, scaled ``TraceRequest``s.

Stages, each a generator over the previous one (nothing is read ahead beyond one timestamp
bucket or the reorder window)::

    reader ─► count ─► spread buckets (mooncake) ─► time order ─► window ─► drop failed
           ─► sample sessions ─► clamp tokens ─► scale ─► TraceRequest

* The trace's origin is its first row's time (after re-ordering); a row's replay offset is
  ``(t - t_first - start_s) / time_scale``. Rows before ``start_s`` are skipped; reading stops at
  the first row at or after ``start_s + window_s`` (both in trace seconds).
* Rows must be in time order. ``reorder_window_s`` re-sorts rows that are at most that late;
  a row later than that is a bad row (``out_of_order``).
* ``rate_rps`` runs the same pipeline once first, unscaled, to count the rows and span it would
  replay, then sets ``time_scale = rate_rps × span / (rows - 1)``; that pre-pass streams too.
* Session sampling keeps a session when a seeded hash of its id falls below
  ``sample_sessions``, so a session is kept or dropped whole and the choice is the same on every
  run and machine; rows without a session are sampled one by one (by line number).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.errors import TraceError
from harness.profile.trace import Trace
from harness.workload.traces import azure, burstgpt, generic, mooncake
from harness.workload.traces.rows import BadRow, RawRow, TraceRequest, TraceStats
from harness.workload.traces.values import NS_PER_S

Reader = Callable[[Path, Trace], Iterator[RawRow | BadRow]]

READERS: dict[str, Reader] = {
    "azure2023": azure.read_rows,
    "azure2024": azure.read_rows,
    "burstgpt": burstgpt.read_rows,
    "mooncake": mooncake.read_rows,
    "mooncake_sessions": mooncake.read_session_rows,
    "csv": generic.read_csv_rows,
    "jsonl": generic.read_jsonl_rows,
}

_BAD_ROW_HINT = 'fix or delete the row, or set on_bad_row = "skip" to skip and count such rows'


class TraceStream:
    """An iterator of ``TraceRequest`` in non-decreasing ``offset_ns``; ``stats`` fills as it runs."""

    __slots__ = ("_it", "stats")

    def __init__(self, it: Iterator[TraceRequest], stats: TraceStats) -> None:
        self._it = it
        self.stats = stats

    def __iter__(self) -> TraceStream:
        return self

    def __next__(self) -> TraceRequest:
        return next(self._it)

    def close(self) -> None:
        """Stop early and close the trace file."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def read_trace(trace: Trace, base_dir: Path, *, seed: int) -> TraceStream:
    """Replay ``trace`` (its ``file`` relative to ``base_dir``) lazily; errors surface while iterating.

    A missing file is reported at once. With ``on_bad_row = "error"`` the first unreadable row
    raises ``TraceError`` naming ``<file>:<line>``; with ``"skip"`` it is counted in
    ``stream.stats.skipped`` under its reason.
    """
    path = base_dir / trace.file
    if not path.is_file():
        raise TraceError(
            f"{path}: trace file not found",
            "trace.file is relative to the profile file; check the path and its spelling",
        )
    stats = TraceStats()
    if trace.rate_rps is None:
        stats.time_scale = trace.time_scale
        return TraceStream(_pipeline(trace, path, seed, stats), stats)
    return TraceStream(_rescaled(trace, path, seed, stats), stats)


def _rescaled(trace: Trace, path: Path, seed: int, stats: TraceStats) -> Iterator[TraceRequest]:
    assert trace.rate_rps is not None
    probe = TraceStats(time_scale=1.0)
    for _ in _pipeline(trace, path, seed, probe):
        pass
    rows, span_s = probe.rows_yielded, probe.span_s
    if rows < 2 or span_s <= 0:
        raise TraceError(
            f"{path}: cannot rescale to rate_rps = {trace.rate_rps}: the replayed part has {rows} row(s) "
            f"over {span_s:g} s",
            "widen window_s or start_s, or use time_scale instead of rate_rps",
        )
    stats.time_scale = trace.rate_rps * span_s / (rows - 1)
    yield from _pipeline(trace, path, seed, stats)


def _pipeline(trace: Trace, path: Path, seed: int, stats: TraceStats) -> Iterator[TraceRequest]:
    def bad(row: BadRow) -> None:
        if trace.on_bad_row == "error":
            raise TraceError(f"{path}:{row.line}: {row.message}", _BAD_ROW_HINT)
        stats.skip(row.reason)

    rows = READERS[trace.format](path, trace)
    if trace.spread_bucket_ms is not None:
        rows = _spread(rows, round(trace.spread_bucket_ms * 1_000_000))
    ordered = _in_order(rows, round(trace.reorder_window_s * NS_PER_S), bad, stats)
    yield from _replay(ordered, trace, seed, stats)


def _spread(rows: Iterator[RawRow | BadRow], bucket_ns: int) -> Iterator[RawRow | BadRow]:
    """Spread each run of rows sharing one timestamp evenly over ``bucket_ns`` (or up to the next
    timestamp, if that comes sooner), keeping their order: the i-th of k is at ``t + i·width/k``."""
    group: list[RawRow] = []
    for row in rows:
        if isinstance(row, BadRow):
            yield row
            continue
        if group and row.t_ns != group[0].t_ns:
            gap = row.t_ns - group[0].t_ns
            yield from _spread_group(group, min(bucket_ns, gap) if gap > 0 else bucket_ns)
            group = []
        group.append(row)
    if group:
        yield from _spread_group(group, bucket_ns)


def _spread_group(group: list[RawRow], width_ns: int) -> list[RawRow]:
    k = len(group)
    for i, row in enumerate(group):
        row.t_ns += i * width_ns // k
    return group


def _in_order(
    rows: Iterator[RawRow | BadRow], window_ns: int, bad: Callable[[BadRow], None], stats: TraceStats
) -> Iterator[RawRow]:
    """Rows in non-decreasing time; rows up to ``window_ns`` late are re-sorted, later ones are bad.
    Every row read, good or bad, passes here once and is counted in ``stats.rows_read``."""
    last_ns: int | None = None
    last_line = 0
    heap: list[tuple[int, int, RawRow]] = []
    newest: int | None = None  # the latest time seen so far
    for row in rows:
        stats.rows_read += 1
        if isinstance(row, BadRow):
            bad(row)
            continue
        if last_ns is not None and row.t_ns < last_ns:
            late_s = (last_ns - row.t_ns) / NS_PER_S
            bad(
                BadRow(
                    row.line,
                    "out_of_order",
                    f"arrives {late_s:g} s before line {last_line}, which precedes it in the replay; sort "
                    f"the file by time or set reorder_window_s to at least {late_s:g}",
                )
            )
            continue
        if window_ns == 0:
            last_ns, last_line = row.t_ns, row.line
            yield row
            continue
        heapq.heappush(heap, (row.t_ns, row.line, row))
        newest = row.t_ns if newest is None or row.t_ns > newest else newest
        while heap and heap[0][0] <= newest - window_ns:
            t_ns, last_line, out = heapq.heappop(heap)
            last_ns = t_ns
            yield out
    while heap:
        last_ns, last_line, out = heapq.heappop(heap)
        yield out


def _keep(key: str, seed: int, fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}/{key}".encode(errors="surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def _replay(rows: Iterator[RawRow], trace: Trace, seed: int, stats: TraceStats) -> Iterator[TraceRequest]:
    start_ns = round(trace.start_s * NS_PER_S)
    end_ns = start_ns + round(trace.window_s * NS_PER_S) if trace.window_s is not None else None
    fraction = trace.sample_sessions
    max_in, max_out = trace.max_prompt_tokens, trace.max_output_tokens
    kept: set[str] = set()
    dropped: set[str] = set()
    origin: int | None = None
    for row in rows:
        if origin is None:
            origin = row.t_ns
        rel = row.t_ns - origin - start_ns
        if rel < 0:
            stats.skip("before_start")
            continue
        if end_ns is not None and rel >= end_ns - start_ns:
            break
        if row.failed:
            stats.skip("failed_request")
            continue
        sid = row.session_id
        if sid is not None:
            if sid in kept:
                pass
            elif sid in dropped or (fraction < 1.0 and not _keep(sid, seed, fraction)):
                if sid not in dropped:
                    dropped.add(sid)
                    stats.sessions_dropped += 1
                stats.skip("sampled_out")
                continue
            else:
                kept.add(sid)
                stats.sessions_kept += 1
        elif fraction < 1.0 and not _keep(f"line:{row.line}", seed, fraction):
            stats.skip("sampled_out")
            continue
        tokens_in, tokens_out = row.tokens_in, row.tokens_out
        if (max_in is not None and tokens_in > max_in) or (max_out is not None and tokens_out > max_out):
            tokens_in = min(tokens_in, max_in) if max_in is not None else tokens_in
            tokens_out = min(tokens_out, max_out) if max_out is not None else tokens_out
            stats.rows_clamped += 1
        scale = stats.time_scale
        offset = rel if scale == 1.0 else round(rel / scale)
        if stats.first_offset_ns is None:
            stats.first_offset_ns = offset
        stats.last_offset_ns = offset
        stats.rows_yielded += 1
        yield TraceRequest(
            offset, tokens_in, tokens_out, sid, row.turn, row.think_s, row.line, row.prefix_blocks
        )
