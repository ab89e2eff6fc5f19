"""GCP Vertex AI Gemini ``generateContent`` on the wire, both directions (``../shared/protocols.md`` §6).

Client side: :class:`GenerateRequestTemplate` builds the request once per endpoint × model ×
scenario (project path or express mode, ``v1`` or ``v1beta1``, Bearer token or API key);
:class:`VertexStreamParser` reads a ``streamGenerateContent?alt=sse`` body and counts the
*content-bearing events*, the ones the engine timestamps; :func:`parse_generate_response` and
:func:`parse_error_body` read non-stream bodies.

Server side: :class:`StreamEncoder`, :func:`generate_content_body`, :func:`error_body` and
:func:`error_event` produce the bytes Vertex sends, so the mock reuses this module.

A stream (§6.4) is ``data: {GenerateContentResponse}`` events separated by ``\\r\\n\\r\\n``, no
``event:`` lines and no ``[DONE]``. Every event is a complete response fragment; only the last
carries ``finishReason`` and the full ``usageMetadata``. Normalised events (the vocabulary of
the contract suite) per SSE event, in this order::

    ("id", responseId)      once, at the first event with a non-empty responseId
    ("token", n)            an event with candidate text or a function call (n ≥ 1 approx. tokens);
                            parts marked ``"thought": true`` are thinking, not content
    ("usage", in, out)      an event whose usageMetadata has candidatesTokenCount, or that finishes;
                            in = promptTokenCount, out = candidatesTokenCount + thoughtsTokenCount
                            (thinking is billed as output)
    ("finish", reason)      each candidate finishReason; a blocked prompt's promptFeedback.blockReason
    ("error", message)      a ``{"error": {...}}`` event ("STATUS: message"), or data that is not JSON

**When "done" is emitted.** Vertex has no end marker: a stream is complete when the body ends
cleanly after an event that carried a finish reason. So ``("done",)`` comes from
:meth:`VertexStreamParser.close` (end of body), not from an event: events after the finishing
one are still parsed, and a body that ends inside an event, or without any finish reason, is a
truncation error instead. An error event or malformed data ends the stream; nothing after it
is counted, as google-genai raises there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote

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
    error_kind as error_kind,
)
from harness.protocols.sse import SSEParser
from harness.protocols.tokens import approx_tokens

API_GENERATE: Final = "vertex.generate_content"
API_STREAM: Final = "vertex.stream_generate_content"
API_VERSIONS: Final = ("v1", "v1beta1")
DEFAULT_API_VERSION: Final = "v1beta1"  # what google-genai uses for Vertex

# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


def model_path(model: str, project: str | None, location: str | None) -> str:
    """The resource path of a publisher model: project form, or express form without a project."""
    name = quote(model, safe="")
    if project is None:
        return f"publishers/google/models/{name}"
    where = f"projects/{quote(project, safe='')}/locations/{quote(location or '', safe='')}"
    return f"{where}/publishers/google/models/{name}"


class GenerateRequestTemplate:
    """URL, headers and body of one ``generateContent`` request shape, built once; per request
    only the ``x-ms-client-request-id`` header changes (the mocks ledger it). Pickles by
    configuration.

    ``project`` and ``location`` together select the project path; neither selects express
    mode (``/{version}/publishers/google/models/{model}:...``), which real Vertex serves only
    with an API key. ``auth="bearer"`` sends ``credential`` as an OAuth access token,
    ``"api-key"`` as ``x-goog-api-key``. ``server_timeout_s`` sends ``X-Server-Timeout`` (whole
    seconds, as google-genai does), the server-side deadline of the request.
    """

    __slots__ = (
        "_config",
        "_credential",
        "_headers",
        "api",
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
        model: str,
        credential: str | None,
        *,
        prompt: str,
        max_tokens: int,
        stream: bool,
        project: str | None = None,
        location: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        auth: Literal["bearer", "api-key"] = "bearer",
        server_timeout_s: int | None = None,
    ) -> None:
        if auth not in ("bearer", "api-key"):
            raise ValueError(f"auth must be 'bearer' or 'api-key', not {auth!r}")
        if (project is None) != (location is None):
            raise ValueError("give project and location together (project path), or neither (express mode)")
        if api_version not in API_VERSIONS:
            raise ValueError(f"api_version must be one of {', '.join(API_VERSIONS)}, not {api_version!r}")
        if server_timeout_s is not None and server_timeout_s < 1:
            raise ValueError("server_timeout_s must be at least 1 (whole seconds)")
        self._config = (
            (base_url, model, credential),
            {
                "prompt": prompt,
                "max_tokens": max_tokens,
                "stream": stream,
                "project": project,
                "location": location,
                "api_version": api_version,
                "auth": auth,
                "server_timeout_s": server_timeout_s,
            },
        )
        self._credential = credential
        self.auth = auth
        self.model = model
        self.deployment = model
        self.stream = stream
        self.api = API_STREAM if stream else API_GENERATE
        self.method: Final = "POST"
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        self.url = f"{base_url.rstrip('/')}/{api_version}/{model_path(model, project, location)}{method}"
        headers: dict[str, str] = {}
        if credential is not None:
            if auth == "bearer":
                headers["Authorization"] = f"Bearer {credential}"
            else:
                headers["x-goog-api-key"] = credential
        headers["Content-Type"] = "application/json"
        if server_timeout_s is not None:
            headers["X-Server-Timeout"] = str(int(server_timeout_s))
        self._headers = headers
        self.body: bytes = orjson.dumps(
            {
                "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "generationConfig": {"maxOutputTokens": max_tokens},
            }
        )

    def headers_for(self, request_id: str) -> dict[str, str]:
        """A new header dict for one request, tagged with the client request id."""
        headers = self._headers.copy()
        headers["x-ms-client-request-id"] = request_id
        return headers

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._config
        return (_rebuild_template, (args, kwargs))

    def __repr__(self) -> str:
        key = "unset" if self._credential is None else "***"
        return (
            f"GenerateRequestTemplate(url={self.url!r}, stream={self.stream}, auth={self.auth!r}, "
            f"credential={key}, body_bytes={len(self.body)})"
        )


def _rebuild_template(args: tuple[Any, ...], kwargs: dict[str, Any]) -> GenerateRequestTemplate:
    return GenerateRequestTemplate(*args, **kwargs)


def _parts_tokens(content: Any) -> int:
    """Approximate tokens of every text part of one ``Content`` (``{"parts": [...]}``)."""
    if not isinstance(content, dict):
        return 0
    parts = content.get("parts")
    if not isinstance(parts, list):
        return 0
    total = 0
    for part in parts:
        if isinstance(part, dict):
            text = part.get("text")
            if isinstance(text, str):
                total += approx_tokens(text)
    return total


def prompt_tokens_of(body: dict[str, Any]) -> int:
    """Approximate prompt tokens of a request body: the text parts of ``contents`` and of
    ``systemInstruction``."""
    total = _parts_tokens(body.get("systemInstruction"))
    contents = body.get("contents")
    if isinstance(contents, list):
        for content in contents:
            total += _parts_tokens(content)
    return total


# ---------------------------------------------------------------------------------------------
# Stream parsing
# ---------------------------------------------------------------------------------------------


TRUNCATED: Final = "stream ended before a finishReason"
TRUNCATED_EVENT: Final = "stream ended inside an event"


_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def _snippet(data: bytes, limit: int = 80) -> str:
    return data[: limit * 4].decode("utf-8", "replace")[:limit]


def _status_message(err: Any) -> str:
    """``"STATUS: message"`` of a google.rpc.Status object (either part may be missing)."""
    if not isinstance(err, dict):
        return str(err)
    status = err.get("status")
    if not status:
        code = err.get("code")
        status = None if code is None else str(code)
    message = err.get("message")
    if status and message:
        return f"{status}: {message}"
    return str(status or message or "error")


def _usage(meta: dict[str, Any]) -> tuple[int | None, int]:
    out = meta.get("candidatesTokenCount") or 0
    thoughts = meta.get("thoughtsTokenCount")
    if thoughts:
        out += thoughts
    return meta.get("promptTokenCount"), out


def _candidate_tokens(content: Any) -> int:
    """Approximate tokens of a candidate's content parts; -1 when it has none (not content)."""
    if not content:
        return -1
    parts = content.get("parts")
    if not parts:
        return -1
    tokens = -1
    for part in parts:
        text = part.get("text")
        if text:
            if part.get("thought"):
                continue
            tokens = max(tokens, 0) + approx_tokens(text)
            continue
        call = part.get("functionCall")
        if call:
            args = call.get("args")
            tokens = max(tokens, 0) + (approx_tokens(orjson.dumps(args).decode()) if args else 0)
    return tokens


class VertexStreamParser(StreamState):
    """Reads one ``alt=sse`` body; :meth:`feed` says how many content-bearing events each read
    completed, so the caller can timestamp them. Same interface as the Azure chat parser."""

    __slots__ = ("_sse", "require_done")

    def __init__(self, *, require_done: bool = True) -> None:
        super().__init__()
        self._sse = SSEParser()
        self.require_done = require_done  # require a finishReason before the body ends

    def close(self, events: list[tuple[Any, ...]] | None = None) -> None:
        """End of body: clean after a finish reason → ``done``; inside an event → truncated;
        without a finish reason → truncated when required, else ``done``."""
        if self.done or self.error is not None:
            return
        if self._sse.has_partial:
            self._fail(TRUNCATED_EVENT, events)
        elif self.finish_reason is None and self.require_done:
            self._fail(TRUNCATED, events)
        else:
            self.done = True
            if events is not None:
                events.append(_DONE_EVENT)

    def feed(self, data: bytes, events: list[tuple[Any, ...]] | None = None) -> int:
        """Parse the next body bytes; the number of content-bearing events they completed.
        With ``events``, also append the normalised events (see the module docstring)."""
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
                self._fail(MALFORMED_PREFIX + "chunk: " + _snippet(payload), events)
                break
            try:
                err = obj.get("error")
                if err:
                    self._fail(_status_message(err), events)
                    break
                if self.response_id is None:
                    rid = obj.get("responseId")
                    if rid:
                        self.response_id = rid
                        if events is not None:
                            events.append((EV_ID, rid))
                finishes: list[str] | None = None
                tokens = -1
                for cand in obj.get("candidates") or ():
                    n = _candidate_tokens(cand.get("content"))
                    if n >= 0:
                        tokens = max(tokens, 0) + n
                    reason = cand.get("finishReason")
                    if reason:
                        if finishes is None:
                            finishes = []
                        finishes.append(reason)
                feedback = obj.get("promptFeedback")
                if feedback:
                    reason = feedback.get("blockReason")
                    if reason:
                        if finishes is None:
                            finishes = []
                        finishes.append(reason)
                if tokens >= 0:
                    tokens = tokens or 1
                    counted += 1
                    total += tokens
                    if events is not None:
                        events.append((EV_TOKEN, tokens))
                meta = obj.get("usageMetadata")
                if meta and (finishes or "candidatesTokenCount" in meta):
                    self.usage_in, self.usage_out = _usage(meta)
                    if events is not None:
                        events.append((EV_USAGE, self.usage_in, self.usage_out))
                if finishes:
                    self.finish_reason = finishes[-1]
                    if events is not None:
                        events.extend((EV_FINISH, r) for r in finishes)
            except (AttributeError, TypeError):  # valid JSON of an unexpected shape
                self._fail(MALFORMED_PREFIX + "chunk: " + _snippet(payload), events)
                break
        self.content_chunks += counted
        self.tokens_out_approx += total
        return counted


def stream_events(data_chunks: Iterable[bytes], *, require_done: bool = True) -> list[tuple[Any, ...]]:
    """Feed a whole ``alt=sse`` body (in the given pieces) and return the normalised events,
    ending with ``("done",)`` or the error :meth:`VertexStreamParser.close` found."""
    parser = VertexStreamParser(require_done=require_done)
    events: list[tuple[Any, ...]] = []
    for chunk in data_chunks:
        parser.feed(chunk, events)
    parser.close(events)
    return events


# ---------------------------------------------------------------------------------------------
# Non-stream bodies
# ---------------------------------------------------------------------------------------------


class GenerateResult(NamedTuple):
    """A parsed non-stream ``generateContent`` response (or its error)."""

    text: str
    tokens_out_approx: int
    usage_in: int | None
    usage_out: int | None
    response_id: str | None
    finish_reason: str | None
    error: str | None


def _malformed(body: bytes) -> GenerateResult:
    return GenerateResult("", 0, None, None, None, None, MALFORMED_PREFIX + "body: " + _snippet(body))


def parse_generate_response(body: bytes) -> GenerateResult:
    """Read a non-stream response body; text and finish reason are the first candidate's
    (thought parts excluded, as google-genai's ``.text`` does), the token approximation covers
    every candidate."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _malformed(body)
    if not isinstance(obj, dict):
        return _malformed(body)
    err = obj.get("error")
    if err:
        return GenerateResult("", 0, None, None, None, None, _status_message(err))
    try:
        text = ""
        finish_reason = None
        tokens = 0
        for i, cand in enumerate(obj.get("candidates") or ()):
            tokens += max(_candidate_tokens(cand.get("content")), 0)
            if i == 0:
                parts = (cand.get("content") or {}).get("parts") or ()
                text = "".join(p.get("text") or "" for p in parts if not p.get("thought"))
                finish_reason = cand.get("finishReason")
        if finish_reason is None:
            feedback = obj.get("promptFeedback") or {}
            finish_reason = feedback.get("blockReason")
        meta = obj.get("usageMetadata")
        usage_in, usage_out = _usage(meta) if meta else (None, None)
        return GenerateResult(
            text, tokens, usage_in, usage_out, obj.get("responseId") or None, finish_reason, None
        )
    except (AttributeError, TypeError):
        return _malformed(body)


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(status, message) of a google.rpc.Status error body ``{"error": {code, message, status}}``
    (status falls back to the numeric code as a string); also the one-element JSON array that
    ``streamGenerateContent`` without ``alt=sse`` returns; any other body gives (None, its first
    200 characters)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:1024].decode("utf-8", "replace").strip()[:200]
        return None, text or None
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, str):
            return None, err
        if isinstance(err, dict):
            status = err.get("status")
            if status is None and err.get("code") is not None:
                status = str(err["code"])
            message = err.get("message")
            return (None if status is None else str(status), None if message is None else str(message))
    return None, _snippet(body, 200) or None


# ---------------------------------------------------------------------------------------------
# Server side: encoders for the mock
# ---------------------------------------------------------------------------------------------

SSE_SEPARATOR: Final = b"\r\n\r\n"  # Google frames events with CRLF (§6.4)
TRAFFIC_TYPE: Final = "ON_DEMAND"

# google.rpc.Code by HTTP status (the canonical mapping); unknown statuses fall back by class.
STATUS_BY_HTTP: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_dumps = orjson.dumps


def rpc_status(http_status: int) -> str:
    """The google.rpc status string Google sends with an HTTP error status."""
    status = STATUS_BY_HTTP.get(http_status)
    if status is not None:
        return status
    return "FAILED_PRECONDITION" if http_status < 500 else "UNKNOWN"


def error_body(code: int, message: str, status: str | None = None) -> bytes:
    """Google's error body (google.rpc.Status as JSON, §6.5); ``code`` is the HTTP status, an int."""
    return _dumps({"error": {"code": code, "message": message, "status": status or rpc_status(code)}})


def error_event(code: int, message: str, status: str | None = None) -> bytes:
    """An error reported inside an ``alt=sse`` stream; google-genai raises APIError on it."""
    return b"data: " + error_body(code, message, status) + SSE_SEPARATOR


def sse_event(document: bytes) -> bytes:
    """One ``alt=sse`` event carrying a JSON document."""
    return b"data: " + document + SSE_SEPARATOR


def _usage_metadata(prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt_tokens + output_tokens,
        "trafficType": TRAFFIC_TYPE,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": output_tokens}],
    }


# Document = candidates prefix + text + candidate tail + usage + per-response suffix.
_CONTENT_PREFIX: Final = b'{"candidates":[{"content":{"role":"model","parts":[{"text":'
_PLAIN_TAIL: Final = b"}]}}]"
_FINISH_TAIL: Final = b'}]},"finishReason":'
_PARTIAL_USAGE: Final = b',"usageMetadata":' + _dumps({"trafficType": TRAFFIC_TYPE})


class StreamEncoder:
    """The JSON documents of one response, everything but text and usage precomputed. Wrap each
    in :func:`sse_event` for ``alt=sse``; without it they are the elements of a JSON array."""

    __slots__ = ("_suffix",)

    def __init__(self, response_id: str, model_version: str, create_time: str) -> None:
        self._suffix = b"".join(
            (
                b',"modelVersion":',
                _dumps(model_version),
                b',"createTime":',
                _dumps(create_time),
                b',"responseId":',
                _dumps(response_id),
                b"}",
            )
        )

    def content(self, text: str) -> bytes:
        """An intermediate fragment: text only, usage with the traffic type alone."""
        return _CONTENT_PREFIX + _dumps(text) + _PLAIN_TAIL + _PARTIAL_USAGE + self._suffix

    def last(self, text: str, finish_reason: str, prompt_tokens: int, output_tokens: int) -> bytes:
        """The final fragment: text, ``finishReason`` and the full ``usageMetadata``."""
        return b"".join(
            (
                _CONTENT_PREFIX,
                _dumps(text),
                _FINISH_TAIL,
                _dumps(finish_reason),
                b'}],"usageMetadata":',
                _dumps(_usage_metadata(prompt_tokens, output_tokens)),
                self._suffix,
            )
        )


def generate_content_body(
    response_id: str,
    model_version: str,
    create_time: str,
    text: str,
    prompt_tokens: int,
    output_tokens: int,
    finish_reason: str = "STOP",
) -> bytes:
    """A non-stream ``generateContent`` response as Vertex returns it (§6.3)."""
    return StreamEncoder(response_id, model_version, create_time).last(
        text, finish_reason, prompt_tokens, output_tokens
    )
