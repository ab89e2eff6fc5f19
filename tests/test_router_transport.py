"""The router's own HTTP plumbing (harness.router.server, .upstream, .relay), in process, between
real servers on 127.0.0.1: aiohttp backends this file controls, the router's server and pools,
and aiohttp clients or raw sockets. Nothing of the network code is faked.

Covers what the mock-fleet tests (tests/test_router.py) cannot steer precisely: chunk timing,
a backend cutting its answer, failover before the first byte (connect error, 429, 5xx), large
bodies both ways, a client leaving mid-stream, keep-alive reuse, waiting for a busy pool, and
the inbound server's edges (pipelining, HTTP/1.0, 100-continue, malformed input, oversized body).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from harness.compliance.policy import CompiledPolicy
from harness.profile import load_policy
from harness.router.app import make_router_handler
from harness.router.backends import BackendTable
from harness.router.decide import Balancer
from harness.router.inject import Injector, Rates
from harness.router.proxy import Proxy
from harness.router.server import Server, serve
from harness.router.upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "profiles/policies/azure-stateless-exclusive.toml"
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
SSE = "text/event-stream"

BackendHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Backend:
    """A backend this test controls: its handler, and what it saw."""

    handler: BackendHandler
    url: str = ""
    peers: list[Any] = field(default_factory=list)  # the client address of every request
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Router:
    server: Server
    proxy: Proxy
    upstreams: list[Upstream]
    url: str


@asynccontextmanager
async def _backend(handler: BackendHandler) -> AsyncIterator[Backend]:
    backend = Backend(handler)

    async def entry(request: web.Request) -> web.StreamResponse:
        backend.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return await backend.handler(request)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", entry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    backend.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield backend
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _router(
    *urls: str, connections: int = 1024, max_body: int = 1 << 26, keepalive_s: float = 75.0
) -> AsyncIterator[Router]:
    """The router in this process, in front of ``urls`` (Azure backends serving gpt-4o)."""
    endpoints = [
        {
            "name": f"azure-{i}",
            "cloud": "azure",
            "region": region,
            "dialect": "azure_openai",
            "base_url": url,
            "deployments": ["gpt-4o"],
        }
        for i, (url, region) in enumerate(zip(urls, ("eastus", "swedencentral", "westus"), strict=False))
    ]
    table = BackendTable.from_endpoints(endpoints)
    upstreams = [
        Upstream(b.base_url, limit=connections, connect_timeout_s=2.0, read_timeout_s=10.0)
        for b in table.backends
    ]
    injector = Injector(Rates(), 0, None)
    proxy = Proxy(table, CompiledPolicy(load_policy(str(POLICY))), injector, Balancer(len(table)), upstreams)
    server = await serve(
        make_router_handler(proxy), "127.0.0.1", 0, max_body=max_body, keepalive_timeout_s=keepalive_s
    )
    try:
        yield Router(server, proxy, upstreams, f"http://127.0.0.1:{server.port}")
    finally:
        await server.close()
        for upstream in upstreams:
            upstream.close()
        injector.close()


def _closed_port() -> int:
    """A loopback port nobody listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chat(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": stream, **extra}


async def _stream(request: web.Request, chunks: list[bytes], gap_s: float) -> web.StreamResponse:
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": SSE, "x-backend-says": "hello"})
    await resp.prepare(request)
    for i, chunk in enumerate(chunks):
        if i:
            await asyncio.sleep(gap_s)
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def _json(request: web.Request, status: int = 200) -> web.Response:
    await request.read()
    return web.json_response({"id": "chatcmpl-1", "object": "chat.completion"}, status=status)


async def _wait_for(check: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


# --------------------------------------------------------------------------- streams


async def test_each_chunk_reaches_the_client_when_the_backend_writes_it() -> None:
    """Five events 80 ms apart arrive 80 ms apart (not in one blob at the end), byte for byte,
    with the backend's own headers and the router's."""
    chunks = [b'data: {"n": %d}\n\n' % i for i in range(5)]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _stream(request, chunks, 0.08)

    async with _backend(handler) as backend, _router(backend.url) as router, aiohttp.ClientSession() as s:
        arrivals: list[tuple[float, bytes]] = []
        async with s.post(router.url + CHAT, json=_chat(), headers={"api-key": "k"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == SSE
            assert resp.headers["x-backend-says"] == "hello"
            assert resp.headers["x-router-backend"] == "azure-0"
            assert resp.headers["x-router-attempts"] == "1"
            t0 = time.monotonic()
            arrivals.extend([(time.monotonic() - t0, chunk) async for chunk in resp.content.iter_any()])
    assert b"".join(c for _, c in arrivals) == b"".join(chunks)
    assert len(arrivals) == 5
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert all(g > 0.05 for g in gaps), gaps


async def test_a_backend_that_cuts_its_stream_gets_the_client_cut_too() -> None:
    """The backend resets after one event: the client's stream breaks (no clean end), the event
    it did get is intact, and the router holds no connection or in-flight count for it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": SSE})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async with _backend(handler) as backend, _router(backend.url) as router, aiohttp.ClientSession() as s:
        got = b""
        async with s.post(router.url + CHAT, json=_chat(), headers={"api-key": "k"}) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content.iter_any():
                    got += chunk
        assert got == b"data: one\n\n"
        assert await _wait_for(lambda: router.upstreams[0].pool.open_connections == 0)
        assert router.proxy.balancer.in_flight == [0]


async def test_a_body_cut_short_aborts_the_client() -> None:
    """A non-stream body the backend cuts (fewer bytes than its Content-Length) is not passed on
    as if complete: the client's connection is aborted."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "100"})
        await resp.prepare(request)
        await resp.write(b'{"id": "x"')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async with _backend(handler) as backend, _router(backend.url) as router, aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.post(router.url + CHAT, json=_chat(stream=False), headers={"api-key": "k"}) as resp:
                await resp.read()


async def test_a_client_leaving_mid_stream_frees_the_upstream_connection() -> None:
    """The client closes after the first event of a long stream: the router drops the backend's
    connection at once (the backend sees it go), and counts nothing in flight."""
    gone_at: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": SSE})
        await resp.prepare(request)
        try:
            for _ in range(500):  # 10 s unless the reader leaves
                await resp.write(b"data: tick\n\n")
                await asyncio.sleep(0.02)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            gone_at.append(time.monotonic())
            backend.disconnected.set()
        return resp

    async with _backend(handler) as backend, _router(backend.url) as router:
        async with aiohttp.ClientSession() as s:
            resp = await s.post(router.url + CHAT, json=_chat(), headers={"api-key": "k"})
            assert resp.status == 200
            assert b"tick" in await resp.content.readany()
            left = time.monotonic()
            resp.close()  # drops the connection
        await asyncio.wait_for(backend.disconnected.wait(), 2.0)
        assert gone_at[0] - left < 1.0
        assert await _wait_for(lambda: router.upstreams[0].pool.open_connections == 0)
        assert router.proxy.balancer.in_flight == [0]
        assert await _wait_for(lambda: router.server.open_connections == 0)


# --------------------------------------------------------------------------- failover


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_retryable_status_fails_over_before_the_first_byte(status: int) -> None:
    """A 429 or 5xx from the first backend never reaches the client: the second backend answers
    (x-router-attempts 2), and the failover is counted."""

    async def failing(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response({"error": {"code": str(status)}}, status=status)

    async def serving(request: web.Request) -> web.StreamResponse:
        return await _stream(request, [b"data: ok\n\n", b"data: [DONE]\n\n"], 0.0)

    async with (
        _backend(failing) as bad,
        _backend(serving) as good,
        _router(bad.url, good.url) as router,
        aiohttp.ClientSession() as s,
    ):
        async with s.post(router.url + CHAT, json=_chat(), headers={"api-key": "k"}) as resp:
            body = await resp.read()
            assert resp.status == 200
            assert resp.headers["x-router-backend"] == "azure-1"
            assert resp.headers["x-router-attempts"] == "2"
        assert body == b"data: ok\n\ndata: [DONE]\n\n"
        assert len(bad.peers) == 1
        assert router.proxy.counts["failovers"] == 1
        # the failed answer was read to its end: its keep-alive connection is reused, not dropped
        assert router.upstreams[0].pool.idle_connections == 1


async def test_a_refused_connection_fails_over_and_the_backend_is_tried_last() -> None:
    """A backend that cannot be reached is skipped (attempts 2), then tried last for a while."""

    async def serving(request: web.Request) -> web.StreamResponse:
        return await _json(request)

    dead = f"http://127.0.0.1:{_closed_port()}"
    async with _backend(serving) as good, _router(dead, good.url) as router, aiohttp.ClientSession() as s:
        attempts = []
        for _ in range(4):
            async with s.post(router.url + CHAT, json=_chat(stream=False), headers={"api-key": "k"}) as resp:
                assert resp.status == 200
                assert resp.headers["x-router-backend"] == "azure-1"
                attempts.append(resp.headers["x-router-attempts"])
                assert orjson.loads(await resp.read())["id"] == "chatcmpl-1"
        assert attempts == ["2", "1", "1", "1"]  # ejected after the first failure
        assert router.proxy.counts["failovers"] == 1


async def test_the_last_backend_answer_is_passed_on_errors_included() -> None:
    """With no backend left to try, the client gets the backend's own error, body and all; an
    unreachable last backend is a 502 in the inbound dialect's shape."""

    async def failing(request: web.Request) -> web.StreamResponse:
        return await _json(request, status=503)

    async with (
        _backend(failing) as bad,
        _router(bad.url) as router,
        aiohttp.ClientSession() as s,
        s.post(router.url + CHAT, json=_chat(stream=False), headers={"api-key": "k"}) as resp,
    ):
        assert resp.status == 503
        assert resp.headers["x-router-attempts"] == "1"
        assert orjson.loads(await resp.read())["id"] == "chatcmpl-1"
    async with (
        _router(f"http://127.0.0.1:{_closed_port()}") as router,
        aiohttp.ClientSession() as s,
        s.post(router.url + CHAT, json=_chat(stream=False), headers={"api-key": "k"}) as resp,
    ):
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "BadGateway"


# --------------------------------------------------------------------------- bodies and connections


async def test_large_bodies_pass_both_ways_intact() -> None:
    """A 6 MiB request body reaches the backend unchanged and a 6 MiB answer comes back whole;
    a stream of 1 MiB events does too."""
    big = "x" * (6 * 1024 * 1024)
    event = b"data: " + b"y" * (1024 * 1024) + b"\n\n"

    async def echo(request: web.Request) -> web.StreamResponse:
        if request.query.get("stream"):
            return await _stream(request, [event, event, event], 0.0)
        return web.Response(body=await request.read(), content_type="application/json")

    async with _backend(echo) as backend, _router(backend.url) as router, aiohttp.ClientSession() as s:
        request = orjson.dumps({"messages": [{"role": "user", "content": big}], "max_tokens": 1})
        async with s.post(router.url + CHAT, data=request, headers={"api-key": "k"}) as resp:
            assert resp.status == 200
            assert await resp.read() == request
        async with s.post(router.url + CHAT + "&stream=1", json=_chat(), headers={"api-key": "k"}) as resp:
            assert await resp.read() == event * 3


async def test_keep_alive_connections_are_reused_on_both_sides() -> None:
    """Twenty calls one after another (streams and not) use one client connection and one
    backend connection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["stream"]:
            return await _stream(request, [b"data: a\n\n", b"data: [DONE]\n\n"], 0.0)
        return await _json(request)

    async with _backend(handler) as backend, _router(backend.url) as router:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
            for i in range(20):
                async with s.post(
                    router.url + CHAT, json=_chat(stream=bool(i % 2)), headers={"api-key": "k"}
                ) as r:
                    assert r.status == 200
                    await r.read()
                assert router.server.open_connections == 1
        assert len(backend.peers) == 20 and len(set(backend.peers)) == 1
        assert router.upstreams[0].pool.open_connections == 1


async def test_a_busy_pool_makes_requests_wait_instead_of_failing() -> None:
    """With one upstream connection, three concurrent streams are served one after another."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _stream(request, [b"data: a\n\n", b"data: [DONE]\n\n"], 0.1)

    async with _backend(handler) as backend, _router(backend.url, connections=1) as router:
        async with aiohttp.ClientSession() as s:

            async def one() -> bytes:
                async with s.post(router.url + CHAT, json=_chat(), headers={"api-key": "k"}) as resp:
                    assert resp.status == 200
                    return await resp.read()

            bodies = await asyncio.gather(one(), one(), one())
        assert bodies == [b"data: a\n\ndata: [DONE]\n\n"] * 3
        assert len(set(backend.peers)) == 1


# --------------------------------------------------------------------------- the inbound server


async def _raw(url: str, data: bytes, *, read_s: float = 1.0) -> bytes:
    """Send raw bytes to the router; everything it answers until it closes (or ``read_s``)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(read_s):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        pass
    writer.close()
    return out


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with _router(f"http://127.0.0.1:{_closed_port()}") as router:
        get = b"GET /router/health HTTP/1.1\r\nHost: x\r\n\r\n"
        bad = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        out = await _raw(router.url, get + bad + get, read_s=0.5)
    assert out.count(b"HTTP/1.1 ") == 3
    first, second, third = (
        out.index(b"HTTP/1.1 200"),
        out.index(b"HTTP/1.1 404"),
        out.rindex(b"HTTP/1.1 200"),
    )
    assert first < second < third


async def test_an_http10_client_gets_a_close_delimited_stream() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _stream(request, [b"data: a\n\n", b"data: [DONE]\n\n"], 0.0)

    async with _backend(handler) as backend, _router(backend.url) as router:
        body = orjson.dumps(_chat())
        head = b"POST %s HTTP/1.0\r\napi-key: k\r\nContent-Length: %d\r\n\r\n" % (CHAT.encode(), len(body))
        out = await _raw(router.url, head + body, read_s=2.0)
    head_out, _, rest = out.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head_out.lower()
    assert rest == b"data: a\n\ndata: [DONE]\n\n"


async def test_expect_100_continue_is_honoured() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _json(request)

    async with (
        _backend(handler) as backend,
        _router(backend.url) as router,
        aiohttp.ClientSession() as s,
        s.post(router.url + CHAT, json=_chat(stream=False), headers={"api-key": "k"}, expect100=True) as resp,
    ):
        assert resp.status == 200


async def test_malformed_oversized_and_unknown_requests_get_plain_errors() -> None:
    async with _router(f"http://127.0.0.1:{_closed_port()}", max_body=1000) as router:
        out = await _raw(router.url, b"NOT HTTP AT ALL\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400")
        big = b"x" * 2000
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (CHAT.encode(), len(big))
        out = await _raw(router.url, head + big)
        assert out.startswith(b"HTTP/1.1 413")
        async with aiohttp.ClientSession() as s:
            async with s.get(router.url + "/elsewhere") as resp:
                assert resp.status == 404
            async with s.post(router.url + "/router/state") as resp:
                assert resp.status == 405
            async with s.get(router.url + "/router/state") as resp:
                state = await resp.json()
                assert state["backends"][0]["in_flight"] == 0
            async with s.post(router.url + CHAT, data=b"{not json", headers={"api-key": "k"}) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "BadRequest"


async def test_an_idle_keep_alive_connection_is_closed_but_a_busy_one_is_not() -> None:
    """After its keep-alive timeout without a request the client's connection is closed; a stream
    that lasts longer than the timeout is not cut."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _stream(request, [b"data: a\n\n", b"data: [DONE]\n\n"], 0.5)

    async with _backend(handler) as backend, _router(backend.url, keepalive_s=0.2) as router:
        body = orjson.dumps(_chat())
        head = b"POST %s HTTP/1.1\r\nHost: x\r\napi-key: k\r\nContent-Length: %d\r\n\r\n" % (
            CHAT.encode(),
            len(body),
        )
        t0 = time.monotonic()
        out = await _raw(router.url, head + body, read_s=3.0)  # read until the router closes
        closed_after = time.monotonic() - t0
        assert out.startswith(b"HTTP/1.1 200")
        assert out.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the whole stream, then the close
        assert 0.5 < closed_after < 1.5
        assert router.server.open_connections == 0
