"""The lean HTTP/1.1 transport against real servers on 127.0.0.1 (aiohttp, or raw asyncio for
malformed and unframed responses)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import uvloop
from aiohttp import web
from hypothesis import given, settings, strategies as st

from harness.engine.transport import (
    ConnectError,
    ConnectTimeout,
    Headers,
    LeanPool as _LeanPool,
    PoolExhausted,
    ProtocolError,
    ReadTimeout,
    RequestHead,
    ResetError,
    Response,
    TotalTimeout,
    host_header,
    split_url,
)
from harness.protocols.azure_openai import (
    SSE_DONE,
    ChatStreamParser,
    chat_completion_body,
    content_chunk,
    finish_chunk,
    role_chunk,
)
from harness.protocols.fingerprint import attribute

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STAMPED: contextvars.ContextVar[bool] = contextvars.ContextVar("stamped", default=False)


def LeanPool(*args: object, **kwargs: object) -> _LeanPool:
    """The pool under test: uvloop's transport, or kernel-stamped connections
    (``harness.engine.tcp``) in ``test_kernel_stamped``, which runs every case again."""
    return _LeanPool(*args, kernel_stamps=STAMPED.get(), **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serve(*routes: tuple[str, Handler], **server_kwargs: object) -> AsyncIterator[int]:
    """An aiohttp server on 127.0.0.1, port 0, with POST routes; yields the port."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    for path, handler in routes:
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, **server_kwargs)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_raw(reply: bytes, *, close: bool = True) -> AsyncIterator[int]:
    """A raw TCP server that answers each request's first read with ``reply`` bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(reply)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # keep the connection open until the client goes

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def head_for(port: int, path: str = "/chat", body_len: int | None = 2, **headers: str) -> RequestHead:
    return RequestHead(
        "POST",
        path,
        host_header("127.0.0.1", port, False),
        {"Content-Type": "application/json", **headers},
        body_len=body_len,
    )


class Sink:
    """Records what the transport hands over, in order."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: Headers | None = None
        self.header_t = 0
        self.chunks: list[bytes] = []
        self.times: list[int] = []
        self.order: list[str] = []

    def on_headers(self, status: int, headers: Headers, t_ns: int) -> None:
        self.status = status
        self.headers = headers
        self.header_t = t_ns
        self.order.append("headers")

    def on_body(self, data: bytes, t_ns: int) -> None:
        self.chunks.append(data)
        self.times.append(t_ns)
        self.order.append("body")


def sse_events(n: int) -> list[bytes]:
    events = [role_chunk("chatcmpl-1", 1, "gpt-4o")]
    events += [content_chunk("chatcmpl-1", 1, "gpt-4o", f" tok{i}") for i in range(n)]
    events += [finish_chunk("chatcmpl-1", 1, "gpt-4o", "stop"), SSE_DONE]
    return events


def stream_handler(events: list[bytes], gap_s: float = 0.0) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"apim-request-id": "abc", "x-ms-region": "Sweden Central"})
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        for event in events:
            await resp.write(event)
            if gap_s:
                await asyncio.sleep(gap_s)
        await resp.write_eof()
        return resp

    return handle


# --------------------------------------------------------------------------- responses


async def test_non_stream_json_body_status_and_headers() -> None:
    """A JSON response comes back whole, with its status, case-insensitive headers and fingerprint."""
    body = chat_completion_body("chatcmpl-1", 1, "gpt-4o", "hello there", 8, 2)

    async def handle(request: web.Request) -> web.Response:
        assert await request.read() == b"{}"
        headers = {"apim-request-id": request.headers["x-ms-client-request-id"], "x-ms-region": "East US"}
        headers["X-Custom"] = "one"
        return web.Response(body=body, content_type="application/json", headers=headers)

    async with serve(("/chat", handle)) as port:
        pool = LeanPool("127.0.0.1", port, limit=2)
        t0 = time.monotonic_ns()
        resp = await pool.request(head_for(port).with_id("req-1"), b"{}")
        pool.close()
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert resp.body == body
    assert resp.first_byte_ns >= t0
    assert resp.headers.get("content-type", "").startswith("application/json")
    assert resp.headers["x-custom"] == resp.headers["X-CUSTOM"] == "one"
    assert resp.headers.get("absent") is None
    assert "x-custom" in resp.headers
    fp = attribute(resp.headers)
    assert (fp.cloud, fp.region, fp.request_id) == ("azure", "eastus", "req-1")
    assert attribute(resp.headers.indexed) == fp


async def test_error_status_and_empty_bodies_complete() -> None:
    """A 429 with a JSON body and a 204 without a body both complete as responses, not errors."""

    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "429", "message": "slow down"}}, status=429)

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async with serve(("/limited", limited), ("/empty", empty)) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        r1 = await pool.request(head_for(port, "/limited").with_id("a"), b"{}")
        r2 = await pool.request(head_for(port, "/empty").with_id("b"), b"{}")
        assert pool.open_connections == 1
        pool.close()
    assert (r1.status, b"slow down" in (r1.body or b"")) == (429, True)
    assert (r2.status, r2.body) == (204, b"")


async def test_chunked_sse_stream_reaches_sink_in_order_with_monotonic_times() -> None:
    """A 300-event chunked SSE stream reaches the sink byte-exact, headers first, times non-decreasing."""
    events = sse_events(300)
    async with serve(("/chat", stream_handler(events, gap_s=0.0005))) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        sink = Sink()
        resp = await pool.request(head_for(port).with_id("s"), b"{}", sink)
        pool.close()
    assert resp.body is None
    assert resp.status == sink.status == 200
    assert sink.order[0] == "headers"
    assert "headers" not in sink.order[1:]
    assert b"".join(sink.chunks) == b"".join(events)
    assert len(sink.chunks) > 50, "paced events arrive in many reads"
    assert sink.times == sorted(sink.times)
    assert resp.first_byte_ns <= sink.header_t <= sink.times[0]
    parser = ChatStreamParser()
    for chunk in sink.chunks:
        parser.feed(chunk)
    parser.close()
    assert (parser.content_chunks, parser.error) == (300, None)


async def test_same_bytes_as_aiohttp() -> None:
    """Bodies of mixed sizes and framings read through the transport equal what aiohttp reads."""
    payloads = [b"x" * n + bytes(range(256)) for n in (0, 1, 100, 5000, 70_000, 300_000)]

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(body=payloads[int(request.query["i"])])

    async def chunked(request: web.Request) -> web.StreamResponse:
        data = payloads[int(request.query["i"])]
        resp = web.StreamResponse()
        await resp.prepare(request)
        for start in range(0, len(data), 7919):
            await resp.write(data[start : start + 7919])
        await resp.write_eof()
        return resp

    async with serve(("/fixed", fixed), ("/chunked", chunked)) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        async with aiohttp.ClientSession() as session:
            for route in ("/fixed", "/chunked"):
                for i in range(len(payloads)):
                    path = f"{route}?i={i}"
                    ours = await pool.request(head_for(port, path).with_id(str(i)), b"{}")
                    async with session.post(f"http://127.0.0.1:{port}{path}", data=b"{}") as r:
                        theirs = await r.read()
                    assert ours.body == theirs == payloads[i]
        pool.close()


async def test_large_request_and_response_bodies() -> None:
    """A 4 MB request body is sent whole and a 4 MB echo comes back byte-exact."""
    big = bytes(range(256)) * 16384

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async with serve(("/echo", echo)) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        resp = await pool.request(head_for(port, "/echo", body_len=len(big)).with_id("big"), big)
        pool.close()
    assert resp.body == big


async def test_response_without_length_ends_at_eof() -> None:
    """A response framed only by the server closing the connection completes with its whole body."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nhello, eof"
    async with serve_raw(reply) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        resp = await pool.request(head_for(port).with_id("e"), b"{}")
        await asyncio.sleep(0.01)
        assert pool.open_connections == 0
        pool.close()
    assert (resp.status, resp.body) == (200, b"hello, eof")


async def test_interim_1xx_response_is_skipped() -> None:
    """A ``100 Continue`` before the final response is skipped; the final status and body are returned."""
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok"
    async with serve_raw(reply, close=False) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        resp = await pool.request(head_for(port).with_id("c"), b"{}")
        pool.close()
    assert (resp.status, resp.body) == (201, b"ok")
    assert resp.headers.raw == [(b"Content-Length", b"2"), (b"X-A", b"1")]


# --------------------------------------------------------------------------- connections


async def test_keep_alive_reuses_one_connection() -> None:
    """Sequential requests travel on one connection: the server sees one peer for all of them."""
    peers: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"ok": True})

    async with serve(("/chat", handle)) as port:
        pool = LeanPool("127.0.0.1", port, limit=8)
        head = head_for(port)
        for i in range(20):
            resp = await pool.request(head.with_id(f"r{i}"), b"{}")
            assert resp.status == 200
        assert (pool.open_connections, pool.idle_connections, pool.available()) == (1, 1, 8)
        pool.close()
    assert len(peers) == 20
    assert len(set(peers)) == 1


async def test_concurrent_requests_open_at_most_limit_connections() -> None:
    """Eight concurrent requests on a pool of eight use eight connections, then all are idle."""
    peers: set[object] = set()

    async def handle(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        await asyncio.sleep(0.05)
        return web.json_response({"ok": True})

    async with serve(("/chat", handle)) as port:
        pool = LeanPool("127.0.0.1", port, limit=8)
        head = head_for(port)
        for _ in range(3):
            results = await asyncio.gather(*(pool.request(head.with_id(f"c{i}"), b"{}") for i in range(8)))
            assert [r.status for r in results] == [200] * 8
        assert (pool.open_connections, pool.idle_connections) == (8, 8)
        pool.close()
    assert len(peers) == 8


async def test_server_connection_close_is_not_reused() -> None:
    """After a ``Connection: close`` response the pool opens a fresh connection for the next request."""
    peers: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"ok": True}, headers={"Connection": "close"})

    async with serve(("/chat", handle)) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        for i in range(3):
            resp = await pool.request(head_for(port).with_id(f"k{i}"), b"{}")
            assert resp.status == 200
            assert pool.idle_connections == 0
        await asyncio.sleep(0.01)
        assert pool.open_connections == 0
        pool.close()
    assert len(set(peers)) == 3


async def test_idle_connection_closed_by_server_is_replaced() -> None:
    """When the server closes an idle keep-alive connection, the next request opens a new one."""

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async with serve(("/chat", handle), keepalive_timeout=0.05) as port:
        pool = LeanPool("127.0.0.1", port, limit=1, read_timeout_s=0.1)
        assert (await pool.request(head_for(port).with_id("a"), b"{}")).status == 200
        await asyncio.sleep(0.3)  # also past the read timeout: an idle connection never times out
        assert pool.open_connections == 0
        assert (await pool.request(head_for(port).with_id("b"), b"{}")).status == 200
        pool.close()


async def test_pool_at_limit_raises_instead_of_queueing() -> None:
    """With every connection busy, a request fails at once with PoolExhausted and available() is 0."""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    async with serve(("/chat", handle)) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        assert pool.available() == 1
        first = asyncio.ensure_future(pool.request(head_for(port).with_id("1"), b"{}"))
        await asyncio.sleep(0.05)
        assert pool.available() == 0
        with pytest.raises(PoolExhausted) as info:
            await pool.request(head_for(port).with_id("2"), b"{}")
        assert info.value.kind == "in_flight_cap"
        release.set()
        assert (await first).status == 200
        assert pool.available() == 1
        pool.close()


# --------------------------------------------------------------------------- failures


async def test_reset_mid_stream_raises_reset_after_delivering_bytes() -> None:
    """A connection aborted mid-stream fails the request with ResetError; bytes before it were delivered."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        for event in sse_events(5)[:4]:
            await resp.write(event)
            await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async with serve(("/chat", handle)) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        sink = Sink()
        with pytest.raises(ResetError) as info:
            await pool.request(head_for(port).with_id("r"), b"{}", sink)
        assert info.value.kind == "reset"
        assert b"".join(sink.chunks) == b"".join(sse_events(5)[:4])
        assert pool.open_connections == 0
        pool.close()


async def test_slow_first_byte_is_a_read_timeout() -> None:
    """No response byte within read_timeout_s fails with ReadTimeout, close to the deadline."""

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({})

    async with serve(("/chat", handle), shutdown_timeout=0.1) as port:
        pool = LeanPool("127.0.0.1", port, limit=1, read_timeout_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(ReadTimeout) as info:
            await pool.request(head_for(port).with_id("slow"), b"{}")
        elapsed = time.monotonic() - t0
        assert info.value.kind == "timeout_read"
        assert 0.19 <= elapsed < 1.0
        assert pool.available() == 1
        pool.close()


async def test_stall_mid_stream_is_a_read_timeout() -> None:
    """A stream that stops sending for longer than read_timeout_s fails with ReadTimeout after its bytes."""
    events = sse_events(3)

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(events[0])
        await asyncio.sleep(0.1)
        await resp.write(events[1])
        await asyncio.sleep(3)
        return resp

    async with serve(("/chat", handle), shutdown_timeout=0.1) as port:
        pool = LeanPool("127.0.0.1", port, limit=1, read_timeout_s=0.3)
        sink = Sink()
        t0 = time.monotonic()
        with pytest.raises(ReadTimeout):
            await pool.request(head_for(port).with_id("stall"), b"{}", sink)
        assert 0.35 <= time.monotonic() - t0 < 1.5
        assert b"".join(sink.chunks) == events[0] + events[1]
        pool.close()


async def test_steady_trickle_past_total_deadline_is_a_total_timeout() -> None:
    """Bytes arriving faster than the read timeout do not extend the request past total_timeout_s."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"data: {}\n\n")
            await asyncio.sleep(0.05)
        return resp

    async with serve(("/chat", handle), shutdown_timeout=0.1) as port:
        pool = LeanPool("127.0.0.1", port, limit=1, read_timeout_s=0.2, total_timeout_s=0.5)
        sink = Sink()
        t0 = time.monotonic()
        with pytest.raises(TotalTimeout) as info:
            await pool.request(head_for(port).with_id("t"), b"{}", sink)
        assert info.value.kind == "timeout_total"
        assert 0.49 <= time.monotonic() - t0 < 1.5
        assert len(sink.chunks) >= 5
        pool.close()


async def test_connect_refused_is_a_connect_error() -> None:
    """A port with no listener fails with ConnectError and releases the pool slot."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = LeanPool("127.0.0.1", port, limit=1)
    with pytest.raises(ConnectError) as info:
        await pool.request(head_for(port).with_id("x"), b"{}")
    assert info.value.kind == "connect"
    assert pool.available() == 1


async def test_full_accept_queue_is_a_connect_timeout() -> None:
    """A listener whose accept queue is full drops SYNs, so connecting fails with ConnectTimeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the backlog; later SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        await asyncio.sleep(0.05)
        pool = LeanPool("127.0.0.1", port, limit=1, connect_timeout_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            await pool.request(head_for(port).with_id("x"), b"{}")
        assert info.value.kind == "timeout_connect"
        assert time.monotonic() - t0 < 1.0
        assert pool.available() == 1
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_garbage_response_is_a_protocol_error() -> None:
    """Bytes that are not an HTTP/1.1 response fail with ProtocolError and close the connection."""
    async with serve_raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", close=False) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        with pytest.raises(ProtocolError) as info:
            await pool.request(head_for(port).with_id("g"), b"{}")
        assert info.value.kind == "protocol"
        assert pool.available() == 1
        pool.close()


async def test_sink_exception_propagates_and_closes_connection() -> None:
    """An exception raised by the sink reaches the caller unchanged and the connection is dropped."""

    class Boom(Sink):
        def on_body(self, data: bytes, t_ns: int) -> None:
            raise LookupError("sink failed")

    async with serve(("/chat", stream_handler(sse_events(3)))) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        with pytest.raises(LookupError, match="sink failed"):
            await pool.request(head_for(port).with_id("b"), b"{}", Boom())
        assert pool.open_connections == 0
        resp = await pool.request(head_for(port).with_id("ok"), b"{}", Sink())
        assert resp.status == 200
        pool.close()


async def test_cancelled_request_frees_its_connection() -> None:
    """Cancelling a request mid-stream closes its connection and gives the slot back."""
    async with serve(("/chat", stream_handler(sse_events(50), gap_s=0.02)), shutdown_timeout=0.1) as port:
        pool = LeanPool("127.0.0.1", port, limit=1)
        sink = Sink()
        task = asyncio.ensure_future(pool.request(head_for(port).with_id("c"), b"{}", sink))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (pool.open_connections, pool.available()) == (0, 1)
        assert sink.chunks, "some bytes arrived before the cancel"
        pool.close()


async def test_pool_close_fails_requests_in_flight() -> None:
    """Closing the pool fails in-flight requests with ResetError."""
    async with serve(("/chat", stream_handler(sse_events(50), gap_s=0.02)), shutdown_timeout=0.1) as port:
        pool = LeanPool("127.0.0.1", port, limit=2)
        task = asyncio.ensure_future(pool.request(head_for(port).with_id("c"), b"{}", Sink()))
        await asyncio.sleep(0.05)
        pool.close()
        with pytest.raises(ResetError):
            await task
        assert pool.open_connections == 0


# --------------------------------------------------------------------------- request heads


def test_request_head_layout() -> None:
    """The head is request line, Host, the given headers, Content-Length, then the id header."""
    head = RequestHead("POST", "/p?q=1", "example.com", [("api-key", "k")], body_len=12)
    assert head.with_id("abc") == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\napi-key: k\r\n"
        b"Content-Length: 12\r\nx-ms-client-request-id: abc\r\n\r\n"
    )
    bare = RequestHead("GET", "/", "h", id_header=None)
    assert bare.without_id() == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("POST", "/", "h", {"bad name": "v"}), {}),
        (("POST", "/", "h", {"x": "a\r\nInjected: 1"}), {}),
        (("POST", "/", "h", {"Content-Length": "5"}), {}),
        (("PO ST", "/", "h"), {}),
        (("POST", "/a b", "h"), {}),
        (("POST", "/", "h"), {"id_header": "bad:name"}),
    ],
)
def test_request_head_rejects_unsafe_input(args: tuple, kwargs: dict) -> None:  # type: ignore[type-arg]
    """Non-token header names, CR/LF in values, transport-owned headers and bad targets are refused."""
    with pytest.raises(ValueError):
        RequestHead(*args, **kwargs)


@pytest.mark.parametrize("rid", ["a\r\nInjected: 1", "a\nb", "nul\0", "caf\u00e9", "tab\tid"])
def test_request_id_must_be_printable_ascii(rid: str) -> None:
    """An id with a control or non-ASCII character is refused rather than written."""
    with pytest.raises(ValueError):
        RequestHead("POST", "/", "h").with_id(rid)


def test_split_url_and_host_header() -> None:
    """URLs split into host, port, target and TLS; Host carries the port only when not the default."""
    assert split_url("http://127.0.0.1:8080/a/b?x=1") == ("127.0.0.1", 8080, "/a/b?x=1", False)
    assert split_url("https://example.com") == ("example.com", 443, "/", True)
    assert host_header("example.com", 443, True) == "example.com"
    assert host_header("example.com", 8443, True) == "example.com:8443"
    assert host_header("::1", 80, False) == "[::1]"
    with pytest.raises(ValueError):
        split_url("ftp://example.com/")


ID_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
REQUEST_IDS = st.text(ID_CHARS, min_size=1, max_size=80).filter(lambda s: s == s.strip())


@settings(max_examples=25, deadline=None)
@given(st.lists(REQUEST_IDS, min_size=1, max_size=20))
def test_request_ids_round_trip_to_the_server(ids: list[str]) -> None:
    """Any printable-ASCII id (without outer spaces) reaches the server's header read unchanged."""

    async def roundtrip() -> list[str]:
        seen: list[str] = []

        async def handle(request: web.Request) -> web.Response:
            seen.append(request.headers["x-ms-client-request-id"])
            return web.Response(body=b"ok")

        async with serve(("/chat", handle)) as port:
            pool = LeanPool("127.0.0.1", port, limit=1)
            head = head_for(port)
            for rid in ids:
                assert (await pool.request(head.with_id(rid), b"{}")).status == 200
            pool.close()
        return seen

    assert asyncio.run(asyncio.wait_for(roundtrip(), 30)) == ids


# --------------------------------------------------------------------------- the engine's loop

ASYNC_CASES = [
    f for name, f in sorted(globals().items()) if name.startswith("test_") and inspect.iscoroutinefunction(f)
]


@pytest.mark.parametrize("case", ASYNC_CASES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_on_uvloop(case: Callable[[], Awaitable[None]]) -> None:
    """Each behaviour above also holds on uvloop, the loop the engine runs on."""
    uvloop.run(asyncio.wait_for(case(), 30))


@pytest.mark.parametrize("case", ASYNC_CASES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_kernel_stamped(case: Callable[[], Awaitable[None]]) -> None:
    """Each behaviour above also holds on connections that read for the kernel's receive times
    (``LeanPool(kernel_stamps=True)``, how the engine reads token streams), on uvloop."""
    token = STAMPED.set(True)
    try:
        uvloop.run(asyncio.wait_for(case(), 30))
    finally:
        STAMPED.reset(token)
