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

The hot path has no aiohttp in it: with aiohttp on both sides a streamed request cost the router
1.85x the mock's CPU, now 1.0x (docs/benchmarks.md, "Reference router"). Requests
arrive through the router's own HTTP/1.1 server (``harness.router.server``) and go upstream over
one lean keep-alive pool per backend (``harness.router.upstream``, the engine's httptools
transport). Streams (``text/event-stream``) go through chunk by chunk: the upstream connection's
``data_received`` hands each body piece to a ``harness.router.relay.Relay``, which writes it to
the client's socket in the same callback (no coroutine wake-up, no buffering). Other bodies are
collected and answered with a length. A backend that cuts a stream (or a body) short gets the
client's connection aborted the same way; a client that goes away cancels its request, which
closes the upstream connection it was using. Failover moves to the next allowed backend on a
connection error, 429 or 5xx, which always happens before the first byte reaches the client
(the failed answer is read and dropped; a backend that answered 5xx or could not be reached is
then tried last for ``EJECT_S``); chained stateful calls have a single target (the state holder)
and return its answer, errors included. ``HEAD`` is not proxied (405).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

import orjson

from harness.compliance.policy import CompiledPolicy
from harness.engine.transport import TransportError
from harness.router.affinity import AffinityTable
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
from harness.router.relay import ROUTER_ATTEMPTS_HEADER, ROUTER_BACKEND_HEADER, Relay
from harness.router.server import Connection, Request
from harness.router.upstream import Upstream

__all__ = ["DEFAULT_API_VERSION", "EJECT_S", "ROUTER_ATTEMPTS_HEADER", "ROUTER_BACKEND_HEADER", "Proxy"]

DEFAULT_API_VERSION: Final = "2024-10-21"
TENANT_HEADER: Final = "x-router-tenant"
SOLD_THROUGH_HEADER: Final = "x-router-sold-through"
_AZURE_CRID: Final = "x-ms-client-request-id"
_OPENAI_CRID: Final = "x-client-request-id"
# (name sent upstream, lower-case name looked up in the request)
_FORWARDED: Final = tuple(
    (name, name.lower())
    for name in (
        "Content-Type",
        "Accept",
        "api-key",
        "Authorization",
        "x-ms-client-request-id",
        "X-Client-Request-Id",
        "OpenAI-Beta",
        "User-Agent",
    )
)
_JSON: Final = b"Content-Type: application/json\r\n"
_SAFE_PATH: Final = "/-._~!$&'()*+,;=:@"  # RFC 3986 pchar and "/": kept as they are
_MAX_SPLITS: Final = 4096
EJECT_S: Final = 1.0
"""A backend that answered 5xx or could not be reached is tried last for this long (seconds)."""


def error_response(conn: Connection, azure: bool, status: int, code: str, message: str) -> None:
    """Answer an error the router itself decides, in the inbound dialect's shape."""
    body: dict[str, dict[str, str | None]]
    if azure:
        body = {"error": {"code": code, "message": message}}
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    conn.respond(status, _JSON, orjson.dumps(body))


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
        "table",
        "upstreams",
    )

    def __init__(
        self,
        table: BackendTable,
        policy: CompiledPolicy,
        injector: Injector,
        balancer: Balancer,
        upstreams: Sequence[Upstream],
        *,
        api_version: str = DEFAULT_API_VERSION,
    ) -> None:
        self.table = table
        self.policy = policy
        self.injector = injector
        self.balancer = balancer
        self.upstreams = upstreams  # by Backend.index
        self.affinity = AffinityTable()
        self.api_version = api_version
        self._pick = itertools.count()  # round robin over injection targets
        self._splits: dict[tuple[str, str, str, str | None, str, str], Allowed] = {}
        self.counts: dict[str, int] = {"requests": 0, "failovers": 0, "denied": 0}

    # ------------------------------------------------------------------ entry

    async def handle(self, request: Request, conn: Connection) -> None:
        self.counts["requests"] += 1
        inbound = parse_path(request.path)
        if inbound is None:
            return error_response(conn, False, 404, "not_found", f"the router does not serve {request.path}")
        if request.method == "HEAD":
            return error_response(conn, inbound.azure, 405, "MethodNotAllowed", "HEAD is not proxied")
        raw = request.body
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return error_response(
                    conn, inbound.azure, 400, "BadRequest", "the request body is not valid JSON"
                )
        try:
            req = classify(inbound, request.method, body)
        except BadRequest as exc:
            return error_response(conn, inbound.azure, 400, "BadRequest", str(exc))
        headers = request.headers
        crid = headers.get(_AZURE_CRID) or headers.get(_OPENAI_CRID)
        if req.state_key is not None:
            return await self._chained(request, conn, inbound, req, body, crid)
        return await self._routed(request, conn, inbound, req, body, crid)

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
        self,
        request: Request,
        conn: Connection,
        inbound: Inbound,
        req: Classified,
        body: Any,
        crid: str | None,
    ) -> None:
        candidates = self.table.serving(req.model)
        if not candidates:
            return error_response(
                conn,
                inbound.azure,
                404,
                "DeploymentNotFound",
                f"no backend of this router serves {req.model!r}",
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
                conn,
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
        await self._forward(request, conn, inbound, req, body, crid, targets, split, spoof, shadow)

    async def _chained(
        self,
        request: Request,
        conn: Connection,
        inbound: Inbound,
        req: Classified,
        body: Any,
        crid: str | None,
    ) -> None:
        key = req.state_key
        assert key is not None
        name = self.affinity.holder(key)
        holder = self.table.get(name) if name is not None else None
        if holder is None:
            if key[0] == "response" and req.model is not None:  # a chained create, as the service says it
                return error_response(
                    conn,
                    False,
                    400,
                    "previous_response_not_found",
                    f"Previous response with id '{key[1]}' not found (no backend of this router holds it).",
                )
            return error_response(
                conn,
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
        await self._forward(request, conn, inbound, req, body, crid, [target], None, None, None)

    # ------------------------------------------------------------------ forwarding

    def _upstream(
        self, backend: Backend, inbound: Inbound, request: Request, body: Any, model: str | None
    ) -> tuple[bytes, bytes]:
        """The head and body of the request to ``backend``."""
        op = inbound.op
        query = request.query_string
        data = request.body
        if backend.azure:
            if inbound.azure:
                target = request.target
            elif op in DEPLOYMENT_OPS and model is not None:
                target = f"/openai/deployments/{quote(model, _SAFE_PATH)}/{quote(op, _SAFE_PATH)}"
                target += f"?api-version={self.api_version}"
            else:
                target = f"/openai/v1/{quote(op, _SAFE_PATH)}" + (f"?{query}" if query else "")
        else:
            if inbound.form == "openai_v1":
                target = request.target
            else:
                kept = "&".join(p for p in query.split("&") if p and not p.startswith("api-version="))
                target = f"/v1/{quote(op, _SAFE_PATH)}" + (f"?{kept}" if kept else "")
            if inbound.deployment is not None and isinstance(body, dict) and body.get("model") != model:
                data = orjson.dumps({**body, "model": model})
        incoming = request.headers
        lines: list[str] = []
        api_key: str | None = None
        bearer = False
        for name, key in _FORWARDED:
            value = incoming.get(key)
            if value is None:
                continue
            if key == "api-key" and not backend.azure:
                api_key = value  # becomes Authorization unless the client sent one
                continue
            bearer = bearer or key == "authorization"
            lines.append(f"{name}: {value}\r\n")
        if api_key is not None:
            lines.append(f"api-key: {api_key}\r\n" if bearer else f"Authorization: Bearer {api_key}\r\n")
        headers = "".join(lines).encode("latin-1")
        return self.upstreams[backend.index].head(request.method, target, headers, len(data)), data

    async def _forward(
        self,
        request: Request,
        conn: Connection,
        inbound: Inbound,
        req: Classified,
        body: Any,
        crid: str | None,
        targets: Sequence[Backend],
        split: Allowed | None,
        spoof_region: str | None,
        shadow_backend: Backend | None,
    ) -> None:
        shadow: asyncio.Future[None] | None = None
        if shadow_backend is not None:
            head, data = self._upstream(shadow_backend, inbound, request, body, req.model)
            shadow = asyncio.ensure_future(self._shadow(shadow_backend, head, data))
        balancer = self.balancer
        in_flight = balancer.in_flight
        affinity = self.affinity if req.keeps_state else None
        last = len(targets) - 1
        for i, backend in enumerate(targets):
            head, data = self._upstream(backend, inbound, request, body, req.model)
            relay = Relay(
                conn,
                backend.name,
                i + 1,
                fail_over=i < last,
                spoof=spoof_region,
                crid=crid,
                affinity=affinity,
            )
            in_flight[backend.index] += 1
            try:
                await self.upstreams[backend.index].request(head, data, relay)
            except TransportError as exc:
                if relay.streaming or (relay.status and not relay.discard):
                    # the backend cut the answer it was giving (a stream already going out to
                    # the client, or a body being collected): cut the client's the same way
                    if shadow is not None:
                        await asyncio.shield(shadow)
                    conn.abort()
                    return
                balancer.eject(backend, time.monotonic() + EJECT_S)
                if i < last:
                    self._failover(req, crid, split, backend, targets[i + 1], relay.status)
                    continue
                return error_response(
                    conn, inbound.azure, 502, "BadGateway", f"backend {backend.name} failed: {exc!r}"
                )
            finally:
                in_flight[backend.index] -= 1
            status = relay.status
            if status >= 500:
                balancer.eject(backend, time.monotonic() + EJECT_S)
            if relay.discard:
                self._failover(req, crid, split, backend, targets[i + 1], status)
                continue
            if relay.streaming:
                if shadow is not None:
                    await asyncio.shield(shadow)  # the duplicate is in the ledger before the end
                conn.end_stream()
                return
            payload = b"".join(relay.chunks)
            if status == 200:
                if req.keeps_state:
                    self.affinity.learn_body(payload, backend.name)
                if req.deletes_state and req.state_key is not None:
                    self.affinity.forget(req.state_key)
            if shadow is not None:
                await asyncio.shield(shadow)
            conn.respond(status, relay.head, payload)
            return
        raise AssertionError("unreachable: the last target always answers")

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

    async def _shadow(self, backend: Backend, head: bytes, data: bytes) -> None:
        """The duplicate's second request: sent, read to the end, dropped."""
        self.balancer.in_flight[backend.index] += 1
        try:
            await self.upstreams[backend.index].request(head, data, None)
        except TransportError:
            pass
        finally:
            self.balancer.in_flight[backend.index] -= 1
