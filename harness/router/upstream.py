"""The router's upstream side: one lean keep-alive pool per backend (``harness.engine.transport``).

Why not aiohttp's ClientSession: building and tearing down its request and response objects
and waking the relay coroutine once per streamed chunk were about half of the router's CPU per
request. ``LeanPool`` feeds each socket read straight to a sink (``harness.router.relay``),
synchronously from ``data_received``, so a chunk goes back out to the client in the callback
that read it.

``LeanPool`` never queues (it raises ``PoolExhausted``); ``Upstream.request`` waits for a free
connection instead, first come first served, when all ``limit`` connections of a backend are
busy, as aiohttp's connector did.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Final

from harness.engine.transport import BodySink, LeanPool, Response, host_header, split_url

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


class Upstream:
    """Keep-alive connections to one backend, and the request heads that go to it."""

    __slots__ = ("_host", "_waiters", "pool")

    def __init__(self, base_url: str, *, limit: int, connect_timeout_s: float, read_timeout_s: float) -> None:
        host, port, _, tls = split_url(base_url)
        self.pool = LeanPool(
            host,
            port,
            limit=limit,
            ssl=ssl.create_default_context() if tls else None,
            server_hostname=host,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            total_timeout_s=None,
        )
        self._host = host_header(host, port, tls).encode("latin-1")
        self._waiters: deque[asyncio.Future[None]] = deque()

    def head(self, method: str, target: str, headers: bytes, body_len: int) -> bytes:
        """The request head: ``headers`` are ``Name: value\\r\\n`` lines (no Host, no length)."""
        length = b"Content-Length: %d\r\n" % body_len if body_len or method in _BODY_METHODS else b""
        return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (
            method.encode("latin-1"),
            target.encode("latin-1"),
            self._host,
            headers,
            length,
        )

    async def request(self, head: bytes, body: bytes, sink: BodySink | None) -> Response:
        """Send one request (waiting for a free connection if need be); see ``LeanPool.request``."""
        pool = self.pool
        while pool.available() <= 0:  # rare: every connection busy
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._wake()  # pass on a wake-up this waiter may have been given
                raise
        try:
            return await pool.request(head, body, sink)
        finally:
            self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.pool.close()
