"""The row types that flow from a format reader through the replay pipeline, and its counters.

A reader yields ``RawRow`` (times in the trace's own clock, ns) or ``BadRow`` (a row it could
not read, with a reason). The pipeline in ``replay`` orders, cuts, samples and scales them into
``TraceRequest`` objects, counting everything it drops in ``TraceStats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class RawRow:
    """One readable row, before windowing and scaling; ``t_ns`` is on the trace's own clock."""

    __slots__ = (
        "failed",
        "line",
        "prefix_blocks",
        "session_id",
        "t_ns",
        "think_s",
        "tokens_in",
        "tokens_out",
        "turn",
    )

    def __init__(
        self,
        line: int,
        t_ns: int,
        tokens_in: int,
        tokens_out: int,
        session_id: str | None = None,
        turn: int | None = None,
        think_s: float | None = None,
        prefix_blocks: int | None = None,
        failed: bool = False,
    ) -> None:
        self.line = line
        self.t_ns = t_ns
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.session_id = session_id
        self.turn = turn
        self.think_s = think_s
        self.prefix_blocks = prefix_blocks
        self.failed = failed  # the request failed in the source system (BurstGPT: 0 response tokens)


class BadRow:
    """A row that cannot be read: ``reason`` is a short counter key, ``message`` says what is wrong."""

    __slots__ = ("line", "message", "reason")

    def __init__(self, line: int, reason: str, message: str) -> None:
        self.line = line
        self.reason = reason
        self.message = message


class TraceRequest:
    """One request to replay.

    ``offset_ns`` is the send time from replay start (after ``start_s``, the window and time
    scaling); ``think_s`` is the user's pause before this turn when the trace knows it;
    ``prefix_blocks`` is how many leading 512-token blocks this prompt shares with an earlier
    request (Mooncake only); ``line`` is the source line, for error messages and audits.
    """

    __slots__ = (
        "line",
        "offset_ns",
        "prefix_blocks",
        "session_id",
        "think_s",
        "tokens_in",
        "tokens_out",
        "turn",
    )

    def __init__(
        self,
        offset_ns: int,
        tokens_in: int,
        tokens_out: int,
        session_id: str | None,
        turn: int | None,
        think_s: float | None,
        line: int,
        prefix_blocks: int | None = None,
    ) -> None:
        self.offset_ns = offset_ns
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.session_id = session_id
        self.turn = turn
        self.think_s = think_s
        self.line = line
        self.prefix_blocks = prefix_blocks

    def __repr__(self) -> str:
        session = f" {self.session_id}#{self.turn}" if self.session_id is not None else ""
        return (
            f"TraceRequest(line {self.line} at {self.offset_ns / 1e9:.6f}s "
            f"in={self.tokens_in} out={self.tokens_out}{session})"
        )


@dataclass(slots=True)
class TraceStats:
    """What a replay read and dropped; complete once iteration has finished.

    ``rows_read`` counts data rows the reader consumed (bad ones included; rows after the window's
    end are never read). ``skipped`` maps a reason to a row count: bad-row reasons (only with
    ``on_bad_row = "skip"``), ``failed_request`` (BurstGPT rows with 0 response tokens),
    ``before_start`` (rows before ``start_s``) and ``sampled_out`` (session sampling).
    """

    rows_read: int = 0
    rows_yielded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rows_clamped: int = 0
    sessions_kept: int = 0
    sessions_dropped: int = 0
    first_offset_ns: int | None = None
    last_offset_ns: int | None = None
    time_scale: float = 1.0  # the effective speed-up (derived from rate_rps when that is set)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    @property
    def span_s(self) -> float:
        """Replay seconds from the first to the last request yielded."""
        if self.first_offset_ns is None or self.last_offset_ns is None:
            return 0.0
        return (self.last_offset_ns - self.first_offset_ns) / 1e9

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())
