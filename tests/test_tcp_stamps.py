"""Kernel-stamped plain TCP (``harness.engine.tcp``) against real sockets on 127.0.0.1: a read
carries the time its bytes arrived, not the time the loop got round to reading them; writes,
EOF, resets and closes behave as the lean transport needs; nothing leaks when a connect fails or
is cancelled. Each case also runs on uvloop, the engine's loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from harness.engine.tcp import StampedTransport, open_stamped
from harness.engine.transport import LeanPool, RequestHead, host_header

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS is Linux's")


class Recorder:
    """A protocol that keeps what it is told, with the monotonic time of each call."""

    def __init__(self) -> None:
        self.transport: StampedTransport | None = None
        self.reads: list[tuple[bytes, int, int]] = []  # (data, stamp, time of the call)
        self.eof = 0
        self.lost: list[Exception | None] = []
        self.got = asyncio.Event()
        self.gone = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received_at(self, data: bytes, t_ns: int) -> None:
        self.reads.append((data, t_ns, time.monotonic_ns()))
        self.got.set()

    def eof_received(self) -> bool:
        self.eof += 1
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.gone.set()

    def data(self) -> bytes:
        return b"".join(d for d, _, _ in self.reads)


Accepted = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[
    tuple[int, asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
]:
    """A TCP server on 127.0.0.1, port 0; yields the port and a queue of accepted streams."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.asynccontextmanager
async def stamped_connection() -> AsyncIterator[tuple[StampedTransport, Recorder, socket.socket]]:
    """A stamped connection to a plain listening socket on 127.0.0.1, port 0; yields the
    transport, its recorder and the server's (blocking) side."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        rec = Recorder()
        transport = await open_stamped(loop, "127.0.0.1", listener.getsockname()[1], rec)
        server_side, _ = listener.accept()  # the handshake is done: this does not block
        try:
            yield transport, rec, server_side
        finally:
            transport.close()
            server_side.close()
    finally:
        listener.close()


@contextlib.asynccontextmanager
async def stamping_on() -> AsyncIterator[None]:
    """Receive stamping switched on for the block. The kernel does so shortly after the first
    socket of the machine asks and off after the last one closes (a deferred switch), so this
    holds a stamped connection open and waits until its reads come stamped, as a run's first
    reads let it."""
    async with stamped_connection() as (_, rec, server_side):
        for _ in range(50):
            server_side.send(b"warm")
            await asyncio.wait_for(rec.got.wait(), 5)
            rec.got.clear()
            if rec.reads[-1][1] < rec.reads[-1][2] - 20_000:  # stamped before the read
                break
            await asyncio.sleep(0.01)
        yield


@linux_only
async def test_a_read_carries_its_arrival_time_not_the_time_it_was_read() -> None:
    """Bytes that arrive while the loop is blocked for 200 ms are stamped when they arrived:
    the stamp is within a few ms of the peer's send, the read itself ≥ 200 ms later."""
    async with stamping_on(), stamped_connection() as (transport, rec, server_side):
        assert transport.stamped
        sent = time.monotonic_ns()
        server_side.send(b"token")  # loopback: queued at the client's socket before send returns
        time.sleep(0.2)  # noqa: ASYNC251 (the loop is busy elsewhere)
        await asyncio.wait_for(rec.got.wait(), 5)
    data, stamp, called = rec.reads[0]
    assert data == b"token"
    assert called - sent >= 200_000_000
    assert sent <= stamp + 1_000_000  # (clock conversion: within a ms)
    assert stamp - sent < 20_000_000, f"stamped {(stamp - sent) / 1e6:.1f} ms after the send"


@linux_only
async def test_lean_pool_sinks_get_arrival_times_on_plain_tcp() -> None:
    """Through the lean transport: a chunk the server (a thread) wrote while the client's loop
    was blocked for 150 ms reaches the sink stamped with its arrival, so the sink sees the
    server's timing, not the loop's."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    first_seen = threading.Event()
    written: list[int] = []

    def server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            request = b""
            while not request.endswith(b"{}"):
                request += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n")
            )
            first_seen.wait(10)
            time.sleep(0.02)  # well inside the client's blocked 150 ms
            written.append(time.monotonic_ns())
            conn.sendall(chunk(b"data: two\n\n") + b"0\r\n\r\n")
            conn.recv(1)  # until the client closes

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data)

    class Sink:
        def __init__(self) -> None:
            self.times: list[int] = []

        def on_headers(self, status: int, headers: object, t_ns: int) -> None:
            pass

        def on_body(self, data: bytes, t_ns: int) -> None:
            self.times.append(t_ns)
            if len(self.times) == 1:
                first_seen.set()
                time.sleep(0.15)  # the loop is busy while the second chunk arrives

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    try:
        async with stamping_on():
            pool = LeanPool("127.0.0.1", port, limit=1, kernel_stamps=True)
            head = RequestHead("POST", "/s", host_header("127.0.0.1", port, False), {}, body_len=2)
            sink = Sink()
            resp = await pool.request(head.with_id("r1"), b"{}", sink)
            pool.close()
        thread.join(10)
    finally:
        listener.close()
    assert resp.status == 200
    assert len(sink.times) == 2
    late_ms = (sink.times[1] - written[0]) / 1e6
    assert -1.0 < late_ms < 20.0, f"the second chunk was stamped {late_ms:.1f} ms after it was written"


async def test_writes_larger_than_the_socket_buffer_arrive_whole_and_in_order() -> None:
    """A write the kernel cannot take at once (the peer not reading) is finished by the writer
    callback, in order, after more writes queued behind it."""
    loop = asyncio.get_running_loop()
    big = bytes(range(256)) * 64 * 1024  # 16 MiB
    async with peer() as (port, accepted):
        rec = Recorder()
        transport = await open_stamped(loop, "127.0.0.1", port, rec)
        reader, writer = await accepted.get()
        transport.write(big)
        transport.writelines([b"tail-", b"end"])
        got = await asyncio.wait_for(reader.readexactly(len(big) + 8), 30)
        assert got == big + b"tail-end"
        transport.close()
        writer.close()


async def test_eof_from_the_peer_closes_once() -> None:
    loop = asyncio.get_running_loop()
    async with peer() as (port, accepted):
        rec = Recorder()
        transport = await open_stamped(loop, "127.0.0.1", port, rec)
        _, writer = await accepted.get()
        writer.write(b"last words")
        writer.close()
        await asyncio.wait_for(rec.gone.wait(), 5)
        await asyncio.sleep(0.01)
    assert rec.data() == b"last words"
    assert rec.eof == 1
    assert rec.lost == [None]
    assert transport.is_closing()
    transport.write(b"ignored after close")  # no error, nothing sent
    transport.close()
    assert rec.lost == [None]


async def test_a_reset_reaches_connection_lost_with_the_error() -> None:
    loop = asyncio.get_running_loop()
    async with peer() as (port, accepted):
        rec = Recorder()
        await open_stamped(loop, "127.0.0.1", port, rec)
        _, writer = await accepted.get()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # RST
        await asyncio.wait_for(rec.gone.wait(), 5)
    assert len(rec.lost) == 1
    assert rec.lost[0] is None or isinstance(rec.lost[0], ConnectionError)


async def test_close_and_abort_call_connection_lost_once_and_free_the_descriptor() -> None:
    loop = asyncio.get_running_loop()
    async with peer() as (port, accepted):
        before = open_fds()
        rec = Recorder()
        transport = await open_stamped(loop, "127.0.0.1", port, rec)
        _, writer = await accepted.get()
        assert transport.get_extra_info("peername")[1] == port
        transport.close()
        transport.abort()
        await asyncio.wait_for(rec.gone.wait(), 5)
        writer.close()
        await asyncio.sleep(0.01)
        assert rec.lost == [None]
        assert open_fds() <= before + 1  # (the server's accepted socket, closing)


async def test_refused_and_cancelled_connects_leak_nothing() -> None:
    loop = asyncio.get_running_loop()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    before = open_fds()
    with pytest.raises(OSError):
        await open_stamped(loop, "127.0.0.1", port, Recorder())
    # a listener that never accepts, with a full backlog: the connect hangs until cancelled
    blocked = socket.socket()
    blocked.bind(("127.0.0.1", 0))
    blocked.listen(0)
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(blocked.getsockname())
            fillers.append(s)
        task = asyncio.ensure_future(open_stamped(loop, "127.0.0.1", blocked.getsockname()[1], Recorder()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, OSError)):
            await task
    finally:
        for s in fillers:
            s.close()
        blocked.close()
    assert open_fds() <= before


ASYNC_CASES = [
    f for name, f in sorted(globals().items()) if name.startswith("test_") and inspect.iscoroutinefunction(f)
]


@pytest.mark.parametrize("case", ASYNC_CASES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_on_uvloop(case: Callable[[], Awaitable[None]]) -> None:
    """Each behaviour above also holds on uvloop, the loop the engine runs on."""
    uvloop.run(asyncio.wait_for(case(), 60))
