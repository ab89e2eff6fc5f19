"""The mocks' lean HTTP/1.1 front (harness.mocks.front): what it serves must equal what aiohttp
serves, byte framing and connection semantics included, and whatever it does not take must reach
aiohttp intact, on real port-0 servers and raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from harness.mocks import RunningFleet, front as front_mod, start_fleet
from harness.mocks.front import FastFront, FrontServer, LightRequest, reply, stream_response
from harness.profile.models import Fleet, FleetEndpoint, Latency

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
BODY = orjson.dumps({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4})
STREAM_BODY = orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True})
ID_HEADERS = {"apim-request-id", "x-request-id", "date"}


def _fleet(latency: Latency) -> Fleet:
    return Fleet(
        name="front",
        seed=5,
        endpoints=[
            FleetEndpoint(name="ep", cloud="azure", region="eastus", deployments=["gpt-4o"], latency=latency)
        ],
    )


@pytest.fixture
async def fleet() -> AsyncIterator[RunningFleet]:
    running = await start_fleet(
        _fleet(Latency(ttft_base_ms=2, prefill_us_per_token=0, itl_ms=2, jitter_frac=0))
    )
    try:
        yield running
    finally:
        await running.stop()


def _port(running: RunningFleet) -> int:
    return int(running.endpoints[0]["base_url"].rsplit(":", 1)[1])


def request(
    path: str = CHAT,
    body: bytes = BODY,
    *,
    crid: str = "c-1",
    extra: str = "",
    method: str = "POST",
    version: str = "HTTP/1.1",
    chunked: bool = False,
) -> bytes:
    head = f"{method} {path} {version}\r\nHost: t\r\napi-key: k\r\nContent-Type: application/json\r\n"
    head += f"x-ms-client-request-id: {crid}\r\n{extra}"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n%b\r\n0\r\n\r\n" % (
            len(body),
            body,
        )
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, chunked: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.chunked = chunked


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One HTTP/1.1 response (1xx skipped), with a Content-Length or chunked body."""
    while True:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        if status >= 200:
            break
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).strip(), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), 10)
            if size == 0:
                return Reply(status, headers, body, True)
            body += chunk[:-2]
    length = int(headers.get("content-length", "0"))
    return Reply(status, headers, await asyncio.wait_for(reader.readexactly(length), 10), False)


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def exchange(port: int, raw: bytes) -> Reply:
    async with connection(port) as (reader, writer):
        writer.write(raw)
        return await read_reply(reader)


def _comparable(reply: Reply) -> tuple[int, set[str], Any]:
    body: Any = orjson.loads(reply.body) if reply.body else None
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("id", "created")}
    return reply.status, set(reply.headers) - {"transfer-encoding", "content-length"}, body


# --------------------------------------------------------------------------- same as aiohttp


@pytest.mark.parametrize(
    ("what", "path", "body", "extra"),
    [
        ("chat", CHAT, BODY, ""),
        (
            "v1 chat",
            "/openai/v1/chat/completions",
            orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
            "",
        ),
        (
            "embeddings",
            "/openai/deployments/gpt-4o/embeddings?api-version=2024-10-21",
            b'{"input":"abc"}',
            "",
        ),
        ("no api-version", "/openai/deployments/gpt-4o/chat/completions", BODY, ""),
        ("unknown deployment", CHAT.replace("gpt-4o", "nope"), BODY, ""),
        ("bad json", CHAT, b"{not json", ""),
    ],
)
async def test_fast_front_answers_like_aiohttp(
    fleet: RunningFleet, what: str, path: str, body: bytes, extra: str
) -> None:
    """The same request answered by the front and (chunked body: handed over) by aiohttp gives the
    same status, the same header names and the same body but for its fresh ids."""
    port = _port(fleet)
    fast = await exchange(port, request(path, body, extra=extra))
    slow = await exchange(port, request(path, body, extra=extra, chunked=True))
    assert _comparable(fast) == _comparable(slow), what
    assert fast.headers["x-ms-client-request-id"] == "c-1"
    assert fast.headers["server"] == slow.headers["server"]


async def test_missing_credentials_get_the_same_401_on_both_paths(fleet: RunningFleet) -> None:
    """A request without api-key or Authorization is refused alike by the front and by aiohttp."""
    port = _port(fleet)
    raw = request().replace(b"api-key: k\r\n", b"")
    chunked = request(chunked=True).replace(b"api-key: k\r\n", b"")
    fast, slow = await exchange(port, raw), await exchange(port, chunked)
    assert fast.status == slow.status == 401
    assert _comparable(fast) == _comparable(slow)


async def test_fast_front_streams_chunked_sse_and_keeps_the_connection(fleet: RunningFleet) -> None:
    """A streamed chat completion on the front is chunked SSE ending in [DONE] and the zero chunk,
    and the connection then serves the next request."""
    async with connection(_port(fleet)) as (reader, writer):
        writer.write(request(body=STREAM_BODY, crid="s-1"))
        streamed = await read_reply(reader)
        writer.write(request(crid="s-2"))
        after = await read_reply(reader)
    assert streamed.status == 200 and streamed.chunked
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [line for line in streamed.body.split(b"\n\n") if line]
    assert events[-1] == b"data: [DONE]"
    deltas = [orjson.loads(e[6:]) for e in events[:-1]]
    assert sum(1 for d in deltas if d["choices"] and d["choices"][0]["delta"].get("content")) == 5
    assert after.status == 200 and after.headers["x-ms-client-request-id"] == "s-2"


# --------------------------------------------------------------------------- framing


async def test_pipelined_requests_are_answered_in_order(fleet: RunningFleet) -> None:
    """Three requests in one write get three replies, in order."""
    async with connection(_port(fleet)) as (reader, writer):
        writer.write(b"".join(request(crid=f"p-{i}") for i in range(3)))
        replies = [await read_reply(reader) for _ in range(3)]
    assert [r.headers["x-ms-client-request-id"] for r in replies] == ["p-0", "p-1", "p-2"]
    assert {r.status for r in replies} == {200}


async def test_a_request_arriving_byte_by_byte_is_served(fleet: RunningFleet) -> None:
    """A head and body split into one-byte writes are reassembled before the handler runs."""
    async with connection(_port(fleet)) as (reader, writer):
        for byte in request(crid="b-1"):
            writer.write(bytes([byte]))
            await writer.drain()
        reply_ = await read_reply(reader)
    assert reply_.status == 200 and reply_.headers["x-ms-client-request-id"] == "b-1"


async def test_other_routes_hand_the_connection_to_aiohttp_for_good(fleet: RunningFleet) -> None:
    """A fast request, then a Responses call (aiohttp's route), then chat again: one connection,
    three answers, three ledger rows."""
    responses = orjson.dumps({"model": "gpt-4o", "input": "hi", "store": True})
    async with connection(_port(fleet)) as (reader, writer):
        writer.write(request(crid="h-1"))
        first = await read_reply(reader)
        writer.write(request("/openai/v1/responses", responses, crid="h-2"))
        second = await read_reply(reader)
        writer.write(request(crid="h-3"))
        third = await read_reply(reader)
    assert (first.status, second.status, third.status) == (200, 200, 200)
    assert orjson.loads(second.body)["object"] == "response"
    ids = set(fleet.ledger_table().column("request_id").to_pylist())
    assert {"h-1", "h-2", "h-3"} <= ids


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (request(version="HTTP/1.0"), 200),
        (request(extra="Expect: 100-continue\r\n"), 200),
        (request(method="GET"), 405),
        (request("/openai/deployments/gpt-4o/nothing?api-version=1"), 404),
        (request("/openai/deployments/gpt%2D4o/chat/completions?api-version=2024-10-21"), 200),
        (request(extra="Upgrade: h2c\r\nConnection: Upgrade\r\n"), 200),
    ],
    ids=["http-1.0", "expect-100", "get", "unknown-op", "percent-path", "upgrade"],
)
async def test_what_the_front_does_not_take_aiohttp_answers(
    fleet: RunningFleet, raw: bytes, status: int
) -> None:
    """HTTP/1.0, Expect, other methods and paths, escapes and Upgrade go to aiohttp unharmed."""
    assert (await exchange(_port(fleet), raw)).status == status


async def test_an_oversized_body_is_refused_by_aiohttp(fleet: RunningFleet) -> None:
    """A Content-Length past the apps' limit is not buffered by the front: aiohttp reads the body
    and answers 413 once it passes the limit, as it does without the front."""
    size = 64 * 1024 * 1024 + 4096
    raw = request().replace(f"Content-Length: {len(BODY)}".encode(), f"Content-Length: {size}".encode())
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    async with connection(_port(fleet)) as (reader, writer):
        writer.write(head)
        writer.write(b" " * size)
        assert (await read_reply(reader)).status == 413


async def test_connection_close_is_honoured(fleet: RunningFleet) -> None:
    """``Connection: close`` gets the header back and the server closes after the reply."""
    async with connection(_port(fleet)) as (reader, writer):
        writer.write(request(extra="Connection: close\r\n"))
        reply_ = await read_reply(reader)
        assert reply_.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    fleet: RunningFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle keep-alive connection is closed once the timeout passes (75 s, shortened here)."""
    monkeypatch.setattr(front_mod, "KEEPALIVE_TIMEOUT_S", 0.3)
    async with connection(_port(fleet)) as (reader, writer):
        writer.write(request())
        await read_reply(reader)
        assert await asyncio.wait_for(reader.read(), 10) == b""


# --------------------------------------------------------------------------- lifecycle


async def test_a_client_leaving_mid_stream_ends_its_handler_and_ledger_row() -> None:
    """A client that closes mid-stream gets its handler cancelled: the ledger row appears at once,
    status 200 with fewer tokens than asked."""
    running = await start_fleet(
        _fleet(Latency(ttft_base_ms=1, prefill_us_per_token=0, itl_ms=50, jitter_frac=0))
    )
    try:
        body = orjson.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": True}
        )
        async with connection(_port(running)) as (reader, writer):
            writer.write(request(body=body, crid="gone"))
            await asyncio.wait_for(reader.readuntil(b"data: "), 5)
        for _ in range(100):
            rows = running.ledger_table().to_pylist()
            if rows:
                break
            await asyncio.sleep(0.02)
        assert len(rows) == 1
        assert rows[0]["request_id"] == "gone" and rows[0]["status"] == 200
        assert rows[0]["tokens_out"] < 100
    finally:
        await running.stop()


async def test_a_client_leaving_before_the_first_byte_ends_its_handler_at_once() -> None:
    """A client that gives up on a slow reply (closing its side) cancels the handler now, not
    when the reply would be due: the ledger row (499, nothing sent) appears at once."""
    running = await start_fleet(
        _fleet(Latency(ttft_base_ms=30_000, prefill_us_per_token=0, itl_ms=1, jitter_frac=0))
    )
    try:
        async with connection(_port(running)) as (_, writer):
            writer.write(request(crid="impatient"))
            await writer.drain()
            await asyncio.sleep(0.1)
        for _ in range(100):
            rows = running.ledger_table().to_pylist()
            if rows:
                break
            await asyncio.sleep(0.02)
        assert [(r["request_id"], r["status"]) for r in rows] == [("impatient", 499)]
    finally:
        await running.stop()


async def test_stop_ends_an_in_flight_request_within_the_shutdown_timeout() -> None:
    """Stopping the fleet with a slow request in flight returns within the grace and cancel
    periods, and the request still gets its ledger row."""
    running = await start_fleet(
        _fleet(Latency(ttft_base_ms=30_000, prefill_us_per_token=0, itl_ms=1, jitter_frac=0))
    )
    _, writer = await asyncio.open_connection("127.0.0.1", _port(running))
    try:
        writer.write(request(crid="slow"))
        await writer.drain()
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        table = running.ledger_table
        await asyncio.wait_for(running.stop(), 10)
        assert loop.time() - started < 5
        assert table().column("request_id").to_pylist() == ["slow"]
    finally:
        writer.close()


# --------------------------------------------------------------------------- the front alone


@contextlib.asynccontextmanager
async def bare_front(handler: Any) -> AsyncIterator[tuple[int, list[str]]]:
    """A FastFront server with one route, ``POST /x`` → ``handler``; aiohttp answers the rest."""
    loop = asyncio.get_running_loop()
    fallback = web.Server(lambda r: asyncio.sleep(0, web.Response(text="aiohttp")))  # type: ignore[arg-type,return-value]
    seen: list[str] = []

    def match(path: str) -> Any:
        seen.append(path)
        return (handler, {}) if path == "/x" else None

    server = FrontServer(loop, match, fallback)
    tcp = await loop.create_server(lambda: FastFront(server), "127.0.0.1", 0)
    try:
        yield tcp.sockets[0].getsockname()[1], seen
    finally:
        tcp.close()
        server.pre_shutdown()
        await server.shutdown(1.0)
        await fallback.shutdown(1.0)


async def test_a_handler_that_raises_gets_a_500_and_a_closed_connection() -> None:
    """An exception in a handler answers 500 and closes the connection; nothing leaks out."""

    async def boom(_: LightRequest) -> web.Response:
        raise RuntimeError("bug")

    async with bare_front(boom) as (port, _), connection(port) as (reader, writer):
        writer.write(request("/x"))
        assert (await read_reply(reader)).status == 500
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_handlers_answer_at_once_or_after_waiting_alike() -> None:
    """A handler that returns without awaiting and one that waits give the same reply, and the
    light request carries the path, query, headers and body."""
    got: list[tuple[str, str | None, str | None, bytes]] = []

    async def handler(req: LightRequest) -> Any:
        got.append(
            (req.path, req.query.get("a"), req.headers.get("X-Ms-Client-Request-Id"), await req.read())
        )
        if req.query.get("wait"):
            await asyncio.sleep(0.01)
        return reply(req, b"ok", [("Content-Type", "text/plain")])

    async with bare_front(handler) as (port, _), connection(port) as (reader, writer):
        writer.write(request("/x?a=1", b"B1", crid="r1"))
        now = await read_reply(reader)
        writer.write(request("/x?a=%20z&wait=1", b"B2", crid="r2"))
        later = await read_reply(reader)
    assert (now.status, now.body, later.status, later.body) == (200, b"ok", 200, b"ok")
    assert got == [("/x", "1", "r1", b"B1"), ("/x", " z", "r2", b"B2")]


async def test_a_disconnect_cancels_the_waiting_handler() -> None:
    """The client leaving while the handler waits cancels the handler (its finally runs)."""
    ended = asyncio.Event()

    async def slow(req: LightRequest) -> Any:
        try:
            await asyncio.sleep(30)
        finally:
            ended.set()
        return reply(req, b"late", [])

    async with bare_front(slow) as (port, _):
        async with connection(port) as (_, writer):
            writer.write(request("/x"))
            await writer.drain()
            await asyncio.sleep(0.1)
        await asyncio.wait_for(ended.wait(), 5)


async def test_a_stream_response_with_a_length_and_backpressure() -> None:
    """A LightStreamResponse with a Content-Length sends exactly that body; large writes wait for
    the reader (drain) instead of buffering without bound."""
    big = b"x" * (8 * 1024 * 1024)

    async def handler(req: LightRequest) -> Any:
        resp = stream_response(req, headers=[("Content-Type", "application/octet-stream")])
        resp.content_length = len(big)
        await resp.prepare(req)
        for i in range(0, len(big), 1024 * 1024):
            await resp.write(big[i : i + 1024 * 1024])
        return resp

    async with bare_front(handler) as (port, _), connection(port) as (reader, writer):
        writer.write(request("/x"))
        await asyncio.sleep(0.2)  # let the server fill its buffers and pause
        got = await read_reply(reader)
    assert got.status == 200 and not got.chunked and got.body == big


@pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS is Linux's")
async def test_a_request_arrives_when_its_bytes_reach_the_socket_not_when_the_loop_reads_them() -> None:
    """A request sent while the mock's loop is blocked for 200 ms has ``protocol.arrived`` (where
    the latency model starts) at the kernel's receive time, not the read 200 ms later: a busy
    mock must not count its own lateness into the TTFT it serves."""
    arrivals: list[tuple[float, float]] = []

    async def handler(req: LightRequest) -> Any:
        assert req.protocol.arrived is not None
        arrivals.append((req.protocol.arrived, time.monotonic()))
        return reply(req, b"ok", [("Content-Type", "text/plain")])

    loop = asyncio.get_running_loop()
    async with bare_front(handler) as (port, _):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            for i in range(3):  # the first read may be the transport's; later ones are stamped
                await loop.sock_sendall(sock, request("/x", b"{}", crid=f"warm-{i}"))
                got = b""
                while b"ok" not in got:
                    got += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
                await asyncio.sleep(0.02)
            arrivals.clear()
            sent = time.monotonic()
            sock.send(request("/x", b"{}", crid="late"))  # loopback: in the mock's socket now
            time.sleep(0.2)  # noqa: ASYNC251 (the mock's loop is busy elsewhere)
            got = b""
            while b"ok" not in got:
                got += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        finally:
            sock.close()
    arrived, handled = arrivals[0]
    assert handled - sent >= 0.2
    assert arrived - sent < 0.02, f"arrival stamped {1000 * (arrived - sent):.1f} ms after the send"
    assert arrived >= sent - 0.001
