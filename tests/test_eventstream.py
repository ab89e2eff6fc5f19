"""AWS event stream framing: our encoder against botocore's decoder, our decoder against an
independent reference encoder, and corruption that must become a result, never an exception."""

from __future__ import annotations

import struct
import uuid
import zlib
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given, settings, strategies as st

from harness.protocols import eventstream as es
from harness.protocols.eventstream import DecodeError, EventStreamDecoder, HeaderValue, Message

# The worked example of protocols.md §5.4: a messageStop event, 122 bytes.
WORKED_EXAMPLE = bytes.fromhex(
    "0000007a00000051ca2c4665"
    "0b3a6576656e742d7479706507000b6d65737361676553746f70"
    "0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e"
    "0d3a6d6573736167652d747970650700056576656e74"
    "7b2273746f70526561736f6e223a22656e645f7475726e227d"
    "5fbf09fc"
)


def reference_frame(headers: list[tuple[str, int, bytes]], payload: bytes) -> bytes:
    """An independent encoder, written from the §5.4 layout: (name, type, raw value bytes)."""
    block = b"".join(struct.pack("!B", len(n.encode())) + n.encode() + bytes((t,)) + v for n, t, v in headers)
    prelude = struct.pack("!II", 12 + len(block) + len(payload) + 4, len(block))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + block + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def ref_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def botocore_messages(data: bytes) -> list[Any]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def feed_bytewise(data: bytes) -> list[Message | DecodeError]:
    decoder = EventStreamDecoder()
    out: list[Message | DecodeError] = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
    tail = decoder.close()
    if tail is not None:
        out.append(tail)
    return out


ALL_TYPES: dict[str, Any] = {
    "t": True,
    "f": False,
    "i8": HeaderValue(es.INT8, -5),
    "i16": HeaderValue(es.INT16, -300),
    "i32": 70_000,
    "i64": 1 << 40,
    "bytes": b"\x00\xff\x10",
    "str": "héllo",
    "ts": HeaderValue(es.TIMESTAMP, 1_700_000_000_123),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}
ALL_TYPES_DECODED: dict[str, Any] = {
    "t": True,
    "f": False,
    "i8": -5,
    "i16": -300,
    "i32": 70_000,
    "i64": 1 << 40,
    "bytes": b"\x00\xff\x10",
    "str": "héllo",
    "ts": 1_700_000_000_123,
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678").bytes,
}


# --------------------------------------------------------------------------- encoder


def test_encoder_reproduces_the_worked_example() -> None:
    """A messageStop event is byte for byte the 122-byte frame of the protocol reference."""
    assert es.event_message("messageStop", {"stopReason": "end_turn"}) == WORKED_EXAMPLE


def test_every_header_type_decodes_in_botocore_as_in_our_decoder() -> None:
    """A frame with all ten header value types decodes to the same values in botocore and in our decoder."""
    data = es.encode_message(ALL_TYPES, b"payload")
    [theirs] = botocore_messages(data)
    assert theirs.headers == ALL_TYPES_DECODED
    assert theirs.payload == b"payload"
    assert es.decode_all(data) == [Message(ALL_TYPES_DECODED, b"payload")]


def test_bedrock_message_kinds_decode_in_botocore() -> None:
    """Event, exception and error messages carry the headers and payloads botocore's Bedrock parser reads."""
    data = (
        es.event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
        + es.exception_message("throttlingException", "Too many requests, please wait before trying again.")
        + es.error_message("InternalFailure", "boom")
    )
    event, exception, error = botocore_messages(data)
    assert event.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert event.payload == b'{"contentBlockIndex":0,"delta":{"text":"Hi"}}'
    assert exception.headers[":exception-type"] == "throttlingException"
    assert exception.to_response_dict()["status_code"] == 400
    assert error.headers == {
        ":error-code": "InternalFailure",
        ":error-message": "boom",
        ":message-type": "error",
    }
    assert error.payload == b""


def test_botocore_rejects_a_corrupted_crc() -> None:
    """corrupt_crc produces a frame botocore refuses with ChecksumMismatch."""
    with pytest.raises(ChecksumMismatch):
        botocore_messages(es.corrupt_crc(WORKED_EXAMPLE))


def test_encoder_refuses_duplicate_and_oversized_headers() -> None:
    """Duplicate names and a header block over 128 KiB are caller errors, raised at encode time."""
    with pytest.raises(ValueError, match="duplicate"):
        es.encode_headers([("a", "1"), ("a", "2")])
    with pytest.raises(ValueError, match="limit"):
        es.encode_headers({f"h{i}": "x" * 60_000 for i in range(3)})


# --------------------------------------------------------------------------- decoder


def test_decoder_reads_reference_frames_of_every_type() -> None:
    """Frames from the independent reference encoder decode to the expected headers and payloads."""
    headers = [
        ("t", 0, b""),
        ("f", 1, b""),
        ("i8", 2, struct.pack("!b", -1)),
        ("i16", 3, struct.pack("!h", 2)),
        ("i32", 4, struct.pack("!i", -3)),
        ("i64", 5, struct.pack("!q", 4)),
        ("ba", 6, struct.pack("!H", 2) + b"\x01\x02"),
        ("s", 7, ref_string("x")),
        ("ts", 8, struct.pack("!q", 5)),
        ("u", 9, bytes(range(16))),
    ]
    data = (
        reference_frame(headers, b"{}")
        + reference_frame([], b"")
        + reference_frame([("s", 7, ref_string(""))], b"p")
    )
    expected = [
        Message(
            {
                "t": True,
                "f": False,
                "i8": -1,
                "i16": 2,
                "i32": -3,
                "i64": 4,
                "ba": b"\x01\x02",
                "s": "x",
                "ts": 5,
                "u": bytes(range(16)),
            },
            b"{}",
        ),
        Message({}, b""),
        Message({"s": ""}, b"p"),
    ]
    assert es.decode_all(data) == expected
    assert feed_bytewise(data) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=20),
)
def test_decoder_is_independent_of_read_boundaries(payloads: list[bytes], cuts: list[int]) -> None:
    """Any split of a multi-frame body yields the same messages as the whole body at once."""
    data = b"".join(es.event_message("chunk", p) for p in payloads)
    points = sorted({c % (len(data) + 1) for c in cuts})
    decoder = EventStreamDecoder()
    out: list[Message | DecodeError] = []
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        out.extend(decoder.feed(data[a:b]))
    assert decoder.close() is None
    assert [m.payload for m in out if isinstance(m, Message)] == payloads
    assert decoder.messages == len(payloads)


def test_every_single_byte_corruption_is_detected() -> None:
    """Flipping any one byte of a frame gives exactly one DecodeError and no message, never an exception."""
    for i in range(len(WORKED_EXAMPLE)):
        data = bytearray(WORKED_EXAMPLE)
        data[i] ^= 0x40
        out = es.decode_all(bytes(data))
        assert len(out) == 1, i
        assert isinstance(out[0], DecodeError), i
        assert out[0].reason.startswith(es.MALFORMED) or out[0].reason == es.TRUNCATED_FRAME, i


def test_crc_mismatch_reports_both_crcs_and_stops_the_stream() -> None:
    """After a bad message CRC the decoder returns the error once and ignores every later byte."""
    decoder = EventStreamDecoder()
    good = es.event_message("a", b"1")
    out = decoder.feed(good + es.corrupt_crc(good) + good)
    assert out[0] == Message(
        {":event-type": "a", ":content-type": "application/json", ":message-type": "event"}, b"1"
    )
    assert isinstance(out[1], DecodeError)
    assert "message CRC mismatch" in out[1].reason
    assert len(out) == 2
    assert decoder.failed
    assert decoder.feed(good) == []
    assert decoder.close() is None


@pytest.mark.parametrize(
    ("prelude", "reason"),
    [
        (struct.pack("!II", 15, 0), "too small"),
        (struct.pack("!II", 40, 30), "too small"),
        (struct.pack("!II", 200_000, 128 * 1024 + 1), "headers length"),
        (struct.pack("!II", 16 + 25 * 1024 * 1024, 0), "payload length"),
    ],
)
def test_impossible_lengths_are_errors(prelude: bytes, reason: str) -> None:
    """A prelude with a valid CRC but impossible lengths is a DecodeError before any payload is awaited."""
    data = prelude + struct.pack("!I", zlib.crc32(prelude))
    [out] = EventStreamDecoder().feed(data)
    assert isinstance(out, DecodeError)
    assert reason in out.reason


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"\x01a\x07\x00\x01x" + b"\x01a\x07\x00\x01y", "duplicate"),
        (b"\x01a\x0a", "unknown header value type"),
        (b"\x01a\x07\x00\x09x", "overruns"),
        (b"\x05ab", "overruns"),
        (b"\x01\xff\x07\x00\x00", "UTF-8"),
    ],
)
def test_bad_header_blocks_are_errors(block: bytes, reason: str) -> None:
    """Valid CRCs around a bad header block (duplicate, unknown type, overrun, bad UTF-8): a DecodeError."""
    prelude = struct.pack("!II", 16 + len(block), len(block))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + block
    [out] = es.decode_all(message + struct.pack("!I", zlib.crc32(message)))
    assert isinstance(out, DecodeError)
    assert reason in out.reason


def test_truncated_body_is_reported_at_close() -> None:
    """A body that ends inside a frame leaves a partial that close() turns into the truncation error."""
    decoder = EventStreamDecoder()
    assert decoder.feed(WORKED_EXAMPLE + WORKED_EXAMPLE[:50]) == [es.decode_all(WORKED_EXAMPLE)[0]]
    assert decoder.has_partial
    assert decoder.close() == DecodeError(es.TRUNCATED_FRAME)
    assert not decoder.has_partial


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_garbage_never_raises(data: bytes, step: int) -> None:
    """Arbitrary bytes, in arbitrary reads, only ever produce messages and at most one DecodeError, last."""
    decoder = EventStreamDecoder()
    out: list[Message | DecodeError] = []
    for i in range(0, len(data), step):
        out.extend(decoder.feed(data[i : i + step]))
    tail = decoder.close()
    if tail is not None:
        out.append(tail)
    errors = [i for i, m in enumerate(out) if isinstance(m, DecodeError)]
    assert errors in ([], [len(out) - 1])
