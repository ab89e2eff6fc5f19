"""The OpenAI Responses API on the wire, both directions (``../shared/protocols.md`` §3.1).

Client side: :class:`ResponsesRequestTemplate` builds URL and headers once per endpoint ×
deployment × scenario; per request only the client request id and the chaining field
(``previous_response_id`` or ``conversation``) change, so :meth:`~ResponsesRequestTemplate.body_for`
is one dict copy and one ``orjson.dumps``. :class:`ResponsesStreamParser` reads the named-event
SSE stream and counts *content-bearing deltas* (the events the engine timestamps: the first is
TTFT, the gaps are ITL); :func:`parse_response` reads a non-stream body.

Server side: :func:`response_object`, :class:`ResponseEventEncoder` and the item builders
produce the bytes the service sends, so the mock reuses this module and there is one
implementation of the format.

URL forms (``url_form``)::

    azure      POST {base}/openai/responses?api-version=V     api-key header (or Bearer)
    azure_v1   POST {base}/openai/v1/responses                Bearer key
    openai     POST {base}/v1/responses                       Bearer key

A stream, in order (every ``data`` repeats its ``type`` and an increasing ``sequence_number``;
no ``[DONE]``: the stream ends after the terminal event)::

    response.created / response.in_progress          the response, status in_progress   id
    response.output_item.added                       message item, no content yet       not content
    response.content_part.added                      empty output_text part             not content
    response.output_text.delta  (also refusal.delta,
        function_call_arguments.delta)               non-empty ``delta``                CONTENT
    response.output_text.done / content_part.done /
        output_item.done                             the finished text and item         not content
    response.completed | response.incomplete         the full response with usage       finish, usage, done
    response.failed | error                          the failure                        error

Mapping to the shared event vocabulary (the chat dialect's, so recordings of both compare):
``("id", resp_id)`` at the first response carrying an id; ``("token", n)`` per non-empty delta
(approximate tokens of the delta, at least 1); at the terminal event ``("finish", reason)``
with ``completed`` → ``"stop"`` and ``incomplete`` → its reason (``max_output_tokens`` →
``"length"``), then ``("usage", input_tokens, output_tokens)`` and ``("done",)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote

import orjson

from harness.protocols.azure_openai import (
    parse_error_body,
)
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
from harness.protocols.openai_flavor import openai_error_body
from harness.protocols.sse import SSEParser
from harness.protocols.tokens import approx_tokens

API: Final = "responses"
UrlForm = Literal["azure", "azure_v1", "openai"]
URL_FORMS: Final = ("azure", "azure_v1", "openai")

# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


def responses_base(base_url: str, url_form: UrlForm) -> str:
    """The collection URL (``.../responses``) without query string."""
    base = base_url.rstrip("/")
    if url_form == "azure":
        return f"{base}/openai/responses"
    if url_form == "azure_v1":
        return f"{base}/openai/v1/responses"
    if url_form == "openai":
        return f"{base}/v1/responses"
    raise ValueError(f"url_form must be one of {', '.join(URL_FORMS)}, not {url_form!r}")


class ResponsesRequestTemplate:
    """URL, headers and the fixed part of one Responses ``create`` request shape, built once.

    Per request: :meth:`headers_for` (a copy with the client request id) and
    :meth:`body_for` (the fixed body plus ``previous_response_id`` / ``conversation``).
    :attr:`body` is the unchained body (a session's first turn). Pickles by configuration.
    """

    __slots__ = (
        "_api_key",
        "_config",
        "_fixed",
        "_headers",
        "_id_header",
        "_query",
        "auth",
        "body",
        "method",
        "model",
        "store",
        "stream",
        "url",
        "url_form",
    )

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        *,
        url_form: UrlForm = "azure",
        api_version: str | None = None,
        prompt: str,
        max_output_tokens: int | None = None,
        stream: bool = False,
        store: bool = True,
        instructions: str | None = None,
        auth: Literal["api-key", "bearer"] | None = None,
    ) -> None:
        collection = responses_base(base_url, url_form)  # validates url_form
        if url_form == "azure" and not api_version:
            raise ValueError("url_form 'azure' needs api_version (the ?api-version= query parameter)")
        if auth is None:
            auth = "api-key" if url_form == "azure" else "bearer"
        if auth not in ("api-key", "bearer"):
            raise ValueError(f"auth must be 'api-key' or 'bearer', not {auth!r}")
        self._config = (
            (base_url, model, api_key),
            {
                "url_form": url_form,
                "api_version": api_version,
                "prompt": prompt,
                "max_output_tokens": max_output_tokens,
                "stream": stream,
                "store": store,
                "instructions": instructions,
                "auth": auth,
            },
        )
        self._api_key = api_key
        self.url_form = url_form
        self.auth = auth
        self.model = model
        self.stream = stream
        self.store = store
        self.method: Final = "POST"
        self._query = (
            f"?api-version={quote(api_version, safe='')}" if url_form == "azure" and api_version else ""
        )
        self.url = collection + self._query
        headers: dict[str, str] = {}
        if api_key is not None:
            if auth == "api-key":
                headers["api-key"] = api_key
            else:
                headers["Authorization"] = f"Bearer {api_key}"
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        self._headers = headers
        # Azure echoes x-ms-client-request-id; OpenAI documents X-Client-Request-Id.
        self._id_header = "X-Client-Request-Id" if url_form == "openai" else "x-ms-client-request-id"
        fixed: dict[str, Any] = {"model": model, "input": prompt}
        if instructions is not None:
            fixed["instructions"] = instructions
        if max_output_tokens is not None:
            fixed["max_output_tokens"] = max_output_tokens
        fixed["store"] = store
        if stream:
            fixed["stream"] = True
        self._fixed = fixed
        self.body: bytes = orjson.dumps(fixed)

    def headers_for(self, request_id: str) -> dict[str, str]:
        """A new header dict for one request, tagged with the client request id."""
        headers = self._headers.copy()
        headers[self._id_header] = request_id
        return headers

    def body_for(
        self,
        *,
        previous_response_id: str | None = None,
        conversation: str | None = None,
        input: str | None = None,
    ) -> bytes:
        """The body of one turn: the fixed fields, this turn's ``input`` (default: the
        template's prompt) and at most one of the chaining fields."""
        if previous_response_id is None and conversation is None and input is None:
            return self.body
        if previous_response_id is not None and conversation is not None:
            raise ValueError("previous_response_id and conversation are mutually exclusive")
        payload = self._fixed.copy()
        if input is not None:
            payload["input"] = input
        if previous_response_id is not None:
            payload["previous_response_id"] = previous_response_id
        elif conversation is not None:
            payload["conversation"] = conversation
        return orjson.dumps(payload)

    def url_of(self, response_id: str, suffix: str = "") -> str:
        """The URL of a stored response (retrieve/delete) or of its ``/input_items`` (``suffix``)."""
        collection = responses_base(self._config[0][0], self.url_form)
        return f"{collection}/{quote(response_id, safe='')}{suffix}{self._query}"

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._config
        return (_rebuild_template, (args, kwargs))

    def __repr__(self) -> str:
        key = "unset" if self._api_key is None else "***"
        return (
            f"ResponsesRequestTemplate(url={self.url!r}, model={self.model!r}, stream={self.stream}, "
            f"store={self.store}, auth={self.auth!r}, key={key}, body_bytes={len(self.body)})"
        )


def _rebuild_template(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ResponsesRequestTemplate:
    return ResponsesRequestTemplate(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Stream parsing
# ---------------------------------------------------------------------------------------------

TRUNCATED: Final = "stream ended before response.completed"
_SDK_DEFAULT_ERROR: Final = "An error occurred during streaming"
_FINISH_REASONS: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}
# Deltas that carry model output (each one is a timestamped token event).
_CONTENT_DELTAS: Final = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
    }
)
_TERMINAL: Final = frozenset({"response.completed", "response.incomplete"})
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def _snippet(data: bytes, limit: int = 80) -> str:
    return data[: limit * 4].decode("utf-8", "replace")[:limit]


def _message(obj: Any) -> str | None:
    message = obj.get("message") if isinstance(obj, dict) else None
    return message if isinstance(message, str) and message else None


def finish_reason_of(response: dict[str, Any]) -> str:
    """The chat-style finish reason of a terminal response: ``stop``, ``length``, or the
    incomplete reason as sent."""
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details") or {}
        reason = details.get("reason") or "incomplete"
        return _FINISH_REASONS.get(reason, reason)
    return "stop"


class ResponsesStreamParser(StreamState):
    """Reads one Responses SSE body; :meth:`feed` says how many content-bearing deltas each
    read completed, so the caller can timestamp them."""

    __slots__ = ("_sse", "status")

    def __init__(self) -> None:
        super().__init__()
        self._sse = SSEParser()
        self.status: str | None = None  # the last response status seen (in_progress, completed, ...)

    def close(self) -> None:
        """End of body: a stream without its terminal event is an error."""
        if not self.done and self.error is None:
            self.error = TRUNCATED

    def _response(self, response: Any, events: list[tuple[Any, ...]] | None) -> None:
        """Take id and status from an embedded response object."""
        if not isinstance(response, dict):
            return
        status = response.get("status")
        if status:
            self.status = status
        if self.response_id is None:
            rid = response.get("id")
            if rid:
                self.response_id = rid
                if events is not None:
                    events.append((EV_ID, rid))

    def feed(self, data: bytes, events: list[tuple[Any, ...]] | None = None) -> int:
        """Parse the next body bytes; the number of content-bearing deltas they completed.
        With ``events``, also append the normalised events (see :func:`stream_events`)."""
        if self.done or self.error is not None:
            return 0
        payloads = self._sse.feed_data(data)
        if not payloads:
            return 0
        counted = 0
        total = 0
        for payload in payloads:
            try:
                obj = _loads(payload)
            except _JSONDecodeError:
                self._fail(MALFORMED_PREFIX + "event: " + _snippet(payload), events)
                break
            try:
                kind = obj.get("type")
                if kind in _CONTENT_DELTAS:
                    delta = obj.get("delta")
                    if delta:
                        tokens = approx_tokens(delta) or 1
                        counted += 1
                        total += tokens
                        if events is not None:
                            events.append((EV_TOKEN, tokens))
                    continue
                if obj.get("error") and kind != "response.failed":  # the SDK raises on these
                    err = obj["error"]
                    self._fail(_message(err) or _SDK_DEFAULT_ERROR, events)
                    break
                if kind == "error":
                    self._fail(_message(obj) or _SDK_DEFAULT_ERROR, events)
                    break
                response = obj.get("response")
                self._response(response, events)
                if kind in _TERMINAL:
                    self.finish_reason = reason = finish_reason_of(response)
                    usage = response.get("usage")
                    if events is not None:
                        events.append((EV_FINISH, reason))
                    if usage:
                        self.usage_in = usage.get("input_tokens")
                        self.usage_out = usage.get("output_tokens")
                        if events is not None:
                            events.append((EV_USAGE, self.usage_in, self.usage_out))
                    self.done = True
                    if events is not None:
                        events.append(_DONE_EVENT)
                    break
                if kind == "response.failed":
                    err = response.get("error") if isinstance(response, dict) else None
                    self._fail(_message(err) or "response failed", events)
                    break
            except (AttributeError, TypeError):  # valid JSON of an unexpected shape
                self._fail(MALFORMED_PREFIX + "event: " + _snippet(payload), events)
                break
        self.content_chunks += counted
        self.tokens_out_approx += total
        return counted


def stream_events(data_chunks: Iterable[bytes]) -> list[tuple[Any, ...]]:
    """Feed a whole body (in the given pieces) and return the normalised event list, ending
    with the truncation error from :meth:`ResponsesStreamParser.close` when there is one."""
    return collect_events(ResponsesStreamParser(), data_chunks)


# ---------------------------------------------------------------------------------------------
# Non-stream bodies
# ---------------------------------------------------------------------------------------------


class ResponseResult(NamedTuple):
    """A parsed non-stream response object (or its error)."""

    text: str
    tokens_out_approx: int
    usage_in: int | None
    usage_out: int | None
    response_id: str | None
    status: str | None
    error: str | None


def _format_error(code: str | None, message: str | None) -> str:
    if code and message:
        return f"{code}: {message}"
    return code or message or "error"


def output_text_of(response: dict[str, Any]) -> str:
    """What the SDK's ``.output_text`` is: every ``output_text`` part of every message item."""
    texts = [
        part.get("text") or ""
        for item in response.get("output") or ()
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    ]
    return "".join(texts)


def parse_response(body: bytes) -> ResponseResult:
    """Read a non-stream Responses body (create or retrieve); a failed response is an error."""
    bad = ResponseResult("", 0, None, None, None, None, MALFORMED_PREFIX + "body: " + _snippet(body))
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return bad
    if not isinstance(obj, dict):
        return bad
    if obj.get("error") and "output" not in obj:
        code, message = parse_error_body(body)
        return ResponseResult("", 0, None, None, None, None, _format_error(code, message))
    try:
        text = output_text_of(obj)
        tokens = approx_tokens(text)
        for item in obj.get("output") or ():
            if item.get("type") == "function_call":
                tokens += approx_tokens(item.get("arguments") or "")
        usage = obj.get("usage") or {}
        status = obj.get("status")
        error = None
        if status == "failed":
            error = _message(obj.get("error")) or "response failed"
        return ResponseResult(
            text,
            tokens,
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            obj.get("id") or None,
            status,
            error,
        )
    except (AttributeError, TypeError):
        return bad


# ---------------------------------------------------------------------------------------------
# Shared: what counts as input
# ---------------------------------------------------------------------------------------------


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return approx_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += approx_tokens(text)
            elif isinstance(part, str):
                total += approx_tokens(part)
        return total
    return 0


def item_tokens(item: Any) -> int:
    """Approximate tokens of one input or output item (message text, tool arguments or output)."""
    if isinstance(item, str):
        return approx_tokens(item)
    if not isinstance(item, dict):
        return 0
    if "content" in item:
        return _content_tokens(item["content"])
    total = 0
    for key in ("text", "arguments", "output"):
        value = item.get(key)
        if isinstance(value, str):
            total += approx_tokens(value)
    return total


def input_tokens_of(input: Any) -> int:
    """Approximate tokens of a create request's ``input`` (a string or a list of items)."""
    if isinstance(input, str):
        return approx_tokens(input)
    if isinstance(input, list):
        return sum(item_tokens(item) for item in input)
    return 0


# ---------------------------------------------------------------------------------------------
# Server side: encoders for the mock
# ---------------------------------------------------------------------------------------------

_dumps = orjson.dumps


def input_message_items(input: Any, new_id: Any) -> list[dict[str, Any]]:
    """The stored form of a request's ``input``: items with ids, text parts as ``input_text``
    (``new_id()`` gives a fresh item id)."""
    if isinstance(input, str):
        input = [{"type": "message", "role": "user", "content": input}]
    if not isinstance(input, list):
        return []
    items: list[dict[str, Any]] = []
    for raw in input:
        if not isinstance(raw, dict):
            continue
        item = dict(raw)
        item.setdefault("type", "message")
        if item["type"] == "message":
            content = item.get("content")
            if isinstance(content, str):
                part_type = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": part_type, "text": content}]
            item.setdefault("role", "user")
            item.setdefault("status", "completed")
        item.setdefault("id", new_id())
        items.append(item)
    return items


def output_message(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message output item carrying ``text`` as one ``output_text`` part."""
    content = [] if status == "in_progress" else [output_text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def usage_object(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    response_id: str,
    created_at: int,
    model: str,
    *,
    status: str = "completed",
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    store: bool = True,
    previous_response_id: str | None = None,
    conversation_id: str | None = None,
    instructions: Any = None,
    max_output_tokens: int | None = None,
    metadata: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    """The response object as the service returns it (§3.1); the SDK's ``.output_text`` and
    ``.usage`` work on it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions,
        "max_output_tokens": max_output_tokens,
        "model": model,
        "output": output if output is not None else [],
        "parallel_tool_calls": True,
        "previous_response_id": previous_response_id,
        "conversation": {"id": conversation_id} if conversation_id else None,
        "reasoning": {"effort": None, "summary": None},
        "store": store,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": metadata if metadata is not None else {},
    }


_DELTA_PREFIX: Final = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)


class ResponseEventEncoder:
    """The named SSE events of one streamed response, numbered in order. The text delta, the
    only event per token, is spliced from precomputed bytes."""

    __slots__ = ("_delta_prefix", "_delta_suffix", "_seq", "item_id")

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self._seq = 0
        self._delta_prefix = _DELTA_PREFIX
        self._delta_suffix = (
            b',"item_id":' + _dumps(item_id) + b',"output_index":0,"content_index":0,"logprobs":[],"delta":'
        )

    def event(self, kind: str, fields: dict[str, Any]) -> bytes:
        """``event: kind`` plus its data: ``{"type": kind, "sequence_number": n, **fields}``."""
        seq = self._seq
        self._seq = seq + 1
        payload = {"type": kind, "sequence_number": seq}
        payload.update(fields)
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"

    def text_delta(self, text: str) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return self._delta_prefix + str(seq).encode() + self._delta_suffix + _dumps(text) + b"}\n\n"

    # The events around the deltas, in stream order.
    def created(self, response: dict[str, Any]) -> bytes:
        return self.event("response.created", {"response": response})

    def in_progress(self, response: dict[str, Any]) -> bytes:
        return self.event("response.in_progress", {"response": response})

    def item_added(self) -> bytes:
        return self.event(
            "response.output_item.added",
            {"output_index": 0, "item": output_message(self.item_id, "", "in_progress")},
        )

    def part_added(self) -> bytes:
        return self.event(
            "response.content_part.added",
            {"item_id": self.item_id, "output_index": 0, "content_index": 0, "part": output_text_part("")},
        )

    def text_done(self, text: str) -> bytes:
        return self.event(
            "response.output_text.done",
            {"item_id": self.item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []},
        )

    def part_done(self, text: str) -> bytes:
        return self.event(
            "response.content_part.done",
            {"item_id": self.item_id, "output_index": 0, "content_index": 0, "part": output_text_part(text)},
        )

    def item_done(self, item: dict[str, Any]) -> bytes:
        return self.event("response.output_item.done", {"output_index": 0, "item": item})

    def completed(self, response: dict[str, Any]) -> bytes:
        """``response.completed``, or ``response.incomplete`` for a response of that status."""
        kind = "response.incomplete" if response.get("status") == "incomplete" else "response.completed"
        return self.event(kind, {"response": response})

    def failed(self, response: dict[str, Any]) -> bytes:
        return self.event("response.failed", {"response": response})


def list_page(items: list[dict[str, Any]], *, has_more: bool = False) -> dict[str, Any]:
    """A cursor page (``input_items``, conversation items)."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def previous_response_not_found(response_id: str) -> bytes:
    """The 400 body for a ``previous_response_id`` this endpoint does not hold (§3.1); Azure's
    Responses API answers request errors in OpenAI's shape too."""
    return openai_error_body(
        f"Previous response with id '{response_id}' not found.",
        "invalid_request_error",
        "previous_response_id",
        "previous_response_not_found",
    )
