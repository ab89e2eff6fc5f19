"""The normalized stream events every dialect's parser produces, and how a parser error maps to
a record's error kind. One vocabulary, so the engine, the contract suite and the reports treat
Azure, OpenAI, Bedrock, Vertex, Responses and Realtime streams alike.

    ("token", n_tokens)   one per content-bearing chunk, in arrival order (first = TTFT)
    ("usage", in, out)    token usage the server reported
    ("id", response_id)   once, at the first non-empty id
    ("finish", reason)    each finish/stop reason
    ("done",)             the stream ended as the protocol says it should
    ("error", message)    an in-stream error, malformed bytes, or a stream cut short
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

EV_TOKEN: Final = "token"
EV_USAGE: Final = "usage"
EV_ID: Final = "id"
EV_FINISH: Final = "finish"
EV_DONE: Final = "done"
EV_ERROR: Final = "error"
DONE_EVENT: Final = (EV_DONE,)

# Parser error messages follow two conventions so their kind is known without a table per dialect:
TRUNCATED_PREFIXES: Final = ("stream ended", "connection ended")  # cut short before the protocol's end
MALFORMED_PREFIX: Final = "malformed "  # bytes that are not the wire format


def error_kind(error: str) -> str:
    """The record's error kind for a parser error: ``reset`` (cut short), ``protocol`` (bytes
    that are not the wire format) or ``stream_error`` (the server reported an error)."""
    if error.startswith(TRUNCATED_PREFIXES):
        return "reset"
    if error.startswith(MALFORMED_PREFIX):
        return "protocol"
    return "stream_error"


class StreamParser(Protocol):
    """What every dialect's stream parser offers for collecting normalized events."""

    error: str | None

    def feed(self, data: Any, events: list[tuple[Any, ...]] | None = None) -> int: ...

    def close(self) -> None: ...


def close_into(parser: StreamParser, events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Close ``parser`` and append the truncation error it found at the end, if that is new."""
    had_error = parser.error is not None
    parser.close()
    if parser.error is not None and not had_error:
        events.append((EV_ERROR, parser.error))
    return events


def collect_events(parser: StreamParser, data_chunks: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Feed a whole body (in the given pieces) and return its normalized events, ending with the
    truncation error when the body stopped before the protocol's end."""
    events: list[tuple[Any, ...]] = []
    for chunk in data_chunks:
        parser.feed(chunk, events)
    return close_into(parser, events)


class StreamState:
    """What every dialect's stream parser accumulates, in the shared vocabulary; subclasses add
    their own framing state (SSE buffer, event-stream decoder, ...) and ``feed``/``close``."""

    __slots__ = (
        "content_chunks",
        "done",
        "error",
        "finish_reason",
        "response_id",
        "tokens_out_approx",
        "usage_in",
        "usage_out",
    )

    def __init__(self) -> None:
        self.content_chunks = 0
        self.tokens_out_approx = 0
        self.usage_in: int | None = None
        self.usage_out: int | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.done = False
        self.error: str | None = None

    @property
    def ended(self) -> bool:
        """True once the protocol's end or an error ended the stream; later bytes are ignored."""
        return self.done or self.error is not None

    def feed(self, data: Any, events: list[tuple[Any, ...]] | None = None) -> int:
        """Parse the next bytes (or message); how many content-bearing chunks they completed."""
        raise NotImplementedError

    def close(self) -> None:
        """The body (or connection) ended: a stream cut short of the protocol's end is an error."""
        raise NotImplementedError

    def _fail(self, message: str, events: list[tuple[Any, ...]] | None) -> None:
        self.error = message
        if events is not None:
            events.append((EV_ERROR, message))
