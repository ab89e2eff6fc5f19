"""Azure OpenAI chat completions on the wire, both directions (``../shared/protocols.md`` §2).

Client side: :class:`ChatRequestTemplate` builds the request once per endpoint × deployment ×
scenario; :class:`ChatStreamParser` reads an SSE body and counts *content-bearing chunks*,
the events the engine timestamps (the first one is TTFT, the gaps are ITL);
:func:`parse_chat_response` and :func:`parse_error_body` read non-stream bodies.

Server side: the ``*_chunk`` / ``*_body`` encoders produce exactly the bytes Azure sends, so
the mock reuses this module and there is one implementation of the format.

Glossary of a stream (§2.5), in order::

    prompt-filter chunk   choices: [], blank id/model/object, prompt_filter_results   not content
    role chunk            delta {"content": "", "role": "assistant"}                   not content
    content chunks        delta content / tool_calls / refusal non-empty               CONTENT
    async-filter chunks   choice with content_filter_results/offsets, no delta         not content
    finish chunk          delta {}, finish_reason "stop"                               not content
    usage chunk           choices: [], usage {...}  (only with include_usage)          not content
    data: [DONE]

Errors in a stream end it the way the openai SDK does (it raises): a data object with a
truthy top-level ``error``, or data that is not a JSON object. Both become
:attr:`ChatStreamParser.error`; nothing after them is counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote

import orjson

from harness.protocols.sse import SSEParser
from harness.protocols.tokens import approx_tokens

# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


class ChatRequestTemplate:
    """URL, headers and body of one chat request shape, built once; per request only the
    ``x-ms-client-request-id`` header changes. Pickles by configuration."""

    __slots__ = (
        "_api_key",
        "_config",
        "_headers",
        "auth",
        "body",
        "deployment",
        "method",
        "model",
        "stream",
        "url",
    )

    def __init__(
        self,
        base_url: str,
        deployment: str,
        api_version: str,
        api_key: str | None,
        *,
        model: str,
        prompt: str,
        max_tokens: int,
        stream: bool,
        include_usage: bool,
        auth: Literal["api-key", "bearer"] = "api-key",
    ) -> None:
        if auth not in ("api-key", "bearer"):
            raise ValueError(f"auth must be 'api-key' or 'bearer', not {auth!r}")
        self._config = (
            (base_url, deployment, api_version, api_key),
            {
                "model": model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "stream": stream,
                "include_usage": include_usage,
                "auth": auth,
            },
        )
        self._api_key = api_key
        self.auth = auth
        self.deployment = deployment
        self.model = model
        self.stream = stream
        self.method: Final = "POST"
        self.url = (
            f"{base_url.rstrip('/')}/openai/deployments/{quote(deployment, safe='')}"
            f"/chat/completions?api-version={quote(api_version, safe='')}"
        )
        headers: dict[str, str] = {}
        if api_key is not None:
            if auth == "api-key":
                headers["api-key"] = api_key
            else:
                headers["Authorization"] = f"Bearer {api_key}"
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        self._headers = headers
        payload: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "stream": stream,
        }
        if stream and include_usage:
            payload["stream_options"] = {"include_usage": True}
        self.body: bytes = orjson.dumps(payload)

    def headers_for(self, request_id: str) -> dict[str, str]:
        """A new header dict for one request, tagged with the client request id."""
        headers = self._headers.copy()
        headers["x-ms-client-request-id"] = request_id
        return headers

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._config
        return (_rebuild_template, (args, kwargs))

    def __repr__(self) -> str:
        key = "unset" if self._api_key is None else "***"
        return (
            f"ChatRequestTemplate(url={self.url!r}, model={self.model!r}, stream={self.stream}, "
            f"auth={self.auth!r}, key={key}, body_bytes={len(self.body)})"
        )


def _rebuild_template(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ChatRequestTemplate:
    return ChatRequestTemplate(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Stream parsing
# ---------------------------------------------------------------------------------------------

# The normalised event vocabulary of :func:`stream_events` (shared by the contract suite):
EV_TOKEN: Final = "token"  # ("token", n_tokens)       one per content-bearing chunk, in order
EV_USAGE: Final = "usage"  # ("usage", in, out)        a non-null usage object
EV_ID: Final = "id"  # ("id", response_id)             once, at the first non-empty id
EV_FINISH: Final = "finish"  # ("finish", reason)      each non-null finish_reason
EV_DONE: Final = "done"  # ("done",)                   data: [DONE]
EV_ERROR: Final = "error"  # ("error", message)        in-stream error, malformed or truncated
_DONE_EVENT: Final = (EV_DONE,)

TRUNCATED: Final = "stream ended before [DONE]"
TRUNCATED_EVENT: Final = "stream ended inside an event"
MALFORMED_PREFIX: Final = "malformed "  # "malformed chunk: ..." / "malformed body: ..."


def error_kind(error: str) -> str:
    """The record's error kind for a parser error: ``reset`` (cut short), ``protocol`` (bytes
    that are not the wire format) or ``stream_error`` (the server reported an error)."""
    if error in (TRUNCATED, TRUNCATED_EVENT):
        return "reset"
    if error.startswith(MALFORMED_PREFIX):
        return "protocol"
    return "stream_error"


_SDK_DEFAULT_ERROR: Final = "An error occurred during streaming"  # what the openai SDK says
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def _snippet(data: bytes, limit: int = 80) -> str:
    return data[: limit * 4].decode("utf-8", "replace")[:limit]


def _error_message(err: Any) -> str:
    """The message of an ``error`` object the way the openai SDK picks it."""
    message = err.get("message") if isinstance(err, dict) else None
    return message if isinstance(message, str) and message else _SDK_DEFAULT_ERROR


def _tool_call_tokens(tool_calls: Any) -> int:
    n = 0
    for call in tool_calls:
        fn = call.get("function")
        if fn:
            args = fn.get("arguments")
            if args:
                n += approx_tokens(args)
    return n


class ChatStreamParser:
    """Reads one chat-completions SSE body; :meth:`feed` says how many content-bearing chunks
    each read completed, so the caller can timestamp them.

    Token counts: each content chunk adds the approximate tokens of its delta text (content,
    refusal and tool-call arguments, over all choices), and at least 1.
    """

    __slots__ = (
        "_sse",
        "content_chunks",
        "done",
        "error",
        "finish_reason",
        "require_done",
        "response_id",
        "tokens_out_approx",
        "usage_in",
        "usage_out",
    )

    def __init__(self, *, require_done: bool = True) -> None:
        self._sse = SSEParser()
        self.require_done = require_done
        self.content_chunks = 0
        self.tokens_out_approx = 0
        self.usage_in: int | None = None
        self.usage_out: int | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.done = False
        self.error: str | None = None

    def close(self) -> None:
        """End of body: a stream that never sent ``[DONE]`` is an error when required; one
        that stops inside an event is an error either way."""
        if self.done or self.error is not None:
            return
        if self.require_done:
            self.error = TRUNCATED
        elif self._sse.has_partial:
            self.error = TRUNCATED_EVENT

    @property
    def ended(self) -> bool:
        """True once ``[DONE]`` or an error ended the stream; later bytes are ignored."""
        return self.done or self.error is not None

    def _fail(self, message: str, events: list[tuple[Any, ...]] | None) -> None:
        self.error = message
        if events is not None:
            events.append((EV_ERROR, message))

    def feed(self, data: bytes, events: list[tuple[Any, ...]] | None = None) -> int:
        """Parse the next body bytes; the number of content-bearing chunks they completed.
        With ``events``, also append the normalised events (see :func:`stream_events`)."""
        if self.done or self.error is not None:
            return 0
        payloads = self._sse.feed_data(data)
        if not payloads:
            return 0
        counted = 0
        total = 0  # tokens of this feed; stored once below
        for payload in payloads:
            try:
                obj = _loads(payload)
            except _JSONDecodeError:
                if payload.startswith(b"[DONE]"):  # prefix match, as the openai SDK does
                    self.done = True
                    if events is not None:
                        events.append(_DONE_EVENT)
                else:
                    self._fail(MALFORMED_PREFIX + "chunk: " + _snippet(payload), events)
                break
            try:
                err = obj.get("error")
                if err:
                    self._fail(_error_message(err), events)
                    break
                if self.response_id is None:
                    rid = obj.get("id")
                    if rid:
                        self.response_id = rid
                        if events is not None:
                            events.append((EV_ID, rid))
                finishes: list[str] | None = None
                choices = obj.get("choices")
                if choices:
                    tokens = 0
                    content = False
                    for choice in choices:
                        delta = choice.get("delta")
                        if delta:  # absent on async-filter chunks; {} on finish chunks
                            # A delta carries one of these; checking the rest only when
                            # content is empty keeps the common chunk at one lookup.
                            text = delta.get("content")
                            if text:
                                content = True
                                tokens += approx_tokens(text)
                            else:
                                text = delta.get("refusal")
                                if text:
                                    content = True
                                    tokens += approx_tokens(text)
                                tool_calls = delta.get("tool_calls")
                                if tool_calls:
                                    content = True
                                    tokens += _tool_call_tokens(tool_calls)
                        reason = choice.get("finish_reason")
                        if reason:
                            self.finish_reason = reason
                            if events is not None:
                                if finishes is None:
                                    finishes = []
                                finishes.append(reason)
                    if content:
                        counted += 1
                        tokens = tokens or 1
                        total += tokens
                        if events is not None:
                            events.append((EV_TOKEN, tokens))
                    if finishes and events is not None:
                        events.extend((EV_FINISH, r) for r in finishes)
                usage = obj.get("usage")
                if usage:
                    self.usage_in = usage.get("prompt_tokens")
                    self.usage_out = usage.get("completion_tokens")
                    if events is not None:
                        events.append((EV_USAGE, self.usage_in, self.usage_out))
            except (AttributeError, TypeError):  # valid JSON of an unexpected shape
                self._fail(MALFORMED_PREFIX + "chunk: " + _snippet(payload), events)
                break
        self.content_chunks += counted
        self.tokens_out_approx += total
        return counted


def stream_events(data_chunks: Iterable[bytes], *, require_done: bool = True) -> list[tuple[Any, ...]]:
    """Feed a whole body (in the given pieces) and return the normalised event list, ending
    with the truncation error from :meth:`ChatStreamParser.close` when there is one."""
    parser = ChatStreamParser(require_done=require_done)
    events: list[tuple[Any, ...]] = []
    for chunk in data_chunks:
        parser.feed(chunk, events)
    had_error = parser.error is not None
    parser.close()
    if parser.error is not None and not had_error:
        events.append((EV_ERROR, parser.error))
    return events


# ---------------------------------------------------------------------------------------------
# Non-stream bodies
# ---------------------------------------------------------------------------------------------


class ChatResult(NamedTuple):
    """A parsed non-stream chat completion (or its error)."""

    content: str
    tokens_out_approx: int
    usage_in: int | None
    usage_out: int | None
    response_id: str | None
    finish_reason: str | None
    error: str | None


def _format_error(code: str | None, message: str | None) -> str:
    if code and message:
        return f"{code}: {message}"
    return code or message or "error"


def parse_chat_response(body: bytes) -> ChatResult:
    """Read a non-stream chat completion body; content and finish reason are the first
    choice's, the token approximation covers every choice."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ChatResult("", 0, None, None, None, None, MALFORMED_PREFIX + "body: " + _snippet(body))
    if not isinstance(obj, dict):
        return ChatResult("", 0, None, None, None, None, MALFORMED_PREFIX + "body: " + _snippet(body))
    if obj.get("error"):
        code, message = parse_error_body(body)
        return ChatResult("", 0, None, None, None, None, _format_error(code, message))
    try:
        content = ""
        finish_reason = None
        tokens = 0
        for i, choice in enumerate(obj.get("choices") or ()):
            msg = choice.get("message") or {}
            text = msg.get("content") or ""
            tokens += approx_tokens(text)
            refusal = msg.get("refusal")
            if refusal:
                tokens += approx_tokens(refusal)
            tool_calls = msg.get("tool_calls")
            if tool_calls:
                tokens += _tool_call_tokens(tool_calls)
            if i == 0:
                content = text
                finish_reason = choice.get("finish_reason")
        usage = obj.get("usage") or {}
        return ChatResult(
            content,
            tokens,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            obj.get("id") or None,
            finish_reason,
            None,
        )
    except (AttributeError, TypeError):
        return ChatResult("", 0, None, None, None, None, MALFORMED_PREFIX + "body: " + _snippet(body))


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) of an error body: Azure/OpenAI ``{"error": {"code", "message"}}``
    (code as str, whether sent as str or int), a bare ``{"code", "message"}`` or
    ``{"message"}``; any other body gives (None, its first 200 characters)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:1024].decode("utf-8", "replace").strip()[:200]
        return None, text or None
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, str):
            return None, err
        if isinstance(err, dict):
            code = err.get("code")
            message = err.get("message")
            return (
                None if code is None else str(code),
                None if message is None else str(message),
            )
    return None, _snippet(body, 200) or None


# ---------------------------------------------------------------------------------------------
# Server side: encoders for the mock
# ---------------------------------------------------------------------------------------------

SYSTEM_FINGERPRINT: Final = "fp_ee1d74bde0"
SSE_DONE: Final = b"data: [DONE]\n\n"

_SAFE: Final = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_SAFE: Final = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER_SAFE: Final = {
    "hate": _SAFE,
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
_PROMPT_FILTER_RESULTS: Final = [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER_SAFE}]

_dumps = orjson.dumps


def encode_sse(obj: Any) -> bytes:
    """One SSE event carrying ``obj`` as JSON."""
    return b"data: " + _dumps(obj) + b"\n\n"


_PROMPT_FILTER_CHUNK: Final = encode_sse(
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": _PROMPT_FILTER_RESULTS,
    }
)

# Chunk = prefix (choices, up to the variable part) + variable JSON + per-stream suffix.
# Keys are in Azure's (alphabetical) order.
_CF_SAFE_JSON: Final = _dumps(CONTENT_FILTER_SAFE)
_ROLE_CHOICES: Final = (
    b'data: {"choices":[{"content_filter_results":{},'
    b'"delta":{"content":"","refusal":null,"role":"assistant"},'
    b'"finish_reason":null,"index":0,"logprobs":null}]'
)
_CONTENT_PREFIX: Final = (
    b'data: {"choices":[{"content_filter_results":' + _CF_SAFE_JSON + b',"delta":{"content":'
)
_CONTENT_MIDDLE: Final = b'},"finish_reason":null,"index":0,"logprobs":null}]'
_FINISH_PREFIX: Final = b'data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":'
_FINISH_MIDDLE: Final = b',"index":0,"logprobs":null}]'
_USAGE_CHOICES: Final = b'data: {"choices":[]'
_SUFFIX_TAIL: Final = (
    b',"object":"chat.completion.chunk","system_fingerprint":"' + SYSTEM_FINGERPRINT.encode()
)


def _suffix(id: str, created: int, model: str, usage_null: bool) -> bytes:
    """The part of every chunk after ``choices`` that is constant within one stream."""
    return b"".join(
        (
            b',"created":',
            str(int(created)).encode(),
            b',"id":',
            _dumps(id),
            b',"model":',
            _dumps(model),
            _SUFFIX_TAIL,
            b'","usage":null}\n\n' if usage_null else b'"}\n\n',
        )
    )


class ChunkEncoder:
    """The chunks of one stream, with everything but the delta precomputed. ``usage_null``
    adds ``"usage": null`` to each chunk, as the service does when include_usage is on."""

    __slots__ = ("_created", "_id", "_model", "_suffix", "_usage_suffix")

    def __init__(self, id: str, created: int, model: str, *, usage_null: bool = False) -> None:
        self._id = id
        self._created = created
        self._model = model
        self._suffix = _suffix(id, created, model, usage_null)
        self._usage_suffix = _suffix(id, created, model, False)[:-3]  # without '}\n\n'

    def role(self) -> bytes:
        return _ROLE_CHOICES + self._suffix

    def content(self, text: str) -> bytes:
        return _CONTENT_PREFIX + _dumps(text) + _CONTENT_MIDDLE + self._suffix

    def finish(self, reason: str = "stop") -> bytes:
        return _FINISH_PREFIX + _dumps(reason) + _FINISH_MIDDLE + self._suffix

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = _dumps(
            {
                "completion_tokens": completion_tokens,
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        )
        return _USAGE_CHOICES + self._usage_suffix + b',"usage":' + usage + b"}\n\n"

    def async_filter(self, start_offset: int, end_offset: int) -> bytes:
        """An async-filter annotation chunk: filter results and offsets, and no ``delta``."""
        return encode_sse(
            {
                "choices": [
                    {
                        "content_filter_offsets": {
                            "check_offset": start_offset,
                            "start_offset": start_offset,
                            "end_offset": end_offset,
                        },
                        "content_filter_results": CONTENT_FILTER_SAFE,
                        "finish_reason": None,
                        "index": 0,
                    }
                ],
                "created": self._created,
                "id": self._id,
                "model": self._model,
                "object": "chat.completion.chunk",
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )


def prompt_filter_chunk() -> bytes:
    """Azure's first stream event: no choices, blank metadata, the prompt's filter results."""
    return _PROMPT_FILTER_CHUNK


def role_chunk(id: str, created: int, model: str) -> bytes:
    """The first chunk of the reply: role ``assistant`` and empty content (not content)."""
    return _ROLE_CHOICES + _suffix(id, created, model, False)


def content_chunk(id: str, created: int, model: str, text: str) -> bytes:
    """A content delta with safe filter results on the choice."""
    return _CONTENT_PREFIX + _dumps(text) + _CONTENT_MIDDLE + _suffix(id, created, model, False)


def finish_chunk(id: str, created: int, model: str, reason: str) -> bytes:
    """The empty-delta chunk that carries ``finish_reason``."""
    return _FINISH_PREFIX + _dumps(reason) + _FINISH_MIDDLE + _suffix(id, created, model, False)


def usage_chunk(id: str, created: int, model: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    """The include_usage chunk: no choices, a filled ``usage``."""
    return ChunkEncoder(id, created, model).usage(prompt_tokens, completion_tokens)


def chat_completion_body(
    id: str,
    created: int,
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
) -> bytes:
    """A non-stream chat completion as Azure returns it (§2.4)."""
    return _dumps(
        {
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "prompt_filter_results": _PROMPT_FILTER_RESULTS,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish_reason,
                    "logprobs": None,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "content_filter_results": CONTENT_FILTER_SAFE,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def error_body(code: str, message: str) -> bytes:
    """Azure's error body; ``code`` is a string even for HTTP statuses (``"429"``)."""
    return _dumps({"error": {"code": code, "message": message}})
