"""Session affinity: which backend holds each stored response and conversation.

Learned from replies, never from requests: a non-stream body's ``id`` (``resp_...`` or
``conv_...``), or a Responses stream's first event (``response.created``), read from a copy of
the stream's first bytes while every chunk is forwarded as it arrives (no buffering). A chained
call (``previous_response_id``, ``conversation``, ``GET|DELETE /responses/{id}``,
``/conversations/{id}...``) goes to the holder; stateless calls never look here.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from harness.router.decide import StateKind

MAX_ENTRIES: Final = 1_000_000
"""Oldest entries are forgotten beyond this many (a bounded table for long runs)."""
SNIFF_LIMIT: Final = 64 * 1024
"""A stream whose first event is not complete within this many bytes teaches nothing."""
_PREFIXES: Final[dict[str, StateKind]] = {"resp_": "response", "conv_": "conversation"}


class AffinityTable:
    """``(kind, id) -> backend name``, bounded, insertion-ordered."""

    __slots__ = ("_holders", "max_entries")

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._holders: dict[tuple[StateKind, str], str] = {}
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._holders)

    def holder(self, key: tuple[StateKind, str]) -> str | None:
        return self._holders.get(key)

    def learn(self, state_id: Any, backend: str) -> bool:
        """Remember that ``backend`` holds ``state_id`` (a ``resp_``/``conv_`` id); False otherwise."""
        if not isinstance(state_id, str):
            return False
        kind = _PREFIXES.get(state_id[:5])
        if kind is None:
            return False
        holders = self._holders
        holders[(kind, state_id)] = backend
        if len(holders) > self.max_entries:
            del holders[next(iter(holders))]
        return True

    def learn_body(self, body: bytes, backend: str) -> bool:
        """Learn from a non-stream JSON reply (its top-level ``id``)."""
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(obj, dict) and self.learn(obj.get("id"), backend)

    def forget(self, key: tuple[StateKind, str]) -> None:
        self._holders.pop(key, None)


class CreatedSniffer:
    """Finds the response id in a Responses stream's first event from copies of its chunks.

    ``feed`` returns the id once the first event is complete (then the sniffer is ``done``), or
    None while it needs more bytes; it gives up after ``SNIFF_LIMIT`` bytes or a first event
    that is not ``response.created``.
    """

    __slots__ = ("_buf", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.done = False

    def feed(self, chunk: bytes) -> str | None:
        buf = self._buf
        buf += chunk
        end = buf.find(b"\n\n")
        if end < 0:
            end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > SNIFF_LIMIT:
                self.done = True
            return None
        self.done = True
        for line in bytes(buf[:end]).splitlines():
            if line.startswith(b"data:"):
                try:
                    event = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    return None
                if not isinstance(event, dict) or event.get("type") != "response.created":
                    return None
                response = event.get("response")
                rid = response.get("id") if isinstance(response, dict) else None
                return rid if isinstance(rid, str) else None
        return None
