"""The router's inbound side: a small HTTP/1.1 server (an ``asyncio.Protocol`` fed to httptools).

Why hand-written: behind aiohttp's web server (and aiohttp's client upstream) a streamed request
cost the router ~1.8 ms of CPU, 1.85x the mock that produced the stream: request and response
objects, the ``StreamWriter``, one awaited ``write`` per chunk. This server plus the lean
upstream transport (``harness.router.upstream``) brought it to the mock's own cost
(docs/benchmarks.md, "Reference router"). It does only what the router needs:

- one request at a time per connection: the parser collects the request (target, headers,
  body) and ``on_message_complete`` runs the handler coroutine in a task of its own; a request
  that arrives before the answer is complete (pipelining) waits, with reading paused;
- the handler answers through the connection: ``respond`` (a whole response with a length), or
  ``start_stream`` / ``send_chunk`` / ``end_stream`` (chunked, written as soon as it is given),
  or ``abort`` (reset, as a backend that cut its stream did to us);
- when the client goes away, the handler's task is cancelled, so whatever it awaits (the
  upstream request) is abandoned at once and its connection freed;
- a connection with no byte from the client for ``KEEPALIVE_TIMEOUT_S`` between requests is
  closed.

Not supported: upgrades (a request asking for one is answered, then the connection is closed),
trailers, compression. ``Expect: 100-continue`` is honoured.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

MAX_BODY: Final = 64 * 1024 * 1024
"""Largest request body accepted (bytes); a larger one is answered 413 and the connection closed."""
KEEPALIVE_TIMEOUT_S: Final = 75.0
"""A connection with no request in progress is closed after this long without one (as aiohttp)."""

_log = logging.getLogger(__name__)
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
_CLOSE: Final = b"Connection: close\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_STATUS_LINES: Final = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """``Name: value\\r\\n`` lines of ``headers`` (latin-1; values must hold no CR or LF)."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")


class Request:
    """One complete inbound request.

    ``headers`` maps lower-case names to the first value sent; ``target`` is the request target
    as sent (path and query, percent-encoding kept), ``path`` its path percent-decoded.
    """

    __slots__ = ("body", "headers", "http11", "keep_alive", "method", "path", "query_string", "target")

    def __init__(
        self, method: str, target: str, headers: dict[str, str], body: bytes, keep_alive: bool, http11: bool
    ) -> None:
        self.method = method
        self.target = target
        path, _, self.query_string = target.partition("?")
        self.path = unquote(path) if "%" in path else path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http11 = http11


Handler = Callable[[Request, "Connection"], Awaitable[None]]


class Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler for each, writes its answer."""

    __slots__ = (
        "_body",
        "_body_len",
        "_busy",
        "_chunked",
        "_conns",
        "_handler",
        "_headers",
        "_idle_s",
        "_keep_alive",
        "_last_active",
        "_loop",
        "_max_body",
        "_parser",
        "_queue",
        "_task",
        "_timer",
        "_too_large",
        "_transport",
        "_url",
        "answered",
    )

    def __init__(
        self,
        handler: Handler,
        conns: set[Connection],
        loop: asyncio.AbstractEventLoop,
        max_body: int = MAX_BODY,
        keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
    ) -> None:
        self._handler = handler
        self._max_body = max_body
        self._idle_s = keepalive_timeout_s
        self._last_active = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._conns = conns
        self._loop = loop
        self._parser = HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_len = 0
        self._too_large = False
        self._queue: deque[Request] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._keep_alive = True  # of the request being answered
        self._chunked = True  # the answer being streamed is chunked (HTTP/1.1)
        self.answered = False
        """Whether the current request's answer has been started (head written) or aborted."""

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._conns.add(self)
        self._last_active = self._loop.time()
        self._timer = self._loop.call_at(self._last_active + self._idle_s, self._on_timer)

    def data_received(self, data: bytes) -> None:
        self._last_active = self._loop.time()  # a slow upload is not an idle connection
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            pass  # the request is complete (answered by the handler); nothing after it is read
        except HttpParserError:
            self._bad_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._conns.discard(self)
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()  # abandon the upstream request, whatever it waits for

    def _on_timer(self) -> None:
        """The keep-alive timeout: one timer per connection, re-armed only when it fires."""
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        now = self._loop.time()
        due = now + self._idle_s if self._busy else self._last_active + self._idle_s
        if now >= due:
            transport.close()
        else:
            self._timer = self._loop.call_at(due, self._on_timer)

    # ---------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_len = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key not in self._headers:
            self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self._max_body:
            self._too_large = True
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        if self._too_large:
            self._too_large = False
            self._reject(413, b"request body larger than %d bytes" % self._max_body)
            return
        http11 = parser.get_http_version() == "1.1"
        keep_alive = http11 and parser.should_keep_alive() and not parser.should_upgrade()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = parser.get_method().decode("latin-1")
        request = Request(method, self._url.decode("latin-1"), self._headers, body, keep_alive, http11)
        if self._busy:
            self._queue.append(request)
            if self._transport is not None:
                self._transport.pause_reading()
            return
        self._start(request)

    # ---------------------------------------------------------------- running the handler

    def _start(self, request: Request) -> None:
        self._busy = True
        self._keep_alive = request.keep_alive
        self._chunked = request.http11
        self.answered = False
        self._task = self._loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            await self._handler(request, self)
        except asyncio.CancelledError:
            return  # the client went away
        except Exception:
            _log.exception("router handler failed on %s %s", request.method, request.target)
            if not self.answered:
                self.respond(500, b"Content-Type: text/plain\r\n", b"router error")
            else:
                self.abort()
            return
        finally:
            self._task = None
        if not self.answered:
            self.respond(500, b"Content-Type: text/plain\r\n", b"the router gave no answer")
        self._done()

    def _done(self) -> None:
        self._busy = False
        self._last_active = self._loop.time()
        transport = self._transport
        if transport is None:
            return
        if not self._keep_alive:
            transport.close()
        elif self._queue:
            transport.resume_reading()
            self._start(self._queue.popleft())

    def _bad_request(self) -> None:
        self._reject(400, b"malformed HTTP request")

    def _reject(self, status: int, message: bytes) -> None:
        """Answer a request the handler never sees, then close (after the answer in progress)."""
        transport = self._transport
        if transport is None:
            return
        if self._busy:  # a pipelined request behind the one being answered: end after that one
            self._keep_alive = False
            self._queue.clear()
            transport.pause_reading()
            return
        transport.write(
            status_line(status)
            + b"Content-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (len(message), _CLOSE, message)
        )
        transport.close()

    # ---------------------------------------------------------------- answering

    def respond(self, status: int, headers: bytes, body: bytes) -> None:
        """The whole answer: ``headers`` are ``Name: value\\r\\n`` lines (no framing headers)."""
        self.answered = True
        transport = self._transport
        if transport is None:
            return
        framing = b"Content-Length: %d\r\n" % len(body)
        if not self._keep_alive:
            framing += _CLOSE
        transport.write(b"".join((status_line(status), headers, framing, b"\r\n", body)))

    def start_stream(self, status: int, headers: bytes) -> None:
        """Write the head of a streamed answer; the body follows in ``send_chunk`` calls."""
        self.answered = True
        transport = self._transport
        if transport is None:
            return
        framing = _CHUNKED if self._chunked else b""  # HTTP/1.0: the close ends the body
        if not self._keep_alive:
            framing += _CLOSE
        transport.write(b"".join((status_line(status), headers, framing, b"\r\n")))

    def send_chunk(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or not data:
            return
        if self._chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            transport.write(data)

    def end_stream(self) -> None:
        transport = self._transport
        if transport is not None and self._chunked:
            transport.write(_LAST_CHUNK)

    def abort(self) -> None:
        """Reset the client's connection (no proper end), as a backend that cut its answer did."""
        self.answered = True
        self._keep_alive = False
        transport = self._transport
        if transport is not None:
            transport.abort()

    @property
    def closed(self) -> bool:
        return self._transport is None


class Server:
    """A listening router server and its open connections (closed together by ``close``)."""

    __slots__ = ("_conns", "_server")

    def __init__(self, server: asyncio.Server, conns: set[Connection]) -> None:
        self._server = server
        self._conns = conns

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Client connections open now."""
        return len(self._conns)

    async def close(self) -> None:
        """Stop listening and close every connection (requests in flight are cancelled)."""
        self._server.close()
        for conn in list(self._conns):
            conn.abort()
        await self._server.wait_closed()


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    max_body: int = MAX_BODY,
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
) -> Server:
    """Listen on ``host:port`` (0: a free port); raise OSError when that is not possible."""
    loop = asyncio.get_running_loop()
    conns: set[Connection] = set()
    server = await loop.create_server(
        lambda: Connection(handler, conns, loop, max_body, keepalive_timeout_s), host, port, backlog=backlog
    )
    return Server(server, conns)
