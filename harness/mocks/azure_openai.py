"""A mock Azure OpenAI endpoint (chat completions) that the official ``openai`` SDK accepts unchanged.

Routes (``../shared/protocols.md`` §2, §9):

    POST /openai/deployments/{deployment}/chat/completions?api-version=V   api-key or Bearer
    POST /openai/v1/chat/completions                                        body "model" = deployment

Timing (seconds, all on the loop clock, scheduled on absolute due times so sleep error never
accumulates; ``t0`` = when the handler started):

    stream:     headers + prompt-filter chunk at t0; role chunk and token 0 at t0 + TTFT;
                token i at t0 + TTFT + ITL_1 + … + ITL_i; then finish, [usage], [DONE]
    non-stream: the whole body at t0 + TTFT + ITL_1 + … + ITL_(n-1)

Every request that reaches a handler is written to the endpoint's ledger exactly once, when it
finishes, whatever its status, also when the client went away mid-stream (status stays 200:
the headers were sent). aiohttp cancels a handler only on server shutdown; a client that goes
away surfaces as ConnectionResetError on the next write. A non-stream request cancelled by a
shutdown before its reply is recorded with status 499 ("client closed request"), nothing sent.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from typing import Any, Final

import orjson
from aiohttp import web

from harness.mocks.latency import LatencyModel
from harness.mocks.ledger import Ledger
from harness.mocks.runtime import EndpointRuntime
from harness.profile.models import FleetEndpoint
from harness.protocols import azure_openai as wire
from harness.protocols.fingerprint import mock_headers, vendor_headers
from harness.protocols.tokens import approx_tokens, output_token

API: Final = "chat.completions"
CLIENT_REQUEST_ID: Final = "x-ms-client-request-id"

_JSON_CT: Final = ("Content-Type", "application/json")
_ERROR_CT: Final = ("Content-Type", "application/json; charset=UTF-8")
_SSE_CT: Final = ("Content-Type", "text/event-stream; charset=utf-8")

MSG_401: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your resource."
)
MSG_NO_API_VERSION: Final = "The api-version query parameter (?api-version=) is required for all requests."
MSG_404: Final = (
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again."
)


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


_TEXT_CACHE_MAX_TOKENS: Final = 4096


class _Call:
    """What one request has accumulated so far; written to the ledger once, when it ends."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "crid",
        "deployment",
        "received_wall_ns",
        "response_id",
        "status",
        "stream",
        "tokens_in",
        "tokens_out",
    )

    def __init__(self, crid: str | None, deployment: str | None, received_wall_ns: int) -> None:
        self.crid = crid
        self.deployment = deployment
        self.received_wall_ns = received_wall_ns
        self.response_id: str | None = None
        self.status = 200
        self.stream = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.tokens_in = 0
        self.tokens_out = 0


class _AzureChat:
    """The request handlers of one endpoint; everything constant is decided here, once."""

    __slots__ = (
        "_cloud",
        "_deployments",
        "_endpoint",
        "_ids",
        "_latency",
        "_ledger",
        "_mock",
        "_pid",
        "_prefix",
        "_region",
        "_texts",
    )

    def __init__(self, endpoint: FleetEndpoint, ledger: Ledger, seed: int) -> None:
        self._endpoint = endpoint.name
        self._cloud = endpoint.cloud
        self._region = endpoint.region
        self._deployments = frozenset(endpoint.deployments)
        self._latency = LatencyModel(endpoint.latency, seed)
        self._ledger = ledger
        self._mock = mock_headers(endpoint.cloud, endpoint.region)
        self._pid = os.getpid()
        # Response ids must be unique across endpoints and processes, not reproducible.
        self._prefix = "chatcmpl-" + secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._texts: dict[int, str] = {}  # non-stream reply text by length; the same for every request

    def _reply_text(self, n_tokens: int) -> str:
        """The non-stream reply: tokens 0..n-1 concatenated (cached per length)."""
        text = self._texts.get(n_tokens)
        if text is None:
            text = "".join([output_token(i) for i in range(n_tokens)])
            if n_tokens <= _TEXT_CACHE_MAX_TOKENS:
                self._texts[n_tokens] = text
        return text

    # ------------------------------------------------------------------ routes

    async def deployment_route(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, request.match_info["deployment"], need_api_version=True)

    async def v1_route(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, None, need_api_version=False)

    # ------------------------------------------------------------------ helpers

    def _headers(self, content_type: tuple[str, str], crid: str | None) -> list[tuple[str, str]]:
        headers = [content_type]
        headers.extend(vendor_headers(self._cloud, self._region, crid))
        headers.extend(self._mock)
        return headers

    def _record(self, call: _Call) -> None:
        self._ledger.append(
            request_id=call.crid,
            endpoint=self._endpoint,
            cloud=self._cloud,
            region=self._region,
            deployment=call.deployment,
            api=API,
            stateful=False,
            response_id=call.response_id,
            status=call.status,
            stream=call.stream,
            bytes_in=call.bytes_in,
            bytes_out=call.bytes_out,
            tokens_in=call.tokens_in,
            tokens_out=call.tokens_out,
            received_wall_ns=call.received_wall_ns,
            done_wall_ns=time.time_ns(),
            pid=self._pid,
        )

    def _error(self, call: _Call, status: int, code: str, message: str) -> web.Response:
        body = wire.error_body(code, message)
        call.status = status
        call.bytes_out = len(body)
        self._record(call)
        return web.Response(status=status, body=body, headers=self._headers(_ERROR_CT, call.crid))

    # ------------------------------------------------------------------ the request

    async def _serve(
        self, request: web.Request, deployment: str | None, *, need_api_version: bool
    ) -> web.StreamResponse:
        call = _Call(request.headers.get(CLIENT_REQUEST_ID), deployment, time.time_ns())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        headers = request.headers
        raw = await request.read()
        call.bytes_in = len(raw)

        if "api-key" not in headers and "Authorization" not in headers:
            return self._error(call, 401, "401", MSG_401)
        if need_api_version and not request.query.get("api-version"):
            return self._error(call, 400, "MissingApiVersionParameter", MSG_NO_API_VERSION)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._error(call, 400, "BadRequest", "The request body must be a JSON object.")
        if deployment is None:
            model = body.get("model")
            if not isinstance(model, str) or not model:
                return self._error(call, 400, "BadRequest", "'model' (the deployment name) is required.")
            call.deployment = deployment = model
        if deployment not in self._deployments:
            return self._error(call, 404, "DeploymentNotFound", MSG_404)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(call, 400, "BadRequest", "'messages' must be a non-empty array.")

        call.tokens_in = prompt_tokens = prompt_tokens_of(messages)
        max_tokens = body.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            max_tokens = None
        latency = self._latency
        n_out = latency.output_tokens(max_tokens)
        finish_reason = "length" if max_tokens is not None and n_out >= max_tokens else "stop"
        call.response_id = response_id = f"{self._prefix}{next(self._ids):x}"
        created = int(time.time())
        due = t0 + latency.ttft_s(prompt_tokens)

        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            encoder = wire.ChunkEncoder(response_id, created, deployment, usage_null=include_usage)
            return await self._stream(request, call, encoder, due, n_out, finish_reason, include_usage)

        due += latency.decode_s(n_out)
        text = self._reply_text(n_out)
        out = wire.chat_completion_body(
            response_id, created, deployment, text, prompt_tokens, n_out, finish_reason
        )
        try:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            call.bytes_out = len(out)
            call.tokens_out = n_out
        except asyncio.CancelledError:
            call.status = 499  # cancelled before replying (server shutdown); nothing was sent
            raise
        finally:
            self._record(call)
        return web.Response(body=out, headers=self._headers(_JSON_CT, call.crid))

    async def _stream(
        self,
        request: web.Request,
        call: _Call,
        encoder: wire.ChunkEncoder,
        due: float,
        n_out: int,
        finish_reason: str,
        include_usage: bool,
    ) -> web.StreamResponse:
        """Send the SSE stream, each chunk its own write (so its own flush), on absolute due times.

        ``encoder`` precomputes everything but the delta; with include_usage every chunk
        carries ``"usage": null``, as the service's do.
        """
        call.stream = True
        loop = asyncio.get_running_loop()
        itl_s = self._latency.itl_s
        resp = web.StreamResponse(status=200, headers=self._headers(_SSE_CT, call.crid))
        write = resp.write
        try:
            await resp.prepare(request)
            chunk = wire.prompt_filter_chunk()
            await write(chunk)
            call.bytes_out += len(chunk)

            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = encoder.role()
            await write(chunk)
            call.bytes_out += len(chunk)
            for i in range(n_out):
                if i:
                    due += itl_s()
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                chunk = encoder.content(output_token(i))
                await write(chunk)
                call.bytes_out += len(chunk)
                call.tokens_out += 1

            chunk = encoder.finish(finish_reason)
            if include_usage:
                await write(chunk)
                call.bytes_out += len(chunk)
                chunk = encoder.usage(call.tokens_in, n_out)
            await write(chunk)
            call.bytes_out += len(chunk)
            await write(wire.SSE_DONE)
            call.bytes_out += len(wire.SSE_DONE)
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away mid-stream: a fact for the ledger, not a server error
        finally:
            self._record(call)
        return resp


def make_azure_app(runtime: EndpointRuntime) -> web.Application:
    """An aiohttp app serving one mock Azure OpenAI endpoint, recording into its runtime's ledger."""
    chat = _AzureChat(runtime.endpoint, runtime.ledger, runtime.seed)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat.deployment_route)
    app.router.add_post("/openai/v1/chat/completions", chat.v1_route)
    return app
