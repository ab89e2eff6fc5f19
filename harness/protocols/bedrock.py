"""AWS Bedrock runtime on the wire, both directions (``../shared/protocols.md`` §5).

Client side: :class:`BedrockRequestTemplate` builds one operation's request (method,
percent-encoded path, headers, body) once; :class:`BedrockStreamParser` reads a ConverseStream
or InvokeModelWithResponseStream body (AWS event stream, :mod:`harness.protocols.eventstream`)
and counts *content-bearing events*, the ones the engine timestamps; :func:`parse_converse_response`,
:func:`parse_invoke_response` and :func:`parse_error_body` read the non-stream bodies. No
signing yet: a later issue adds SigV4 over exactly these bytes.

Server side: the encoders at the bottom produce the bodies and frames the mock sends, so there
is one implementation of the format.

Operations (§5.1), with the ``api`` name records and ledgers use::

    converse                      POST /model/{id}/converse                     bedrock.converse
    converse-stream               POST /model/{id}/converse-stream              bedrock.converse_stream
    invoke                        POST /model/{id}/invoke                       bedrock.invoke
    invoke-with-response-stream   POST /model/{id}/invoke-with-response-stream  bedrock.invoke_stream

``{id}`` is ``quote(model_id, safe="")``: ``:`` → ``%3A`` and, in inference-profile ARNs,
``/`` → ``%2F``, as botocore sends it. yarl normalises ``%3A`` back to ``:`` unless the URL is
built with ``yarl.URL(url, encoded=True)``; servers accept both, a SigV4 signer needs the latter.
InvokeModel bodies are model-native; this module speaks the Anthropic Messages format.

Normalised stream events (the shared vocabulary of the contract suite), per operation::

    converse-stream                         invoke-with-response-stream (Anthropic chunks)
    messageStart         -                  message_start         ("id", message.id)
    contentBlockDelta    ("token", n)       content_block_delta   ("token", n)
    messageStop          ("finish", r)      message_delta         ("finish", stop_reason)
    metadata             ("usage", i, o)    message_stop          ("usage", i, o), ("done",)
                         ("done",)

``done`` comes with the *last* event Bedrock sends: ``metadata`` for ConverseStream (a stream
cut between ``messageStop`` and ``metadata`` lost its usage, so it counts as truncated) and
``message_stop`` for InvokeModelWithResponseStream, whose usage is taken from
``amazon-bedrock-invocationMetrics`` (Bedrock's own count) or, without it, from Anthropic's
``message_start``/``message_delta`` usage. A text, tool-input or reasoning delta is content
(``n`` = approximate tokens, at least 1); block starts and stops are not. An exception or error
message, a CRC or length error, or undecodable JSON/base64 gives ``("error", message)`` and ends
the stream; so does the body ending early (see :func:`error_kind`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any, Final, NamedTuple
from urllib.parse import quote, unquote

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
from harness.protocols.eventstream import (
    MALFORMED,
    DecodeError,
    EventStreamDecoder,
    event_headers as _event_headers,
    event_message,
    frame,
)
from harness.protocols.tokens import approx_tokens

CONVERSE: Final = "converse"
CONVERSE_STREAM: Final = "converse-stream"
INVOKE: Final = "invoke"
INVOKE_STREAM: Final = "invoke-with-response-stream"
OPERATIONS: Final = (CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM)
STREAMING: Final = frozenset({CONVERSE_STREAM, INVOKE_STREAM})
API_NAMES: Final[dict[str, str]] = {
    CONVERSE: "bedrock.converse",
    CONVERSE_STREAM: "bedrock.converse_stream",
    INVOKE: "bedrock.invoke",
    INVOKE_STREAM: "bedrock.invoke_stream",
}

ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
EVENTSTREAM_CT: Final = "application/vnd.amazon.eventstream"
ERROR_TYPE_SUFFIX: Final = ":http://internal.amazon.com/coral/com.amazon.bedrock/"

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------


def model_path(model_id: str, operation: str) -> str:
    """``/model/{percent-encoded id}/{operation}``, byte for byte what botocore sends."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown Bedrock operation {operation!r}; one of {', '.join(OPERATIONS)}")
    return f"/model/{quote(model_id, safe='')}/{operation}"


def split_model_path(raw_path: str) -> tuple[str, str] | None:
    """(model id, operation) of a raw request path (query ignored), or None when it is not
    ``/model/{id}/{op}``. Works on the *undecoded* path so an ARN's ``%2F`` stays in the id."""
    path = raw_path.partition("?")[0]
    if not path.startswith("/model/"):
        return None
    quoted, sep, operation = path[7:].rpartition("/")
    if not sep or not quoted or not operation:
        return None
    return unquote(quoted), operation


def is_anthropic(model_id: str) -> bool:
    """True for Anthropic models: base ids (``anthropic.…``), inference profiles
    (``us.anthropic.…``) and their ARNs."""
    return "anthropic." in model_id


# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


def converse_request_body(prompt: str, max_tokens: int | None, system: str | None = None) -> bytes:
    """A Converse / ConverseStream body (§5.3); the model id is in the path, not here."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": prompt}]}]}
    if system:
        body["system"] = [{"text": system}]
    if max_tokens is not None:
        body["inferenceConfig"] = {"maxTokens": max_tokens}
    return _dumps(body)


def anthropic_request_body(
    prompt: str, max_tokens: int, system: str | None = None, anthropic_version: str = ANTHROPIC_VERSION
) -> bytes:
    """An InvokeModel body for Anthropic models (§5.6); streaming is chosen by the operation."""
    body: dict[str, Any] = {
        "anthropic_version": anthropic_version,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    if system:
        body["system"] = system
    return _dumps(body)


class BedrockRequestTemplate:
    """Method, URL, headers and body of one Bedrock request shape, built once; per request only
    ``amz-sdk-invocation-id`` changes (the mock ledgers it as the request id). Unsigned.
    Pickles by configuration."""

    __slots__ = (
        "_config",
        "_headers",
        "api",
        "body",
        "method",
        "model_id",
        "operation",
        "path",
        "stream",
        "url",
    )

    def __init__(
        self,
        base_url: str,
        model_id: str,
        operation: str,
        *,
        prompt: str,
        max_tokens: int,
        system: str | None = None,
        anthropic_version: str = ANTHROPIC_VERSION,
    ) -> None:
        self._config = (
            (base_url, model_id, operation),
            {
                "prompt": prompt,
                "max_tokens": max_tokens,
                "system": system,
                "anthropic_version": anthropic_version,
            },
        )
        self.model_id = model_id
        self.operation = operation
        self.api = API_NAMES.get(operation, operation)
        self.stream = operation in STREAMING
        self.method: Final = "POST"
        self.path = model_path(model_id, operation)
        self.url = base_url.rstrip("/") + self.path
        headers = {"Content-Type": "application/json"}
        if operation in (CONVERSE, CONVERSE_STREAM):
            self.body = converse_request_body(prompt, max_tokens, system)
        else:
            if not is_anthropic(model_id):
                raise ValueError(
                    f"InvokeModel bodies are model-native and only Anthropic's are built here, not "
                    f"{model_id!r}; use the converse operations for other models"
                )
            self.body = anthropic_request_body(prompt, max_tokens, system, anthropic_version)
            headers["Accept" if operation == INVOKE else "X-Amzn-Bedrock-Accept"] = "application/json"
        self._headers = headers

    def headers_for(self, request_id: str) -> dict[str, str]:
        """A new header dict for one request, tagged with the request id."""
        headers = self._headers.copy()
        headers["amz-sdk-invocation-id"] = request_id
        headers["amz-sdk-request"] = "attempt=1; max=1"
        return headers

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._config
        return (_rebuild_template, (args, kwargs))

    def __repr__(self) -> str:
        return (
            f"BedrockRequestTemplate(url={self.url!r}, operation={self.operation!r}, "
            f"body_bytes={len(self.body)})"
        )


def _rebuild_template(args: tuple[Any, ...], kwargs: dict[str, Any]) -> BedrockRequestTemplate:
    return BedrockRequestTemplate(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Stream parsing
# ---------------------------------------------------------------------------------------------


TRUNCATED: Final = "stream ended before its final event (metadata or message_stop)"
MALFORMED_EVENT: Final = "malformed event: "


def _snippet(data: bytes, limit: int = 80) -> str:
    return data[: limit * 4].decode("utf-8", "replace")[:limit]


def _exception_text(name: Any, payload: bytes) -> str:
    """``<exceptionType>: <message>`` from a modeled exception frame."""
    message = None
    try:
        obj = _loads(payload) if payload else None
    except _JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        message = obj.get("message") or obj.get("Message")
    if not isinstance(message, str) or not message:
        message = _snippet(payload) or "no message"
    return f"{name or 'exception'}: {message}"


def _delta_tokens(delta: dict[str, Any]) -> int:
    """Approximate tokens of a Converse ``contentBlockDelta.delta`` (0 when it carries none)."""
    text = delta.get("text")
    if text:
        return approx_tokens(text) or 1
    tool = delta.get("toolUse")
    if tool:
        text = tool.get("input")
        if text:
            return approx_tokens(text) or 1
    reasoning = delta.get("reasoningContent")
    if reasoning:
        text = reasoning.get("text")
        if text:
            return approx_tokens(text) or 1
    return 0


_ANTHROPIC_DELTA_FIELDS: Final = {
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
}


class BedrockStreamParser(StreamState):
    """Reads one ConverseStream or InvokeModelWithResponseStream body (their event types do
    not overlap, so one parser serves both); :meth:`feed` says how many content-bearing events
    each read completed, so the caller can timestamp them. Same surface as the Azure
    ``ChatStreamParser``."""

    __slots__ = ("_anthropic_in", "_anthropic_out", "_decoder")

    def __init__(self) -> None:
        super().__init__()
        self._decoder = EventStreamDecoder()
        self._anthropic_in: int | None = None
        self._anthropic_out: int | None = None

    def close(self) -> None:
        """End of body: stopping inside a frame, or before the final event, is an error."""
        if self.done or self.error is not None:
            return
        tail = self._decoder.close()
        self.error = tail.reason if tail is not None else TRUNCATED

    def feed(self, data: bytes, events: list[tuple[Any, ...]] | None = None) -> int:
        """Parse the next body bytes; the number of content-bearing events they completed.
        With ``events``, also append the normalised events (see the module docstring)."""
        if self.done or self.error is not None:
            return 0
        messages = self._decoder.feed(data)
        if not messages:
            return 0
        counted = 0
        total = 0
        for message in messages:
            if isinstance(message, DecodeError):
                self._fail(message.reason, events)
                break
            headers, payload = message
            kind = headers.get(":message-type")
            if kind != "event":
                if kind == "exception":
                    self._fail(_exception_text(headers.get(":exception-type"), payload), events)
                elif kind == "error":
                    code = headers.get(":error-code") or "error"
                    self._fail(f"{code}: {headers.get(':error-message') or 'no message'}", events)
                else:
                    self._fail(f"{MALFORMED}unknown :message-type {kind!r}", events)
                break
            event_type = headers.get(":event-type")
            try:
                obj = _loads(payload)
                if event_type == "chunk":
                    obj = _loads(base64.b64decode(obj["bytes"], validate=True))
                    tokens = self._anthropic(obj, events)
                elif event_type == "contentBlockDelta":
                    tokens = _delta_tokens(obj["delta"])
                    if tokens and events is not None:
                        events.append((EV_TOKEN, tokens))
                elif event_type == "messageStop":
                    tokens = 0
                    reason = obj.get("stopReason")
                    if reason:
                        self.finish_reason = reason
                        if events is not None:
                            events.append((EV_FINISH, reason))
                elif event_type == "metadata":
                    tokens = 0
                    usage = obj.get("usage")
                    if usage:
                        self.usage_in = usage.get("inputTokens")
                        self.usage_out = usage.get("outputTokens")
                        if events is not None:
                            events.append((EV_USAGE, self.usage_in, self.usage_out))
                    self.done = True
                    if events is not None:
                        events.append(_DONE_EVENT)
                else:  # messageStart, contentBlockStart/Stop, and event types added later
                    tokens = 0
            except (_JSONDecodeError, binascii.Error, KeyError, AttributeError, TypeError, ValueError):
                self._fail(f"{MALFORMED_EVENT}{event_type}: {_snippet(payload)}", events)
                break
            if self.error is not None:
                break
            if tokens:
                counted += 1
                total += tokens
            if self.done:
                break
        self.content_chunks += counted
        self.tokens_out_approx += total
        return counted

    def _anthropic(self, obj: dict[str, Any], events: list[tuple[Any, ...]] | None) -> int:
        """One decoded Anthropic Messages stream event; its content tokens (0 if none)."""
        kind = obj["type"]
        if kind == "content_block_delta":
            delta = obj["delta"]
            field = _ANTHROPIC_DELTA_FIELDS.get(delta.get("type"))
            text = delta.get(field) if field else None
            if not text:
                return 0
            tokens = approx_tokens(text) or 1
            if events is not None:
                events.append((EV_TOKEN, tokens))
            return tokens
        if kind == "message_start":
            message = obj["message"]
            rid = message.get("id")
            usage = message.get("usage")
            if usage:
                self._anthropic_in = usage.get("input_tokens")
            if rid and self.response_id is None:
                self.response_id = rid
                if events is not None:
                    events.append((EV_ID, rid))
        elif kind == "message_delta":
            reason = (obj.get("delta") or {}).get("stop_reason")
            usage = obj.get("usage")
            if usage:
                self._anthropic_out = usage.get("output_tokens")
            if reason:
                self.finish_reason = reason
                if events is not None:
                    events.append((EV_FINISH, reason))
        elif kind == "message_stop":
            metrics = obj.get("amazon-bedrock-invocationMetrics")
            if metrics:
                self.usage_in = metrics.get("inputTokenCount")
                self.usage_out = metrics.get("outputTokenCount")
            elif self._anthropic_out is not None:
                self.usage_in = self._anthropic_in
                self.usage_out = self._anthropic_out
            if events is not None:
                if self.usage_out is not None:
                    events.append((EV_USAGE, self.usage_in, self.usage_out))
                events.append(_DONE_EVENT)
            self.done = True
        elif kind == "error":
            err = obj.get("error") or {}
            self._fail(f"{err.get('type') or 'error'}: {err.get('message') or 'no message'}", events)
        return 0


def stream_events(data_chunks: Iterable[bytes]) -> list[tuple[Any, ...]]:
    """Feed a whole ConverseStream or InvokeModelWithResponseStream body (in the given pieces)
    and return the normalised events, ending with the truncation error when there is one."""
    return collect_events(BedrockStreamParser(), data_chunks)


# ---------------------------------------------------------------------------------------------
# Non-stream bodies
# ---------------------------------------------------------------------------------------------


class BedrockResult(NamedTuple):
    """A parsed non-stream Converse or InvokeModel body (or why it could not be parsed)."""

    text: str
    tokens_out_approx: int
    usage_in: int | None
    usage_out: int | None
    response_id: str | None
    stop_reason: str | None
    error: str | None


def _malformed_body(body: bytes) -> BedrockResult:
    return BedrockResult("", 0, None, None, None, None, "malformed body: " + _snippet(body))


def parse_converse_response(body: bytes) -> BedrockResult:
    """Read a Converse body (§5.3): the text blocks of ``output.message.content``, ``usage``
    and ``stopReason`` (Converse bodies carry no response id)."""
    try:
        obj = _loads(body)
        texts: list[str] = []
        tokens = 0
        for block in obj["output"]["message"]["content"]:
            text = block.get("text")
            if text:
                texts.append(text)
                tokens += approx_tokens(text)
            else:
                tool = block.get("toolUse")
                if tool:
                    tokens += approx_tokens(orjson.dumps(tool.get("input")).decode())
        usage = obj.get("usage") or {}
        return BedrockResult(
            "".join(texts),
            tokens,
            usage.get("inputTokens"),
            usage.get("outputTokens"),
            None,
            obj.get("stopReason"),
            None,
        )
    except (_JSONDecodeError, KeyError, AttributeError, TypeError):
        return _malformed_body(body)


def parse_invoke_response(body: bytes) -> BedrockResult:
    """Read an InvokeModel body in the Anthropic Messages format (§5.6)."""
    try:
        obj = _loads(body)
        texts: list[str] = []
        tokens = 0
        for block in obj["content"]:
            text = block.get("text")
            if text:
                texts.append(text)
                tokens += approx_tokens(text)
        usage = obj.get("usage") or {}
        return BedrockResult(
            "".join(texts),
            tokens,
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            obj.get("id") or None,
            obj.get("stop_reason"),
            None,
        )
    except (_JSONDecodeError, KeyError, AttributeError, TypeError):
        return _malformed_body(body)


def parse_error_body(body: bytes, error_type: str | None = None) -> tuple[str | None, str | None]:
    """(code, message) of an error response the way botocore reads it (§5.7): the code from
    the ``x-amzn-ErrorType`` header (text before ``:``), else body ``code``/``Code``/``__type``;
    the message from body ``message``/``Message``, else the body's first 200 characters."""
    code = error_type.partition(":")[0] or None if error_type else None
    try:
        obj = _loads(body)
    except _JSONDecodeError:
        obj = None
    message = None
    if isinstance(obj, dict):
        if code is None:
            raw = obj.get("code") or obj.get("Code") or obj.get("__type")
            code = raw.rpartition("#")[2] if isinstance(raw, str) and raw else None
        raw = obj.get("message") or obj.get("Message")
        message = raw if isinstance(raw, str) else None
    if message is None:
        message = _snippet(body, 200) or None
    return code, message


# ---------------------------------------------------------------------------------------------
# Server side: encoders for the mock
# ---------------------------------------------------------------------------------------------

# (HTTP status → exception) for errors drawn by status alone (§5.7)
EXCEPTIONS_BY_STATUS: Final[dict[int, str]] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def exception_for_status(status: int) -> str:
    """The Bedrock exception a response of ``status`` carries (other 5xx: internal error)."""
    name = EXCEPTIONS_BY_STATUS.get(status)
    if name is not None:
        return name
    return "InternalServerException" if status >= 500 else "ValidationException"


def error_headers(code: str) -> list[tuple[str, str]]:
    """``Content-Type`` and ``x-amzn-ErrorType`` of an error response."""
    return [("Content-Type", "application/json"), ("x-amzn-ErrorType", code + ERROR_TYPE_SUFFIX)]


def error_body(message: str) -> bytes:
    """Bedrock's error body: ``{"message": ...}`` only."""
    return _dumps({"message": message})


def converse_response_body(
    text: str, stop_reason: str, input_tokens: int, output_tokens: int, latency_ms: int
) -> bytes:
    """A Converse reply (§5.3)."""
    return _dumps(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": stop_reason,
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": latency_ms},
        }
    )


def anthropic_response_body(
    message_id: str, model: str, text: str, stop_reason: str, input_tokens: int, output_tokens: int
) -> bytes:
    """An InvokeModel reply in the Anthropic Messages format (§5.6)."""
    return _dumps(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


# ConverseStream frames (§5.5). The delta frame is prefix + JSON string + suffix.
MESSAGE_START_FRAME: Final = event_message("messageStart", {"role": "assistant"})
CONTENT_BLOCK_STOP_FRAME: Final = event_message("contentBlockStop", {"contentBlockIndex": 0})
_DELTA_HEADERS: Final = _event_headers("contentBlockDelta")
_DELTA_PREFIX: Final = b'{"contentBlockIndex":0,"delta":{"text":'


def content_block_delta_frame(text: str) -> bytes:
    """One text delta of content block 0."""
    return frame(_DELTA_HEADERS, _DELTA_PREFIX + _dumps(text) + b"}}")


def message_stop_frame(stop_reason: str) -> bytes:
    return event_message("messageStop", {"stopReason": stop_reason})


def metadata_frame(input_tokens: int, output_tokens: int, latency_ms: int) -> bytes:
    """The last ConverseStream event: usage and latency."""
    return event_message(
        "metadata",
        {
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": latency_ms},
        },
    )


# InvokeModelWithResponseStream frames (§5.5): each a ``chunk`` event carrying base64 JSON.
_CHUNK_HEADERS: Final = _event_headers("chunk")


def chunk_frame(event: dict[str, Any] | bytes) -> bytes:
    """A ``chunk`` event whose ``bytes`` are the base64 of ``event`` (model-native JSON)."""
    raw = event if isinstance(event, bytes) else _dumps(event)
    return frame(_CHUNK_HEADERS, b'{"bytes":"' + base64.b64encode(raw) + b'"}')


def anthropic_message_start(message_id: str, model: str, input_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }


ANTHROPIC_BLOCK_START: Final = {
    "type": "content_block_start",
    "index": 0,
    "content_block": {"type": "text", "text": ""},
}
ANTHROPIC_BLOCK_STOP: Final = {"type": "content_block_stop", "index": 0}
_TEXT_DELTA_PREFIX: Final = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'


def anthropic_text_delta_frame(text: str) -> bytes:
    """A ``chunk`` frame carrying one Anthropic ``text_delta``."""
    return chunk_frame(_TEXT_DELTA_PREFIX + _dumps(text) + b"}}")


def anthropic_message_delta(stop_reason: str, output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


def anthropic_message_stop(
    input_tokens: int, output_tokens: int, invocation_latency_ms: int, first_byte_latency_ms: int
) -> dict[str, Any]:
    """The last chunk, with Bedrock's ``amazon-bedrock-invocationMetrics``."""
    return {
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": input_tokens,
            "outputTokenCount": output_tokens,
            "invocationLatency": invocation_latency_ms,
            "firstByteLatency": first_byte_latency_ms,
        },
    }
