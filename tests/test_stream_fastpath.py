"""The chat/completions stream parsers' template fast path gives exactly what the full path gives.

Reference: the same parser class with learning switched off (every payload through orjson and
the dict walk). Streams are built from the real encoders, then perturbed the ways a template
could be fooled: escapes, non-ASCII and invalid UTF-8 in the content slot, control bytes, empty
content, a changing ``created``, a per-chunk ``obfuscation`` field, finish and usage chunks,
errors mid-stream, malformed JSON that still has the template's prefix and suffix, and any split
of the body into reads.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings, strategies as st

from harness.protocols.azure_openai import (
    SSE_DONE,
    ChatStreamParser,
    CompletionStreamParser,
    content_chunk,
    finish_chunk,
    role_chunk,
    usage_chunk,
)


class _FullPathChat(ChatStreamParser):
    __slots__ = ()

    def _learn(self, payload: bytes, choice: Any) -> bytes | None:
        return None


class _FullPathCompletion(CompletionStreamParser):
    __slots__ = ()

    def _learn(self, payload: bytes, choice: Any) -> bytes | None:
        return None


def _run(parser: ChatStreamParser, reads: list[bytes]) -> tuple[Any, ...]:
    events: list[tuple[Any, ...]] = []
    counts = [parser.feed(r, events) for r in reads]
    parser.close()
    return (
        events,
        counts,
        parser.content_chunks,
        parser.tokens_out_approx,
        parser.usage_in,
        parser.usage_out,
        parser.response_id,
        parser.finish_reason,
        parser.done,
        parser.error,
    )


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(body[last:p])
        last = p
    out.append(body[last:])
    return [r for r in out if r]


def _raw_content(created: int, raw: bytes) -> bytes:
    """A content chunk whose content string body is ``raw`` exactly (may be invalid JSON)."""
    chunk = content_chunk("chatcmpl-t", created, "gpt-4o", "SLOT")
    return chunk.replace(b'"content":"SLOT"', b'"content":"' + raw + b'"')


_TEXTS = st.one_of(
    st.sampled_from([" the", " tok", "", " ", "  two words ", " é", " 漢字", "\n", "\t x"]),
    st.text(max_size=12),
)
_RAW = st.sampled_from(
    [b"\\n", b'\\"', b"\\u00e9", b"\xff\xfe", b"\xc3", b"\x01", b"a\x1fb", b"\x7f", b"ok", b"\\"]
)


@st.composite
def _chat_body(draw: st.DrawFn) -> bytes:
    parts = [role_chunk("chatcmpl-t", 1, "gpt-4o")]
    created = 1
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["text"] * 6 + ["raw", "tick", "obfuscated", "broken", "error"]))
        if kind == "text":
            parts.append(content_chunk("chatcmpl-t", created, "gpt-4o", draw(_TEXTS)))
        elif kind == "raw":
            parts.append(_raw_content(created, draw(_RAW)))
        elif kind == "tick":
            created += 1
        elif kind == "obfuscated":
            chunk = content_chunk("chatcmpl-t", created, "gpt-4o", draw(_TEXTS))
            pad = draw(st.text(alphabet="abcdef", max_size=6)).encode()
            parts.append(chunk.replace(b"}\n\n", b',"obfuscation":"' + pad + b'"}\n\n'))
        elif kind == "broken":  # the template's prefix, then not JSON
            chunk = content_chunk("chatcmpl-t", created, "gpt-4o", " x")
            parts.append(chunk.replace(b'" x"', b'" x'))
        else:
            parts.append(b'data: {"error":{"message":"boom","code":"500"}}\n\n')
    if draw(st.booleans()):
        parts.append(finish_chunk("chatcmpl-t", created, "gpt-4o", "stop"))
    if draw(st.booleans()):
        parts.append(usage_chunk("chatcmpl-t", created, "gpt-4o", 7, 9))
    if draw(st.booleans()):
        parts.append(SSE_DONE)
    return b"".join(parts)


def _per_event(body: bytes) -> list[bytes]:
    """One read per event, as a live token stream arrives (the whole-read fast path)."""
    return [event + b"\n\n" for event in body.split(b"\n\n")[:-1]]


@settings(max_examples=400, deadline=None)
@given(_chat_body(), st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
def test_chat_fast_path_equals_full_path(body: bytes, cuts: list[int], per_event: bool) -> None:
    reads = _per_event(body) if per_event else _split(body, cuts)
    assert _run(ChatStreamParser(), reads) == _run(_FullPathChat(), reads)


@settings(max_examples=200, deadline=None)
@given(st.lists(_TEXTS, max_size=30), st.lists(st.integers(0, 10_000), max_size=8))
def test_completion_fast_path_equals_full_path(texts: list[str], cuts: list[int]) -> None:
    def chunk(text: str, reason: str | None = None) -> bytes:
        obj = {
            "choices": [{"finish_reason": reason, "index": 0, "logprobs": None, "text": text}],
            "created": 1,
            "id": "cmpl-t",
            "model": "gpt-35-turbo-instruct",
            "object": "text_completion",
        }
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    body = b"".join([chunk(t) for t in texts] + [chunk("", "stop"), SSE_DONE])
    reads = _split(body, cuts)
    assert _run(CompletionStreamParser(), reads) == _run(_FullPathCompletion(), reads)


def test_the_fast_path_is_taken_on_a_regular_stream() -> None:
    parser = ChatStreamParser()
    body = b"".join(
        [role_chunk("chatcmpl-t", 1, "gpt-4o")]
        + [content_chunk("chatcmpl-t", 1, "gpt-4o", f" w{i}") for i in range(100)]
        + [finish_chunk("chatcmpl-t", 1, "gpt-4o", "stop"), SSE_DONE]
    )
    assert parser.feed(body) == 100
    parser.close()
    assert parser._hits == 99 and parser._learns == 1
    assert (parser.tokens_out_approx, parser.finish_reason, parser.done) == (100, "stop", True)

    per_read = ChatStreamParser()  # one event per read: the whole-read path
    assert sum(per_read.feed(event) for event in _per_event(body)) == 100
    assert per_read._hits == 99 and per_read.tokens_out_approx == 100


def test_a_stream_that_changes_shape_every_chunk_stops_learning() -> None:
    parser = ChatStreamParser()
    body = b"".join(
        content_chunk("chatcmpl-t", 1, "gpt-4o", " w").replace(b"}\n\n", b',"obfuscation":"%d"}\n\n' % i)
        for i in range(200)
    )
    assert parser.feed(body) == 200
    assert parser._hits == 0 and parser._learns <= 3
