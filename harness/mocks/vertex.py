"""A mock GCP Vertex AI Gemini endpoint that google-genai accepts unchanged (``../shared/protocols.md`` §6).

Routes (``{v}`` is ``v1`` or ``v1beta1``; google-genai uses ``v1beta1`` unless told)::

    POST /{v}/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent
    POST /{v}/projects/{p}/locations/{l}/publishers/google/models/{m}:streamGenerateContent[?alt=sse]
    POST /{v}/publishers/google/models/{m}:generateContent | :streamGenerateContent      (express mode)
    POST /{v}/projects/{p}/locations/{l}/endpoints/openapi/chat/completions    (OpenAI-compatible, §6.7)

Auth: ``Authorization: Bearer …`` or ``x-goog-api-key`` on every route (neither → 401
UNAUTHENTICATED); credentials are not checked unless the endpoint's
``auth_verify`` asks (:mod:`harness.mocks.auth_verify`). ``{m}`` (for the OpenAI-compatible route the
body's ``model``, ``google/{m}``) must be one of the endpoint's deployments, else 404 NOT_FOUND;
the path's project and location are accepted as given. aiohttp cannot split a segment at
``:``, so one route takes ``/{v}/{tail}`` and the tail is parsed here.

Timing (seconds on the loop clock, absolute due times through ``runtime.sleep_until``;
``t_a`` = when admission returned, so time queued in ``admit`` adds to the client's TTFT;
``d`` = the fault plan's first-byte delay)::

    stream:     headers at t_a + d; event i (one token each) at t_a + d + TTFT + ITL_1 + … + ITL_i;
                only the last event carries finishReason and the full usageMetadata (§6.4)
    non-stream: the whole body at t_a + d + TTFT + ITL_1 + … + ITL_(n-1)

Without ``alt=sse`` a stream is one JSON array whose elements are written on the same schedule
(``[`` doc ``\\r\\n,`` doc … ``]``; the exact framing is [UNC]). The OpenAI-compatible route
answers in the openai flavour of :mod:`harness.protocols.azure_openai` (role chunk at TTFT,
a chunk per token, finish, [usage], ``[DONE]``), with Google's headers and error bodies.

Errors are google.rpc.Status JSON (§6.5): a 429 rejection is RESOURCE_EXHAUSTED, an outage 503
UNAVAILABLE, an injected status its canonical code (500 INTERNAL). Vertex sends no Retry-After;
rate-limit headers are whatever ``runtime.rate_limit_headers`` gives the hosting cloud (none for
gcp). ``X-Server-Timeout: s`` (google-genai sends it when ``HttpOptions.timeout`` is set) is
the request's deadline, counted from receipt: a non-stream reply not due by then is a 504
DEADLINE_EXCEEDED, and a native stream that runs past it ends with the error event
``data: {"error": {... "DEADLINE_EXCEEDED"}}``, on which google-genai raises mid-stream [UNC:
real Vertex's behaviour at the deadline].

Faults (``admission.plan``), as in the Azure mock: ``reset_before_response`` aborts the
connection without a reply; ``disconnect_after_chunks = k`` sends k stream chunks (numbered
from 0 in the order written) and aborts; ``malformed_at_chunk = k`` sends chunk k as truncated
JSON and carries on. An index past the end applies to the last chunk (the finishing event, or
``[DONE]``), so a drawn fault is always visible. A non-stream body counts as one chunk: a
disconnect sends half of it (with the full Content-Length) and aborts; a malformed reply is
its first half.

Ledger: exactly one row per request that reached the handler, written when it ends: api
``vertex.generate_content`` / ``vertex.stream_generate_content`` (``chat.completions`` on the
OpenAI-compatible route, ``vertex.unsupported`` for other paths), deployment = model id,
request_id = ``x-ms-client-request-id`` if sent. Status is the HTTP status sent: 200 once
headers are out, also when the stream was cut short; 499 when nothing was sent (a reset fault,
or a shutdown that cancelled the request before its reply). tokens_out counts the tokens
emitted, a corrupted chunk's included.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson
from aiohttp import web

from harness.mocks.auth_verify import verifier_for
from harness.mocks.azure_openai import prompt_tokens_of as chat_prompt_tokens_of
from harness.mocks.call import Call
from harness.mocks.runtime import EndpointRuntime, FaultPlan, abort_connection, arrival_time
from harness.protocols import azure_openai as chat_wire, vertex as wire
from harness.protocols.tokens import output_text, output_token
from harness.results.schema import LEDGER_STATUS_NOT_SENT

CLIENT_REQUEST_ID: Final = "x-ms-client-request-id"
API_UNSUPPORTED: Final = "vertex.unsupported"
API_CHAT: Final = "chat.completions"
GENERATE: Final = "generateContent"
STREAM: Final = "streamGenerateContent"
CHAT: Final = "chat/completions"  # the OpenAI-compatible route's "method"
STATUS_NOT_SENT: Final = LEDGER_STATUS_NOT_SENT  # the ledger's status when no response byte went out

_JSON_CT: Final = "application/json; charset=UTF-8"
_SSE_CT: Final = "text/event-stream"

MSG_401: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MSG_429: Final = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
MSG_503: Final = "The service is currently unavailable."
MSG_500: Final = "Internal error encountered."
MSG_504: Final = "Deadline expired before operation could complete."
MSG_NOT_FOUND_MODEL: Final = (
    "Publisher Model `{}` was not found or your project does not have access to it. Please ensure "
    "you are using a valid model version. For more information, see: "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
)
MSG_BAD_JSON: Final = "Invalid JSON payload received. Expected a JSON object."
MSG_NO_CONTENTS: Final = (
    "Unable to submit request because it must include at least one parts field, which describes "
    "the prompt input. Learn more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"
)
MSG_NO_MESSAGES: Final = "Invalid value at 'messages': must be a non-empty array."
MSG_NO_MODEL: Final = "Invalid value at 'model': must name a model, e.g. google/gemini-2.0-flash-001."
_MESSAGES: Final = {429: MSG_429, 500: MSG_500, 503: MSG_503, 504: MSG_504}


class Target(NamedTuple):
    """What a request path names."""

    resource: str  # the model's resource path as Google names it in errors (the endpoint's for chat)
    model: str  # "" on the OpenAI-compatible route: the body names it
    method: str  # generateContent, streamGenerateContent, chat/completions, ...


def parse_tail(tail: str) -> Target | None:
    """The model and method of a path tail after ``/{version}/``: project or express form, or
    the OpenAI-compatible ``projects/{p}/locations/{l}/endpoints/openapi/chat/completions``."""
    parts = tail.split("/")
    if (
        len(parts) == 8
        and parts[0] == "projects"
        and parts[2] == "locations"
        and parts[4:] == ["endpoints", "openapi", "chat", "completions"]
        and parts[1]
        and parts[3]
    ):
        return Target("/".join(parts[:6]), "", CHAT)
    resource, sep, method = tail.rpartition(":")
    if not sep or not method:
        return None
    parts = resource.split("/")
    if len(parts) == 4:  # publishers/google/models/{m}
        publisher = parts
    elif len(parts) == 8 and parts[0] == "projects" and parts[2] == "locations" and parts[1] and parts[3]:
        publisher = parts[4:]
    else:
        return None
    if publisher[:3] != ["publishers", "google", "models"] or not publisher[3]:
        return None
    return Target(resource, publisher[3], method)


def _status_message(status: int) -> str:
    message = _MESSAGES.get(status)
    if message is not None:
        return message
    return MSG_500 if status >= 500 else "Request contains an invalid argument."


def _create_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _server_timeout_s(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _corrupt_sse(chunk: bytes) -> bytes:
    """The first half of an SSE event, re-terminated: an event whose JSON is cut off."""
    return chunk[: len(chunk) // 2] + wire.SSE_SEPARATOR


def _corrupt_half(chunk: bytes) -> bytes:
    return chunk[: len(chunk) // 2]


def _corrupt_chat(_: bytes) -> bytes:
    return chat_wire.MALFORMED_CHUNK


class _Cut(Exception):
    """A disconnect fault: stop writing and abort the connection."""


class _Emitter:
    """Writes one stream's chunks, each its own write (so its own flush), applying the plan's
    disconnect and corruption at chunk indices clamped to ``last``."""

    __slots__ = ("_bad", "_call", "_corrupt", "_cut", "_write", "sent")

    def __init__(
        self,
        resp: web.StreamResponse,
        call: Call,
        plan: FaultPlan,
        last: int,
        corrupt: Callable[[bytes], bytes],
    ) -> None:
        self._write = resp.write
        self._call = call
        cut, bad = plan.disconnect_after_chunks, plan.malformed_at_chunk
        self._cut = None if cut is None else min(cut, last)
        self._bad = None if bad is None else min(bad, last)
        self._corrupt = corrupt
        self.sent = 0

    async def __call__(self, chunk: bytes) -> None:
        sent = self.sent
        if sent == self._cut:
            raise _Cut
        if sent == self._bad:
            chunk = self._corrupt(chunk)
        await self._write(chunk)
        self._call.bytes_out += len(chunk)
        self.sent = sent + 1


class _Vertex:
    """The request handler of one endpoint; everything constant is decided here, once."""

    __slots__ = ("_ids", "_prefix", "_runtime", "_vendor", "_verify")

    def __init__(self, runtime: EndpointRuntime) -> None:
        self._runtime = runtime
        self._vendor = runtime.vendor.build
        self._verify = verifier_for(runtime.endpoint)  # auth_verify (harness.mocks.auth_verify)
        # Response ids must be unique across endpoints and processes, not reproducible.
        self._prefix = secrets.token_urlsafe(9)
        self._ids = itertools.count(1)

    def _headers(self, content_type: str, call: Call) -> list[tuple[str, str]]:
        runtime = self._runtime
        headers = [("Content-Type", content_type)]
        headers += self._vendor(call.crid)  # the cloud's fingerprint, then the mock attestation
        deployment = call.deployment
        if deployment is not None and deployment in runtime.deployments:
            headers.extend(runtime.rate_limit_headers(deployment))
        return headers

    def _error(self, call: Call, status: int, message: str) -> web.Response:
        body = wire.error_body(status, message)
        call.status = status
        call.bytes_out = len(body)
        call.response_id = None
        return web.Response(status=status, body=body, headers=self._headers(_JSON_CT, call))

    # ------------------------------------------------------------------ the request

    async def route(self, request: web.Request) -> web.StreamResponse:
        call = Call(request.headers.get(CLIENT_REQUEST_ID), API_UNSUPPORTED, time.time_ns())
        try:
            return await self._serve(request, call)
        finally:
            call.record(self._runtime)

    async def _serve(self, request: web.Request, call: Call) -> web.StreamResponse:
        t_received = time.monotonic()
        headers = request.headers
        raw = await request.read()
        call.bytes_in = len(raw)

        target = parse_tail(request.match_info["tail"])
        if request.match_info["version"] not in wire.API_VERSIONS or target is None:
            return self._error(call, 404, f"The requested URL {request.path} was not found on this server.")
        method = target.method
        if method == GENERATE:
            call.api = wire.API_GENERATE
        elif method == STREAM:
            call.api = wire.API_STREAM
            call.stream = True
        elif method == CHAT:
            call.api = API_CHAT
        call.deployment = target.model or None
        if self._verify is not None and (failure := self._verify(request, raw)) is not None:
            return self._error(call, failure.status, failure.message)
        if "x-goog-api-key" not in headers and not headers.get("Authorization", "").startswith("Bearer "):
            return self._error(call, 401, MSG_401)
        if call.api == API_UNSUPPORTED:
            return self._error(call, 404, f"Method {method} is not supported by this mock.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._error(call, 400, MSG_BAD_JSON)
        if call.api == API_CHAT:
            return await self._chat(request, call, target, body)
        return await self._generate(request, call, target, body, t_received)

    async def _generate(
        self, request: web.Request, call: Call, target: Target, body: dict[str, Any], t_received: float
    ) -> web.StreamResponse:
        runtime = self._runtime
        model = target.model
        if model not in runtime.deployments:
            return self._error(call, 404, MSG_NOT_FOUND_MODEL.format(target.resource))
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self._error(call, 400, MSG_NO_CONTENTS)

        call.tokens_in = prompt_tokens = wire.prompt_tokens_of(body)
        config = body.get("generationConfig")
        max_tokens = _positive_int(config.get("maxOutputTokens")) if isinstance(config, dict) else None
        latency = runtime.latency
        n_out = latency.output_tokens(max_tokens)
        finish_reason = "MAX_TOKENS" if max_tokens is not None and n_out >= max_tokens else "STOP"
        timeout_s = _server_timeout_s(request.headers.get("X-Server-Timeout"))
        deadline = None if timeout_s is None else t_received + timeout_s
        est_tokens = prompt_tokens + (max_tokens if max_tokens is not None else n_out)

        admission = await runtime.admit(model, est_tokens)
        try:
            rejection = admission.rejection
            if rejection is not None:
                return self._error(call, rejection.status, _status_message(rejection.status))
            plan = admission.plan
            if plan.reset_before_response:
                abort_connection(request)
                return web.Response(status=STATUS_NOT_SENT)  # never written: the connection is gone
            start = arrival_time(request) + admission.queued_s + plan.first_byte_delay_s
            if plan.first_byte_delay_s > 0:
                await runtime.sleep_until(start)
            call.response_id = response_id = f"{self._prefix}{next(self._ids):x}"
            encoder = wire.StreamEncoder(response_id, model, _create_time())
            due = start + latency.ttft_s(prompt_tokens)
            if call.stream:
                sse = request.query.get("alt") == "sse"
                return await self._stream(
                    request, call, plan, encoder, due, deadline, n_out, finish_reason, sse
                )
            due += latency.decode_s(n_out)
            if deadline is not None and due > deadline:
                await runtime.sleep_until(deadline)
                return self._error(call, 504, MSG_504)
            out = encoder.last(output_text(n_out), finish_reason, prompt_tokens, n_out)
            return await self._reply(request, call, out, due, n_out, plan)
        finally:
            admission.release()

    async def _reply(
        self, request: web.Request, call: Call, out: bytes, due: float, n_out: int, plan: FaultPlan
    ) -> web.StreamResponse:
        """A non-stream body at ``due`` (a cancelled wait leaves the ledger status at 499)."""
        await self._runtime.sleep_until(due)
        headers = self._headers(_JSON_CT, call)
        call.status = 200
        call.tokens_out = n_out
        if plan.disconnect_after_chunks is None and plan.malformed_at_chunk is None:
            call.bytes_out = len(out)
            return web.Response(body=out, headers=headers)
        half = out[: len(out) // 2]
        call.bytes_out = len(half)
        if plan.disconnect_after_chunks is None:  # malformed: a complete response, invalid JSON
            return web.Response(body=half, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(out)
        try:
            await resp.prepare(request)
            await resp.write(half)
        except ConnectionResetError:
            pass
        abort_connection(request)
        return resp

    async def _stream(
        self,
        request: web.Request,
        call: Call,
        plan: FaultPlan,
        encoder: wire.StreamEncoder,
        due: float,
        deadline: float | None,
        n_out: int,
        finish_reason: str,
        sse: bool,
    ) -> web.StreamResponse:
        """Send the native stream: one event (or array element) per token, on absolute due times."""
        sleep_until = self._runtime.sleep_until
        itl_s = self._runtime.latency.itl_s
        resp = web.StreamResponse(status=200, headers=self._headers(_SSE_CT if sse else _JSON_CT, call))
        last = n_out - 1
        emit = _Emitter(resp, call, plan, last, _corrupt_sse if sse else _corrupt_half)
        try:
            await resp.prepare(request)
            call.status = 200
            for i in range(n_out):
                if i:
                    due += itl_s()
                if deadline is not None and due > deadline:
                    await sleep_until(deadline)
                    error = wire.error_body(504, MSG_504)
                    await emit(wire.sse_event(error) if sse else (b"\r\n," if i else b"[") + error + b"]")
                    await resp.write_eof()
                    return resp
                await sleep_until(due)
                text = output_token(i)
                if i == last:
                    doc = encoder.last(text, finish_reason, call.tokens_in, n_out)
                else:
                    doc = encoder.content(text)
                if sse:
                    await emit(wire.sse_event(doc))
                else:
                    await emit((b"\r\n," if i else b"[") + doc + (b"]" if i == last else b""))
                call.tokens_out += 1
            await resp.write_eof()
        except _Cut:
            abort_connection(request)
        except ConnectionResetError:
            pass  # the client went away mid-stream: a fact for the ledger, not a server error
        return resp

    # ------------------------------------------------------------------ OpenAI-compatible (§6.7)

    async def _chat(
        self, request: web.Request, call: Call, target: Target, body: dict[str, Any]
    ) -> web.StreamResponse:
        runtime = self._runtime
        model_field = body.get("model")
        if not isinstance(model_field, str) or not model_field:
            return self._error(call, 400, MSG_NO_MODEL)
        call.deployment = model = model_field.removeprefix("google/")
        if model not in runtime.deployments:
            resource = f"{target.resource.split('/endpoints/')[0]}/publishers/google/models/{model}"
            return self._error(call, 404, MSG_NOT_FOUND_MODEL.format(resource))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(call, 400, MSG_NO_MESSAGES)
        call.stream = stream = body.get("stream") is True
        call.tokens_in = prompt_tokens = chat_prompt_tokens_of(messages)
        max_tokens = _positive_int(body.get("max_completion_tokens", body.get("max_tokens")))
        latency = runtime.latency
        n_out = latency.output_tokens(max_tokens)
        finish_reason = "length" if max_tokens is not None and n_out >= max_tokens else "stop"
        est_tokens = prompt_tokens + (max_tokens if max_tokens is not None else n_out)

        admission = await runtime.admit(model, est_tokens)
        try:
            rejection = admission.rejection
            if rejection is not None:
                return self._error(call, rejection.status, _status_message(rejection.status))
            plan = admission.plan
            if plan.reset_before_response:
                abort_connection(request)
                return web.Response(status=STATUS_NOT_SENT)
            start = arrival_time(request) + admission.queued_s + plan.first_byte_delay_s
            if plan.first_byte_delay_s > 0:
                await runtime.sleep_until(start)
            call.response_id = response_id = f"{self._prefix}{next(self._ids):x}"
            created = int(time.time())
            due = start + latency.ttft_s(prompt_tokens)
            if stream:
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                encoder = chat_wire.ChunkEncoder(
                    response_id, created, model_field, usage_null=include_usage, flavor="openai"
                )
                return await self._chat_stream(
                    request, call, plan, encoder, due, n_out, finish_reason, include_usage
                )
            due += latency.decode_s(n_out)
            out = chat_wire.chat_completion_body(
                response_id,
                created,
                model_field,
                output_text(n_out),
                prompt_tokens,
                n_out,
                finish_reason,
                flavor="openai",
            )
            return await self._reply(request, call, out, due, n_out, plan)
        finally:
            admission.release()

    async def _chat_stream(
        self,
        request: web.Request,
        call: Call,
        plan: FaultPlan,
        encoder: chat_wire.ChunkEncoder,
        due: float,
        n_out: int,
        finish_reason: str,
        include_usage: bool,
    ) -> web.StreamResponse:
        """The OpenAI-shaped stream: role chunk and token 0 at TTFT, finish, [usage], [DONE]."""
        sleep_until = self._runtime.sleep_until
        itl_s = self._runtime.latency.itl_s
        first = encoder.start()
        last = len(first) + n_out + 1 + include_usage  # the index of [DONE]
        resp = web.StreamResponse(status=200, headers=self._headers(_SSE_CT, call))
        emit = _Emitter(resp, call, plan, last, _corrupt_chat)
        try:
            await resp.prepare(request)
            call.status = 200
            await sleep_until(due)
            for chunk in first:
                await emit(chunk)
            content = encoder.content
            for i in range(n_out):
                if i:
                    due += itl_s()
                    await sleep_until(due)
                await emit(content(output_token(i)))
                call.tokens_out += 1
            await emit(encoder.finish(finish_reason))
            if include_usage:
                await emit(encoder.usage(call.tokens_in, n_out))
            await emit(chat_wire.SSE_DONE)
            await resp.write_eof()
        except _Cut:
            abort_connection(request)
        except ConnectionResetError:
            pass
        return resp


def make_vertex_app(runtime: EndpointRuntime) -> web.Application:
    """An aiohttp app serving one mock Vertex AI endpoint, recording into its runtime's ledger."""
    handler = _Vertex(runtime)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{version}/{tail:.+}", handler.route)
    return app
