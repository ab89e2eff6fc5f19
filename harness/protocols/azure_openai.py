"""The OpenAI-family stateless APIs on the wire, both directions, in two flavours: Azure OpenAI
(``../shared/protocols.md`` §2) and OpenAI direct (§4). Chat completions, legacy completions
(§2.7) and embeddings (§2.6). What differs between the flavours is tabled in
:mod:`harness.protocols.openai_flavor`; every function here that cares takes ``flavor``.

Client side: the ``*RequestTemplate`` classes build a request once per endpoint × deployment ×
scenario; :class:`ChatStreamParser` and :class:`CompletionStreamParser` read an SSE body and
count *content-bearing chunks*, the events the engine timestamps (the first one is TTFT, the
gaps are ITL); :func:`parse_chat_response`, :func:`parse_completion_response`,
:func:`parse_embeddings_response` and :func:`parse_error_body` read non-stream bodies.

Server side: the encoders (:class:`ChunkEncoder`, :class:`CompletionChunkEncoder`, the
``*_body`` functions) produce exactly the bytes the service sends, so the mock reuses this
module and there is one implementation of each format.

Glossary of a chat stream (§2.5), in order::

    prompt-filter chunk   choices: [], blank id/model/object, prompt_filter_results   not content  (Azure)
    role chunk            delta {"content": "", "role": "assistant"}                   not content
    content chunks        delta content / tool_calls / refusal non-empty               CONTENT
    async-filter chunks   choice with content_filter_results/offsets, no delta         not content  (Azure)
    finish chunk          delta {}, finish_reason "stop"                               not content
    usage chunk           choices: [], usage {...}  (only with include_usage)          not content
    data: [DONE]

A completions stream is the same without the role chunk, with ``text_completion`` objects whose
choices carry ``text`` instead of ``delta``; its finish chunk has ``text: ""``.

Errors in a stream end it the way the openai SDK does (it raises): a data object with a
truthy top-level ``error``, or data that is not a JSON object. Both become
:attr:`ChatStreamParser.error`; nothing after them is counted.
"""

from __future__ import annotations

import array
import base64
import hashlib
import math
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, ClassVar, Final, Literal, NamedTuple

import orjson

from harness.protocols.events import (  # the shared vocabulary, re-exported under each dialect
    DONE_EVENT as _DONE_EVENT,
    EV_DONE as EV_DONE,
    EV_ERROR as EV_ERROR,
    EV_FINISH as EV_FINISH,
    EV_ID as EV_ID,
    EV_TOKEN as EV_TOKEN,
    EV_USAGE as EV_USAGE,
    MALFORMED_PREFIX as MALFORMED_PREFIX,
    StreamState,
    collect_events,
    error_kind as error_kind,
)
from harness.protocols.openai_flavor import (
    CLIENT_REQUEST_ID_HEADER,
    Flavor,
    auth_headers,
    check_flavor,
    request_url,
    resolve_auth,
)
from harness.protocols.sse import SSEParser
from harness.protocols.tokens import approx_tokens

# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


class _RequestTemplate:
    """URL, headers and body of one request shape, built once; per request only the client
    request id header changes. Pickles by configuration (keyword arguments)."""

    __slots__ = (
        "_api_key",
        "_config",
        "_crid_header",
        "_headers",
        "auth",
        "body",
        "deployment",
        "flavor",
        "model",
        "stream",
        "url",
    )
    _OP: ClassVar[str]
    method: ClassVar[str] = "POST"

    def _setup(
        self,
        config: tuple[tuple[Any, ...], dict[str, Any]],
        base_url: str,
        deployment: str,
        api_version: str | None,
        api_key: str | None,
        auth: str | None,
        flavor: str,
        payload: dict[str, Any],
        stream: bool,
    ) -> None:
        flavor = check_flavor(flavor)
        self._config = config
        self._api_key = api_key
        self.flavor: Flavor = flavor
        self.auth = resolve_auth(flavor, auth)
        self.deployment = deployment
        self.model: str = payload["model"]
        self.stream = stream
        self.url = request_url(flavor, base_url, deployment, api_version, self._OP)
        headers = auth_headers(self.auth, api_key)
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        self._headers = headers
        self._crid_header = CLIENT_REQUEST_ID_HEADER[flavor]
        self.body: bytes = orjson.dumps(payload)

    def headers_for(self, request_id: str) -> dict[str, str]:
        """A new header dict for one request, tagged with the client request id."""
        headers = self._headers.copy()
        headers[self._crid_header] = request_id
        return headers

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._config
        return (_rebuild_template, (type(self), args, kwargs))

    def __repr__(self) -> str:
        key = "unset" if self._api_key is None else "***"
        return (
            f"{type(self).__name__}(url={self.url!r}, model={self.model!r}, stream={self.stream}, "
            f"auth={self.auth!r}, key={key}, body_bytes={len(self.body)})"
        )


def _rebuild_template(cls: type[_RequestTemplate], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


class _PromptTemplate(_RequestTemplate):
    """A generation request from one prompt, ``max_tokens`` and optional streaming with usage;
    subclasses say how the prompt enters the body (``_prompt_fields``)."""

    __slots__ = ()

    def __init__(
        self,
        base_url: str,
        deployment: str,
        api_version: str | None,
        api_key: str | None,
        *,
        model: str,
        prompt: str,
        max_tokens: int,
        stream: bool,
        include_usage: bool,
        auth: Literal["api-key", "bearer"] | None = None,
        flavor: Flavor = "azure",
    ) -> None:
        config = (
            (base_url, deployment, api_version, api_key),
            {
                "model": model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "stream": stream,
                "include_usage": include_usage,
                "auth": auth,
                "flavor": flavor,
            },
        )
        payload: dict[str, Any] = {
            "model": model,
            **self._prompt_fields(prompt),
            "max_tokens": max_tokens,
            "stream": stream,
        }
        if stream and include_usage:
            payload["stream_options"] = {"include_usage": True}
        self._setup(config, base_url, deployment, api_version, api_key, auth, flavor, payload, stream)

    @staticmethod
    def _prompt_fields(prompt: str) -> dict[str, Any]:
        raise NotImplementedError


class ChatRequestTemplate(_PromptTemplate):
    """A chat completions request: one user message, ``max_tokens``, optional streaming with
    usage. Azure: ``x-ms-client-request-id`` per request; OpenAI: ``X-Client-Request-Id``.
    ``auth`` defaults to ``api-key`` on Azure and ``bearer`` on OpenAI."""

    __slots__ = ()
    _OP = "chat/completions"

    @staticmethod
    def _prompt_fields(prompt: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": prompt}]}


class CompletionRequestTemplate(_PromptTemplate):
    """A legacy completions request (§2.7): ``prompt``, ``max_tokens``, optional streaming."""

    __slots__ = ()
    _OP = "completions"

    @staticmethod
    def _prompt_fields(prompt: str) -> dict[str, Any]:
        return {"prompt": prompt}


class EmbeddingRequestTemplate(_RequestTemplate):
    """An embeddings request (§2.6). ``encoding_format`` defaults to ``base64``, what the openai
    SDK sends when its caller does not choose; None leaves the field out (the service sends floats)."""

    __slots__ = ()
    _OP = "embeddings"

    def __init__(
        self,
        base_url: str,
        deployment: str,
        api_version: str | None,
        api_key: str | None,
        *,
        model: str,
        input: str | list[str],
        encoding_format: Literal["float", "base64"] | None = "base64",
        dimensions: int | None = None,
        auth: Literal["api-key", "bearer"] | None = None,
        flavor: Flavor = "azure",
    ) -> None:
        if encoding_format not in (None, "float", "base64"):
            raise ValueError(f"encoding_format must be 'float', 'base64' or None, not {encoding_format!r}")
        config = (
            (base_url, deployment, api_version, api_key),
            {
                "model": model,
                "input": input,
                "encoding_format": encoding_format,
                "dimensions": dimensions,
                "auth": auth,
                "flavor": flavor,
            },
        )
        payload: dict[str, Any] = {"model": model, "input": input}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        if encoding_format is not None:
            payload["encoding_format"] = encoding_format
        self._setup(config, base_url, deployment, api_version, api_key, auth, flavor, payload, False)


# ---------------------------------------------------------------------------------------------
# Stream parsing
# ---------------------------------------------------------------------------------------------

# The normalised event vocabulary of :func:`stream_events` (shared by the contract suite):

TRUNCATED: Final = "stream ended before [DONE]"
TRUNCATED_EVENT: Final = "stream ended inside an event"


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


# A JSON string body that needs no unescaping: no quote, backslash or control byte.
_plain_string = re.compile(rb'[^"\\\x00-\x1f]*').fullmatch


class ChatStreamParser(StreamState):
    """Reads one chat-completions SSE body; :meth:`feed` says how many content-bearing chunks
    each read completed, so the caller can timestamp them.

    Token counts: each content chunk adds the approximate tokens of its delta text (content,
    refusal and tool-call arguments, over all choices), and at least 1.

    The fast path (why it exists: the engine parses every chunk of every stream, and orjson plus
    the dict walk cost ~3 µs per chunk against ~0.5 µs for this). A service sends the same chunk
    over and over with only the content text changing. After a plain content chunk (one choice,
    non-empty delta ``content``, no finish, usage or error) has been parsed in full, the bytes
    before and after its content string become a template, proven by re-parsing the template
    with a probe string in that slot. A later payload that is exactly ``prefix + S + suffix``,
    where ``S`` needs no unescaping (no quote, backslash or control byte) and is valid UTF-8,
    is then the same JSON object with content ``S``, so it is counted without decoding the
    JSON: same result as the full path, by construction. Anything else takes the full path, and
    a stream whose chunks keep changing shape (a varying ``created`` each second is fine, an
    ``obfuscation`` field in every chunk is not) soon stops trying to learn templates.
    """

    _TEXT: ClassVar[bool] = False  # choices carry "text" (completions), not "delta" (chat)
    _KEY: ClassVar[bytes] = b'"content":"'
    __slots__ = ("_hits", "_learns", "_pre", "_raw_pre", "_raw_suf", "_sse", "_suf", "require_done")

    def __init__(self, *, require_done: bool = True) -> None:
        super().__init__()
        self._sse = SSEParser()
        self.require_done = require_done
        self._pre: bytes | None = None  # template: the bytes before the content string body
        self._suf = b""  # and from its closing quote on
        self._raw_pre: bytes | None = None  # b"data: " + prefix, when a whole read can match
        self._raw_suf = b""  # suffix + b"\n\n"
        self._hits = 0  # payloads the template matched
        self._learns = 0  # templates learned

    def close(self) -> None:
        """End of body: a stream that never sent ``[DONE]`` is an error when required; one
        that stops inside an event is an error either way."""
        if self.done or self.error is not None:
            return
        if self.require_done:
            self.error = TRUNCATED
        elif self._sse.has_partial:
            self.error = TRUNCATED_EVENT

    def feed(self, data: bytes, events: list[tuple[Any, ...]] | None = None) -> int:
        """Parse the next body bytes; the number of content-bearing chunks they completed.
        With ``events``, also append the normalised events (see :func:`stream_events`)."""
        if self.done or self.error is not None:
            return 0
        raw_pre = self._raw_pre
        if raw_pre is not None and data.startswith(raw_pre):  # one whole event per read, as a
            end = len(data) - len(self._raw_suf)  # live token stream delivers: skip the SSE split
            if end >= len(raw_pre) and data.endswith(self._raw_suf) and self._sse.idle:
                text_b = data[len(raw_pre) : end]
                if text_b and text_b.isascii() and _plain_string(text_b) is not None:
                    self._hits += 1
                    tokens = len(text_b.split()) or 1
                    self.content_chunks += 1
                    self.tokens_out_approx += tokens
                    if events is not None:
                        events.append((EV_TOKEN, tokens))
                    return 1
        payloads = self._sse.feed_data(data)
        if not payloads:
            return 0
        counted = 0
        total = 0  # tokens of this feed; stored once below
        text_mode = self._TEXT
        pre = self._pre
        for payload in payloads:
            if pre is not None and payload.startswith(pre):  # the fast path (class docstring)
                suf = self._suf
                end = len(payload) - len(suf)
                if end >= len(pre) and payload.endswith(suf):
                    text_b = payload[len(pre) : end]
                    if _plain_string(text_b) is not None:
                        if text_b.isascii():
                            tokens = len(text_b.split())  # == approx_tokens: ASCII whitespace only
                        else:
                            try:
                                tokens = approx_tokens(text_b.decode())
                            except UnicodeDecodeError:
                                tokens = -1  # not valid JSON: the full path reports it
                        if tokens >= 0:
                            self._hits += 1
                            if text_b:
                                counted += 1
                                tokens = tokens or 1
                                total += tokens
                                if events is not None:
                                    events.append((EV_TOKEN, tokens))
                            continue
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
                        if text_mode:
                            text = choice.get("text")
                            if text:
                                content = True
                                tokens += approx_tokens(text)
                            delta = None
                        else:
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
                elif (
                    choices
                    and len(choices) == 1
                    and finishes is None
                    and not err
                    and self._learns <= 2 + self._hits // 8
                ):
                    pre = self._learn(payload, choices[0])
            except (AttributeError, TypeError):  # valid JSON of an unexpected shape
                self._fail(MALFORMED_PREFIX + "chunk: " + _snippet(payload), events)
                break
        self.content_chunks += counted
        self.tokens_out_approx += total
        return counted

    def _learn(self, payload: bytes, choice: Any) -> bytes | None:
        """Make ``payload`` (a fully parsed, plain content chunk) the fast path's template when
        its content string can be located and proven; the prefix in use afterwards."""
        text = choice.get("text") if self._TEXT else (choice.get("delta") or {}).get("content")
        if not text or not isinstance(text, str) or choice.get("finish_reason"):
            return self._pre
        key = self._KEY
        at = payload.find(key)
        if at < 0 or payload.find(key, at + 1) >= 0:
            return self._pre
        start = at + len(key)
        encoded = orjson.dumps(text)[1:]  # the string body and its closing quote
        if not payload.startswith(encoded, start):
            return self._pre
        pre, suf = payload[:start], payload[start + len(encoded) - 1 :]
        try:  # the proof: the slot is this content string and nothing else
            probe = _loads(pre + b"\x7fprobe" + suf)
            probed = probe["choices"][0]
            probed = probed["text"] if self._TEXT else probed["delta"]["content"]
        except (_JSONDecodeError, LookupError, TypeError):
            return self._pre
        if probed != "\x7fprobe":
            return self._pre
        self._learns += 1
        self._pre, self._suf = pre, suf
        if b"\n" in pre or b"\r" in pre or b"\n" in suf or b"\r" in suf:
            self._raw_pre = None  # a multi-line event: only the SSE parser can read it
        else:
            self._raw_pre, self._raw_suf = b"data: " + pre, suf + b"\n\n"
        return pre


class CompletionStreamParser(ChatStreamParser):
    """Reads one legacy-completions SSE body: as :class:`ChatStreamParser`, with each choice's
    ``text`` as its content (a content chunk has non-empty text)."""

    _TEXT = True
    _KEY = b'"text":"'
    __slots__ = ()


def stream_events(data_chunks: Iterable[bytes], *, require_done: bool = True) -> list[tuple[Any, ...]]:
    """Feed a whole chat body (in the given pieces) and return the normalised event list, ending
    with the truncation error from :meth:`ChatStreamParser.close` when there is one."""
    return collect_events(ChatStreamParser(require_done=require_done), data_chunks)


def completion_stream_events(
    data_chunks: Iterable[bytes], *, require_done: bool = True
) -> list[tuple[Any, ...]]:
    """:func:`stream_events` for a legacy completions body, in the same event vocabulary."""
    return collect_events(CompletionStreamParser(require_done=require_done), data_chunks)


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


def parse_completion_response(body: bytes) -> ChatResult:
    """Read a non-stream legacy completion body: ``content`` is the first choice's ``text``;
    the token approximation covers every choice."""
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
            text = choice.get("text") or ""
            tokens += approx_tokens(text)
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


class EmbeddingsResult(NamedTuple):
    """A parsed embeddings response (or its error): how many vectors, of what length, and the
    server's prompt token count."""

    vectors: int
    dimensions: int
    usage_in: int | None
    error: str | None


def _b64_float32_len(text: str) -> int:
    """The number of float32 values a base64 string holds, without decoding it."""
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return (len(text) * 3 // 4 - padding) // 4


def parse_embeddings_response(body: bytes) -> EmbeddingsResult:
    """Read an embeddings body, float lists or base64 strings alike (the length of a base64
    vector is computed from its text, not decoded)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return EmbeddingsResult(0, 0, None, MALFORMED_PREFIX + "body: " + _snippet(body))
    if not isinstance(obj, dict):
        return EmbeddingsResult(0, 0, None, MALFORMED_PREFIX + "body: " + _snippet(body))
    if obj.get("error"):
        code, message = parse_error_body(body)
        return EmbeddingsResult(0, 0, None, _format_error(code, message))
    try:
        data = obj.get("data") or ()
        dims = 0
        if data:
            vector = data[0]["embedding"]
            dims = _b64_float32_len(vector) if isinstance(vector, str) else len(vector)
        usage = obj.get("usage") or {}
        return EmbeddingsResult(len(data), dims, usage.get("prompt_tokens"), None)
    except (AttributeError, KeyError, TypeError):
        return EmbeddingsResult(0, 0, None, MALFORMED_PREFIX + "body: " + _snippet(body))


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
# What a corrupted chunk looks like on the wire (a fault the mock injects): an event whose JSON
# is cut off, so a client's JSON decoder fails on it.
MALFORMED_CHUNK: Final = b'data: {"choices":[{"delta":\n\n'

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

# A chunk is   head + choices JSON + tail,   where head and tail are constant within one stream
# (id, created, model) and the choices JSON is   pre + variable JSON + post.   Azure writes
# keys in alphabetical order (choices first); OpenAI writes id, object, created, model first.
_CF_SAFE_JSON: Final = _dumps(CONTENT_FILTER_SAFE)
_CLOSE: Final = b"}\n\n"
_USAGE_NULL_CLOSE: Final = b',"usage":null}\n\n'


class _Choices(NamedTuple):
    """The constant parts of one (API, flavour)'s ``choices`` arrays."""

    start: bytes | None  # the whole array of the chunk before the first token (chat's role chunk)
    content_pre: bytes  # ... the delta text's JSON string ...
    content_post: bytes
    finish_pre: bytes  # ... the finish reason's JSON string ...
    finish_post: bytes


_CHAT_CHOICES: Final[dict[str, _Choices]] = {
    "azure": _Choices(
        b'[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},'
        b'"finish_reason":null,"index":0,"logprobs":null}]',
        b'[{"content_filter_results":' + _CF_SAFE_JSON + b',"delta":{"content":',
        b'},"finish_reason":null,"index":0,"logprobs":null}]',
        b'[{"content_filter_results":{},"delta":{},"finish_reason":',
        b',"index":0,"logprobs":null}]',
    ),
    "openai": _Choices(
        b'[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
        b'"logprobs":null,"finish_reason":null}]',
        b'[{"index":0,"delta":{"content":',
        b'},"logprobs":null,"finish_reason":null}]',
        b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":',
        b"}]",
    ),
}
_COMPLETION_CHOICES: Final[dict[str, _Choices]] = {
    "azure": _Choices(
        None,
        b'[{"content_filter_results":' + _CF_SAFE_JSON + b',"finish_reason":null,"index":0,'
        b'"logprobs":null,"text":',
        b"}]",
        b'[{"content_filter_results":{},"finish_reason":',
        b',"index":0,"logprobs":null,"text":""}]',
    ),
    "openai": _Choices(
        None,
        b'[{"text":',
        b',"index":0,"logprobs":null,"finish_reason":null}]',
        b'[{"text":"","index":0,"logprobs":null,"finish_reason":',
        b"}]",
    ),
}


def _usage_json(flavor: str, api: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    total = prompt_tokens + completion_tokens
    if flavor == "azure":
        return _dumps(
            {"completion_tokens": completion_tokens, "prompt_tokens": prompt_tokens, "total_tokens": total}
        )
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }
    if api == "chat":
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return _dumps(usage)


class ChunkEncoder:
    """The chunks of one chat stream, with everything but the delta precomputed. ``usage_null``
    adds ``"usage": null`` to each chunk, as the service does when include_usage is on.

    For the mock's stream loop, every encoder offers the same five steps: :meth:`prelude` (sent
    with the headers: Azure's prompt-filter chunk), :meth:`start` (sent at TTFT before token 0:
    chat's role chunk), :meth:`content` per token, :meth:`finish`, :meth:`usage`.
    """

    __slots__ = (
        "_content_head",
        "_content_tail",
        "_created",
        "_finish_head",
        "_finish_tail",
        "_head",
        "_id",
        "_mid",
        "_model",
        "_prelude",
        "_start",
        "flavor",
    )
    _API: ClassVar[str] = "chat"
    _OBJECT: ClassVar[str] = "chat.completion.chunk"
    _CHOICES: ClassVar[dict[str, _Choices]] = _CHAT_CHOICES

    def __init__(
        self, id: str, created: int, model: str, *, usage_null: bool = False, flavor: Flavor = "azure"
    ) -> None:
        self.flavor = flavor = check_flavor(flavor)
        self._id = id
        self._created = created
        self._model = model
        head, mid = self._shape(id, created, model)
        tail = mid + (_USAGE_NULL_CLOSE if usage_null else _CLOSE)
        self._head = head
        self._mid = mid
        choices = self._CHOICES[flavor]
        self._content_head = head + choices.content_pre
        self._content_tail = choices.content_post + tail
        self._finish_head = head + choices.finish_pre
        self._finish_tail = choices.finish_post + tail
        self._start: tuple[bytes, ...] = () if choices.start is None else (head + choices.start + tail,)
        self._prelude = (_PROMPT_FILTER_CHUNK,) if flavor == "azure" else ()

    def _shape(self, id: str, created: int, model: str) -> tuple[bytes, bytes]:
        """(head, mid): the bytes before ``choices``, and those after it up to ``usage``/close."""
        created_json = str(int(created)).encode()
        object_json = _dumps(self._OBJECT)
        fingerprint = b',"system_fingerprint":' + _dumps(SYSTEM_FINGERPRINT) if self._API == "chat" else b""
        if self.flavor == "azure":
            mid = b"".join(
                (
                    b',"created":',
                    created_json,
                    b',"id":',
                    _dumps(id),
                    b',"model":',
                    _dumps(model),
                    b',"object":',
                    object_json,
                    fingerprint,
                )
            )
            return b'data: {"choices":', mid
        head = b"".join(
            (b'data: {"id":', _dumps(id), b',"object":', object_json, b',"created":', created_json)
        )
        if self._API == "chat":
            head += b',"model":' + _dumps(model) + b',"service_tier":"default"' + fingerprint
            return head + b',"choices":', b""
        return head + b',"choices":', b',"model":' + _dumps(model)

    def prelude(self) -> tuple[bytes, ...]:
        """The chunks sent with the headers, before any token: Azure's prompt-filter chunk."""
        return self._prelude

    def start(self) -> tuple[bytes, ...]:
        """The chunks sent at TTFT just before token 0: chat's role chunk."""
        return self._start

    def role(self) -> bytes:
        return self._start[0]

    def content(self, text: str) -> bytes:
        return self._content_head + _dumps(text) + self._content_tail

    def finish(self, reason: str = "stop") -> bytes:
        return self._finish_head + _dumps(reason) + self._finish_tail

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = _usage_json(self.flavor, self._API, prompt_tokens, completion_tokens)
        return self._head + b"[]" + self._mid + b',"usage":' + usage + _CLOSE

    def async_filter(self, start_offset: int, end_offset: int) -> bytes:
        """An Azure async-filter annotation chunk: filter results and offsets, and no ``delta``."""
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


class CompletionChunkEncoder(ChunkEncoder):
    """The chunks of one legacy completions stream (``text_completion`` objects, no role chunk;
    Azure's starts with the prompt-filter chunk too)."""

    __slots__ = ()
    _API = "completions"
    _OBJECT = "text_completion"
    _CHOICES = _COMPLETION_CHOICES


def prompt_filter_chunk() -> bytes:
    """Azure's first stream event: no choices, blank metadata, the prompt's filter results."""
    return _PROMPT_FILTER_CHUNK


def role_chunk(id: str, created: int, model: str) -> bytes:
    """The first chunk of an Azure chat reply: role ``assistant`` and empty content (not content)."""
    return ChunkEncoder(id, created, model).role()


def content_chunk(id: str, created: int, model: str, text: str) -> bytes:
    """An Azure content delta with safe filter results on the choice."""
    return ChunkEncoder(id, created, model).content(text)


def finish_chunk(id: str, created: int, model: str, reason: str) -> bytes:
    """The empty-delta Azure chunk that carries ``finish_reason``."""
    return ChunkEncoder(id, created, model).finish(reason)


def usage_chunk(id: str, created: int, model: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    """The Azure include_usage chunk: no choices, a filled ``usage``."""
    return ChunkEncoder(id, created, model).usage(prompt_tokens, completion_tokens)


def chat_completion_body(
    id: str,
    created: int,
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
    *,
    flavor: Flavor = "azure",
) -> bytes:
    """A non-stream chat completion as the service returns it (§2.4; OpenAI without the
    filter fields, with its usage details and ``service_tier``)."""
    usage = orjson.Fragment(_usage_json(flavor, "chat", prompt_tokens, completion_tokens))
    if check_flavor(flavor) == "openai":
        return _dumps(
            {
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )
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


def completion_body(
    id: str,
    created: int,
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
    *,
    flavor: Flavor = "azure",
) -> bytes:
    """A non-stream legacy completion (§2.7); Azure adds the filter results."""
    choice: dict[str, Any] = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    obj: dict[str, Any] = {"id": id, "object": "text_completion", "created": created, "model": model}
    if check_flavor(flavor) == "azure":
        choice["content_filter_results"] = CONTENT_FILTER_SAFE
        obj["prompt_filter_results"] = _PROMPT_FILTER_RESULTS
    obj["choices"] = [choice]
    obj["usage"] = orjson.Fragment(_usage_json(flavor, "completions", prompt_tokens, completion_tokens))
    return _dumps(obj)


# ---------------------------------------------------------------------------------------------
# Embeddings (server side)
# ---------------------------------------------------------------------------------------------

EMBEDDING_DIMENSIONS: Final = 256
MAX_EMBEDDING_DIMENSIONS: Final = 3072


def embedding_vector(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> array.array[float]:
    """The mock's embedding of ``text``: float32, unit L2 norm, a pure function of the text and
    the length (SHAKE-256 of the UTF-8 text, read as uint32s, centred, normalised)."""
    raw = array.array("I", hashlib.shake_256(text.encode("utf-8")).digest(4 * dimensions))
    centred = [u - 2147483647.5 for u in raw]
    norm = math.sqrt(math.fsum(x * x for x in centred)) or 1.0
    return array.array("f", [x / norm for x in centred])


@lru_cache(maxsize=1024)
def embedding_json(text: str, dimensions: int, encoding_format: str) -> bytes:
    """The JSON value of one embedding: a float list, or (``base64``) a string of its float32
    little-endian bytes, as the service sends it (cached: load tests repeat their inputs)."""
    vector = embedding_vector(text, dimensions)
    if encoding_format == "base64":
        if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
            vector.byteswap()
        return _dumps(base64.b64encode(vector.tobytes()).decode("ascii"))
    return _dumps(vector.tolist())


def embeddings_body(
    model: str, texts: list[str], prompt_tokens: int, *, dimensions: int, encoding_format: str
) -> bytes:
    """An embeddings list, one entry per input text (§2.6); no filter fields in either flavour."""
    parts = [b'{"object":"list","data":[']
    for i, text in enumerate(texts):
        if i:
            parts.append(b",")
        parts.append(b'{"object":"embedding","index":%d,"embedding":' % i)
        parts.append(embedding_json(text, dimensions, encoding_format))
        parts.append(b"}")
    parts.append(b'],"model":')
    parts.append(_dumps(model))
    parts.append(b',"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (prompt_tokens, prompt_tokens))
    return b"".join(parts)


def error_body(code: str, message: str) -> bytes:
    """Azure's error body; ``code`` is a string even for HTTP statuses (``"429"``)."""
    return _dumps({"error": {"code": code, "message": message}})
