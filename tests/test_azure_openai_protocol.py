"""Azure OpenAI chat completions: request template, stream/body parsing, and the mock encoders."""

from __future__ import annotations

import pickle

import httpx2
import openai
import orjson
import pytest
from hypothesis import given, settings, strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from harness.protocols.azure_openai import (
    EV_DONE,
    EV_ERROR,
    EV_FINISH,
    EV_ID,
    EV_TOKEN,
    EV_USAGE,
    SSE_DONE,
    TRUNCATED,
    TRUNCATED_EVENT,
    ChatRequestTemplate,
    ChatStreamParser,
    ChunkEncoder,
    chat_completion_body,
    content_chunk,
    encode_sse,
    error_body,
    finish_chunk,
    parse_chat_response,
    parse_error_body,
    prompt_filter_chunk,
    role_chunk,
    stream_events,
    usage_chunk,
)
from harness.protocols.tokens import output_token

RID = "chatcmpl-BeRMxyz0123456789abcdefghij"
CREATED = 1748977994
MODEL = "gpt-4o-2024-05-13"
N = 12


def azure_stream(n: int = N, *, usage: bool = True) -> bytes:
    """A full realistic Azure stream: prompt filter, role, n content chunks, finish, usage, DONE."""
    parts = [prompt_filter_chunk(), role_chunk(RID, CREATED, MODEL)]
    parts += [content_chunk(RID, CREATED, MODEL, output_token(i)) for i in range(n)]
    parts.append(finish_chunk(RID, CREATED, MODEL, "stop"))
    if usage:
        parts.append(usage_chunk(RID, CREATED, MODEL, 21, n))
    parts.append(SSE_DONE)
    return b"".join(parts)


def expected_events(n: int = N) -> list[tuple[object, ...]]:
    return [(EV_ID, RID), *[(EV_TOKEN, 1)] * n, (EV_FINISH, "stop"), (EV_USAGE, 21, n), (EV_DONE,)]


def chunk_json(chunk: bytes) -> bytes:
    assert chunk.startswith(b"data: ")
    assert chunk.endswith(b"\n\n")
    return chunk[6:-2]


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# -- stream parsing -----------------------------------------------------------------------


def test_full_stream_counts_only_content_chunks() -> None:
    """A realistic Azure stream yields exactly N content chunks, then finish, usage and done."""
    parser = ChatStreamParser()
    assert parser.feed(azure_stream()) == N
    parser.close()
    assert parser.content_chunks == N
    assert parser.tokens_out_approx == N
    assert (parser.usage_in, parser.usage_out) == (21, N)
    assert parser.response_id == RID
    assert parser.finish_reason == "stop"
    assert parser.done
    assert parser.error is None


def test_stream_events_of_full_stream() -> None:
    """stream_events normalises the full stream to id, N tokens, finish, usage, done."""
    assert stream_events([azure_stream()]) == expected_events()


def test_feed_returns_chunks_completed_per_read() -> None:
    """Each feed reports the content chunks its bytes completed, so reads can be timestamped."""
    parser = ChatStreamParser()
    c0 = content_chunk(RID, CREATED, MODEL, " a")
    c1 = content_chunk(RID, CREATED, MODEL, " b c")
    assert parser.feed(prompt_filter_chunk() + role_chunk(RID, CREATED, MODEL)) == 0
    assert parser.feed(c0[:40]) == 0
    assert parser.feed(c0[40:] + c1) == 2
    assert parser.tokens_out_approx == 3


def test_one_byte_pieces() -> None:
    """Feeding the stream one byte at a time gives the same events."""
    data = azure_stream()
    assert stream_events([data[i : i + 1] for i in range(len(data))]) == expected_events()


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    n=st.integers(min_value=0, max_value=8),
)
@settings(max_examples=300, deadline=None)
def test_random_splits_and_line_endings_give_identical_events(cuts: list[int], ending: bytes, n: int) -> None:
    """The same stream split at random points, with LF, CRLF or CR endings, gives identical events."""
    data = azure_stream(n)
    whole = stream_events([data])
    assert whole == expected_events(n)
    variant = data.replace(b"\n", ending)
    assert stream_events(split_at(variant, cuts)) == whole
    assert stream_events([variant[i : i + 1] for i in range(len(variant))]) == whole


def test_error_in_stream_ends_it() -> None:
    """A data object with a top-level error sets error to its message; later chunks are ignored."""
    data = (
        role_chunk(RID, CREATED, MODEL)
        + content_chunk(RID, CREATED, MODEL, " a")
        + encode_sse({"error": {"code": "server_error", "message": "backend went away"}})
        + content_chunk(RID, CREATED, MODEL, " b")
        + SSE_DONE
    )
    parser = ChatStreamParser()
    assert parser.feed(data) == 1
    parser.close()
    assert parser.error == "backend went away"
    assert not parser.done
    assert stream_events([data]) == [(EV_ID, RID), (EV_TOKEN, 1), (EV_ERROR, "backend went away")]


def test_error_without_message_uses_sdk_default() -> None:
    """An error object without a message gets the openai SDK's generic message."""
    assert stream_events([encode_sse({"error": {"code": "500"}})]) == [
        (EV_ERROR, "An error occurred during streaming")
    ]


def test_malformed_json_chunk_is_an_error_not_an_exception() -> None:
    """Undecodable chunk data sets a 'malformed chunk' error and feed does not raise."""
    parser = ChatStreamParser()
    assert parser.feed(content_chunk(RID, CREATED, MODEL, " a") + b'data: {"choices": [\n\n') == 1
    assert parser.error is not None
    assert parser.error.startswith("malformed chunk: ")
    assert parser.feed(content_chunk(RID, CREATED, MODEL, " b")) == 0


def test_json_of_wrong_shape_is_malformed() -> None:
    """Valid JSON that is not a chunk object is reported as malformed, not raised."""
    for data in (b"data: [1, 2]\n\n", b'data: {"choices": 5}\n\n', b'data: {"choices": [{"delta": 3}]}\n\n'):
        parser = ChatStreamParser()
        parser.feed(data)
        assert parser.error is not None
        assert parser.error.startswith("malformed chunk"), data


def test_truncated_stream_without_done() -> None:
    """A stream that ends before [DONE] is an error at close unless require_done is off."""
    data = azure_stream().removesuffix(SSE_DONE)
    parser = ChatStreamParser()
    assert parser.feed(data) == N
    parser.close()
    assert parser.error == TRUNCATED
    assert stream_events([data])[-1] == (EV_ERROR, TRUNCATED)
    lenient = ChatStreamParser(require_done=False)
    lenient.feed(data)
    lenient.close()
    assert lenient.error is None


def test_stream_cut_inside_an_event_is_an_error_even_without_require_done() -> None:
    """Bytes of an unfinished event at close are a truncation even when [DONE] is optional."""
    chunk = content_chunk(RID, CREATED, MODEL, " a")
    parser = ChatStreamParser(require_done=False)
    assert parser.feed(chunk + chunk[:-1]) == 1
    parser.close()
    assert parser.error == TRUNCATED_EVENT


def test_done_is_a_prefix_match() -> None:
    """``data: [DONE]`` followed by extra text still ends the stream, as in the openai SDK."""
    parser = ChatStreamParser()
    parser.feed(b"data: [DONE] bye\n\n")
    assert parser.done


def test_async_filter_chunk_without_delta_is_not_content() -> None:
    """Async-filter chunks (filter results and offsets, no delta) are not counted."""
    enc = ChunkEncoder(RID, CREATED, MODEL)
    data = enc.role() + enc.content(" a") + enc.async_filter(0, 2) + enc.finish() + enc.async_filter(2, 2)
    assert stream_events([data + SSE_DONE]) == [
        (EV_ID, RID),
        (EV_TOKEN, 1),
        (EV_FINISH, "stop"),
        (EV_DONE,),
    ]


def test_tool_call_deltas_are_content() -> None:
    """Chunks whose delta carries tool_calls count as content chunks."""

    def tool_delta(delta: dict[str, object]) -> bytes:
        return encode_sse(
            {
                "choices": [{"delta": delta, "finish_reason": None, "index": 0, "logprobs": None}],
                "created": CREATED,
                "id": RID,
                "model": MODEL,
                "object": "chat.completion.chunk",
            }
        )

    first = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    args = {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]}
    data = tool_delta(first) + tool_delta(args) + finish_chunk(RID, CREATED, MODEL, "tool_calls") + SSE_DONE
    assert stream_events([data]) == [
        (EV_ID, RID),
        (EV_TOKEN, 1),
        (EV_TOKEN, 2),
        (EV_FINISH, "tool_calls"),
        (EV_DONE,),
    ]


def test_refusal_delta_is_content() -> None:
    """A delta with a non-empty refusal counts as content."""
    data = encode_sse({"id": RID, "choices": [{"index": 0, "delta": {"refusal": "I can't help"}}]})
    assert stream_events([data + SSE_DONE]) == [(EV_ID, RID), (EV_TOKEN, 3), (EV_DONE,)]


def test_empty_content_counts_nothing_and_whitespace_content_counts_one() -> None:
    """Empty content is not content; non-empty content is at least one token."""
    parser = ChatStreamParser()
    parser.feed(content_chunk(RID, CREATED, MODEL, "") + content_chunk(RID, CREATED, MODEL, "\n"))
    assert (parser.content_chunks, parser.tokens_out_approx) == (1, 1)


def test_comments_and_keepalives_in_stream_are_ignored() -> None:
    """SSE comments between chunks (proxies send keep-alives) change nothing."""
    data = b": ping\n\n" + azure_stream().replace(b"\n\ndata: ", b"\n\n: ka\n\ndata: ")
    assert stream_events([data]) == expected_events()


# -- the openai SDK accepts the encoders' bytes --------------------------------------------


def test_sdk_types_validate_encoded_chunks() -> None:
    """ChatCompletionChunk.model_validate accepts the role, content, finish and usage chunks."""
    enc = ChunkEncoder(RID, CREATED, MODEL, usage_null=True)
    chunks = [
        role_chunk(RID, CREATED, MODEL),
        content_chunk(RID, CREATED, MODEL, 'he said "hi"\n'),
        finish_chunk(RID, CREATED, MODEL, "length"),
        usage_chunk(RID, CREATED, MODEL, 5, 2),
        enc.role(),
        enc.content("x"),
        enc.finish("stop"),
        enc.usage(5, 2),
    ]
    for chunk in chunks:
        parsed = ChatCompletionChunk.model_validate(orjson.loads(chunk_json(chunk)))
        assert parsed.id == RID
        assert parsed.system_fingerprint is not None
    content = ChatCompletionChunk.model_validate(orjson.loads(chunk_json(chunks[1])))
    assert content.choices[0].delta.content == 'he said "hi"\n'
    assert content.choices[0].model_extra is not None
    assert content.choices[0].model_extra["content_filter_results"]["hate"]["severity"] == "safe"
    usage = ChatCompletionChunk.model_validate(orjson.loads(chunk_json(chunks[3])))
    assert usage.usage is not None
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens, usage.usage.total_tokens) == (5, 2, 7)


def test_chunk_encoder_matches_module_functions() -> None:
    """The per-stream encoder emits the same bytes as the one-off functions."""
    enc = ChunkEncoder(RID, CREATED, MODEL)
    assert enc.role() == role_chunk(RID, CREATED, MODEL)
    assert enc.content(" a") == content_chunk(RID, CREATED, MODEL, " a")
    assert enc.finish("stop") == finish_chunk(RID, CREATED, MODEL, "stop")
    assert enc.usage(3, 4) == usage_chunk(RID, CREATED, MODEL, 3, 4)
    with_null = ChunkEncoder(RID, CREATED, MODEL, usage_null=True)
    assert orjson.loads(chunk_json(with_null.content("a")))["usage"] is None
    assert "usage" not in orjson.loads(chunk_json(enc.content("a")))


def test_prompt_filter_chunk_shape() -> None:
    """The first Azure chunk has no choices, blank metadata and safe prompt filter results."""
    obj = orjson.loads(chunk_json(prompt_filter_chunk()))
    assert obj["choices"] == []
    assert (obj["id"], obj["model"], obj["object"], obj["created"]) == ("", "", "", 0)
    results = obj["prompt_filter_results"][0]
    assert results["prompt_index"] == 0
    assert results["content_filter_results"]["jailbreak"] == {"filtered": False, "detected": False}


def test_sdk_types_validate_completion_body() -> None:
    """ChatCompletion.model_validate accepts the non-stream body, keeping Azure's extras."""
    body = chat_completion_body(RID, CREATED, MODEL, "Hello there", 33, 2)
    completion = ChatCompletion.model_validate(orjson.loads(body))
    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 35
    assert completion.model_extra is not None
    assert "prompt_filter_results" in completion.model_extra


def _sdk_client(handler: object) -> openai.AzureOpenAI:
    transport = httpx2.MockTransport(handler)  # type: ignore[arg-type]
    return openai.AzureOpenAI(
        azure_endpoint="http://mock.local",
        api_version="2024-10-21",
        api_key="secret-key",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def test_sdk_streams_encoded_bytes_and_sends_what_the_template_sends() -> None:
    """The real openai SDK consumes the encoded stream, and its request matches the template's."""
    seen: dict[str, object] = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen["url"] = str(request.url)
        seen["headers"] = dict(request.headers)
        seen["body"] = orjson.loads(request.content)
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=azure_stream()
        )

    client = _sdk_client(handler)
    chunks = list(
        client.chat.completions.create(
            model="my-gpt4o",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(output_token(i) for i in range(N))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == N

    template = ChatRequestTemplate(
        "http://mock.local",
        "my-gpt4o",
        "2024-10-21",
        "secret-key",
        model="my-gpt4o",
        prompt="hi",
        max_tokens=64,
        stream=True,
        include_usage=True,
    )
    assert seen["url"] == template.url
    assert seen["body"] == orjson.loads(template.body)
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["api-key"] == "secret-key"


def test_sdk_reads_completion_body_and_raises_on_error_body() -> None:
    """The SDK parses the non-stream body, and maps error_body with 429 to RateLimitError."""
    bodies = [
        httpx2.Response(200, content=chat_completion_body(RID, CREATED, MODEL, "Hi", 3, 1)),
        httpx2.Response(429, content=error_body("429", "Rate limit is exceeded.")),
    ]
    client = _sdk_client(lambda request: bodies.pop(0))
    completion = client.chat.completions.create(model="d", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "Hi"
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="d", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "429"


# -- request template ------------------------------------------------------------------------


def make_template(**overrides: object) -> ChatRequestTemplate:
    kwargs: dict[str, object] = {
        "model": "gpt-4o",
        "prompt": "the of and",
        "max_tokens": 128,
        "stream": True,
        "include_usage": True,
    }
    kwargs.update(overrides)
    return ChatRequestTemplate(
        "https://res.openai.azure.com/",
        "my deploy",
        "2024-10-21",
        "sk-SECRET",
        **kwargs,  # type: ignore[arg-type]
    )


def test_template_url_uses_deployment_path() -> None:
    """The URL is the classic deployment path with the deployment quoted and api-version set."""
    template = make_template()
    assert template.url == (
        "https://res.openai.azure.com/openai/deployments/my%20deploy/chat/completions?api-version=2024-10-21"
    )
    assert template.method == "POST"


def test_template_api_key_headers() -> None:
    """Key auth sends api-key, JSON content type and an SSE Accept for streams."""
    headers = make_template().headers_for("req-1")
    assert headers == {
        "api-key": "sk-SECRET",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "x-ms-client-request-id": "req-1",
    }


def test_template_bearer_headers_and_json_accept() -> None:
    """Bearer auth sends Authorization instead of api-key; non-stream accepts JSON."""
    headers = make_template(auth="bearer", stream=False).headers_for("r")
    assert headers["Authorization"] == "Bearer sk-SECRET"
    assert "api-key" not in headers
    assert headers["Accept"] == "application/json"


def test_template_without_key_sends_no_auth() -> None:
    """With no key there is no auth header at all."""
    template = ChatRequestTemplate(
        "http://x", "d", "v", None, model="m", prompt="p", max_tokens=1, stream=False, include_usage=False
    )
    headers = template.headers_for("r")
    assert "api-key" not in headers
    assert "Authorization" not in headers


def test_headers_for_returns_a_fresh_dict() -> None:
    """Each call returns a new dict, and mutating it does not leak into the next request."""
    template = make_template()
    first = template.headers_for("a")
    first["x-extra"] = "1"
    second = template.headers_for("b")
    assert second["x-ms-client-request-id"] == "b"
    assert "x-extra" not in second


def test_template_body_with_and_without_usage() -> None:
    """The body carries model, one user message, max_tokens, stream, and stream_options only when asked."""
    assert orjson.loads(make_template().body) == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "the of and"}],
        "max_tokens": 128,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "stream_options" not in orjson.loads(make_template(include_usage=False).body)
    non_stream = orjson.loads(make_template(stream=False).body)
    assert non_stream["stream"] is False
    assert "stream_options" not in non_stream


def test_template_repr_hides_key() -> None:
    """repr never shows the key."""
    text = repr(make_template()) + repr(make_template(auth="bearer"))
    assert "SECRET" not in text
    assert "***" in text


def test_template_pickles_by_config() -> None:
    """A pickled template rebuilds with the same URL, headers and body."""
    template = make_template(auth="bearer")
    clone = pickle.loads(pickle.dumps(template))
    assert (clone.url, clone.body, clone.headers_for("r")) == (
        template.url,
        template.body,
        template.headers_for("r"),
    )


def test_template_rejects_unknown_auth() -> None:
    """An unknown auth kind is a ValueError at construction."""
    with pytest.raises(ValueError, match="auth"):
        make_template(auth="basic")


# -- non-stream bodies -----------------------------------------------------------------------


def test_parse_chat_response() -> None:
    """A non-stream body gives content, approximate tokens, usage, id and finish reason."""
    result = parse_chat_response(chat_completion_body(RID, CREATED, MODEL, "the of and", 7, 3, "length"))
    assert result.content == "the of and"
    assert result.tokens_out_approx == 3
    assert (result.usage_in, result.usage_out) == (7, 3)
    assert result.response_id == RID
    assert result.finish_reason == "length"
    assert result.error is None


def test_parse_chat_response_error_body() -> None:
    """An Azure error body gives 'code: message', whether code is a string or an int."""
    assert parse_chat_response(error_body("429", "slow down")).error == "429: slow down"
    assert parse_chat_response(b'{"error": {"code": 429, "message": "x"}}').error == "429: x"


def test_parse_chat_response_malformed() -> None:
    """A body that is not JSON is an error result, not an exception."""
    result = parse_chat_response(b"<html>502 Bad Gateway</html>")
    assert result.error is not None
    assert result.error.startswith("malformed body")


def test_parse_error_body_shapes() -> None:
    """Error bodies of several shapes give (code, message); non-JSON gives its first 200 chars."""
    assert parse_error_body(error_body("DeploymentNotFound", "no such deployment")) == (
        "DeploymentNotFound",
        "no such deployment",
    )
    assert parse_error_body(b'{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED"}}') == (
        "429",
        "m",
    )
    assert parse_error_body(b'{"message":"Too many requests"}') == (None, "Too many requests")
    assert parse_error_body(b'{"error":"bad"}') == (None, "bad")
    html = b"<html>" + b"x" * 500 + b"</html>"
    code, message = parse_error_body(html)
    assert code is None
    assert message is not None
    assert len(message) == 200
    assert message.startswith("<html>")
    assert parse_error_body(b"\xff\xfe oops") == (None, "\ufffd\ufffd oops")
    assert parse_error_body(b"") == (None, None)
