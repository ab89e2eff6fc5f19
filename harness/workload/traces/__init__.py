"""Trace replay: read public LLM serving traces (Azure 2023/2024, BurstGPT, Mooncake) or your own
CSV/JSONL file as a lazy, ordered stream of requests with arrival offsets, token counts and sessions.

    stream = read_trace(scenario.trace, profile_dir, seed=profile.seed)
    for req in stream:            # TraceRequest, non-decreasing offset_ns
        ...
    stream.stats                  # TraceStats: rows read, yielded, skipped by reason, sessions

One module per format (``azure``, ``burstgpt``, ``mooncake``, ``generic``) turns records into rows;
``replay`` orders, cuts, samples and scales them. Reading is streaming: memory is bounded by the
per-session state and the reorder window, never by the file. ``docs/traces.md`` is the user guide.
"""

from harness.workload.traces.replay import READERS, TraceStream, read_trace
from harness.workload.traces.rows import TraceRequest, TraceStats

__all__ = ["READERS", "TraceRequest", "TraceStats", "TraceStream", "read_trace"]
