"""The OpenAI Realtime API over WebSocket, both directions (``../shared/protocols.md`` §3.4).

Every message is one text frame holding one JSON event ``{"type": ..., "event_id": ...}``.
Client side: :func:`realtime_url` and :func:`handshake_headers` for the upgrade request, the
client-event builders (:func:`session_update`, :func:`user_message`, :func:`response_create`)
and :class:`RealtimeTurnParser`, which reads the server events of one ``response.create``
turn into the shared event vocabulary of the SSE dialects. Server side:
:class:`ServerEventEncoder` produces the events the mock sends, in GA or beta naming.

URL forms (``url_form``)::

    openai     ws://H/v1/realtime?model=M                          Bearer key
    azure_v1   ws://H/openai/v1/realtime?model=DEPLOYMENT          Bearer key
    azure      ws://H/openai/realtime?api-version=V&deployment=D   api-key header (or Bearer)

One text turn, GA names (beta names, with ``OpenAI-Beta: realtime=v1``, in brackets)::

    response.created                       the response, status in_progress     id
    response.output_item.added             assistant message item               not content
    response.content_part.added            empty text part                      not content
    response.output_text.delta             non-empty ``delta``                  CONTENT
        [response.text.delta]; also output_audio_transcript.delta [audio_transcript.delta]
    response.output_text.done [response.text.done], content_part.done, output_item.done
    response.done                          status, usage                         finish, usage, done
    error                                  {"error": {"type", "code", "message"}}  error

``response.done`` maps like a Responses terminal event: ``completed`` → ``("finish", "stop")``,
``incomplete`` with reason ``max_output_tokens`` → ``"length"``, ``cancelled`` →
``"cancelled"``; ``failed`` is an error with the status details' message.

A recorded turn for the contract suite is JSON Lines: one server event per line, as received
(compact JSON never holds a raw newline). :func:`stream_events` reads that recording.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal
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
    close_into,
    error_kind as error_kind,
)
from harness.protocols.tokens import approx_tokens

API: Final = "realtime"
UrlForm = Literal["azure", "azure_v1", "openai"]
BETA_HEADER: Final = ("OpenAI-Beta", "realtime=v1")

_dumps = orjson.dumps
_loads = orjson.loads

# ---------------------------------------------------------------------------------------------
# Client side: the handshake
# ---------------------------------------------------------------------------------------------


def realtime_url(base_url: str, *, url_form: UrlForm, model: str, api_version: str | None = None) -> str:
    """The WebSocket URL the SDK opens for ``url_form`` (``http`` becomes ``ws``, ``https`` ``wss``)."""
    base = base_url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    m = quote(model, safe="")
    if url_form == "openai":
        return f"{base}/v1/realtime?model={m}"
    if url_form == "azure_v1":
        return f"{base}/openai/v1/realtime?model={m}"
    if url_form == "azure":
        if not api_version:
            raise ValueError("url_form 'azure' needs api_version (the ?api-version= query parameter)")
        return f"{base}/openai/realtime?api-version={quote(api_version, safe='')}&deployment={m}"
    raise ValueError(f"url_form must be 'azure', 'azure_v1' or 'openai', not {url_form!r}")


def handshake_headers(
    api_key: str | None, *, url_form: UrlForm, beta: bool = False, request_id: str | None = None
) -> dict[str, str]:
    """Headers of the upgrade request: the key as the SDK sends it for ``url_form``, the beta
    switch, and the client request id the mock ledgers each turn under (``<id>/<turn>``)."""
    headers: dict[str, str] = {}
    if api_key is not None:
        if url_form == "azure":
            headers["api-key"] = api_key
        else:
            headers["Authorization"] = f"Bearer {api_key}"
    if beta:
        headers[BETA_HEADER[0]] = BETA_HEADER[1]
    if request_id is not None:
        headers["x-ms-client-request-id"] = request_id
    return headers


# ---------------------------------------------------------------------------------------------
# Client side: events the client sends (each returns one text frame)
# ---------------------------------------------------------------------------------------------


def _frame(event: dict[str, Any], event_id: str | None) -> str:
    if event_id is not None:
        event["event_id"] = event_id
    return _dumps(event).decode()


def session_update(
    *,
    instructions: str | None = None,
    output_modalities: tuple[str, ...] = ("text",),
    max_output_tokens: int | None = None,
    beta: bool = False,
    event_id: str | None = None,
) -> str:
    """``session.update``: GA sessions say ``type: realtime`` and ``output_modalities``; beta
    sessions say ``modalities`` and ``max_response_output_tokens``."""
    session: dict[str, Any]
    if beta:
        session = {"modalities": list(output_modalities)}
        if max_output_tokens is not None:
            session["max_response_output_tokens"] = max_output_tokens
    else:
        session = {"type": "realtime", "output_modalities": list(output_modalities)}
        if max_output_tokens is not None:
            session["max_output_tokens"] = max_output_tokens
    if instructions is not None:
        session["instructions"] = instructions
    return _frame({"type": "session.update", "session": session}, event_id)


def user_message(text: str, *, event_id: str | None = None) -> str:
    """``conversation.item.create`` with one user text message."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return _frame({"type": "conversation.item.create", "item": item}, event_id)


def response_create(*, max_output_tokens: int | None = None, event_id: str | None = None) -> str:
    """``response.create``, optionally capping this response's output tokens."""
    event: dict[str, Any] = {"type": "response.create"}
    if max_output_tokens is not None:
        event["response"] = {"max_output_tokens": max_output_tokens}
    return _frame(event, event_id)


def response_cancel(*, event_id: str | None = None) -> str:
    """``response.cancel``: stop the active response (it ends with status ``cancelled``)."""
    return _frame({"type": "response.cancel"}, event_id)


# ---------------------------------------------------------------------------------------------
# Client side: parsing the server events of one turn
# ---------------------------------------------------------------------------------------------

TRUNCATED: Final = "connection ended before response.done"
_CONTENT_DELTAS: Final = frozenset(
    {
        "response.output_text.delta",
        "response.output_audio_transcript.delta",
        "response.text.delta",
        "response.audio_transcript.delta",
        "response.function_call_arguments.delta",
    }
)
_FINISH_REASONS: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}
_RESPONSE_EVENTS: Final = frozenset({"response.created", "response.done"})


def _snippet(data: bytes | str, limit: int = 80) -> str:
    if isinstance(data, bytes):
        data = data[: limit * 4].decode("utf-8", "replace")
    return data[:limit]


def _error_message(event: dict[str, Any]) -> str:
    err = event.get("error")
    if isinstance(err, dict):
        message = err.get("message")
        if isinstance(message, str) and message:
            return message
        code = err.get("code")
        if code:
            return str(code)
    return "realtime error"


class RealtimeTurnParser(StreamState):
    """Reads the server events of one turn (after ``response.create``); :meth:`feed` takes one
    WebSocket message and says how many content-bearing deltas it was (0 or 1). Events before
    ``response.created`` (session and item acknowledgements) are not part of the turn."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        super().__init__()
        self.status: str | None = None

    def close(self) -> None:
        """The connection ended: a turn without ``response.done`` is an error."""
        if not self.done and self.error is None:
            self.error = TRUNCATED

    def feed(self, message: bytes | str, events: list[tuple[Any, ...]] | None = None) -> int:
        """Parse one server message; 1 if it carried output, else 0. With ``events``, also
        append the normalised events."""
        if self.done or self.error is not None:
            return 0
        try:
            obj = _loads(message)
        except orjson.JSONDecodeError:
            self._fail(MALFORMED_PREFIX + "event: " + _snippet(message), events)
            return 0
        try:
            kind = obj.get("type")
            if kind in _CONTENT_DELTAS:
                delta = obj.get("delta")
                if not delta:
                    return 0
                tokens = approx_tokens(delta) or 1
                self.content_chunks += 1
                self.tokens_out_approx += tokens
                if events is not None:
                    events.append((EV_TOKEN, tokens))
                return 1
            if kind == "error":
                self._fail(_error_message(obj), events)
                return 0
            if kind in _RESPONSE_EVENTS:
                response = obj["response"]
                self.status = status = response.get("status")
                if self.response_id is None:
                    rid = response.get("id")
                    if rid:
                        self.response_id = rid
                        if events is not None:
                            events.append((EV_ID, rid))
                if kind == "response.done":
                    details = response.get("status_details") or {}
                    if status == "failed":
                        self._fail(
                            _error_message(details) if details.get("error") else "response failed", events
                        )
                        return 0
                    if status == "incomplete":
                        reason = details.get("reason") or "incomplete"
                        reason = _FINISH_REASONS.get(reason, reason)
                    else:
                        reason = "stop" if status == "completed" else str(status)
                    self.finish_reason = reason
                    if events is not None:
                        events.append((EV_FINISH, reason))
                    usage = response.get("usage")
                    if usage:
                        self.usage_in = usage.get("input_tokens")
                        self.usage_out = usage.get("output_tokens")
                        if events is not None:
                            events.append((EV_USAGE, self.usage_in, self.usage_out))
                    self.done = True
                    if events is not None:
                        events.append(_DONE_EVENT)
        except (AttributeError, TypeError, KeyError):
            self._fail(MALFORMED_PREFIX + "event: " + _snippet(message), events)
        return 0


def turn_events(messages: Iterable[bytes | str]) -> list[tuple[Any, ...]]:
    """The normalised events of one turn's server messages, ending with the truncation error
    when the messages stop before ``response.done``."""
    parser = RealtimeTurnParser()
    events: list[tuple[Any, ...]] = []
    for message in messages:
        parser.feed(message, events)
        if parser.ended:
            break
    return close_into(parser, events)


def stream_events(data_chunks: Iterable[bytes]) -> list[tuple[Any, ...]]:
    """The normalised events of a JSON Lines recording of one turn, split anywhere."""
    buf = bytearray()
    parser = RealtimeTurnParser()
    events: list[tuple[Any, ...]] = []
    for chunk in data_chunks:
        if parser.ended:
            break
        start = len(buf)
        buf += chunk
        end = buf.rfind(b"\n", start)
        if end < 0:
            continue
        lines = bytes(buf[:end]).split(b"\n")
        del buf[: end + 1]
        for line in lines:
            if line.strip():
                parser.feed(line, events)
                if parser.ended:
                    break
    if not parser.ended and bytes(buf).strip():
        parser.feed(bytes(buf), events)
    return close_into(parser, events)


# ---------------------------------------------------------------------------------------------
# Server side: the events the mock sends
# ---------------------------------------------------------------------------------------------

_GA_NAMES: Final = {
    "item.created": "conversation.item.added",
    "text.delta": "response.output_text.delta",
    "text.done": "response.output_text.done",
}
_BETA_NAMES: Final = {
    "item.created": "conversation.item.created",
    "text.delta": "response.text.delta",
    "text.done": "response.text.done",
}


def realtime_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
    }


def item_text_tokens(item: Any) -> int:
    """Approximate tokens of a conversation item's text parts (input_text, text, output_text)."""
    if not isinstance(item, dict):
        return 0
    content = item.get("content")
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, dict):
            for key in ("text", "transcript"):
                text = part.get(key)
                if isinstance(text, str):
                    total += approx_tokens(text)
    return total


class ServerEventEncoder:
    """The server events of one session, GA or beta naming, each a UTF-8 JSON text frame with a
    fresh ``event_id``. The text delta, the only event per token, is spliced from bytes."""

    __slots__ = ("_delta_suffix", "_event_prefix", "_ids", "_names", "beta", "part_type")

    def __init__(self, session_id: str, *, beta: bool) -> None:
        self.beta = beta
        self._names = _BETA_NAMES if beta else _GA_NAMES
        self.part_type = "text" if beta else "output_text"
        self._event_prefix = "event_" + session_id.removeprefix("sess_")[:12]
        self._ids = 0
        self._delta_suffix = b""

    def _event_id(self) -> str:
        self._ids += 1
        return f"{self._event_prefix}{self._ids:06x}"

    def event(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": kind, "event_id": self._event_id()}
        payload.update(fields)
        return _dumps(payload)

    def session(self, kind: str, session: dict[str, Any]) -> bytes:
        """``session.created`` / ``session.updated``."""
        return self.event(kind, {"session": session})

    def error(self, type: str, code: str | None, message: str, event_id: str | None = None) -> bytes:
        err = {"type": type, "code": code, "message": message, "param": None, "event_id": event_id}
        return self.event("error", {"error": err})

    def item_created(self, item: dict[str, Any], previous_item_id: str | None) -> list[bytes]:
        """The acknowledgement of a new conversation item: GA sends ``added`` then ``done``,
        beta one ``created``."""
        fields = {"previous_item_id": previous_item_id, "item": item}
        if self.beta:
            return [self.event("conversation.item.created", fields)]
        return [self.event("conversation.item.added", fields), self.event("conversation.item.done", fields)]

    def response(self, kind: str, response: dict[str, Any]) -> bytes:
        """``response.created`` / ``response.done``."""
        return self.event(kind, {"response": response})

    def begin_text(self, response_id: str, item_id: str) -> None:
        """Precompute the delta frames' tail for this response's text item."""
        self._delta_suffix = (
            b',"response_id":'
            + _dumps(response_id)
            + b',"item_id":'
            + _dumps(item_id)
            + b',"output_index":0,"content_index":0,"delta":'
        )

    def text_delta(self, text: str) -> bytes:
        return (
            b'{"type":"'
            + self._names["text.delta"].encode()
            + b'","event_id":"'
            + self._event_id().encode()
            + b'"'
            + self._delta_suffix
            + _dumps(text)
            + b"}"
        )

    def part(self, kind: str, response_id: str, item_id: str, text: str) -> bytes:
        """``response.content_part.added`` / ``.done``."""
        return self.event(
            kind,
            {
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": self.part_type, "text": text},
            },
        )

    def text_done(self, response_id: str, item_id: str, text: str) -> bytes:
        return self.event(
            self._names["text.done"],
            {
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "text": text,
            },
        )

    def output_item(self, kind: str, response_id: str, item: dict[str, Any]) -> bytes:
        """``response.output_item.added`` / ``.done``."""
        return self.event(kind, {"response_id": response_id, "output_index": 0, "item": item})
