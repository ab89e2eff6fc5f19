"""Forward one inbound request to a backend and relay the answer, byte for byte and unbuffered.

URL forms are translated to what the chosen backend speaks (``decide.parse_path`` lists them):

    to an Azure backend    Azure forms pass unchanged (path and query); OpenAI ``/v1/{op}`` becomes
                           ``/openai/deployments/{model}/{op}?api-version=V`` for deployment
                           operations and ``/openai/v1/{op}`` for the rest
    to an OpenAI backend   ``/v1/{op}`` (``api-version`` dropped); a deployment path's name is put
                           into the body's ``model`` when the body does not already say it

Headers forwarded: content type, accept, auth (``api-key`` becomes ``Authorization: Bearer`` for
an OpenAI backend), the client request ids (``x-ms-client-request-id``, ``X-Client-Request-Id``),
``OpenAI-Beta`` and ``User-Agent``. Returned: every backend header but hop-by-hop ones (vendor
fingerprint and ``x-mock-*`` unchanged), plus ``x-router-backend: <name>`` and
``x-router-attempts: <n>`` (1 unless it failed over).

Streams (``text/event-stream``) go through chunk by chunk: each ``iter_any()`` read becomes one
``StreamResponse.write``. A backend that cuts a stream (or a body) short gets the client's
connection aborted the same way. Failover moves to the next allowed backend on a connection
error, 429 or 5xx, which always happens before the first byte reaches the client (a backend
that answered 5xx or could not be reached is then tried last for ``EJECT_S``); chained
stateful calls have a single target (the state holder) and return its answer, errors included.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from harness.compliance.policy import CompiledPolicy
from harness.protocols.fingerprint import mock_headers, vendor_headers
from harness.router.affinity import AffinityTable, CreatedSniffer
from harness.router.backends import Backend, BackendTable
from harness.router.decide import (
    DEPLOYMENT_OPS,
    Allowed,
    BadRequest,
    Balancer,
    Classified,
    Inbound,
    allowed_backends,
    classify,
    parse_path,
)
from harness.router.inject import Injector

DEFAULT_API_VERSION: Final = "2024-10-21"
ROUTER_BACKEND_HEADER: Final = "x-router-backend"
ROUTER_ATTEMPTS_HEADER: Final = "x-router-attempts"
TENANT_HEADER: Final = "x-router-tenant"
SOLD_THROUGH_HEADER: Final = "x-router-sold-through"
_AZURE_CRID: Final = "x-ms-client-request-id"
_OPENAI_CRID: Final = "X-Client-Request-Id"
_FORWARDED: Final = (
    "Content-Type",
    "Accept",
    "api-key",
    "Authorization",
    _AZURE_CRID,
    _OPENAI_CRID,
    "OpenAI-Beta",
    "User-Agent",
)
_HOP_BY_HOP: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "upgrade"}
)
# Every vendor fingerprint header the mocks send (harness.protocols.fingerprint), removed before a
# spoofed reply gets Azure's.
_VENDOR: Final = frozenset(
    {
        "apim-request-id",
        "x-ms-client-request-id",
        "x-request-id",
        "x-ms-region",
        "azureml-model-session",
        "x-accel-buffering",
        "x-content-type-options",
        "strict-transport-security",
        "cache-control",
        "access-control-allow-origin",
        "openai-organization",
        "openai-project",
        "openai-processing-ms",
        "openai-version",
        "server",
        "cf-ray",
        "x-client-request-id",
        "x-amzn-requestid",
        "x-mock-aws-region",
        "server-timing",
        "vary",
        "x-frame-options",
        "x-xss-protection",
        "x-mock-cloud",
        "x-mock-region",
    }
)
_RETRYABLE_MIN: Final = 500
_MAX_SPLITS: Final = 4096
EJECT_S: Final = 1.0
"""A backend that answered 5xx or could not be reached is tried last for this long (seconds)."""


def _retryable(status: int) -> bool:
    return status == 429 or status >= _RETRYABLE_MIN


def error_response(azure: bool, status: int, code: str, message: str) -> web.Response:
    """An error the router itself answers, in the inbound dialect's shape."""
    body: dict[str, dict[str, str | None]]
    if azure:
        body = {"error": {"code": code, "message": message}}
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def abort_client(request: web.Request) -> None:
    """Close the client's connection without a proper end, as the backend did to us."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class Proxy:
    """The request handler: classify, decide, inject, forward, relay."""

    __slots__ = (
        "_pick",
        "_splits",
        "affinity",
        "api_version",
        "balancer",
        "counts",
        "injector",
        "policy",
        "session",
        "table",
    )

    def __init__(
        self,
        table: BackendTable,
        policy: CompiledPolicy,
        injector: Injector,
        balancer: Balancer,
        session: aiohttp.ClientSession,
        *,
        api_version: str = DEFAULT_API_VERSION,
    ) -> None:
        self.table = table
        self.policy = policy
        self.injector = injector
        self.balancer = balancer
        self.session = session
        self.affinity = AffinityTable()
        self.api_version = api_version
        self._pick = itertools.count()  # round robin over injection targets
        self._splits: dict[tuple[str, str, str, str | None, str, str], Allowed] = {}
        self.counts: dict[str, int] = {"requests": 0, "failovers": 0, "denied": 0}

    # ------------------------------------------------------------------ entry

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.counts["requests"] += 1
        inbound = parse_path(request.path)
        if inbound is None:
            return error_response(False, 404, "not_found", f"the router does not serve {request.path}")
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return error_response(inbound.azure, 400, "BadRequest", "the request body is not valid JSON")
        try:
            req = classify(inbound, request.method, body)
        except BadRequest as exc:
            return error_response(inbound.azure, 400, "BadRequest", str(exc))
        headers = request.headers
        crid = headers.get(_AZURE_CRID) or headers.get(_OPENAI_CRID)
        if req.state_key is not None:
            return await self._chained(request, inbound, req, raw, body, crid)
        return await self._routed(request, inbound, req, raw, body, crid)

    # ------------------------------------------------------------------ decisions

    def _log_fields(self, req: Classified, crid: str | None, split: Allowed | None) -> dict[str, Any]:
        return {
            "request_id": crid,
            "api": req.api,
            "class": req.request_class,
            "model": req.model,
            "rule": split.rule if split is not None else None,
            "allowed": [b.name for b in split.allowed] if split is not None else [],
        }

    @staticmethod
    def _where(backend: Backend, allowed: bool) -> dict[str, Any]:
        return {
            "backend": backend.name,
            "backend_cloud": backend.cloud,
            "backend_region": backend.region,
            "backend_allowed": allowed,
        }

    async def _routed(
        self, request: web.Request, inbound: Inbound, req: Classified, raw: bytes, body: Any, crid: str | None
    ) -> web.StreamResponse:
        candidates = self.table.serving(req.model)
        if not candidates:
            return error_response(
                inbound.azure, 404, "DeploymentNotFound", f"no backend of this router serves {req.model!r}"
            )
        headers = request.headers
        tenant = headers.get(TENANT_HEADER, "default")
        sold_through = headers.get(SOLD_THROUGH_HEADER, "direct")
        key = (req.request_class, req.model_family, req.api, req.model, tenant, sold_through)
        split = self._splits.get(key)
        if split is None:  # the split depends on nothing else: decide each combination once
            if len(self._splits) >= _MAX_SPLITS:
                self._splits.clear()
            split = self._splits[key] = allowed_backends(
                self.policy, req, candidates, tenant=tenant, sold_through=sold_through
            )
        if not split.allowed:
            self.counts["denied"] += 1
            return error_response(
                inbound.azure,
                403,
                "RoutingPolicyDenied",
                f"policy {self.policy.policy.name!r} rule {split.rule!r} allows none of the backends "
                f"that serve {req.model!r} for this {req.request_class} {req.api} call",
            )
        order = self.balancer.order(split.allowed, time.monotonic())
        injector = self.injector
        acted: str | None = None
        targets: Sequence[Backend] = order
        spoof: str | None = None
        shadow: Backend | None = None
        for switch in ("spoof_fingerprint", "misroute", "duplicate"):
            if switch != "duplicate" and req.request_class != "stateless":
                continue  # a misrouted create would drag its whole session along
            if not injector.draw(switch, crid):
                continue
            fields = self._log_fields(req, crid, split)
            if acted is not None:
                injector.log("skipped", switch, reason=f"{acted} already acted on this request", **fields)
                continue
            if switch == "duplicate":
                if len(order) < 2:
                    injector.log(
                        "skipped", switch, reason="only one allowed backend serves the model", **fields
                    )
                    continue
                shadow = order[1]
                targets = [order[0], *order[2:]]
                injector.log(
                    "applied",
                    switch,
                    backends=[order[0].name, shadow.name],
                    **self._where(order[0], True),
                    **fields,
                )
            else:
                if not split.denied:
                    injector.log(
                        "skipped", switch, reason="no backend the policy denies serves the model", **fields
                    )
                    continue
                target = split.denied[next(self._pick) % len(split.denied)]
                targets = [target]
                extra: dict[str, Any] = {}
                if switch == "spoof_fingerprint":
                    spoof = next((b.region for b in order if b.cloud == "azure"), "eastus")
                    extra = {"claimed_cloud": "azure", "claimed_region": spoof}
                injector.log("applied", switch, **self._where(target, False), **extra, **fields)
            acted = switch
        return await self._forward(request, inbound, req, raw, body, crid, targets, split, spoof, shadow)

    async def _chained(
        self, request: web.Request, inbound: Inbound, req: Classified, raw: bytes, body: Any, crid: str | None
    ) -> web.StreamResponse:
        key = req.state_key
        assert key is not None
        name = self.affinity.holder(key)
        holder = self.table.get(name) if name is not None else None
        if holder is None:
            if key[0] == "response" and req.model is not None:  # a chained create, as the service says it
                return error_response(
                    False,
                    400,
                    "previous_response_not_found",
                    f"Previous response with id '{key[1]}' not found (no backend of this router holds it).",
                )
            return error_response(
                False,
                404,
                f"{key[0]}_not_found",
                f"{key[0].capitalize()} with id '{key[1]}' not found (no backend of this router holds it).",
            )
        target = holder
        if self.injector.draw("break_affinity", crid):
            others = [b for b in self.table.serving(req.model) if b.name != holder.name]
            split = allowed_backends(self.policy, req, others)
            fields = self._log_fields(req, crid, split)
            pool = split.allowed or split.denied
            if not pool:
                self.injector.log(
                    "skipped", "break_affinity", reason="no backend but the holder serves it", **fields
                )
            else:
                target = pool[next(self._pick) % len(pool)]
                self.injector.log(
                    "applied",
                    "break_affinity",
                    holder=holder.name,
                    **self._where(target, bool(split.allowed)),
                    **fields,
                )
        return await self._forward(request, inbound, req, raw, body, crid, [target], None, None, None)

    # ------------------------------------------------------------------ forwarding

    def _upstream(
        self,
        backend: Backend,
        inbound: Inbound,
        request: web.Request,
        raw: bytes,
        body: Any,
        model: str | None,
    ) -> tuple[str, bytes | None, dict[str, str]]:
        """The URL, body and headers of the request to ``backend``."""
        op = inbound.op
        query = request.query_string
        data: bytes | None = raw or None
        if backend.azure:
            if inbound.azure:
                path = request.raw_path
            elif op in DEPLOYMENT_OPS and model is not None:
                path = f"/openai/deployments/{model}/{op}?api-version={self.api_version}"
            else:
                path = f"/openai/v1/{op}" + (f"?{query}" if query else "")
        else:
            if inbound.form == "openai_v1":
                path = request.raw_path
            else:
                kept = "&".join(p for p in query.split("&") if p and not p.startswith("api-version="))
                path = f"/v1/{op}" + (f"?{kept}" if kept else "")
            if inbound.deployment is not None and isinstance(body, dict) and body.get("model") != model:
                data = orjson.dumps({**body, "model": model})
        headers: dict[str, str] = {}
        incoming = request.headers
        for name in _FORWARDED:
            value = incoming.get(name)
            if value is not None:
                headers[name] = value
        if not backend.azure and "Authorization" not in headers and "api-key" in headers:
            headers["Authorization"] = "Bearer " + headers.pop("api-key")
        return backend.base_url + path, data, headers

    async def _forward(
        self,
        request: web.Request,
        inbound: Inbound,
        req: Classified,
        raw: bytes,
        body: Any,
        crid: str | None,
        targets: Sequence[Backend],
        split: Allowed | None,
        spoof_region: str | None,
        shadow_backend: Backend | None,
    ) -> web.StreamResponse:
        shadow: asyncio.Task[None] | None = None
        if shadow_backend is not None:
            url, data, headers = self._upstream(shadow_backend, inbound, request, raw, body, req.model)
            shadow = asyncio.ensure_future(self._shadow(shadow_backend, request.method, url, data, headers))
        in_flight = self.balancer.in_flight
        last = len(targets) - 1
        try:
            for i, backend in enumerate(targets):
                url, data, headers = self._upstream(backend, inbound, request, raw, body, req.model)
                in_flight[backend.index] += 1
                try:
                    try:
                        upstream = await self.session.request(request.method, url, data=data, headers=headers)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.balancer.eject(backend, time.monotonic() + EJECT_S)
                        if i < last:
                            self._failover(req, crid, split, backend, targets[i + 1], 0)
                            continue
                        return error_response(
                            inbound.azure, 502, "BadGateway", f"backend {backend.name} failed: {exc!r}"
                        )
                    try:
                        if upstream.status >= _RETRYABLE_MIN:
                            self.balancer.eject(backend, time.monotonic() + EJECT_S)
                        if i < last and _retryable(upstream.status):
                            self._failover(req, crid, split, backend, targets[i + 1], upstream.status)
                            continue
                        return await self._relay(request, upstream, backend, req, spoof_region, shadow, i + 1)
                    finally:
                        upstream.release()
                finally:
                    in_flight[backend.index] -= 1
            raise AssertionError("unreachable: the last target always returns")
        finally:
            if shadow is not None and not shadow.done():
                await shadow

    def _failover(
        self,
        req: Classified,
        crid: str | None,
        split: Allowed | None,
        failed: Backend,
        to: Backend,
        status: int,
    ) -> None:
        self.counts["failovers"] += 1
        self.injector.log(
            "failover",
            None,
            from_backend=failed.name,
            from_status=status,
            **self._where(to, True),
            **self._log_fields(req, crid, split),
        )

    async def _shadow(
        self, backend: Backend, method: str, url: str, data: bytes | None, headers: dict[str, str]
    ) -> None:
        """The duplicate's second request: sent, read to the end, dropped."""
        self.balancer.in_flight[backend.index] += 1
        try:
            async with self.session.request(method, url, data=data, headers=headers) as resp:
                async for _ in resp.content.iter_any():
                    pass
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            self.balancer.in_flight[backend.index] -= 1

    def _reply_headers(
        self, upstream: aiohttp.ClientResponse, backend: Backend, spoof: str | None
    ) -> CIMultiDict[str]:
        drop = _HOP_BY_HOP | _VENDOR if spoof is not None else _HOP_BY_HOP
        out: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in upstream.headers.items() if k.lower() not in drop
        )
        if spoof is not None:
            crid = upstream.request_info.headers.get(_AZURE_CRID) or upstream.request_info.headers.get(
                _OPENAI_CRID
            )
            out.extend(vendor_headers("azure", spoof, crid))
            out.extend(mock_headers("azure", spoof))
        out[ROUTER_BACKEND_HEADER] = backend.name
        return out

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        backend: Backend,
        req: Classified,
        spoof: str | None,
        shadow: asyncio.Task[None] | None,
        attempts: int,
    ) -> web.StreamResponse:
        headers = self._reply_headers(upstream, backend, spoof)
        headers[ROUTER_ATTEMPTS_HEADER] = str(attempts)
        ok = upstream.status == 200
        if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            resp = web.StreamResponse(status=upstream.status, headers=headers)
            await resp.prepare(request)
            sniffer = CreatedSniffer() if ok and req.keeps_state else None
            write = resp.write
            readany = upstream.content.readany  # what iter_any() calls, without its wrapper
            try:
                if sniffer is not None:
                    while not sniffer.done and (chunk := await readany()):
                        rid = sniffer.feed(chunk)
                        if rid is not None:
                            self.affinity.learn(rid, backend.name)
                        await write(chunk)
                while chunk := await readany():
                    await write(chunk)
                if shadow is not None:
                    await shadow  # the duplicate is in the ledger before the client sees the end
                await resp.write_eof()
            except ConnectionResetError:
                pass  # the client went away
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
                abort_client(request)  # the backend cut the stream: so do we
            return resp
        try:
            payload = await upstream.read()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
            if shadow is not None:
                await shadow
            abort_client(request)
            return web.Response(status=upstream.status)  # never written: the connection is gone
        if ok:
            if req.keeps_state:
                self.affinity.learn_body(payload, backend.name)
            if req.deletes_state and req.state_key is not None:
                self.affinity.forget(req.state_key)
        if shadow is not None:
            await shadow
        return web.Response(status=upstream.status, body=payload, headers=headers)
