"""Incremental Server-Sent Events parser (WHATWG HTML §9.2.6), sans-IO.

Feed it the bytes of a response body as they arrive, split at any point; it returns the
events each chunk completes. The rules it implements:

- a line ends in LF, CRLF or CR (also a CR at the end of one chunk and an LF at the start of
  the next: that is one line ending, not two);
- ``:``-prefixed lines are comments; ``field: value`` strips ONE leading space from the value;
  a line without a colon is a field with an empty value;
- ``data`` values are joined with LF; ``event`` applies to one event; ``id`` persists until
  changed (an id containing NUL is ignored); ``retry`` sets :attr:`SSEParser.retry_ms`;
- a blank line dispatches the event; an event without ``data`` lines is not dispatched;
- an unterminated event at end of stream is discarded (:meth:`SSEParser.close` returns
  ``[]``), and :attr:`SSEParser.has_partial` tells a truncated stream from a clean end.

How it stays fast: CR is normalised to LF once per chunk (only when the chunk has one), the
unfinished tail is kept raw in a bytearray, and the complete part is split on blank lines
(``b"\\n\\n"``) with C-level ``bytes`` methods, so the common ``data: {...}\\n\\n`` event costs a
share of one ``split`` (:func:`_data_payloads` checks a whole read at once). Lines are parsed
one by one only for unusual events.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class SSEEvent(NamedTuple):
    """One dispatched event; ``data`` keeps the bytes (JSON decoders take bytes directly)."""

    event: str | None
    data: bytes
    id: str | None


_BOM: Final = b"\xef\xbb\xbf"
_DATA_PREFIX: Final = b"data: "
_DATA_SEPARATOR: Final = b"\n\ndata: "
_new_event = tuple.__new__  # SSEEvent(...) via tuple.__new__ skips the NamedTuple __new__ frame


def _data_payloads(region: bytes) -> list[bytes] | None:
    """The fast path: when ``region`` is nothing but ``data: X`` events separated by blank
    lines, their payloads; else None. Splitting on ``\\n\\ndata: `` yields the payloads with
    one allocation each, and counting LFs proves no event had a second line (every LF is then
    part of a separator)."""
    if not region.startswith(_DATA_PREFIX):
        return None
    payloads = region.split(_DATA_SEPARATOR)
    if region.count(b"\n") != 2 * (len(payloads) - 1):
        return None
    payloads[0] = payloads[0][6:]
    return payloads


class SSEParser:
    """Turns body bytes into :class:`SSEEvent` objects; one parser per response stream."""

    __slots__ = ("_at_start", "_buf", "_last_id", "_skip_lf", "retry_ms")

    def __init__(self) -> None:
        self._buf = bytearray()  # LF-normalised bytes after the last blank line
        self._skip_lf = False  # the previous chunk ended in CR: drop one LF at the next start
        self._at_start = True  # a UTF-8 BOM may still have to be stripped
        self._last_id: str | None = None
        self.retry_ms: int | None = None  # the server's last ``retry:`` value, if any

    # -- public -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[SSEEvent]:
        """The events completed by ``data``, in order."""
        region = self._complete(data)
        if region is None:
            return []
        payloads = _data_payloads(region)
        if payloads is not None:
            last_id = self._last_id
            return [_new_event(SSEEvent, (None, payload, last_id)) for payload in payloads]
        blocks = region.split(b"\n\n")
        out: list[SSEEvent] = []
        append = out.append
        for block in blocks:
            if block.startswith(_DATA_PREFIX) and 10 not in block:
                append(_new_event(SSEEvent, (None, block[6:], self._last_id)))
            elif block:
                ev = self._parse_block(block)
                if ev is not None:
                    append(ev)
        return out

    def feed_data(self, data: bytes) -> list[bytes]:
        """Only the ``data`` of the events completed by ``data``: for consumers that ignore
        ``event`` and ``id`` (the openai SDK does for chat completions), it skips building
        event objects."""
        region = self._complete(data)
        if region is None:
            return []
        if region.startswith(_DATA_PREFIX):  # _data_payloads, inlined: this is the hot path
            payloads = region.split(_DATA_SEPARATOR)
            if region.count(b"\n") == 2 * (len(payloads) - 1):
                payloads[0] = payloads[0][6:]
                return payloads
        blocks = region.split(b"\n\n")
        out: list[bytes] = []
        append = out.append
        for block in blocks:
            if block.startswith(_DATA_PREFIX) and 10 not in block:
                append(block[6:])
            elif block:
                ev = self._parse_block(block)
                if ev is not None:
                    append(ev[1])
        return out

    def close(self) -> list[SSEEvent]:
        """End of stream. Per the spec an unterminated event is discarded, so this returns
        ``[]``; check :attr:`has_partial` first to see whether something was cut off."""
        return []

    @property
    def has_partial(self) -> bool:
        """True when bytes since the last dispatch would be lost at end of stream: a line
        without its line ending, or ``data`` lines not yet followed by a blank line."""
        buf = self._buf
        if not buf:
            return False
        if buf[-1:] != b"\n":
            return True
        pending = False
        for line in bytes(buf).split(b"\n")[:-1]:
            if not line:
                pending = False
            elif line == b"data" or line.startswith(b"data:"):
                pending = True
        return pending

    @property
    def idle(self) -> bool:
        """True between events: nothing carried over, so a read that is one whole event can be
        read by a caller that knows its shape without this parser (see ``ChatStreamParser``)."""
        return not self._buf and not self._skip_lf and not self._at_start

    @property
    def last_event_id(self) -> str | None:
        """The last ``id`` the server sent (what a reconnect would send as Last-Event-ID)."""
        return self._last_id

    # -- internals --------------------------------------------------------------------------

    def _complete(self, data: bytes) -> bytes | None:
        """Add ``data`` to the carried-over tail; return the LF-normalised bytes up to (not
        including) the last blank line, or None when no event boundary has arrived yet."""
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 10:
                data = data[1:]
        if 13 in data:  # an int needle is a plain memchr, ~10x faster than b"\r" here
            self._skip_lf = data[-1] == 13
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._at_start:
            data = self._strip_bom(data)
        if not data:
            return None
        buf = self._buf
        if not buf:
            end = data.rfind(b"\n\n")
            if end < 0:
                buf += data
                return None
            if end + 2 < len(data):
                buf += memoryview(data)[end + 2 :]
            return data[:end]
        start = len(buf) - 1  # a boundary may begin with the tail's last byte
        buf += data
        end = buf.rfind(b"\n\n", start)
        if end < 0:
            return None
        region = bytes(buf[:end])
        del buf[: end + 2]
        return region

    def _strip_bom(self, data: bytes) -> bytes:
        """Drop one UTF-8 BOM at the very start of the stream, even if it arrives split."""
        head = bytes(self._buf) + data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._buf[:] = head  # wait for the rest of a possible BOM
            return b""
        self._at_start = False
        self._buf.clear()
        return head[3:] if head.startswith(_BOM) else head

    def _parse_block(self, block: bytes) -> SSEEvent | None:
        """The general path: parse one event's lines field by field (the block holds no
        blank line except possibly a leading or trailing one)."""
        data_lines: list[bytes] = []
        event: str | None = None
        for line in block.split(b"\n"):
            if not line or line[0] == 58:  # blank (already dispatched) or ":" comment
                continue
            colon = line.find(b":")
            if colon < 0:
                field, value = line, b""
            else:
                field = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == b" ":
                    value = value[1:]
            if field == b"data":
                data_lines.append(value)
            elif field == b"event":
                event = value.decode("utf-8", "replace")
            elif field == b"id":
                if b"\x00" not in value:
                    self._last_id = value.decode("utf-8", "replace")
            elif field == b"retry" and value.isdigit():
                self.retry_ms = int(value)
        if not data_lines:
            return None
        data = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
        # The spec's event type defaults to "message"; None keeps "no event field" visible.
        return _new_event(SSEEvent, (event or None, data, self._last_id))
