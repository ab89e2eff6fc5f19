"""A mock AWS Bedrock runtime endpoint that boto3 accepts unchanged (``../shared/protocols.md`` §5).

Routes::

    POST /model/{modelId}/converse                      Converse JSON (§5.3)
    POST /model/{modelId}/converse-stream               ConverseStream event stream (§5.5)
    POST /model/{modelId}/invoke                        InvokeModel, Anthropic Messages body (§5.6)
    POST /model/{modelId}/invoke-with-response-stream   ``chunk`` frames of Anthropic stream events

One route takes ``/model/{tail:.+}``; the model id is read from ``request.raw_path`` (last
segment = operation, the rest unquoted), so ids with ``:`` and inference-profile ARNs with
``%2F`` arrive whole. ``{modelId}`` must be one of the endpoint's deployments, compared as
given (an ARN is not resolved to its model). SigV4 headers are accepted and not verified, unless
the endpoint's ``auth_verify = "sigv4"`` (:mod:`harness.mocks.auth_verify`: 403
InvalidSignatureException / UnrecognizedClientException / MissingAuthenticationTokenException).
InvokeModel speaks the Anthropic Messages format for every model id; other families' native
bodies are not modelled.

Timing (seconds on the loop clock, absolute due times through ``runtime.sleep_until``;
``t_a`` = when admission returned, so time queued in ``admit`` shows up in the client's TTFT;
``d`` = the fault plan's first-byte delay)::

    stream:     headers at t_a + d; the first frames (messageStart, or message_start and
                content_block_start) with token 0 at t_a + d + TTFT; token i at
                t_a + d + TTFT + ITL_1 + … + ITL_i; the closing frames right after the last token
    non-stream: the whole body at t_a + d + TTFT + ITL_1 + … + ITL_(n-1)

``metrics.latencyMs``, ``X-Amzn-Bedrock-Invocation-Latency`` and ``invocationLatency`` are the
milliseconds from ``t_a`` to the reply (or the last frame); ``firstByteLatency`` to token 0.

Errors are rest-json (§5.7): ``x-amzn-ErrorType: <Code>:http://internal.amazon.com/coral/…`` and
``{"message": ...}``, no Retry-After. A 429 rejection is ThrottlingException ("Too many tokens…"
when the token budget ran out, else "Too many requests…"), an outage 503
ServiceUnavailableException, an injected 5xx InternalServerException (503 stays
ServiceUnavailableException), other injected statuses the exception §5.7 gives them. An
unknown model is ValidationException 400 "The provided model identifier is invalid." [UNC];
an unknown operation ValidationException 400 "The requested operation is not recognized by the
service." [OBS: aws-samples/amazon-bedrock-workshop #58].

Faults (``admission.plan``): ``reset_before_response`` closes the connection without a reply;
``disconnect_after_chunks = k`` aborts it after k frames; ``malformed_at_chunk = i`` sends frame
i (0-based, counting every frame of the stream) with an inverted message CRC and carries on.

Ledger: exactly one row per request that reached the handler, written when it ends: api
``bedrock.converse``, ``bedrock.converse_stream``, ``bedrock.invoke``, ``bedrock.invoke_stream``
(``bedrock.unknown`` for other paths), deployment = the model id, request_id =
``x-ms-client-request-id`` if sent, else ``amz-sdk-invocation-id``; response_id = the Anthropic
message id on invoke operations (Converse bodies carry none). Status is the HTTP status sent;
200 once stream headers are out, also if the stream was cut short; 499
(``LEDGER_STATUS_NOT_SENT``) when no reply went out: a reset, or a server shutdown.
tokens_out counts the tokens sent.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from typing import Any, Final

import orjson
from aiohttp import web

from harness.mocks.auth_verify import verifier_for
from harness.mocks.call import Call
from harness.mocks.runtime import EndpointRuntime, FaultPlan, Rejection, abort_connection
from harness.protocols import bedrock as wire
from harness.protocols.eventstream import corrupt_crc
from harness.protocols.tokens import approx_tokens, output_text, output_token
from harness.results.schema import LEDGER_STATUS_NOT_SENT

CLIENT_REQUEST_ID: Final = "x-ms-client-request-id"
INVOCATION_ID: Final = "amz-sdk-invocation-id"
API_UNKNOWN: Final = "bedrock.unknown"

MSG_UNKNOWN_OPERATION: Final = "The requested operation is not recognized by the service."
MSG_INVALID_MODEL: Final = "The provided model identifier is invalid."
MSG_MALFORMED: Final = "Malformed input request, please reformat your input and try again."  # [UNC]
MSG_NO_MAX_TOKENS: Final = (
    "Malformed input request: #: required key [max_tokens] not found, "
    "please reformat your input and try again."
)
MSG_TOO_MANY_REQUESTS: Final = "Too many requests, please wait before trying again."
MSG_TOO_MANY_TOKENS: Final = "Too many tokens, please wait before trying again."
MSG_UNAVAILABLE: Final = "Bedrock is unable to process your request."  # [OBS: darko-mesaros/bedrust #47]
MESSAGES_BY_EXCEPTION: Final[dict[str, str]] = {  # for injected statuses; [UNC] unless noted above
    "ValidationException": MSG_MALFORMED,
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ResourceNotFoundException": "The requested resource could not be found.",
    "ModelTimeoutException": "Model has timed out in processing the request. Try your request again.",
    "ModelErrorException": "The model returned an error. Try your request again.",
    "ThrottlingException": MSG_TOO_MANY_REQUESTS,
    "InternalServerException": (
        "The system encountered an unexpected error during processing. Try your request again."
    ),
    "ServiceUnavailableException": MSG_UNAVAILABLE,
}

_JSON_CT: Final = ("Content-Type", "application/json")
_ES_CT: Final = ("Content-Type", wire.EVENTSTREAM_CT)


def _texts(content: Any) -> int:
    """Approximate tokens of a content field: a string, or blocks with ``text``."""
    if isinstance(content, str):
        return approx_tokens(content)
    total = 0
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                text = block.get("text")
                if isinstance(text, str):
                    total += approx_tokens(text)
    return total


def prompt_tokens_of(body: dict[str, Any]) -> int:
    """Approximate prompt tokens of a Converse or Anthropic body: message texts and the system prompt."""
    total = _texts(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += _texts(message.get("content"))
    return total


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def rejection_error(rejection: Rejection) -> tuple[str, str]:
    """(exception code, message) Bedrock answers a runtime rejection with."""
    status = rejection.status
    if status == 429:
        if rejection.reason == "tokens_per_min":
            return "ThrottlingException", MSG_TOO_MANY_TOKENS
        return "ThrottlingException", MSG_TOO_MANY_REQUESTS
    code = wire.exception_for_status(status)
    return code, MESSAGES_BY_EXCEPTION.get(code, MSG_MALFORMED)


class _Call(Call):
    """A Bedrock request: also whether response headers went out (status then stays 200)."""

    __slots__ = ("started",)

    def __init__(self, crid: str | None, received_wall_ns: int) -> None:
        super().__init__(crid, API_UNKNOWN, received_wall_ns, status=200)
        self.started = False


class _Bedrock:
    """The request handler of one endpoint; everything constant is decided here, once."""

    __slots__ = ("_ids", "_prefix", "_runtime", "_vendor", "_verify")

    def __init__(self, runtime: EndpointRuntime) -> None:
        self._runtime = runtime
        self._vendor = runtime.vendor.build
        self._verify = verifier_for(runtime.endpoint)  # auth_verify (harness.mocks.auth_verify)
        # Message ids must be unique across endpoints and processes, not reproducible.
        self._prefix = "msg_bdrk_" + secrets.token_hex(6)
        self._ids = itertools.count(1)

    def _headers(self, first: list[tuple[str, str]], crid: str | None) -> list[tuple[str, str]]:
        headers = list(first)
        headers += self._vendor(crid)  # the cloud's fingerprint, then the mock attestation
        return headers

    def _error(self, call: _Call, status: int, code: str, message: str) -> web.Response:
        body = wire.error_body(message)
        call.status = status
        call.bytes_out = len(body)
        call.response_id = None
        return web.Response(
            status=status, body=body, headers=self._headers(wire.error_headers(code), call.crid)
        )

    # ------------------------------------------------------------------ the request

    async def route(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        call = _Call(headers.get(CLIENT_REQUEST_ID) or headers.get(INVOCATION_ID), time.time_ns())
        try:
            return await self._serve(request, call)
        except asyncio.CancelledError:
            if call.status == 200 and not call.started:
                call.status = LEDGER_STATUS_NOT_SENT  # server shutdown before any reply
            raise
        finally:
            call.record(self._runtime)

    async def _serve(self, request: web.Request, call: _Call) -> web.StreamResponse:
        raw = await request.read()
        call.bytes_in = len(raw)
        target = wire.split_model_path(request.raw_path)
        if target is None or target[1] not in wire.API_NAMES:
            return self._error(call, 400, "ValidationException", MSG_UNKNOWN_OPERATION)
        model, operation = target
        call.api = wire.API_NAMES[operation]
        call.stream = operation in wire.STREAMING
        call.deployment = model
        if self._verify is not None and (failure := self._verify(request, raw)) is not None:
            return self._error(call, failure.status, failure.code, failure.message)
        runtime = self._runtime
        if model not in runtime.deployments:
            return self._error(call, 400, "ValidationException", MSG_INVALID_MODEL)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._error(call, 400, "ValidationException", MSG_MALFORMED)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(call, 400, "ValidationException", MSG_MALFORMED)
        converse = operation in (wire.CONVERSE, wire.CONVERSE_STREAM)
        if converse:
            config = body.get("inferenceConfig")
            max_tokens = _positive_int(config.get("maxTokens")) if isinstance(config, dict) else None
        else:
            max_tokens = _positive_int(body.get("max_tokens"))
            if max_tokens is None:
                return self._error(call, 400, "ValidationException", MSG_NO_MAX_TOKENS)

        call.tokens_in = prompt_tokens = prompt_tokens_of(body)
        latency = runtime.latency
        n_out = latency.output_tokens(max_tokens)
        stop_reason = "max_tokens" if max_tokens is not None and n_out >= max_tokens else "end_turn"

        admission = await runtime.admit(model, prompt_tokens + n_out)
        try:
            rejection = admission.rejection
            if rejection is not None:
                code, message = rejection_error(rejection)
                return self._error(call, rejection.status, code, message)
            plan = admission.plan
            if plan.reset_before_response:
                return self._reset(request, call)
            t_a = time.monotonic()
            base = t_a + plan.first_byte_delay_s
            if plan.first_byte_delay_s > 0:
                await runtime.sleep_until(base)
            due = base + latency.ttft_s(prompt_tokens)
            if not converse:
                call.response_id = f"{self._prefix}{next(self._ids):x}"
            if call.stream:
                return await self._stream(request, call, plan, converse, t_a, due, n_out, stop_reason)
            due += latency.decode_s(n_out)
            await runtime.sleep_until(due)
            text = output_text(n_out)
            latency_ms = round((time.monotonic() - t_a) * 1000)
            if converse:
                out = wire.converse_response_body(text, stop_reason, prompt_tokens, n_out, latency_ms)
                first = [_JSON_CT]
            else:
                out = wire.anthropic_response_body(
                    call.response_id or "", model, text, stop_reason, prompt_tokens, n_out
                )
                first = [
                    _JSON_CT,
                    ("X-Amzn-Bedrock-Input-Token-Count", str(prompt_tokens)),
                    ("X-Amzn-Bedrock-Output-Token-Count", str(n_out)),
                    ("X-Amzn-Bedrock-Invocation-Latency", str(latency_ms)),
                ]
            call.bytes_out = len(out)
            call.tokens_out = n_out
            return web.Response(body=out, headers=self._headers(first, call.crid))
        finally:
            admission.release()

    def _reset(self, request: web.Request, call: _Call) -> web.Response:
        """Close the connection without a reply (the client sees a disconnect)."""
        call.status = LEDGER_STATUS_NOT_SENT
        call.response_id = None
        abort_connection(request)
        return web.Response()  # never sent: the transport is gone

    async def _stream(
        self,
        request: web.Request,
        call: _Call,
        plan: FaultPlan,
        converse: bool,
        t_a: float,
        due: float,
        n_out: int,
        stop_reason: str,
    ) -> web.StreamResponse:
        """Send the frames, each its own write (so its own flush), on absolute due times."""
        runtime = self._runtime
        sleep_until = runtime.sleep_until
        itl_s = runtime.latency.itl_s
        disconnect_after = plan.disconnect_after_chunks
        malformed_at = plan.malformed_at_chunk
        model = call.deployment or ""
        if converse:
            first = [_ES_CT]
            delta = wire.content_block_delta_frame
        else:
            first = [_ES_CT, ("X-Amzn-Bedrock-Content-Type", "application/json")]
            delta = wire.anthropic_text_delta_frame
        resp = web.StreamResponse(status=200, headers=self._headers(first, call.crid))
        sent = 0  # frames written

        async def send(frame: bytes) -> bool:
            """Write one frame (corrupted if the plan says so); False once the plan cuts the stream."""
            nonlocal sent
            if disconnect_after is not None and sent >= disconnect_after:
                abort_connection(request)
                return False
            if sent == malformed_at:
                frame = corrupt_crc(frame)
            await resp.write(frame)
            sent += 1
            call.bytes_out += len(frame)
            return True

        try:
            await resp.prepare(request)
            call.started = True
            if disconnect_after == 0:
                abort_connection(request)
                return resp
            await sleep_until(due)
            if converse:
                opening = [wire.MESSAGE_START_FRAME]
            else:
                opening = [
                    wire.chunk_frame(
                        wire.anthropic_message_start(call.response_id or "", model, call.tokens_in)
                    ),
                    wire.chunk_frame(wire.ANTHROPIC_BLOCK_START),
                ]
            for frame in opening:
                if not await send(frame):
                    return resp
            first_byte_ms = 0
            for i in range(n_out):
                if i:
                    due += itl_s()
                    await sleep_until(due)
                else:
                    first_byte_ms = round((time.monotonic() - t_a) * 1000)
                if not await send(delta(output_token(i))):
                    return resp
                call.tokens_out += 1
            latency_ms = round((time.monotonic() - t_a) * 1000)
            if converse:
                closing = [
                    wire.CONTENT_BLOCK_STOP_FRAME,
                    wire.message_stop_frame(stop_reason),
                    wire.metadata_frame(call.tokens_in, n_out, latency_ms),
                ]
            else:
                closing = [
                    wire.chunk_frame(wire.ANTHROPIC_BLOCK_STOP),
                    wire.chunk_frame(wire.anthropic_message_delta(stop_reason, n_out)),
                    wire.chunk_frame(
                        wire.anthropic_message_stop(call.tokens_in, n_out, latency_ms, first_byte_ms)
                    ),
                ]
            for frame in closing:
                if not await send(frame):
                    return resp
            if disconnect_after is not None and sent >= disconnect_after:
                abort_connection(request)
                return resp
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away mid-stream: a fact for the ledger, not a server error
        return resp


def make_bedrock_app(runtime: EndpointRuntime) -> web.Application:
    """An aiohttp app serving one mock Bedrock runtime endpoint, recording into its runtime's ledger."""
    handler = _Bedrock(runtime)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/model/{tail:.+}", handler.route)
    return app
