"""The incremental SSE parser against the WHATWG rules, whole and split at any byte."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from harness.protocols.sse import SSEEvent, SSEParser


def feed_all(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_lf_events() -> None:
    """Events separated by LF blank lines are dispatched with their data bytes."""
    assert feed_all(b"data: a\n\ndata: b\n\n") == [SSEEvent(None, b"a", None), SSEEvent(None, b"b", None)]


def test_crlf_events() -> None:
    """CRLF line endings parse like LF."""
    assert feed_all(b"data: a\r\n\r\ndata: b\r\n\r\n") == [
        SSEEvent(None, b"a", None),
        SSEEvent(None, b"b", None),
    ]


def test_cr_events() -> None:
    """A lone CR is a line ending too."""
    assert feed_all(b"data: a\r\rdata: b\r\r") == [SSEEvent(None, b"a", None), SSEEvent(None, b"b", None)]


def test_cr_then_lf_in_next_feed_is_one_line_ending() -> None:
    """A CR ending one feed and an LF starting the next form one CRLF, not a blank line."""
    events = feed_all(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")
    assert events == [SSEEvent(None, b"a\nb", None)]


def test_cr_at_end_then_empty_feed_keeps_pending_lf_skip() -> None:
    """An empty feed between a CR and its LF does not turn the LF into a blank line."""
    assert feed_all(b"data: a\r", b"", b"\ndata: b\r\n\r\n") == [SSEEvent(None, b"a\nb", None)]


def test_event_completed_by_a_cr_dispatches_immediately() -> None:
    """A blank line ended by a bare CR dispatches without waiting for a possible LF."""
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == [SSEEvent(None, b"a", None)]
    assert parser.feed(b"\ndata: b\n\n") == [SSEEvent(None, b"b", None)]


def test_comments_are_ignored() -> None:
    """Lines starting with a colon are comments and do not dispatch or add data."""
    assert feed_all(b": keep-alive\n\n:x\ndata: a\n: mid\n\n") == [SSEEvent(None, b"a", None)]


def test_multiline_data_joined_with_lf() -> None:
    """Several data lines in one event are joined with LF."""
    assert feed_all(b"data: a\ndata: b\ndata: c\n\n") == [SSEEvent(None, b"a\nb\nc", None)]


def test_event_and_id_fields() -> None:
    """``event`` applies to one event; ``id`` persists to later events until changed."""
    events = feed_all(b"event: delta\nid: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n")
    assert events == [
        SSEEvent("delta", b"a", "1"),
        SSEEvent(None, b"b", "1"),
        SSEEvent(None, b"c", "2"),
    ]


def test_id_carries_into_later_plain_data_events() -> None:
    """Plain ``data:`` events in a later read still carry the last id."""
    events = feed_all(b"id: 1\ndata: a\n\n", b"data: b\n\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "1"]


def test_id_with_nul_is_ignored() -> None:
    """An id value containing NUL does not change the last event id."""
    events = feed_all(b"id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


def test_no_space_after_colon_and_only_one_space_stripped() -> None:
    """``data:x`` has value ``x``; ``data:  x`` keeps the second space."""
    assert feed_all(b"data:x\n\ndata:  y\n\n") == [SSEEvent(None, b"x", None), SSEEvent(None, b" y", None)]


def test_field_without_colon_has_empty_value() -> None:
    """A bare ``data`` line is a data field with an empty value, so the event is dispatched."""
    assert feed_all(b"data\n\ndata\ndata\n\n") == [SSEEvent(None, b"", None), SSEEvent(None, b"\n", None)]


def test_value_keeps_later_colons() -> None:
    """Only the first colon separates field from value."""
    assert feed_all(b'data: {"a": "b:c"}\n\n') == [SSEEvent(None, b'{"a": "b:c"}', None)]


def test_events_without_data_are_not_dispatched() -> None:
    """An event with only event/id/unknown fields is dropped, but its id still persists."""
    events = feed_all(b"event: ping\n\nid: 9\n\nfoo: bar\n\ndata: a\n\n")
    assert events == [SSEEvent(None, b"a", "9")]


def test_retry_field_sets_retry_ms() -> None:
    """A numeric ``retry`` field is exposed; a non-numeric one is ignored."""
    parser = SSEParser()
    parser.feed(b"retry: 1500\n\nretry: soon\n\n")
    assert parser.retry_ms == 1500


def test_utf8_bom_is_stripped_even_when_split() -> None:
    """A UTF-8 BOM at the start of the stream is skipped, even when it arrives byte by byte."""
    data = b"\xef\xbb\xbfdata: a\n\n"
    assert feed_all(data) == [SSEEvent(None, b"a", None)]
    assert feed_all(*bytewise(data)) == [SSEEvent(None, b"a", None)]


def test_split_utf8_in_data_is_reassembled() -> None:
    """A multi-byte UTF-8 character split across feeds arrives intact."""
    data = "data: héllo €\n\n".encode()
    assert feed_all(*bytewise(data)) == [SSEEvent(None, "héllo €".encode(), None)]


def test_truncated_final_event_is_discarded_and_flagged() -> None:
    """An event without its blank line is not dispatched at close, and has_partial says so."""
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == [SSEEvent(None, b"a", None)]
    assert parser.has_partial
    assert parser.close() == []


def test_unterminated_line_is_partial() -> None:
    """Bytes without a line ending at end of stream count as partial."""
    parser = SSEParser()
    parser.feed(b"data: a\n\ndata: {")
    assert parser.has_partial


def test_clean_end_is_not_partial() -> None:
    """A stream ending at a blank line, or with only a comment, is not partial."""
    parser = SSEParser()
    parser.feed(b"data: a\n\n: bye\n")
    assert not parser.has_partial
    assert not SSEParser().has_partial


def test_feed_data_matches_feed() -> None:
    """feed_data returns exactly the data of the events feed returns."""
    data = b"data: a\n\nevent: e\ndata: b\ndata: c\n\n: x\n\ndata:d\r\n\r\n"
    assert SSEParser().feed_data(data) == [e.data for e in SSEParser().feed(data)]


def test_long_event_split_into_many_feeds() -> None:
    """A large event fed one byte at a time is reassembled once."""
    payload = b"x" * 5000
    events = feed_all(*bytewise(b"data: " + payload + b"\n\n"))
    assert events == [SSEEvent(None, payload, None)]


# -- property: any split gives the same events --------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=12
)
_EVENT = st.fixed_dictionaries(
    {
        "event": st.none() | _TEXT.filter(bool),
        "id": st.none() | _TEXT,
        "data": st.lists(_TEXT, min_size=1, max_size=3),
        "comment": st.booleans(),
        "no_space": st.booleans(),
    }
)
_ENDINGS = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A byte stream of random valid events with mixed line endings, and its expected events."""
    lines: list[str] = []
    expected: list[SSEEvent] = []
    last_id: str | None = None
    for ev in draw(st.lists(_EVENT, max_size=6)):
        if ev["comment"]:
            lines.append(": note")
        if ev["event"] is not None:
            lines.append(f"event: {ev['event']}")
        if ev["id"] is not None:
            lines.append(f"id: {ev['id']}")
            last_id = ev["id"]
        for value in ev["data"]:
            if value == "" and ev["no_space"]:
                lines.append("data")
            elif ev["no_space"] and not value.startswith(" "):
                lines.append(f"data:{value}")
            else:
                lines.append(f"data: {value}")
        lines.append("")
        expected.append(SSEEvent(ev["event"], "\n".join(ev["data"]).encode(), last_id))
    endings = [draw(_ENDINGS) for _ in lines]
    # A CR followed by a blank line's LF would read as one CRLF; write that pair as CRLF, CRLF.
    for i in range(len(lines) - 1):
        if endings[i] == "\r" and lines[i + 1] == "" and endings[i + 1].startswith("\n"):
            endings[i] = "\r\n"
    text = "".join(line + end for line, end in zip(lines, endings, strict=True))
    return text.encode(), expected


@given(stream=sse_streams(), cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=20))
@settings(max_examples=400, deadline=None)
def test_any_split_yields_the_same_events(stream: tuple[bytes, list[SSEEvent]], cuts: list[int]) -> None:
    """Random valid events split at random points parse to the same events as fed whole."""
    data, expected = stream
    whole = feed_all(data)
    assert whole == expected
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(*pieces) == whole
    assert feed_all(*bytewise(data)) == whole
