"""``application/vnd.amazon.eventstream`` framing, both directions (``../shared/protocols.md`` §5.4).

One message, all integers big-endian::

    +0   uint32 total_length   = 12 + headers_length + payload_length + 4
    +4   uint32 headers_length
    +8   uint32 prelude_crc    = CRC32(bytes[0:8])
    +12  headers               headers_length bytes
    ...  payload               payload_length bytes
    end  uint32 message_crc    = CRC32(bytes[0:total_length-4])

CRC32 is zlib's (IEEE). A header is ``uint8 name_len | name | uint8 type | value``; the value
types are :data:`BOOL_TRUE` (0) … :data:`UUID` (9), strings (7) being what Bedrock uses.

Encoding: :func:`encode_message` for arbitrary headers; :func:`encode_headers` + :func:`frame`
when the header block is fixed and can be built once (the mock's hot path);
:func:`event_message`, :func:`exception_message`, :func:`error_message` for the three Bedrock
message kinds; :func:`corrupt_crc` for fault injection.

Decoding: :class:`EventStreamDecoder` takes the body in pieces split anywhere and returns the
:class:`Message` objects each piece completes. Bad bytes never raise: a CRC mismatch, an
impossible length, a bad header or a duplicate header name produce one :class:`DecodeError`
(its ``reason`` starts with ``"malformed event stream: "``), after which the decoder ignores
everything, because framing cannot be recovered once a length is in doubt. Decoded header
values have the types botocore gives them: bool, int (also timestamps, in ms), bytes (also
UUIDs, 16 bytes) and str.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple
from zlib import crc32

import orjson

BOOL_TRUE: Final = 0
BOOL_FALSE: Final = 1
INT8: Final = 2
INT16: Final = 3
INT32: Final = 4
INT64: Final = 5
BYTE_ARRAY: Final = 6
STRING: Final = 7
TIMESTAMP: Final = 8
UUID: Final = 9

PRELUDE_LENGTH: Final = 12
MIN_MESSAGE_LENGTH: Final = 16  # prelude + message CRC, no headers, no payload
MAX_HEADERS_LENGTH: Final = 128 * 1024
MAX_PAYLOAD_LENGTH: Final = 24 * 1024 * 1024

MALFORMED: Final = "malformed event stream: "
TRUNCATED_FRAME: Final = "stream ended inside an event stream frame"

_PRELUDE: Final = struct.Struct("!II")
_PRELUDE_FULL: Final = struct.Struct("!III")
_U32: Final = struct.Struct("!I")
_U16: Final = struct.Struct("!H")
_I8: Final = struct.Struct("!b")
_I16: Final = struct.Struct("!h")
_I32: Final = struct.Struct("!i")
_I64: Final = struct.Struct("!q")


class HeaderValue(NamedTuple):
    """A header value with an explicit wire type (for int8/int16/int64/timestamp, which a
    plain Python value cannot choose)."""

    type: int
    value: Any


class Message(NamedTuple):
    """One decoded message: headers by name, and the raw payload."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def message_type(self) -> str | None:
        """``event``, ``exception`` or ``error`` (the ``:message-type`` header)."""
        return self.headers.get(":message-type")

    @property
    def event_type(self) -> str | None:
        return self.headers.get(":event-type")


class DecodeError(NamedTuple):
    """Why the stream cannot be decoded further (always the decoder's last result)."""

    reason: str


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def _encode_value(value: Any) -> bytes:
    """Type byte + value bytes; plain values map bool → 0/1, int → int32 (int64 when it does
    not fit), str → string, bytes → byte array, uuid.UUID → uuid, datetime → timestamp."""
    if isinstance(value, HeaderValue):
        kind, raw = value
        if kind in (BOOL_TRUE, BOOL_FALSE):
            return bytes((kind,))
        if kind == INT8:
            return b"\x02" + _I8.pack(raw)
        if kind == INT16:
            return b"\x03" + _I16.pack(raw)
        if kind == INT32:
            return b"\x04" + _I32.pack(raw)
        if kind in (INT64, TIMESTAMP):
            return bytes((kind,)) + _I64.pack(raw)
        if kind == BYTE_ARRAY:
            return b"\x06" + _U16.pack(len(raw)) + bytes(raw)
        if kind == STRING:
            data = raw.encode()
            return b"\x07" + _U16.pack(len(data)) + data
        if kind == UUID:
            data = raw.bytes if isinstance(raw, uuid.UUID) else bytes(raw)
            if len(data) != 16:
                raise ValueError("a uuid header value is 16 bytes")
            return b"\x09" + data
        raise ValueError(f"unknown header value type {kind}")
    if isinstance(value, bool):
        return b"\x00" if value else b"\x01"
    if isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            return b"\x04" + _I32.pack(value)
        return b"\x05" + _I64.pack(value)
    if isinstance(value, str):
        data = value.encode()
        if len(data) > 0xFFFF:
            raise ValueError("a string header value is at most 65535 bytes")
        return b"\x07" + _U16.pack(len(data)) + data
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) > 0xFFFF:
            raise ValueError("a byte-array header value is at most 65535 bytes")
        return b"\x06" + _U16.pack(len(data)) + data
    if isinstance(value, uuid.UUID):
        return b"\x09" + value.bytes
    if isinstance(value, datetime):
        return b"\x08" + _I64.pack(int(value.timestamp() * 1000))
    raise TypeError(f"cannot encode a header value of type {type(value).__name__}")


def encode_headers(headers: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> bytes:
    """The header block for ``headers`` (names unique, in the given order)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[bytes] = []
    seen: set[str] = set()
    for name, value in items:
        if name in seen:
            raise ValueError(f"duplicate header {name!r}")
        seen.add(name)
        raw = name.encode()
        if not 0 < len(raw) < 256:
            raise ValueError(f"a header name is 1 to 255 bytes: {name!r}")
        out.append(bytes((len(raw),)) + raw + _encode_value(value))
    block = b"".join(out)
    if len(block) > MAX_HEADERS_LENGTH:
        raise ValueError(f"headers are {len(block)} bytes; the limit is {MAX_HEADERS_LENGTH}")
    return block


def frame(header_block: bytes, payload: bytes) -> bytes:
    """One message from an encoded header block and a payload, with both CRCs."""
    prelude = _PRELUDE.pack(PRELUDE_LENGTH + len(header_block) + len(payload) + 4, len(header_block))
    prelude_crc = crc32(prelude)
    head = prelude + _U32.pack(prelude_crc)
    message_crc = crc32(payload, crc32(header_block, crc32(head)))
    return b"".join((head, header_block, payload, _U32.pack(message_crc)))


def encode_message(headers: Mapping[str, Any] | Iterable[tuple[str, Any]], payload: bytes = b"") -> bytes:
    """One complete message."""
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise ValueError(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_LENGTH}")
    return frame(encode_headers(headers), payload)


_event_blocks: dict[str, bytes] = {}


def event_headers(event_type: str, content_type: str = "application/json") -> bytes:
    """The header block of a normal event (cached: a stream repeats a few event types)."""
    key = event_type if content_type == "application/json" else f"{event_type}\x00{content_type}"
    block = _event_blocks.get(key)
    if block is None:
        block = encode_headers(
            ((":event-type", event_type), (":content-type", content_type), (":message-type", "event"))
        )
        if len(_event_blocks) < 256:
            _event_blocks[key] = block
    return block


def event_message(event_type: str, payload: Any) -> bytes:
    """A normal event; ``payload`` is bytes or a JSON-serialisable object (sent compact)."""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return frame(event_headers(event_type), data)


def exception_message(exception_type: str, message: str) -> bytes:
    """A modeled exception (``throttlingException``, ``internalServerException`` …) with
    ``{"message": ...}`` as its payload."""
    block = encode_headers(
        (
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        )
    )
    return frame(block, orjson.dumps({"message": message}))


def error_message(code: str, message: str) -> bytes:
    """An unmodeled error: code and message in headers, no payload."""
    block = encode_headers(((":error-code", code), (":error-message", message), (":message-type", "error")))
    return frame(block, b"")


def corrupt_crc(message: bytes) -> bytes:
    """The message with its message CRC inverted (the prelude stays valid, so a decoder reads
    the whole frame and then rejects it)."""
    return message[:-4] + bytes(b ^ 0xFF for b in message[-4:])


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class _BadHeaders(Exception):
    pass


def _parse_headers(view: memoryview, start: int, end: int) -> dict[str, Any]:
    """Decode the header block ``view[start:end]``; raises _BadHeaders on any inconsistency."""
    headers: dict[str, Any] = {}
    pos = start
    try:
        while pos < end:
            name_len = view[pos]
            pos += 1
            if name_len == 0 or pos + name_len + 1 > end:
                raise _BadHeaders("header name overruns the header block")
            name = str(view[pos : pos + name_len], "utf-8")
            pos += name_len
            kind = view[pos]
            pos += 1
            value: Any
            if kind in (STRING, BYTE_ARRAY):  # the common case first
                if pos + 2 > end:
                    raise _BadHeaders("header value overruns the header block")
                (length,) = _U16.unpack_from(view, pos)
                pos += 2
                if pos + length > end:
                    raise _BadHeaders("header value overruns the header block")
                raw = view[pos : pos + length]
                value = str(raw, "utf-8") if kind == STRING else bytes(raw)
                pos += length
            elif kind == BOOL_TRUE:
                value = True
            elif kind == BOOL_FALSE:
                value = False
            elif kind in (INT8, INT16, INT32, INT64, TIMESTAMP):
                fmt = (_I8, _I16, _I32, _I64, _I64)[(INT8, INT16, INT32, INT64, TIMESTAMP).index(kind)]
                if pos + fmt.size > end:
                    raise _BadHeaders("header value overruns the header block")
                (value,) = fmt.unpack_from(view, pos)
                pos += fmt.size
            elif kind == UUID:
                if pos + 16 > end:
                    raise _BadHeaders("header value overruns the header block")
                value = bytes(view[pos : pos + 16])
                pos += 16
            else:
                raise _BadHeaders(f"unknown header value type {kind}")
            if name in headers:
                raise _BadHeaders(f"duplicate header {name!r}")
            headers[name] = value
    except UnicodeDecodeError:
        raise _BadHeaders("header name or string value is not UTF-8") from None
    return headers


class EventStreamDecoder:
    """Incremental decoder for one response body; feed it bytes split anywhere."""

    __slots__ = ("_buf", "_failed", "messages")

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes of an incomplete message carried to the next feed
        self._failed = False
        self.messages = 0  # complete, valid messages decoded so far

    @property
    def failed(self) -> bool:
        """True once a :class:`DecodeError` was returned; later bytes are ignored."""
        return self._failed

    @property
    def has_partial(self) -> bool:
        """True when bytes of an unfinished message are buffered (a truncated stream at EOF)."""
        return bool(self._buf) and not self._failed

    def close(self) -> DecodeError | None:
        """End of body: a :class:`DecodeError` if it stopped inside a message, else None."""
        if self.has_partial:
            self._failed = True
            self._buf.clear()
            return DecodeError(TRUNCATED_FRAME)
        return None

    def feed(self, data: bytes) -> list[Message | DecodeError]:
        """The messages ``data`` completes, in order; a :class:`DecodeError` ends the list
        (and the stream) when the bytes are not a valid event stream."""
        out: list[Message | DecodeError] = []
        if self._failed or not data:
            return out
        buf = self._buf
        if buf:
            buf += data
            source: bytes | bytearray = buf
        else:
            source = data
        n = len(source)
        pos = 0
        error: str | None = None
        with memoryview(source) as view:  # released before ``buf`` is resized below
            while n - pos >= PRELUDE_LENGTH:
                total, headers_len, prelude_crc = _PRELUDE_FULL.unpack_from(view, pos)
                computed = crc32(view[pos : pos + 8])
                if computed != prelude_crc:
                    error = f"prelude CRC mismatch (expected 0x{prelude_crc:08x}, got 0x{computed:08x})"
                    break
                if headers_len > MAX_HEADERS_LENGTH:
                    error = f"headers length {headers_len} exceeds {MAX_HEADERS_LENGTH}"
                    break
                if total < MIN_MESSAGE_LENGTH + headers_len:
                    error = f"total length {total} too small for {headers_len} header bytes"
                    break
                if total - MIN_MESSAGE_LENGTH - headers_len > MAX_PAYLOAD_LENGTH:
                    error = f"payload length exceeds {MAX_PAYLOAD_LENGTH}"
                    break
                end = pos + total
                if end > n:
                    break
                (message_crc,) = _U32.unpack_from(view, end - 4)
                computed = crc32(view[pos + 8 : end - 4], prelude_crc)
                if computed != message_crc:
                    error = f"message CRC mismatch (expected 0x{message_crc:08x}, got 0x{computed:08x})"
                    break
                headers_end = pos + PRELUDE_LENGTH + headers_len
                try:
                    headers = _parse_headers(view, pos + PRELUDE_LENGTH, headers_end)
                except _BadHeaders as exc:
                    error = str(exc)
                    break
                out.append(Message(headers, bytes(view[headers_end : end - 4])))
                self.messages += 1
                pos = end
        if error is not None:
            self._failed = True
            buf.clear()
            out.append(DecodeError(MALFORMED + error))
        elif source is buf:
            del buf[:pos]
        elif pos < n:
            buf += data[pos:]
        return out


def decode_all(data: bytes) -> list[Message | DecodeError]:
    """Every message of a complete body (a :class:`DecodeError` last if it is bad or truncated)."""
    decoder = EventStreamDecoder()
    out = decoder.feed(data)
    tail = decoder.close()
    if tail is not None:
        out.append(tail)
    return out
