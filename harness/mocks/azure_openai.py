"""Mock OpenAI-family endpoints for the stateless APIs (chat completions, legacy completions,
embeddings), in two flavours that the official ``openai`` SDK accepts unchanged.

Routes (``../shared/protocols.md`` §2, §4, §9)::

    make_azure_app   POST /openai/deployments/{deployment}/{op}?api-version=V   api-key or Bearer
                     POST /openai/v1/{op}                                        body "model" = deployment
    make_openai_app  POST /v1/{op}                                               Bearer only

where ``op`` is ``chat/completions``, ``completions`` or ``embeddings``. Both apps also get the
stateful routes of :mod:`harness.mocks.openai_stateful`. The *flavour* (the app) decides bodies,
errors and URL forms; the response headers follow the endpoint's hosting cloud
(``runtime.cloud``): an OpenAI front door backed by Azure sends Azure's fingerprint.

Every request goes through :class:`EndpointRuntime`: ``admit`` may reject it (rendered as the
flavour's 429/503/injected error with ``retry-after`` and ``retry-after-ms``) or hand back a
:class:`FaultPlan`, applied here:

    reset_before_response     the connection is aborted before any response byte
    first_byte_delay_s        the whole response starts this much later (headers included)
    disconnect_after_chunks   k stream chunks are sent, then the connection is aborted
    malformed_at_chunk        stream chunk k is replaced by ``MALFORMED_CHUNK``

Stream chunks are numbered from 0 in the order written, the prompt-filter chunk (Azure) and the
role chunk (chat) included; an index past the end applies to the last chunk (``[DONE]``), so a
drawn fault is always visible. A non-stream body counts as one chunk: a disconnect sends half of
it (with the full Content-Length) and aborts; a malformed reply sends its first half as the body.

Timing (seconds, loop clock, absolute due times so sleep error never accumulates; ``t0`` = when
admission let the request in, plus any first-byte delay)::

    stream:     headers + prelude (prompt filter) at t0; start (role) and token 0 at t0 + TTFT;
                token i at t0 + TTFT + ITL_1 + … + ITL_i; then finish, [usage], [DONE]
    non-stream: the whole body at t0 + TTFT + ITL_1 + … + ITL_(n-1)      (embeddings: t0 + TTFT)

Ledger: every request that reaches a handler is written to the endpoint's ledger exactly once,
when it ends, whatever its status. Status 200 once the headers went out (also when the client
or a fault cut the stream short); 499 ("client closed request") when nothing was sent: a reset
fault, or a shutdown that cancelled the handler before its reply.

Helpers for other handlers of the same flavours (the stateful APIs): :func:`response_headers`,
:func:`azure_error_response`, :func:`openai_error_response`, :func:`error_response`,
:func:`auth_error_response`, :func:`rejection_response`, :func:`client_request_id_of`,
:func:`is_authorized`, :func:`abort_connection`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, Literal

import orjson
from aiohttp import hdrs, web

from harness.mocks.auth_verify import verifier_for
from harness.mocks.call import Call
from harness.mocks.emitter import CLOSED, emitter_for
from harness.mocks.front import FAST_ROUTES, Matcher, reply, stream_response
from harness.mocks.runtime import (
    NO_FAULTS,
    Admission,
    EndpointRuntime,
    FaultPlan,
    Rejection,
    abort_connection,
    arrival_time,
)
from harness.protocols import azure_openai as wire
from harness.protocols.openai_flavor import (
    MSG_OPENAI_401,
    Flavor,
    azure_rate_limit_message,
    check_flavor,
    openai_error_body,
    openai_rate_limit_message,
    retry_after_seconds,
)
from harness.protocols.tokens import WORDS, approx_tokens, output_text, output_token
from harness.results.schema import LEDGER_STATUS_NOT_SENT

API_CHAT: Final = "chat.completions"
API_COMPLETIONS: Final = "completions"
API_EMBEDDINGS: Final = "embeddings"
API: Final = API_CHAT  # the ledger's api value of chat requests (kept for older imports)
CLIENT_REQUEST_ID: Final = "x-ms-client-request-id"
OPENAI_CLIENT_REQUEST_ID: Final = "x-client-request-id"

JSON_CT: Final = "application/json"
ERROR_CT: Final = "application/json; charset=UTF-8"
SSE_CT: Final = "text/event-stream; charset=utf-8"
STATUS_NOT_SENT: Final = LEDGER_STATUS_NOT_SENT  # the ledger's status when no response byte went out

MSG_401: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your resource."
)
MSG_NO_API_VERSION: Final = "The api-version query parameter (?api-version=) is required for all requests."
MSG_404: Final = (
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again."
)

# Non-429 statuses a rejection may carry (outage, injected faults): (Azure code, message).
_AZURE_STATUS: Final[dict[int, tuple[str, str]]] = {
    400: ("BadRequest", "The request could not be processed."),
    408: ("Timeout", "The operation was timeout."),
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    502: ("BadGateway", "The server received an invalid response from an upstream server."),
    503: (
        "ServiceUnavailable",
        "The service is temporarily unable to process your request. Try again later.",
    ),
    504: ("GatewayTimeout", "The server did not receive a timely response from an upstream server."),
}
_OPENAI_STATUS: Final[dict[int, str]] = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout.",
}
_DEFAULT_429_RETRY_S: Final = 1.0

# Non-stream bodies are cached as templates with two holes, the response id and ``created``:
# encoding a chat completion with orjson costs more than the rest of the handler's own code.
_ID_MARK: Final = "mockidmark0d2c9a"
_CREATED_MARK: Final = 8_765_432_109_876_543
_MAX_BODY_TEMPLATES: Final = 4096
"""Templates are keyed by (api, model, prompt tokens, output tokens, finish reason); beyond this
many the cache starts over (varied prompt lengths just miss, at the price of one encoding)."""


# --------------------------------------------------------------------------- request bodies


def prompt_tokens_of(messages: Any) -> int:
    """Approximate prompt tokens: every text in every message's ``content`` (string or parts)."""
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += approx_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    text = part.get("text")
                    if isinstance(text, str):
                        total += approx_tokens(text)
    return total


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)


def texts_of(value: Any) -> tuple[list[str], int] | None:
    """The inputs of a completions ``prompt`` or an embeddings ``input`` and their approximate
    token count: a string, a list of strings, a list of token ids (one input), or a list of
    token-id lists; token ids become their decimal text. None for any other shape."""
    if isinstance(value, str):
        return [value], approx_tokens(value)
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) for v in value):
        return value, sum([approx_tokens(v) for v in value])
    if _is_token_ids(value):
        return [" ".join(map(str, value))], len(value)
    if all(_is_token_ids(v) for v in value):
        return [" ".join(map(str, v)) for v in value], sum([len(v) for v in value])
    return None


def _max_tokens(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is not None:
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
            return None
    return None


# --------------------------------------------------------------------------- shared helpers


def client_request_id_of(request: web.Request) -> str | None:
    """The caller's request id: Azure's ``x-ms-client-request-id`` or OpenAI's ``X-Client-Request-Id``."""
    headers = request.headers
    return headers.get(CLIENT_REQUEST_ID) or headers.get(OPENAI_CLIENT_REQUEST_ID)


def is_authorized(request: web.Request, flavor: Flavor) -> bool:
    """Azure takes ``api-key`` or ``Authorization``; OpenAI only a non-empty Bearer token.
    The mock checks presence, never the value."""
    headers = request.headers
    if flavor == "azure":
        return "api-key" in headers or "Authorization" in headers
    auth = headers.get("Authorization", "")
    return auth[:7].lower() == "bearer " and bool(auth[7:].strip())


def response_headers(
    runtime: EndpointRuntime, content_type: str, client_request_id: str | None, deployment: str | None = None
) -> list[tuple[str, str]]:
    """Content type, the hosting cloud's fingerprint, the mock attestation and (for a known
    deployment) the runtime's rate-limit headers."""
    headers = runtime.vendor.build(client_request_id)  # a fresh list: fingerprint + attestation
    headers.insert(0, (hdrs.CONTENT_TYPE, content_type))
    if runtime.limited and deployment is not None and deployment in runtime.deployments:
        headers += runtime.rate_limit_headers(deployment)
    return headers


def azure_error_response(
    runtime: EndpointRuntime,
    status: int,
    code: str,
    message: str,
    *,
    client_request_id: str | None = None,
    deployment: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> web.Response:
    """Azure's error: ``{"error": {"code": "<code>", "message": ...}}`` with the usual headers."""
    headers = response_headers(runtime, ERROR_CT, client_request_id, deployment)
    headers.extend(extra_headers)
    return web.Response(status=status, body=wire.error_body(code, message), headers=headers)


def openai_error_response(
    runtime: EndpointRuntime,
    status: int,
    message: str,
    *,
    type: str | None,
    code: str | None = None,
    param: str | None = None,
    client_request_id: str | None = None,
    deployment: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> web.Response:
    """OpenAI's error: ``{"error": {"message", "type", "param", "code"}}`` with the usual headers."""
    headers = response_headers(runtime, JSON_CT, client_request_id, deployment)
    headers.extend(extra_headers)
    return web.Response(status=status, body=openai_error_body(message, type, param, code), headers=headers)


def _openai_type(status: int) -> str:
    return "server_error" if status >= 500 else "invalid_request_error"


def error_response(
    runtime: EndpointRuntime,
    flavor: Flavor,
    status: int,
    message: str,
    *,
    azure_code: str,
    openai_code: str | None = None,
    param: str | None = None,
    client_request_id: str | None = None,
    deployment: str | None = None,
) -> web.Response:
    """One error in either flavour: Azure's ``code`` is ``azure_code``; OpenAI's ``type`` is
    ``invalid_request_error`` (4xx) or ``server_error`` (5xx), its ``code`` ``openai_code``."""
    if flavor == "azure":
        return azure_error_response(
            runtime, status, azure_code, message, client_request_id=client_request_id, deployment=deployment
        )
    return openai_error_response(
        runtime,
        status,
        message,
        type=_openai_type(status),
        code=openai_code,
        param=param,
        client_request_id=client_request_id,
        deployment=deployment,
    )


def auth_error_response(
    runtime: EndpointRuntime, flavor: Flavor, client_request_id: str | None
) -> web.Response:
    """The flavour's 401 for a request without credentials."""
    if flavor == "azure":
        return azure_error_response(runtime, 401, "401", MSG_401, client_request_id=client_request_id)
    return openai_error_response(
        runtime,
        401,
        MSG_OPENAI_401,
        type="invalid_request_error",
        code="invalid_api_key",
        client_request_id=client_request_id,
    )


def rejection_response(
    runtime: EndpointRuntime,
    flavor: Flavor,
    rejection: Rejection,
    deployment: str,
    client_request_id: str | None,
) -> web.Response:
    """A refused request in the flavour's words: 429 with ``retry-after`` (whole seconds,
    rounded up) and ``retry-after-ms``, 503 for an outage, or the injected fault's status."""
    status = rejection.status
    retry_s = rejection.retry_after_s
    if retry_s is None and status == 429:
        retry_s = _DEFAULT_429_RETRY_S  # the service always says when to come back from a 429
    wait_s = retry_s if retry_s is not None else _DEFAULT_429_RETRY_S
    extra: list[tuple[str, str]] = []
    if retry_s is not None:
        extra.append(("retry-after", str(retry_after_seconds(retry_s))))
        extra.append(("retry-after-ms", str(max(1, round(retry_s * 1000)))))
    if flavor == "azure":
        if status == 429:
            code, message = "429", azure_rate_limit_message(wait_s)
        else:
            code, message = _AZURE_STATUS.get(
                status, (str(status), f"The request failed with status {status}.")
            )
        return azure_error_response(
            runtime,
            status,
            code,
            message,
            client_request_id=client_request_id,
            deployment=deployment,
            extra_headers=extra,
        )
    if status == 429:
        kind: Literal["requests", "tokens"] = "tokens" if rejection.reason == "tokens_per_min" else "requests"
        return openai_error_response(
            runtime,
            429,
            openai_rate_limit_message(deployment, kind, wait_s),
            type=kind,
            code="rate_limit_exceeded",
            client_request_id=client_request_id,
            deployment=deployment,
            extra_headers=extra,
        )
    message = _OPENAI_STATUS.get(status, f"The request failed with status {status}.")
    return openai_error_response(
        runtime,
        status,
        message,
        type=_openai_type(status),
        client_request_id=client_request_id,
        deployment=deployment,
        extra_headers=extra,
    )


# --------------------------------------------------------------------------- stream chunks

_TOKEN_MARK: Final = "mocktokenmark5b1e"
_TOKEN_JSON: Final = tuple(orjson.dumps(output_token(i)) for i in range(len(WORDS)))
"""Token i's JSON string is ``_TOKEN_JSON[i % len(WORDS)]`` (``output_token`` cycles through WORDS)."""


def _content_parts(encoder: wire.ChunkEncoder) -> tuple[bytes, bytes]:
    """(head, tail) with ``encoder.content(t) == head + orjson.dumps(t) + tail`` for every t."""
    chunk = encoder.content(_TOKEN_MARK)
    head, _, tail = chunk.partition(orjson.dumps(_TOKEN_MARK))
    return head, tail


# --------------------------------------------------------------------------- the endpoint


class _Cut(Exception):
    """A disconnect fault: stop writing and abort the connection."""


Handler = Callable[[Any], Coroutine[Any, Any, web.StreamResponse]]
"""A route handler: takes a ``web.Request`` or the fast front's ``LightRequest``."""


class _Endpoint:
    """The stateless handlers of one endpoint in one flavour; everything constant decided once."""

    __slots__ = (
        "_bodies",
        "_chat_prefix",
        "_cmpl_prefix",
        "_flavor",
        "_ids",
        "_latency",
        "_runtime",
        "_verify",
    )

    def __init__(self, runtime: EndpointRuntime, flavor: Flavor) -> None:
        self._runtime = runtime
        self._flavor: Flavor = check_flavor(flavor)
        self._latency = runtime.latency
        self._verify = verifier_for(runtime.endpoint)  # auth_verify (harness.mocks.auth_verify)
        # Response ids must be unique across endpoints and processes, not reproducible.
        token = secrets.token_hex(6)
        self._chat_prefix = "chatcmpl-" + token
        self._cmpl_prefix = "cmpl-" + token
        self._ids = itertools.count(1)
        self._bodies: dict[tuple[bool, str, int, int, str], tuple[bytes, bytes, bytes] | None] = {}

    def _body(
        self, chat: bool, response_id: str, created: int, model: str, tokens_in: int, n_out: int, finish: str
    ) -> bytes:
        """The non-stream body, byte for byte what ``chat_completion_body`` / ``completion_body``
        return, filled into a cached template (None: the marks were ambiguous, encode directly)."""
        key = (chat, model, tokens_in, n_out, finish)
        try:
            parts = self._bodies[key]
        except KeyError:
            parts = self._template(key)
        if parts is None:
            encode = wire.chat_completion_body if chat else wire.completion_body
            return encode(
                response_id, created, model, output_text(n_out), tokens_in, n_out, finish, flavor=self._flavor
            )
        head, mid, tail = parts
        return b"".join((head, response_id.encode(), mid, str(created).encode(), tail))

    def _template(self, key: tuple[bool, str, int, int, str]) -> tuple[bytes, bytes, bytes] | None:
        chat, model, tokens_in, n_out, finish = key
        encode = wire.chat_completion_body if chat else wire.completion_body
        raw = encode(
            _ID_MARK, _CREATED_MARK, model, output_text(n_out), tokens_in, n_out, finish, flavor=self._flavor
        )
        id_mark, created_mark = _ID_MARK.encode(), str(_CREATED_MARK).encode()
        parts: tuple[bytes, bytes, bytes] | None = None
        if raw.count(id_mark) == 1 and raw.count(created_mark) == 1:
            i, c = raw.index(id_mark), raw.index(created_mark)
            if i < c:
                parts = (raw[:i], raw[i + len(id_mark) : c], raw[c + len(created_mark) :])
        if len(self._bodies) >= _MAX_BODY_TEMPLATES:
            self._bodies.clear()
        self._bodies[key] = parts
        return parts

    def route(self, api: str, *, deployment_in_path: bool) -> Handler:
        """The handler of ``api`` on one URL form (only the deployment path takes api-version)."""
        return functools.partial(self._handle, api=api, deployment_in_path=deployment_in_path)

    # ------------------------------------------------------------------ helpers

    def _sent(self, call: Call, resp: web.Response) -> web.Response:
        call.status = resp.status
        call.bytes_out = len(resp.body) if isinstance(resp.body, bytes) else 0
        return resp

    def _fail(
        self,
        call: Call,
        status: int,
        message: str,
        *,
        azure_code: str,
        openai_code: str | None = None,
        param: str | None = None,
    ) -> web.Response:
        return self._sent(
            call,
            error_response(
                self._runtime,
                self._flavor,
                status,
                message,
                azure_code=azure_code,
                openai_code=openai_code,
                param=param,
                client_request_id=call.crid,
                deployment=call.deployment,
            ),
        )

    def _bad_request(self, call: Call, message: str, param: str | None = None) -> web.Response:
        return self._fail(call, 400, message, azure_code="BadRequest", param=param)

    # ------------------------------------------------------------------ the request

    async def _handle(
        self, request: web.Request, *, api: str, deployment_in_path: bool
    ) -> web.StreamResponse:
        """One request, start to ledger row (one coroutine level: the handler itself)."""
        deployment = request.match_info["deployment"] if deployment_in_path else None
        call = Call(client_request_id_of(request), api, time.time_ns(), deployment=deployment)
        try:
            raw = await request.read()
            call.bytes_in = len(raw)
            flavor = self._flavor
            if not is_authorized(request, flavor):
                return self._sent(call, auth_error_response(self._runtime, flavor, call.crid))
            if self._verify is not None and (failure := self._verify(request, raw)) is not None:
                return self._fail(
                    call, failure.status, failure.message, azure_code=failure.code, openai_code=failure.code
                )
            if deployment_in_path and not request.query.get("api-version"):
                return self._fail(call, 400, MSG_NO_API_VERSION, azure_code="MissingApiVersionParameter")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                return self._bad_request(call, "The request body must be a JSON object.")
            if call.deployment is None:
                model = body.get("model")
                if not isinstance(model, str) or not model:
                    what = "'model' (the deployment name)" if flavor == "azure" else "'model'"
                    return self._bad_request(call, f"{what} is required.", "model")
                call.deployment = model
            if call.deployment not in self._runtime.deployments:
                if flavor == "azure":
                    return self._fail(call, 404, MSG_404, azure_code="DeploymentNotFound")
                message = f"The model `{call.deployment}` does not exist or you do not have access to it."
                return self._fail(
                    call, 404, message, azure_code="DeploymentNotFound", openai_code="model_not_found"
                )
            if call.api == API_EMBEDDINGS:
                return await self._embeddings(request, call, body)
            return await self._generate(request, call, body)
        finally:
            call.record(self._runtime)

    async def _admit(self, call: Call, est_tokens: int) -> Admission:
        deployment = call.deployment
        assert deployment is not None
        admission = self._runtime.admit_nowait(deployment, est_tokens)
        if isinstance(admission, Admission):
            return admission
        return await admission

    def _refused(self, request: web.Request, call: Call, admission: Admission) -> web.Response | None:
        """The response for a request admission refused or a reset fault cut; None: serve it.
        Callers hold ``admission`` in try/finally ``release()`` (inline, not a wrapper
        coroutine: every coroutine level costs on the non-stream hot path)."""
        rejection = admission.rejection
        if rejection is not None:
            deployment = call.deployment
            assert deployment is not None
            return self._sent(
                call, rejection_response(self._runtime, self._flavor, rejection, deployment, call.crid)
            )
        if admission.plan.reset_before_response:
            abort_connection(request)
            return web.Response(status=STATUS_NOT_SENT)  # never written: the connection is gone
        return None

    async def _generate(self, request: web.Request, call: Call, body: dict[str, Any]) -> web.StreamResponse:
        """Chat completions and legacy completions: the same timeline, different encoders."""
        chat = call.api == API_CHAT
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return self._bad_request(call, "'messages' must be a non-empty array.", "messages")
            tokens_in = prompt_tokens_of(messages)
            max_tokens = _max_tokens(body, "max_completion_tokens", "max_tokens")
        else:
            prompt = texts_of(body.get("prompt"))
            if prompt is None:
                return self._bad_request(
                    call, "'prompt' must be a string, an array of strings or an array of token ids.", "prompt"
                )
            tokens_in = prompt[1]
            max_tokens = _max_tokens(body, "max_tokens")
        stream = body.get("stream") is True
        call.stream = stream
        call.tokens_in = tokens_in
        latency = self._latency
        n_out = latency.output_tokens(max_tokens)
        est_tokens = tokens_in + (max_tokens if max_tokens is not None else n_out)
        admission = await self._admit(call, est_tokens)
        try:
            refused = self._refused(request, call, admission)
            if refused is not None:
                return refused
            plan = admission.plan
            model = call.deployment
            assert model is not None
            finish_reason = "length" if max_tokens is not None and n_out >= max_tokens else "stop"
            prefix = self._chat_prefix if chat else self._cmpl_prefix
            call.response_id = response_id = f"{prefix}{next(self._ids):x}"
            created = int(time.time())
            start = arrival_time(request) + admission.queued_s + plan.first_byte_delay_s
            due = start + latency.ttft_s(tokens_in)
            if stream:
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                encoder_type = wire.ChunkEncoder if chat else wire.CompletionChunkEncoder
                encoder = encoder_type(
                    response_id, created, model, usage_null=include_usage, flavor=self._flavor
                )
                return await self._stream(
                    request, call, encoder, plan, start, due, n_out, finish_reason, include_usage
                )
            due += latency.decode_s(n_out)
            out = self._body(chat, response_id, created, model, tokens_in, n_out, finish_reason)
            if plan is NO_FAULTS and due <= start:  # zero latency: no wait, no extra coroutine
                call.status = 200
                call.bytes_out = len(out)
                call.tokens_out = n_out
                return reply(request, out, response_headers(self._runtime, JSON_CT, call.crid, model))
            return await self._reply(request, call, out, due, n_out, plan)
        finally:
            admission.release()

    async def _embeddings(self, request: web.Request, call: Call, body: dict[str, Any]) -> web.StreamResponse:
        inputs = texts_of(body.get("input"))
        if inputs is None or not all(inputs[0]):
            return self._bad_request(
                call, "'input' must be a non-empty string or array of strings or token ids.", "input"
            )
        texts, tokens_in = inputs
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            return self._bad_request(
                call, "'encoding_format' must be 'float' or 'base64'.", "encoding_format"
            )
        dimensions = body.get("dimensions", wire.EMBEDDING_DIMENSIONS)
        if (
            not isinstance(dimensions, int)
            or isinstance(dimensions, bool)
            or not 1 <= dimensions <= wire.MAX_EMBEDDING_DIMENSIONS
        ):
            return self._bad_request(
                call, f"'dimensions' must be between 1 and {wire.MAX_EMBEDDING_DIMENSIONS}.", "dimensions"
            )
        call.tokens_in = tokens_in
        admission = await self._admit(call, tokens_in)
        try:
            refused = self._refused(request, call, admission)
            if refused is not None:
                return refused
            plan = admission.plan
            model = call.deployment
            assert model is not None
            start = arrival_time(request) + admission.queued_s + plan.first_byte_delay_s
            due = start + self._latency.ttft_s(tokens_in)
            out = wire.embeddings_body(
                model, texts, tokens_in, dimensions=dimensions, encoding_format=encoding_format
            )
            return await self._reply(request, call, out, due, 0, plan)
        finally:
            admission.release()

    async def _reply(
        self, request: web.Request, call: Call, out: bytes, due: float, n_out: int, plan: FaultPlan
    ) -> web.StreamResponse:
        """A non-stream body at ``due`` (a cancelled wait leaves the ledger status at 499)."""
        await self._runtime.sleep_until(due)
        headers = response_headers(self._runtime, JSON_CT, call.crid, call.deployment)
        call.status = 200
        if plan.disconnect_after_chunks is None and plan.malformed_at_chunk is None:
            call.bytes_out = len(out)
            call.tokens_out = n_out
            return reply(request, out, headers)
        half = out[: len(out) // 2]
        call.bytes_out = len(half)
        if plan.disconnect_after_chunks is None:  # malformed: a complete response, invalid JSON
            return web.Response(body=half, headers=headers)
        resp = stream_response(request, headers=headers)
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
        encoder: wire.ChunkEncoder,
        plan: FaultPlan,
        start: float,
        due: float,
        n_out: int,
        finish_reason: str,
        include_usage: bool,
    ) -> web.StreamResponse:
        """Send the SSE stream, each chunk its own write (so its own flush), on absolute due times.

        ``encoder`` precomputes everything but the delta; with include_usage every chunk
        carries ``"usage": null``, as the service's do.
        """
        sleep_until = self._runtime.sleep_until
        if plan.first_byte_delay_s > 0:
            await sleep_until(start)
        itl_s = self._latency.itl_s
        prelude = encoder.prelude()
        first = encoder.start()
        last = len(prelude) + len(first) + n_out + 1 + include_usage  # the index of [DONE]
        cut = plan.disconnect_after_chunks
        bad = plan.malformed_at_chunk
        if cut is not None:
            cut = min(cut, last)
        if bad is not None:
            bad = min(bad, last)
        resp = stream_response(
            request, status=200, headers=response_headers(self._runtime, SSE_CT, call.crid, call.deployment)
        )
        write = resp.write
        sent = 0

        async def emit(chunk: bytes) -> None:
            nonlocal sent
            if sent == cut:
                raise _Cut
            if sent == bad:
                chunk = wire.MALFORMED_CHUNK
            await write(chunk)
            call.bytes_out += len(chunk)
            sent += 1

        content = encoder.content

        def token_chunk(i: int) -> bytes:
            return content(output_token(i))

        try:
            writer = await resp.prepare(request)
            call.status = 200
            for chunk in prelude:
                await emit(chunk)
            i = 0
            if n_out > 1 and cut is None and bad is None and getattr(writer, "chunked", False):
                # The first chunks and every token from the loop's emitter wheel (see
                # harness.mocks.emitter): the first token goes out at its due time from the
                # wheel's precise timer, in one send with the role chunk, not after this task
                # wakes up and awaits one write per chunk.
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError
                head, tail = _content_parts(encoder)
                itl = self._latency.fixed_itl_s()
                emission = emitter_for(asyncio.get_running_loop()).start(
                    transport, head, _TOKEN_JSON, tail, 0, n_out, due, itl_s if itl is None else itl, first
                )
                try:
                    outcome = await emission.done
                finally:
                    call.tokens_out += emission.tokens
                    call.bytes_out += emission.bytes
                    sent += emission.tokens
                    if not emission.lead_in:
                        call.bytes_out += sum(len(c) for c in first)
                        sent += len(first)
                if outcome == CLOSED:
                    raise ConnectionResetError
                if emission.lead_in:  # BACKLOG before the first token: the first chunks too
                    for chunk in first:
                        await emit(chunk)
                i, due = emission.index, emission.due  # DONE: i == n_out; BACKLOG: go on below
            else:
                await sleep_until(due)
                for chunk in first:
                    await emit(chunk)
            while i < n_out:
                if i:
                    await sleep_until(due)
                await emit(token_chunk(i))
                call.tokens_out += 1
                i += 1
                if i < n_out:
                    due += itl_s()
            await emit(encoder.finish(finish_reason))
            if include_usage:
                await emit(encoder.usage(call.tokens_in, n_out))
            await emit(wire.SSE_DONE)
            await resp.write_eof()
        except _Cut:
            abort_connection(request)
        except ConnectionResetError:
            pass  # the client went away mid-stream: a fact for the ledger, not a server error
        return resp


# --------------------------------------------------------------------------- app factories

_OPS: Final = (
    ("chat/completions", API_CHAT),
    ("completions", API_COMPLETIONS),
    ("embeddings", API_EMBEDDINGS),
)


def _azure_routes(endpoint: _Endpoint) -> tuple[dict[str, Handler], dict[str, Handler]]:
    """The stateless Azure handlers, made once for both servers: by op on the deployment path
    (``/openai/deployments/{deployment}/<op>``) and by full path on the v1 API."""
    by_op = {op: endpoint.route(api, deployment_in_path=True) for op, api in _OPS}
    v1 = {f"/openai/v1/{op}": endpoint.route(api, deployment_in_path=False) for op, api in _OPS}
    return by_op, v1


def _azure_matcher(by_op: dict[str, Handler], v1: dict[str, Handler]) -> Matcher:
    """The fast front's view of the stateless Azure routes (``harness.mocks.front``)."""
    no_match: dict[str, str] = {}
    prefix = "/openai/deployments/"

    def match(path: str) -> tuple[Handler, dict[str, str]] | None:
        handler = v1.get(path)
        if handler is not None:
            return handler, no_match
        if path.startswith(prefix):
            deployment, _, op = path[len(prefix) :].partition("/")
            handler = by_op.get(op)
            # aiohttp's {deployment} matches [^{}/]+; the op lookup already excludes a "/"
            if handler is not None and deployment and "{" not in deployment and "}" not in deployment:
                return handler, {"deployment": deployment}
        return None

    return match


def _path_matcher(routes: dict[str, Handler]) -> Matcher:
    """The fast front's view of routes without path parameters (the OpenAI flavour's)."""
    no_match: dict[str, str] = {}

    def match(path: str) -> tuple[Handler, dict[str, str]] | None:
        handler = routes.get(path)
        return None if handler is None else (handler, no_match)

    return match


def make_azure_app(runtime: EndpointRuntime) -> web.Application:
    """An aiohttp app serving one mock Azure OpenAI endpoint (classic deployment paths and the
    v1 API), recording into its runtime's ledger; the stateless routes also on the fast front."""
    from harness.mocks.openai_stateful import add_stateful_routes  # it may import this module

    by_op, v1 = _azure_routes(_Endpoint(runtime, "azure"))
    app = web.Application(client_max_size=64 * 1024 * 1024)
    for op, handler in by_op.items():
        app.router.add_post(f"/openai/deployments/{{deployment}}/{op}", handler)
    for path, handler in v1.items():
        app.router.add_post(path, handler)
    add_stateful_routes(app, runtime, flavor="azure")
    app[FAST_ROUTES] = _azure_matcher(by_op, v1)
    return app


def make_openai_app(runtime: EndpointRuntime) -> web.Application:
    """An aiohttp app serving one mock OpenAI-direct endpoint (``/v1/...``, Bearer auth); its
    deployments are model ids; the stateless routes also on the fast front."""
    from harness.mocks.openai_stateful import add_stateful_routes  # it may import this module

    endpoint = _Endpoint(runtime, "openai")
    routes = {f"/v1/{op}": endpoint.route(api, deployment_in_path=False) for op, api in _OPS}
    app = web.Application(client_max_size=64 * 1024 * 1024)
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    add_stateful_routes(app, runtime, flavor="openai")
    app[FAST_ROUTES] = _path_matcher(routes)
    return app
