"""Stateful OpenAI-family APIs on a mock endpoint: Responses, Conversations and Realtime
(``../shared/protocols.md`` §3.1, §3.2, §3.4), accepted unchanged by the official openai SDK.

``add_stateful_routes`` is called by the Azure and OpenAI app factories (harness.mocks.azure_openai)
to add these routes to an endpoint's app. ``{p}`` is ``/openai`` (Azure classic: ``api-version``
required), ``/openai/v1`` (Azure v1) or ``/v1`` (OpenAI)::

    POST            {p}/responses                      create (store, previous_response_id,
                                                       conversation, stream)
    GET | DELETE    {p}/responses/{id}                 retrieve / delete a stored response
    GET             {p}/responses/{id}/input_items     the stored input items (a list page)
    POST            {p}/conversations                  create
    GET|POST|DELETE {p}/conversations/{id}             retrieve / update metadata / delete
    POST | GET      {p}/conversations/{id}/items       add items / list them
    GET | DELETE    {p}/conversations/{id}/items/{i}   retrieve / delete one item
    GET (upgrade)   {p}/realtime                       WebSocket; Azure classic needs api-version and
                                                       deployment, the v1 forms take ?model=

State lives in the endpoint's ``runtime.state`` (kinds ``response`` and ``conversation``), so a
follow-up sent to another endpoint of the fleet gets the not-found error: state stays where it
was created. Only ``store`` ≠ false responses are kept; a chained turn's input tokens include
the previous turns' input and output (``previous_response_id``) or every conversation item.

Timing (seconds on the loop clock, absolute due times; ``t0`` = admission granted, plus any
injected first-byte delay): stream events up to ``content_part.added`` at t0, delta i at
t0 + TTFT(prompt tokens) + ITL_1 + … + ITL_i, then the closing events; a non-stream body at
the last delta's due time. A Realtime turn runs the same schedule from its ``response.create``.

Errors: authentication, ``api-version``, unknown deployment and admission rejections in the
flavour's shape, rendered by harness.mocks.azure_openai (Azure ``{"error": {"code", "message"}}``,
OpenAI ``{"error": {"message", "type", "param", "code"}}``, 429s with ``retry-after`` and
``retry-after-ms``); request errors of these APIs (bad fields, unknown ids) in OpenAI's shape on
both, as Azure's Responses API answers them. On a WebSocket, a refused turn is an ``error`` event.

Faults (``admission.plan``), as in harness.mocks.azure_openai: ``reset_before_response`` aborts
the connection before any byte; ``first_byte_delay_s`` holds the headers (or a Realtime turn's
first event) back; ``disconnect_after_chunks = k`` sends k stream events (numbered from 0 as
written, prelude included) and aborts; ``malformed_at_chunk = i`` replaces event i by truncated
JSON. An index past the end applies to the last event, so a drawn fault is always visible. A
non-stream body counts as one chunk: a disconnect sends half of it and aborts, a malformed
reply is its first half.

Ledger: one row per HTTP request that reached a handler and one per Realtime ``response.create``
turn (a refused WebSocket handshake is one row too), written when it ends. api ``responses``,
``conversations`` or ``realtime``; stateful per harness.compliance.classify.request_class
(Responses are stateful unless ``store`` is false and nothing is chained); request_id =
``x-ms-client-request-id`` (else ``X-Client-Request-Id``), for Realtime turns ``<id>/<turn>``;
response_id = the ``resp_`` / ``conv_`` id. Status is the HTTP status sent (200 once stream
headers or a turn's first event went out, also if cut short); 499 when nothing was sent: a
reset fault, or a shutdown that cancelled the request before its reply.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import orjson
from aiohttp import WSMsgType, web

from harness.mocks.azure_openai import (
    ERROR_CT,
    JSON_CT,
    MSG_404,
    MSG_NO_API_VERSION,
    SSE_CT,
    STATUS_NOT_SENT,
    abort_connection,
    auth_error_response,
    azure_error_response,
    client_request_id_of,
    is_authorized,
    openai_error_response,
    rejection_response,
    response_headers,
)
from harness.mocks.call import Call
from harness.mocks.runtime import EndpointRuntime, FaultPlan, Rejection, arrival_time
from harness.protocols import realtime as rt, responses as wire
from harness.protocols.openai_flavor import azure_rate_limit_message, openai_rate_limit_message
from harness.protocols.tokens import approx_tokens, output_text, output_token

Flavor = Literal["azure", "openai"]
API_RESPONSES: Final = "responses"
API_CONVERSATIONS: Final = "conversations"
API_REALTIME: Final = "realtime"
_MAX_PAGE: Final = 100
MALFORMED_EVENT: Final = b'event: response.output_text.delta\ndata: {"type":"response.output_text.del\n\n'
"""What a malformed-chunk fault sends instead of a Responses stream event: truncated JSON."""
MALFORMED_FRAME: Final = b'{"type":"response.output_text.del'
"""What a malformed-chunk fault sends instead of a Realtime event."""

MSG_SERVER_ERROR: Final = "The server had an error while processing your request. Sorry about that!"
MSG_OVERLOADED: Final = "The server is overloaded or not ready yet."


class _Cut(Exception):
    """A disconnect fault: stop sending and abort the connection."""


def is_stateful(store: bool, previous_response_id: str | None, conversation: str | None) -> bool:
    """harness.compliance.classify.request_class for a Responses create, inlined so the mock
    does not import the compliance package (pandas): chaining or storing keeps state."""
    return bool(previous_response_id or conversation) or store


# --------------------------------------------------------------------------- records


class _StoredResponse:
    """A stored response: its object, its input items, and the context a follow-up inherits."""

    __slots__ = ("context_tokens", "input_items", "obj")

    def __init__(self, obj: dict[str, Any], input_items: list[dict[str, Any]], context_tokens: int) -> None:
        self.obj = obj
        self.input_items = input_items
        self.context_tokens = context_tokens  # this turn's input (without instructions) + output


class _Conversation:
    """A conversation's metadata and items, and their approximate tokens (a turn's context)."""

    __slots__ = ("created_at", "id", "items", "metadata", "tokens")

    def __init__(self, conv_id: str, created_at: int, metadata: dict[str, Any]) -> None:
        self.id = conv_id
        self.created_at = created_at
        self.metadata = metadata
        self.items: list[dict[str, Any]] = []
        self.tokens = 0

    def add(self, items: list[dict[str, Any]]) -> None:
        self.items.extend(items)
        self.tokens += sum(wire.item_tokens(item) for item in items)

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


class _Session:
    """One Realtime connection: its session object, conversation items and active turn."""

    __slots__ = (
        "active",
        "bytes_in",
        "cancel_requested",
        "crid",
        "deployment",
        "encoder",
        "id",
        "items",
        "obj",
        "tokens",
        "turns",
    )

    def __init__(
        self, session_id: str, deployment: str, crid: str | None, encoder: rt.ServerEventEncoder
    ) -> None:
        self.id = session_id
        self.deployment = deployment
        self.crid = crid
        self.encoder = encoder
        self.obj: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.tokens = 0  # approximate tokens of every item: the next turn's input
        self.turns = 0
        self.bytes_in = 0  # client bytes since the last turn began
        self.active: asyncio.Task[None] | None = None
        self.cancel_requested = False


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _page(items: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """A cursor page over ``items`` (oldest first) by the ``order``, ``after`` and ``limit`` query."""
    ordered = items if query.get("order") == "asc" else items[::-1]  # the APIs default to desc
    after = query.get("after")
    if after:
        for index, item in enumerate(ordered):
            if item.get("id") == after:
                ordered = ordered[index + 1 :]
                break
    try:
        limit = max(1, min(_MAX_PAGE, int(query.get("limit", 20))))
    except ValueError:
        limit = 20
    return wire.list_page(ordered[:limit], has_more=len(ordered) > limit)


# --------------------------------------------------------------------------- the handlers


class _Stateful:
    """The handlers of one endpoint's stateful APIs; everything constant is decided here, once."""

    __slots__ = ("_flavor", "_ids", "_prefix", "_runtime")

    def __init__(self, runtime: EndpointRuntime, flavor: Flavor) -> None:
        self._runtime = runtime
        self._flavor = flavor
        # Ids must be unique across endpoints and processes (a follow-up to the wrong endpoint
        # must not find a namesake), not reproducible.
        self._prefix = secrets.token_hex(8)
        self._ids = itertools.count(1)

    def _new_id(self, kind: str) -> str:
        """``resp_``, ``msg_``, ``conv_``, ``item_``, ``sess_`` + 48 hex digits."""
        return f"{kind}_{self._prefix}{next(self._ids):032x}"

    def _done(self, call: Call, resp: web.Response) -> web.Response:
        """Ledger a whole-body reply (success or error) and return it."""
        call.status = resp.status
        body = resp.body
        call.bytes_out = len(body) if isinstance(body, bytes) else 0
        call.record(self._runtime)
        return resp

    def _ok(self, call: Call, obj: Any) -> web.Response:
        headers = response_headers(self._runtime, JSON_CT, call.crid, call.deployment)
        return self._done(call, web.Response(body=orjson.dumps(obj), headers=headers))

    def _request_error(
        self, call: Call, message: str, param: str | None = None, code: str | None = None, status: int = 400
    ) -> web.Response:
        """A request error of these APIs, in OpenAI's shape on both flavours."""
        resp = openai_error_response(
            self._runtime,
            status,
            message,
            type="invalid_request_error",
            code=code,
            param=param,
            client_request_id=call.crid,
            deployment=call.deployment,
        )
        resp.headers["Content-Type"] = ERROR_CT if self._flavor == "azure" else JSON_CT
        return self._done(call, resp)

    def _not_found(self, call: Call, what: str, key: str, param: str | None = None) -> web.Response:
        code = None if param is None else f"{param}_not_found"
        return self._request_error(call, f"{what} with id '{key}' not found.", param, code, 404)

    def _access_error(self, request: web.Request, call: Call, need_version: bool) -> web.Response | None:
        """Authentication and api-version, in the cloud's shape (None when both are fine)."""
        runtime = self._runtime
        if not is_authorized(request, self._flavor):
            return self._done(call, auth_error_response(runtime, self._flavor, call.crid))
        if need_version and not request.query.get("api-version"):
            resp = azure_error_response(
                runtime, 400, "MissingApiVersionParameter", MSG_NO_API_VERSION, client_request_id=call.crid
            )
            return self._done(call, resp)
        return None

    def _unknown_model(self, call: Call, model: str) -> web.Response:
        runtime = self._runtime
        if self._flavor == "azure":
            resp = azure_error_response(
                runtime, 404, "DeploymentNotFound", MSG_404, client_request_id=call.crid
            )
        else:
            resp = openai_error_response(
                runtime,
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                type="invalid_request_error",
                code="model_not_found",
                client_request_id=call.crid,
            )
        return self._done(call, resp)

    async def _read_json(self, request: web.Request, call: Call) -> Any:
        raw = await request.read()
        call.bytes_in = len(raw)
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    def _call(self, request: web.Request, api: str) -> Call:
        return Call(client_request_id_of(request), api, time.time_ns(), stateful=True, status=200)

    # ------------------------------------------------------------------ Responses: create

    async def create_response(self, request: web.Request, need_version: bool) -> web.StreamResponse:
        call = self._call(request, API_RESPONSES)
        body = await self._read_json(request, call)
        access = self._access_error(request, call, need_version)
        if access is not None:
            return access
        if not isinstance(body, dict):
            return self._request_error(call, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._request_error(call, "Missing required parameter: 'model'.", "model")
        runtime = self._runtime
        state = runtime.state
        if model not in runtime.deployments:
            return self._unknown_model(call, model)
        call.deployment = model
        store = body.get("store") is not False  # the server default is true
        previous = body.get("previous_response_id")
        conversation = body.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if previous is not None and not isinstance(previous, str):
            return self._request_error(
                call, "'previous_response_id' must be a string.", "previous_response_id"
            )
        if conversation is not None and not isinstance(conversation, str):
            return self._request_error(
                call, "'conversation' must be a string or an object with an id.", "conversation"
            )
        call.stateful = is_stateful(store, previous, conversation)
        call.stream = stream = body.get("stream") is True
        if previous and conversation:
            return self._request_error(
                call,
                "Mutually exclusive parameters: 'previous_response_id' and 'conversation'.",
                "conversation",
            )
        context_tokens = 0
        conv: _Conversation | None = None
        if previous:
            prior = state.get("response", previous)
            if prior is None:
                return self._request_error(
                    call,
                    f"Previous response with id '{previous}' not found.",
                    "previous_response_id",
                    "previous_response_not_found",
                )
            context_tokens = prior.context_tokens
        elif conversation:
            conv = state.get("conversation", conversation)
            if conv is None:
                return self._not_found(call, "Conversation", conversation, "conversation")
            context_tokens = conv.tokens
        raw_input = body.get("input")
        if not raw_input:
            if not previous and not conversation:
                return self._request_error(call, "Missing required parameter: 'input'.", "input")
        elif not isinstance(raw_input, (str, list)):
            return self._request_error(call, "'input' must be a string or an array of input items.", "input")
        instructions = body.get("instructions")
        instruction_tokens = approx_tokens(instructions) if isinstance(instructions, str) else 0
        new_tokens = wire.input_tokens_of(raw_input)
        call.tokens_in = prompt_tokens = context_tokens + new_tokens + instruction_tokens
        max_out = _positive_int(body.get("max_output_tokens"))
        latency = runtime.latency
        n_out = latency.output_tokens(max_out)
        fixed = runtime.endpoint.latency.output_tokens
        incomplete = max_out is not None and fixed is not None and fixed > max_out  # the cap cut the reply
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}

        call.status = STATUS_NOT_SENT  # until a reply goes out
        try:
            admission = await runtime.admit(model, prompt_tokens + (max_out or n_out))
        except asyncio.CancelledError:  # server shutdown while queued for a slot
            call.record(self._runtime)
            raise
        try:
            rejection = admission.rejection
            if rejection is not None:
                resp = rejection_response(runtime, self._flavor, rejection, model, call.crid)
                return self._done(call, resp)
            plan = admission.plan
            if plan.reset_before_response:
                abort_connection(request)
                call.record(self._runtime)
                return web.Response(status=STATUS_NOT_SENT)  # never written: the connection is gone
            start = arrival_time(request) + admission.queued_s + plan.first_byte_delay_s
            call.response_id = response_id = self._new_id("resp")
            input_items = wire.input_message_items(raw_input, functools.partial(self._new_id, "msg"))
            turn = _Turn(
                store=store,
                conversation=conv,
                input_items=input_items,
                context_tokens=prompt_tokens - instruction_tokens,
                base=functools.partial(
                    wire.response_object,
                    response_id,
                    int(time.time()),
                    model,
                    store=store,
                    previous_response_id=previous or None,
                    conversation_id=conversation or None,
                    instructions=instructions,
                    max_output_tokens=max_out,
                    metadata=metadata,
                ),
                message_id=self._new_id("msg"),
                incomplete=incomplete,
                n_out=n_out,
            )
            due = start + latency.ttft_s(prompt_tokens)
            if stream:
                return await self._stream_response(request, call, plan, turn, start, due)
            try:
                await runtime.sleep_until(due + latency.decode_s(n_out))
            except asyncio.CancelledError:  # server shutdown before the reply: status stays 499
                call.record(self._runtime)
                raise
            obj = self._finish(turn, output_text(n_out), prompt_tokens)
            return await self._reply_body(request, call, orjson.dumps(obj), n_out, plan)
        finally:
            admission.release()

    def _finish(self, turn: _Turn, text: str, prompt_tokens: int) -> dict[str, Any]:
        """The completed response object; stored, and appended to its conversation."""
        item = wire.output_message(turn.message_id, text)
        obj = turn.base(
            status="incomplete" if turn.incomplete else "completed",
            output=[item],
            usage=wire.usage_object(prompt_tokens, turn.n_out),
            incomplete_reason="max_output_tokens" if turn.incomplete else None,
        )
        if turn.store:
            stored = _StoredResponse(obj, turn.input_items, turn.context_tokens + turn.n_out)
            self._runtime.state.put("response", obj["id"], stored)
        if turn.conversation is not None:
            turn.conversation.add([*turn.input_items, item])
        return obj

    async def _reply_body(
        self, request: web.Request, call: Call, out: bytes, n_out: int, plan: FaultPlan
    ) -> web.StreamResponse:
        """A non-stream body; a fault sends half of it (malformed: as the whole body; disconnect:
        with the full Content-Length, then aborts)."""
        headers = response_headers(self._runtime, JSON_CT, call.crid, call.deployment)
        call.status = 200
        if plan.disconnect_after_chunks is None and plan.malformed_at_chunk is None:
            call.bytes_out = len(out)
            call.tokens_out = n_out
            call.record(self._runtime)
            return web.Response(body=out, headers=headers)
        half = out[: len(out) // 2]
        call.bytes_out = len(half)
        if plan.disconnect_after_chunks is None:
            call.record(self._runtime)
            return web.Response(body=half, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(out)
        try:
            await resp.prepare(request)
            await resp.write(half)
        except ConnectionResetError:
            pass
        finally:
            abort_connection(request)
            call.record(self._runtime)
        return resp

    async def _stream_response(
        self, request: web.Request, call: Call, plan: FaultPlan, turn: _Turn, start: float, due: float
    ) -> web.StreamResponse:
        """Send the named-event stream, each event its own write (so its own flush), on absolute
        due times. Events are numbered from 0 as written; a fault index past the end applies to
        the last event (``response.completed``), so a drawn fault is always visible."""
        runtime = self._runtime
        sleep_until = runtime.sleep_until
        itl_s = runtime.latency.itl_s
        encoder = wire.ResponseEventEncoder(turn.message_id)
        n_out = turn.n_out
        last = 4 + n_out + 3  # the index of response.completed
        cut = plan.disconnect_after_chunks
        bad = plan.malformed_at_chunk
        if cut is not None:
            cut = min(cut, last)
        if bad is not None:
            bad = min(bad, last)
        resp = web.StreamResponse(
            status=200, headers=response_headers(runtime, SSE_CT, call.crid, call.deployment)
        )
        write = resp.write
        sent = 0

        async def emit(chunk: bytes) -> None:
            nonlocal sent
            if sent == cut:
                raise _Cut
            if sent == bad:
                chunk = MALFORMED_EVENT
            await write(chunk)
            call.bytes_out += len(chunk)
            sent += 1

        try:
            if plan.first_byte_delay_s > 0:
                await sleep_until(start)
            await resp.prepare(request)
            call.status = 200
            in_progress = turn.base(status="in_progress", output=[], usage=None)
            await emit(encoder.created(in_progress))
            await emit(encoder.in_progress(in_progress))
            await emit(encoder.item_added())
            await emit(encoder.part_added())
            text_delta = encoder.text_delta
            for i in range(n_out):
                if i:
                    due += itl_s()
                await sleep_until(due)
                await emit(text_delta(output_token(i)))
                call.tokens_out += 1
            text = output_text(n_out)
            obj = self._finish(turn, text, call.tokens_in)
            await emit(encoder.text_done(text))
            await emit(encoder.part_done(text))
            await emit(encoder.item_done(obj["output"][0]))
            await emit(encoder.completed(obj))
            await resp.write_eof()
        except _Cut:
            abort_connection(request)
        except ConnectionResetError:
            pass  # the client went away mid-stream: a fact for the ledger, not a server error
        finally:
            call.record(self._runtime)  # 499 if a shutdown cancelled it before the headers went out
        return resp

    # ------------------------------------------------------------------ Responses: stored

    async def _stored_call(
        self, request: web.Request, need_version: bool
    ) -> tuple[Call, _StoredResponse | None, web.Response | None]:
        call = self._call(request, API_RESPONSES)
        await self._read_json(request, call)
        call.response_id = key = request.match_info["id"]
        access = self._access_error(request, call, need_version)
        if access is not None:
            return call, None, access
        stored = self._runtime.state.get("response", key)
        if stored is None:
            return call, None, self._not_found(call, "Response", key)
        call.deployment = stored.obj["model"]
        return call, stored, None

    async def retrieve_response(self, request: web.Request, need_version: bool) -> web.Response:
        call, stored, error = await self._stored_call(request, need_version)
        if error is not None:
            return error
        assert stored is not None
        return self._ok(call, stored.obj)

    async def delete_response(self, request: web.Request, need_version: bool) -> web.Response:
        call, _, error = await self._stored_call(request, need_version)
        if error is not None:
            return error
        key = request.match_info["id"]
        self._runtime.state.delete("response", key)
        return self._ok(call, {"id": key, "object": "response", "deleted": True})

    async def input_items(self, request: web.Request, need_version: bool) -> web.Response:
        call, stored, error = await self._stored_call(request, need_version)
        if error is not None:
            return error
        assert stored is not None
        return self._ok(call, _page(stored.input_items, request.query))

    # ------------------------------------------------------------------ Conversations

    async def _conversation_call(
        self, request: web.Request, need_version: bool, *, lookup: bool = True
    ) -> tuple[Call, Any, _Conversation | None, web.Response | None]:
        call = self._call(request, API_CONVERSATIONS)
        body = await self._read_json(request, call)
        access = self._access_error(request, call, need_version)
        if access is not None:
            return call, body, None, access
        if not isinstance(body, dict):
            return call, body, None, self._request_error(call, "The request body must be a JSON object.")
        if not lookup:
            return call, body, None, None
        call.response_id = key = request.match_info["id"]
        conv = self._runtime.state.get("conversation", key)
        if conv is None:
            return call, body, None, self._not_found(call, "Conversation", key)
        return call, body, conv, None

    def _new_items(self, raw: Any) -> list[dict[str, Any]] | None:
        if raw is None:
            return []
        if not isinstance(raw, list):
            return None
        return wire.input_message_items(raw, functools.partial(self._new_id, "msg"))

    async def create_conversation(self, request: web.Request, need_version: bool) -> web.Response:
        call, body, _, error = await self._conversation_call(request, need_version, lookup=False)
        if error is not None:
            return error
        metadata = body.get("metadata")
        items = self._new_items(body.get("items"))
        if items is None:
            return self._request_error(call, "'items' must be an array of items.", "items")
        call.response_id = conv_id = self._new_id("conv")
        conv = _Conversation(conv_id, int(time.time()), metadata if isinstance(metadata, dict) else {})
        conv.add(items)
        call.tokens_in = conv.tokens
        self._runtime.state.put("conversation", conv_id, conv)
        return self._ok(call, conv.object())

    async def conversation(self, request: web.Request, need_version: bool) -> web.Response:
        """GET retrieves, POST updates the metadata, DELETE deletes."""
        call, body, conv, error = await self._conversation_call(request, need_version)
        if error is not None:
            return error
        assert conv is not None
        if request.method == "DELETE":
            self._runtime.state.delete("conversation", conv.id)
            out = {"id": conv.id, "object": "conversation.deleted", "deleted": True}
            return self._ok(call, out)
        if request.method == "POST":
            metadata = body.get("metadata")
            if not isinstance(metadata, dict):
                return self._request_error(call, "Missing required parameter: 'metadata'.", "metadata")
            conv.metadata = metadata
        return self._ok(call, conv.object())

    async def conversation_items(self, request: web.Request, need_version: bool) -> web.Response:
        """POST adds items (the reply lists the added ones), GET lists them."""
        call, body, conv, error = await self._conversation_call(request, need_version)
        if error is not None:
            return error
        assert conv is not None
        if request.method == "POST":
            items = self._new_items(body.get("items"))
            if not items:
                return self._request_error(call, "'items' must be a non-empty array of items.", "items")
            conv.add(items)
            call.tokens_in = sum(wire.item_tokens(item) for item in items)
            return self._ok(call, wire.list_page(items))
        return self._ok(call, _page(conv.items, request.query))

    async def conversation_item(self, request: web.Request, need_version: bool) -> web.Response:
        """GET retrieves one item; DELETE removes it and returns the conversation."""
        call, _, conv, error = await self._conversation_call(request, need_version)
        if error is not None:
            return error
        assert conv is not None
        item_id = request.match_info["item_id"]
        index = next((i for i, item in enumerate(conv.items) if item.get("id") == item_id), None)
        if index is None:
            return self._not_found(call, "Item", item_id)
        item = conv.items[index]
        if request.method == "DELETE":
            del conv.items[index]
            conv.tokens -= wire.item_tokens(item)
            return self._ok(call, conv.object())
        return self._ok(call, item)

    # ------------------------------------------------------------------ Realtime

    async def realtime(self, request: web.Request, classic: bool) -> web.StreamResponse:
        """The WebSocket handshake, then the session's event loop until the client closes."""
        call = self._call(request, API_REALTIME)
        call.stream = True
        query = request.query
        access = self._access_error(request, call, classic)
        if access is not None:
            return access
        deployment = query.get("deployment") if classic else query.get("model")
        if not deployment:
            param = "deployment" if classic else "model"
            return self._request_error(call, f"Missing required query parameter: '{param}'.", param)
        call.deployment = deployment
        runtime = self._runtime
        if deployment not in runtime.deployments:
            return self._unknown_model(call, deployment)
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        ws_ready = ws.can_prepare(request)
        if not ws_ready.ok:
            return self._request_error(call, "Expected a WebSocket upgrade request.", None, None, 426)
        ws.headers.extend(response_headers(runtime, JSON_CT, call.crid, deployment)[1:])
        await ws.prepare(request)

        session_id = self._new_id("sess")
        session = _Session(session_id, deployment, call.crid, rt.ServerEventEncoder(session_id, beta=beta))
        session.obj = self._session_object(session_id, deployment, beta)
        runtime.state.put("realtime_session", session_id, session)
        send = functools.partial(self._ws_send, ws)
        try:
            await send(session.encoder.session("session.created", session.obj))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.BINARY:
                        await send(
                            session.encoder.error(
                                "invalid_request_error", "binary_frame", "Send text frames."
                            )
                        )
                        continue
                    break
                session.bytes_in += len(msg.data)
                await self._client_event(ws, request, session, msg.data)
        except ConnectionResetError:
            pass
        finally:
            task = session.active
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            runtime.state.delete("realtime_session", session_id)
        return ws

    @staticmethod
    async def _ws_send(ws: web.WebSocketResponse, frame: bytes) -> int:
        await ws.send_frame(frame, WSMsgType.TEXT)
        return len(frame)

    def _session_object(self, session_id: str, deployment: str, beta: bool) -> dict[str, Any]:
        if beta:
            return {
                "id": session_id,
                "object": "realtime.session",
                "model": deployment,
                "modalities": ["text", "audio"],
                "instructions": "",
                "voice": "alloy",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "turn_detection": None,
                "tools": [],
                "tool_choice": "auto",
                "temperature": 0.8,
                "max_response_output_tokens": "inf",
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": deployment,
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0},
            },
            "expires_at": int(time.time()) + 1800,
        }

    async def _client_event(
        self, ws: web.WebSocketResponse, request: web.Request, session: _Session, data: str
    ) -> None:
        encoder = session.encoder
        send = functools.partial(self._ws_send, ws)
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            await send(
                encoder.error("invalid_request_error", "invalid_json", "The event is not a JSON object.")
            )
            return
        kind = event.get("type")
        event_id = event.get("event_id")
        if kind == "session.update":
            update = event.get("session")
            if not isinstance(update, dict):
                await send(
                    encoder.error(
                        "invalid_request_error", "missing_session", "'session' is required.", event_id
                    )
                )
                return
            session.obj.update({k: v for k, v in update.items() if k not in ("id", "object", "model")})
            await send(encoder.session("session.updated", session.obj))
        elif kind == "conversation.item.create":
            raw = event.get("item")
            if not isinstance(raw, dict):
                await send(
                    encoder.error("invalid_request_error", "missing_item", "'item' is required.", event_id)
                )
                return
            item = dict(raw)
            item.setdefault("id", self._new_id("item"))
            item.setdefault("object", "realtime.item")
            item.setdefault("status", "completed")
            previous = session.items[-1]["id"] if session.items else None
            session.items.append(item)
            session.tokens += rt.item_text_tokens(item)
            for frame in encoder.item_created(item, previous):
                await send(frame)
        elif kind == "response.create":
            if session.active is not None and not session.active.done():
                await send(
                    encoder.error(
                        "invalid_request_error",
                        "conversation_already_has_active_response",
                        "Conversation already has an active response in progress.",
                        event_id,
                    )
                )
                return
            options = event.get("response")
            if not isinstance(options, dict):
                options = {}
            session.turns += 1
            bytes_in, session.bytes_in = session.bytes_in, 0
            session.cancel_requested = False
            session.active = asyncio.ensure_future(self._turn(ws, request, session, options, bytes_in))
        elif kind == "response.cancel":
            task = session.active
            if task is not None and not task.done():
                session.cancel_requested = True
                task.cancel()
        else:
            await send(
                encoder.error(
                    "invalid_request_error", "unknown_event", f"Unsupported event type: {kind!r}.", event_id
                )
            )

    def _realtime_rejection(self, encoder: rt.ServerEventEncoder, rejection: Rejection, model: str) -> bytes:
        """An admission rejection as a Realtime ``error`` event (the socket stays open)."""
        if rejection.status != 429:
            message = MSG_OVERLOADED if rejection.status == 503 else MSG_SERVER_ERROR
            return encoder.error("server_error", None, message)
        retry = rejection.retry_after_s or 1.0
        if self._flavor == "azure":
            message = azure_rate_limit_message(retry)
        else:
            kind: Literal["requests", "tokens"] = (
                "tokens" if rejection.reason == "tokens_per_min" else "requests"
            )
            message = openai_rate_limit_message(model, kind, retry)
        return encoder.error("rate_limit_error", "rate_limit_exceeded", message)

    def _max_tokens(self, session: _Session, options: dict[str, Any]) -> int | None:
        for source, key in (
            (options, "max_output_tokens"),
            (options, "max_response_output_tokens"),
            (session.obj, "max_output_tokens"),
            (session.obj, "max_response_output_tokens"),
        ):
            value = _positive_int(source.get(key))
            if value is not None:
                return value
        return None

    async def _turn(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        session: _Session,
        options: dict[str, Any],
        bytes_in: int,
    ) -> None:
        """One response.create: admission, the response events on due times, one ledger row.

        The turn's events are numbered from 0 as sent; a fault index past the end applies to the
        last one (``response.done``), so a drawn fault is always visible."""
        runtime = self._runtime
        call = Call(None, API_REALTIME, time.time_ns(), stateful=True, status=200)
        if session.crid:
            call.crid = f"{session.crid}/{session.turns}"
        call.deployment = session.deployment
        call.stream = True
        call.status = STATUS_NOT_SENT  # until the turn's first event goes out
        call.bytes_in = bytes_in
        encoder = session.encoder
        instructions = session.obj.get("instructions")
        call.tokens_in = prompt_tokens = session.tokens + (
            approx_tokens(instructions) if isinstance(instructions, str) else 0
        )
        max_out = self._max_tokens(session, options)
        latency = runtime.latency
        n_out = latency.output_tokens(max_out)
        fixed = runtime.endpoint.latency.output_tokens
        incomplete = max_out is not None and fixed is not None and fixed > max_out
        ga = not encoder.beta
        cut: int | None = None
        bad: int | None = None
        sent = 0

        async def emit(frame: bytes) -> None:
            nonlocal sent
            if sent == cut:
                raise _Cut
            if sent == bad:
                frame = MALFORMED_FRAME
            await ws.send_frame(frame, WSMsgType.TEXT)
            call.bytes_out += len(frame)
            call.status = 200
            sent += 1

        try:
            admission = await runtime.admit(session.deployment, prompt_tokens + (max_out or n_out))
        except asyncio.CancelledError:  # cancelled or shut down while queued for a slot
            call.record(self._runtime)
            raise
        response: dict[str, Any] = {}
        try:
            rejection = admission.rejection
            if rejection is not None:
                call.status = rejection.status
                frame = self._realtime_rejection(encoder, rejection, session.deployment)
                await ws.send_frame(frame, WSMsgType.TEXT)
                call.bytes_out += len(frame)
                return
            plan = admission.plan
            if plan.reset_before_response:
                abort_connection(request)
                return
            last = 3 + n_out + 3 + 2 * ga  # the index of response.done
            cut = plan.disconnect_after_chunks
            bad = plan.malformed_at_chunk
            if cut is not None:
                cut = min(cut, last)
            if bad is not None:
                bad = min(bad, last)
            start = arrival_time(request) + admission.queued_s + plan.first_byte_delay_s
            if plan.first_byte_delay_s > 0:
                await runtime.sleep_until(start)
            call.response_id = response_id = self._new_id("resp")
            item_id = self._new_id("item")
            response = {
                "object": "realtime.response",
                "id": response_id,
                "status": "in_progress",
                "status_details": None,
                "output": [],
                "conversation_id": "conv_" + session.id.removeprefix("sess_"),
                ("output_modalities" if ga else "modalities"): ["text"],
                "max_output_tokens": max_out if max_out is not None else "inf",
                "usage": None,
                "metadata": None,
            }
            item: dict[str, Any] = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            previous = session.items[-1]["id"] if session.items else None
            await emit(encoder.response("response.created", response))
            await emit(encoder.output_item("response.output_item.added", response_id, item))
            if ga:
                await emit(
                    encoder.event("conversation.item.added", {"previous_item_id": previous, "item": item})
                )
            await emit(encoder.part("response.content_part.added", response_id, item_id, ""))
            encoder.begin_text(response_id, item_id)
            due = start + latency.ttft_s(prompt_tokens)
            itl_s = latency.itl_s
            text_delta = encoder.text_delta
            for i in range(n_out):
                if i:
                    due += itl_s()
                await runtime.sleep_until(due)
                await emit(text_delta(output_token(i)))
                call.tokens_out += 1
            text = output_text(n_out)
            await emit(encoder.text_done(response_id, item_id, text))
            await emit(encoder.part("response.content_part.done", response_id, item_id, text))
            item["status"] = "incomplete" if incomplete else "completed"
            item["content"] = [{"type": encoder.part_type, "text": text}]
            await emit(encoder.output_item("response.output_item.done", response_id, item))
            if ga:
                await emit(
                    encoder.event("conversation.item.done", {"previous_item_id": previous, "item": item})
                )
            session.items.append(item)
            session.tokens += n_out
            response["status"] = "incomplete" if incomplete else "completed"
            if incomplete:
                response["status_details"] = {"type": "incomplete", "reason": "max_output_tokens"}
            response["output"] = [item]
            response["usage"] = rt.realtime_usage(prompt_tokens, n_out)
            await emit(encoder.response("response.done", response))
        except _Cut:
            abort_connection(request)
        except ConnectionResetError:
            pass  # the client went away mid-turn
        except asyncio.CancelledError:
            if not session.cancel_requested or not response:
                raise
            # response.cancel: the turn ends with status cancelled, the socket stays open
            response["status"] = "cancelled"
            response["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
            response["usage"] = rt.realtime_usage(prompt_tokens, call.tokens_out)
            try:
                frame = encoder.response("response.done", response)
                await ws.send_frame(frame, WSMsgType.TEXT)
                call.bytes_out += len(frame)
            except ConnectionResetError:
                pass
        finally:
            admission.release()
            call.record(self._runtime)


class _Turn:
    """What a Responses create decided before its output is generated."""

    __slots__ = (
        "base",
        "context_tokens",
        "conversation",
        "incomplete",
        "input_items",
        "message_id",
        "n_out",
        "store",
    )

    def __init__(
        self,
        *,
        store: bool,
        conversation: _Conversation | None,
        input_items: list[dict[str, Any]],
        context_tokens: int,
        base: Callable[..., dict[str, Any]],
        message_id: str,
        incomplete: bool,
        n_out: int,
    ) -> None:
        self.store = store
        self.conversation = conversation
        self.input_items = input_items
        self.context_tokens = context_tokens  # what a follow-up inherits, before this turn's output
        self.base = base  # response_object with everything but status, output and usage bound
        self.message_id = message_id
        self.incomplete = incomplete
        self.n_out = n_out


# --------------------------------------------------------------------------- routes

Handler = Callable[[web.Request, bool], Awaitable[web.StreamResponse]]


def add_stateful_routes(
    app: web.Application, runtime: EndpointRuntime, *, flavor: Literal["azure", "openai"]
) -> None:
    """Add the Responses, Conversations and Realtime routes for ``flavor``'s URL forms."""
    if flavor not in ("azure", "openai"):
        raise ValueError(f"flavor must be 'azure' or 'openai', not {flavor!r}")
    api = _Stateful(runtime, flavor)
    prefixes = [("/openai", True), ("/openai/v1", False)] if flavor == "azure" else [("/v1", False)]
    router = app.router
    for prefix, need_version in prefixes:

        def bind(handler: Handler, need: bool = need_version) -> Callable[[web.Request], Awaitable[Any]]:
            async def route(request: web.Request) -> web.StreamResponse:
                return await handler(request, need)

            return route

        router.add_post(f"{prefix}/responses", bind(api.create_response))
        router.add_get(f"{prefix}/responses/{{id}}", bind(api.retrieve_response))
        router.add_delete(f"{prefix}/responses/{{id}}", bind(api.delete_response))
        router.add_get(f"{prefix}/responses/{{id}}/input_items", bind(api.input_items))
        router.add_post(f"{prefix}/conversations", bind(api.create_conversation))
        conversation = bind(api.conversation)
        for method in ("GET", "POST", "DELETE"):
            router.add_route(method, f"{prefix}/conversations/{{id}}", conversation)
        items = bind(api.conversation_items)
        router.add_route("GET", f"{prefix}/conversations/{{id}}/items", items)
        router.add_route("POST", f"{prefix}/conversations/{{id}}/items", items)
        item = bind(api.conversation_item)
        router.add_route("GET", f"{prefix}/conversations/{{id}}/items/{{item_id}}", item)
        router.add_route("DELETE", f"{prefix}/conversations/{{id}}/items/{{item_id}}", item)
        # Azure classic realtime takes api-version and deployment; the v1 forms take ?model=.
        router.add_get(f"{prefix}/realtime", bind(api.realtime))
