"""A scenario's trace source: which file to replay, in which format, and how to cut and scale it.

Times in the options are in *trace* seconds (``start_s``, ``window_s``, ``reorder_window_s``)
unless the name says otherwise; the replay offset of a row is
``(t_row - t_first - start_s) / time_scale``. The readers live in ``harness.workload.traces``;
this module only validates the settings (``docs/traces.md`` explains them for users).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from harness.profile.models import Strict

# azure2023 and azure2024 share one reader (it accepts both timestamp layouts); the names say
# which public trace the file is. mooncake_sessions is the inferred-sessions CSV in data/traces.
TraceFormat = Literal["azure2023", "azure2024", "burstgpt", "mooncake", "mooncake_sessions", "csv", "jsonl"]
MOONCAKE_FORMATS: frozenset[str] = frozenset({"mooncake", "mooncake_sessions"})


class TraceColumns(Strict):
    """Where a generic CSV (header names) or JSONL file (top-level keys) keeps each field.

    The arrival time is either absolute (``arrival`` with ``arrival_unit``) or a per-session gap
    (``arrival_delta``: time since the same session's previous turn; a session's first row gives
    its start, counted from the trace's origin). Token counts are integers.
    """

    arrival: str | None = Field(default=None, description="column holding the absolute arrival time")
    arrival_unit: Literal["s", "ms", "us", "ns", "iso"] = Field(
        default="s", description="unit of `arrival`: seconds, ms, µs, ns, or an ISO 8601 timestamp"
    )
    arrival_delta: str | None = Field(
        default=None, description="column holding the time since the same session's previous turn"
    )
    arrival_delta_unit: Literal["s", "ms"] = "s"
    tokens_in: str = Field(description="column holding the prompt (input) tokens")
    tokens_out: str = Field(description="column holding the output tokens")
    session_id: str | None = Field(default=None, description="column holding the session id (optional)")
    turn: str | None = Field(
        default=None, description="column holding the turn index (optional; default: counted per session)"
    )
    think: str | None = Field(default=None, description="column holding the user's think time (optional)")
    think_unit: Literal["s", "ms"] = "s"

    @model_validator(mode="after")
    def _one_arrival(self) -> TraceColumns:
        if (self.arrival is None) == (self.arrival_delta is None):
            raise ValueError(
                "set exactly one of columns.arrival (absolute arrival time) or columns.arrival_delta "
                "(time since the session's previous turn)"
            )
        if self.arrival_delta is not None and self.session_id is None:
            raise ValueError(
                "columns.arrival_delta needs columns.session_id: a delta is measured from the same "
                "session's previous turn"
            )
        if self.turn is not None and self.session_id is None:
            raise ValueError("columns.turn needs columns.session_id: a turn index counts within a session")
        return self


class Trace(Strict):
    """Replay a recorded trace: its arrival times, token counts and sessions."""

    file: str = Field(min_length=1, description="trace file, relative to the profile file")
    format: TraceFormat
    columns: TraceColumns | None = Field(
        default=None, description="column mapping; required for csv and jsonl, not allowed otherwise"
    )
    time_scale: float = Field(
        default=1.0, gt=0, le=1_000_000, description="speed-up factor: 2.0 replays twice as fast"
    )
    start_s: float = Field(default=0.0, ge=0, description="skip the trace's first seconds")
    window_s: float | None = Field(default=None, gt=0, description="replay only this many trace seconds")
    rate_rps: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="rescale time so the replayed rows' mean rate, (rows - 1) / span, is this",
    )
    sample_sessions: float = Field(
        default=1.0, gt=0, le=1, description="fraction of sessions kept, whole sessions, seeded"
    )
    on_bad_row: Literal["error", "skip"] = Field(
        default="error", description="stop at the first unreadable row, or skip and count it"
    )
    max_prompt_tokens: int | None = Field(default=None, ge=1, description="clamp prompt tokens to this")
    max_output_tokens: int | None = Field(default=None, ge=1, description="clamp output tokens to this")
    spread_bucket_ms: float | None = Field(
        default=None,
        gt=0,
        le=3_600_000,
        description="mooncake: spread rows sharing one timestamp evenly over this bucket (3000 for the "
        "FAST'25 conversation trace)",
    )
    reorder_window_s: float = Field(
        default=0.0,
        ge=0,
        le=86_400,
        description="tolerate rows up to this many seconds out of time order (they are re-sorted)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Trace:
        generic = self.format in ("csv", "jsonl")
        if generic and self.columns is None:
            raise ValueError(
                f"format {self.format!r} needs a [columns] table naming the arrival and token columns "
                "(see docs/traces.md)"
            )
        if not generic and self.columns is not None:
            raise ValueError(
                f"format {self.format!r} has fixed columns; remove [columns] or use format 'csv' or 'jsonl'"
            )
        if self.rate_rps is not None and self.time_scale != 1.0:
            raise ValueError(
                "set either rate_rps (rescale to a mean rate) or time_scale (a fixed speed-up), not both"
            )
        if self.spread_bucket_ms is not None and self.format not in MOONCAKE_FORMATS:
            raise ValueError(
                "spread_bucket_ms only applies to the mooncake formats, whose timestamps are bucketed; "
                "remove it"
            )
        return self
