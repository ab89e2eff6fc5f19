"""A lean HTTP/1.1 front for the mocks' hot routes, in front of aiohttp on every connection.

Why: aiohttp's server costs ~40 µs of Python per request at saturation and ~110 µs when paced
(a task, a request object, router, middlewares, response preparation and two or three loop turns
per request); the stateless OpenAI-family routes (chat completions, completions, embeddings) are
what load tests hammer, and a mock must cost well under what the harness spends to drive it
(``bench/mocks.py`` (b)). So each connection starts on :class:`FastFront`, which frames plain
requests itself and runs the same handler coroutine with a :class:`LightRequest`; the first
request it does not take (another route or method, ``Transfer-Encoding``, ``Expect``, ``Upgrade``,
HTTP/1.0, a percent-encoded path, an oversized head or body, anything unusual) hands the
connection, bytes and all, to aiohttp's own handler for the rest of its life. Nothing is lost at
the switch: it happens at a request boundary, with no response in flight.

The handlers see the subset of ``web.Request`` they use (``method``, ``path``, ``raw_path``,
``headers``, ``query``, ``match_info``, ``read()``, ``transport``, ``protocol.arrived``) and
create their streaming responses with :func:`stream_response`, which gives a
:class:`LightStreamResponse` (``prepare``/``write``/``write_eof``, chunked or with a
Content-Length) on this path. A ``web.Response`` they return is serialised here: the same status,
headers, body, ``Date`` and ``Server`` as aiohttp would send.

Connection semantics kept from aiohttp's handler as the fleet configures it: keep-alive with a
75 s idle timeout, ``Connection: close`` honoured, pipelined requests answered in order, a client
that leaves cancels its handler (``handler_cancellation``), and shutdown lets in-flight requests
finish for the runner's timeout, then cancels them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
import types
from collections.abc import Callable, Coroutine, Generator, Iterable
from email.utils import formatdate
from http import HTTPStatus
from operator import itemgetter
from typing import Any, Final
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from harness.engine.tcp import CMSG_BYTES, READ_BYTES, arrival_ns, stamp_receives

log = logging.getLogger(__name__)

MAX_HEAD_BYTES: Final = 16 * 1024
"""A head longer than this goes to aiohttp (which answers 431/400 past its own limits)."""
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""The apps' ``client_max_size``: a larger body goes to aiohttp, which answers 413."""
KEEPALIVE_TIMEOUT_S: Final = 75.0
"""aiohttp's default: an idle keep-alive connection is closed after this long."""
PAUSE_AT_BYTES: Final = 1024 * 1024
"""Pipelined bytes buffered behind a request in flight before reading pauses."""

Handler = Callable[[Any], Coroutine[Any, Any, Any]]
"""An app handler: takes a ``web.Request`` or a :class:`LightRequest`, returns its response."""
Matcher = Callable[[str], "tuple[Handler, dict[str, str]] | None"]
"""``path`` (no query, starts with "/", no "%") of a POST → (handler, match_info), or None."""

FAST_ROUTES: Final[web.AppKey[Matcher]] = web.AppKey("fast_routes")
"""An app's :data:`Matcher` for the routes this front may serve (absent: aiohttp serves all)."""

_DROP: Final = 1
_DATE: Final = 2
_SERVER: Final = 3
_HEADER_KINDS: Final = {
    "content-length": _DROP,
    "transfer-encoding": _DROP,
    "connection": _DROP,
    "date": _DATE,
    "server": _SERVER,
}
"""Response headers the head treats specially (lower case); every other name is kind 0."""
_SERVER_LINE: Final = f"Server: {SERVER_SOFTWARE}\r\n"
_CHUNKED: Final = "Transfer-Encoding: chunked\r\n"
_MAX_HEADER_SETS: Final = 1024
"""Distinct response header name tuples remembered by ``FrontServer.kinds_of``."""
_first = itemgetter(0)


class LightRequest:
    """The part of ``web.Request`` the fast routes' handlers use, for a fully buffered request."""

    __slots__ = (
        "_body",
        "_query",
        "headers",
        "match_info",
        "method",
        "path",
        "protocol",
        "query_string",
        "raw_path",
        "transport",
    )

    def __init__(
        self,
        path: str,
        raw_path: str,
        query_string: str,
        headers: CIMultiDictProxy[str],
        match_info: dict[str, str],
        body: bytes,
        protocol: FastFront,
    ) -> None:
        self.method = "POST"
        self.path = path
        self.raw_path = raw_path
        self.query_string = query_string
        self.headers = headers
        self.match_info = match_info
        self._body = body
        self._query: MultiDictProxy[str] | None = None
        self.protocol = protocol
        self.transport: asyncio.Transport | None = protocol.transport

    @property
    def query(self) -> MultiDictProxy[str]:
        query = self._query
        if query is None:
            query = self._query = MultiDictProxy(MultiDict(_query_pairs(self.query_string)))
        return query

    async def read(self) -> bytes:
        return self._body


class LightStreamResponse:
    """``web.StreamResponse`` for a :class:`LightRequest`: chunked unless ``content_length`` is set."""

    __slots__ = ("_eof", "_front", "chunked", "content_length", "headers", "prepared", "status")

    def __init__(self, *, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status = status
        self.headers = list(headers)
        self.content_length: int | None = None
        self.chunked = False
        self.prepared = False
        self._eof = False
        self._front: FastFront | None = None

    async def prepare(self, request: LightRequest) -> LightStreamResponse:
        self.start(request)
        assert self._front is not None
        await self._front.drain()
        return self

    def start(self, request: LightRequest) -> None:
        """Write the status line and headers (``prepare`` without waiting for the buffer)."""
        front = request.protocol
        self._front = front
        self.chunked = self.content_length is None
        framing = _CHUNKED if self.chunked else f"Content-Length: {self.content_length}\r\n"
        front.write(front.head(self.status, _reason(self.status), self.headers, framing))
        self.prepared = True

    async def write(self, data: bytes) -> None:
        front = self._front
        assert front is not None, "prepare() first"
        if self.chunked:
            if not data:
                return
            data = b"%x\r\n%b\r\n" % (len(data), data)
        front.write(data)
        await front.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        if data and not self._eof:
            await self.write(data)
        self.end()

    def end(self) -> None:
        """The last chunk (``write_eof`` without data); once."""
        if self._eof:
            return
        self._eof = True
        front = self._front
        if front is not None and self.chunked:
            front.write(b"0\r\n\r\n")


class LightResponse:
    """A complete response for a :class:`LightRequest` (``web.Response`` costs ~5 µs to build)."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, body: bytes, headers: list[tuple[str, str]], status: int = 200) -> None:
        self.body = body
        self.headers = headers
        self.status = status
        self.reason = _reason(status)


def reply(request: Any, body: bytes, headers: list[tuple[str, str]], status: int = 200) -> Any:
    """A complete response for either path: light for a :class:`LightRequest`, aiohttp's else."""
    if type(request) is LightRequest:
        return LightResponse(body, headers, status)
    return web.Response(status=status, body=body, headers=headers)


def stream_response(request: Any, *, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Any:
    """A streaming response for either path: light for a :class:`LightRequest`, aiohttp's else."""
    if type(request) is LightRequest:
        return LightStreamResponse(status=status, headers=headers)
    return web.StreamResponse(status=status, headers=list(headers))


_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "")


class _Head:
    """Why the head was refused: the connection goes to aiohttp."""


_REFUSE: Final = _Head()


class FastFront(asyncio.Protocol):
    """One connection: plain requests to fast routes here, everything from the first other one on
    handed to aiohttp's handler (``make_handler()``)."""

    __slots__ = (
        "_buf",
        "_closing",
        "_drain",
        "_idle_handle",
        "_idle_since",
        "_keep_alive",
        "_loop",
        "_paused",
        "_reader",
        "_server",
        "_task",
        "arrived",
        "transport",
    )

    def __init__(self, server: FrontServer) -> None:
        self._server = server
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        self._buf: bytes | bytearray = b""
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # shutting down: close when idle, take no new request
        self._keep_alive = True
        self._paused = False  # the transport paused our writing
        self._drain: asyncio.Future[None] | None = None
        self._idle_since = 0.0
        self._idle_handle: asyncio.TimerHandle | None = None
        self._reader: _StampedReader | None = None
        self.arrived: float | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._server.fronts.add(self)
        self._reader = _StampedReader.start(self._loop, self.transport, self)
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._reader is not None:  # the transport's read came first (see _StampedReader)
            self._reader.take_over()
        self.received(data, time.monotonic())

    def received(self, data: bytes, arrived: float) -> None:
        """Bytes that arrived at monotonic time ``arrived``: the kernel's receive time through
        the stamped reader, the read time through the transport."""
        self.arrived = arrived
        buf = self._buf
        if buf:
            if type(buf) is bytes:
                buf = bytearray(buf)
            buf += data
            self._buf = buf
        else:
            self._buf = data
        if self._task is None:
            self._next()
        elif len(self._buf) > PAUSE_AT_BYTES and self.transport is not None:
            if self._reader is not None:
                self._reader.pause()
            else:
                self.transport.pause_reading()

    def eof_received(self) -> None:
        """The client closed its side: close ours (connection_lost cancels a handler in flight),
        as aiohttp does: a client that gave up must not hold a handler until its reply is due."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.fronts.discard(self)
        self.transport = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._buf = b""
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # the client left: its handler ends now, and writes its ledger row
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("connection lost"))
        self._drain = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ------------------------------------------------------------------ writing (for responses)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)

    async def drain(self) -> None:
        if not self._paused:
            return
        if self.transport is None:
            raise ConnectionResetError("connection lost")
        if self._drain is None:
            self._drain = self._loop.create_future()
        await asyncio.shield(self._drain)

    def head(self, status: int, reason: str, headers: Iterable[tuple[str, str]], framing: str) -> bytes:
        """The status line and headers, plus the ``framing`` line(s) and, unless ``headers`` has
        them, ``Date`` and ``Server`` (aiohttp's); a ``Content-Length``, ``Transfer-Encoding`` or
        ``Connection`` in ``headers`` is dropped, as the framing is ours to decide.

        The check of the names is looked up by their tuple (the mocks send the same names each
        time) and the lines are joined by C-level ``map``s: a Python loop over a dozen headers
        per response was the front's largest cost after parsing."""
        server = self._server
        headers = list(headers)
        names = tuple(map(_first, headers))
        kinds = server.header_kinds.get(names)
        if kinds is None:
            kinds = server.kinds_of(names)
        has_date, has_server, drop = kinds
        if drop:
            headers = [h for h in headers if _HEADER_KINDS.get(h[0].lower()) != _DROP]
        out = f"HTTP/1.1 {status} {reason}\r\n" + "\r\n".join(map(": ".join, headers))
        out += "\r\n" + framing if headers else framing
        if not has_date:
            out += server.date_line()
        if not has_server:
            out += _SERVER_LINE
        if not self._keep_alive:
            out += "Connection: close\r\n"
        return (out + "\r\n").encode()

    # ------------------------------------------------------------------ requests

    def _next(self) -> None:
        """Serve the buffered requests in order while each is answered at once; stop at one in
        flight (its task calls back), at an incomplete one, or hand over at one not ours."""
        while True:
            buf = self._buf
            transport = self.transport
            if transport is None or self._task is not None:
                return
            if not buf:
                break
            if self._closing:
                self._buf = b""
                break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._hand_over()
                    return
                break
            head = _parse_head(bytes(buf[:end]), self._server.matcher)
            if head is _REFUSE:
                self._hand_over()
                return
            handler, match_info, path, target, query, headers, length, keep_alive = head
            start = end + 4
            if len(buf) < start + length:
                break  # the body is still coming
            self._buf = buf[start + length :]
            self._resume_reading()
            self._keep_alive = keep_alive
            request = LightRequest(
                path, target, query, headers, match_info, bytes(buf[start : start + length]), self
            )
            self._start(handler, request)
            if self._task is None and (not self._keep_alive or self._closing) and self.transport is not None:
                self.transport.close()
                return
        if self._task is None:
            self._idle()

    def _resume_reading(self) -> None:
        transport = self.transport
        if transport is None or len(self._buf) > PAUSE_AT_BYTES:
            return
        if self._reader is not None:
            self._reader.resume()
        elif not transport.is_reading():
            transport.resume_reading()

    def _start(self, handler: Handler, request: LightRequest) -> None:
        """Run the handler here until it first waits; only then give it a task.

        Python 3.12's eager task factory, by hand: a reply that is ready at once (a zero-latency
        mock, a rejection, a 4xx) costs no task, no extra loop turn and no ``call_soon``: with
        a paced load that was ~15% of the mock's CPU per request (bench/mocks.py (b))."""
        coro = handler(request)
        try:
            first = coro.send(None)
        except StopIteration as stop:
            self._respond(request, stop.value)
            return
        except Exception:
            self._failed(request)
            return
        self._task = self._loop.create_task(self._finish(coro, first, request))

    async def _finish(self, coro: Any, first: Any, request: LightRequest) -> None:
        try:
            resp = await _resumed(coro, first)
        except asyncio.CancelledError:
            resp = None
        except Exception:
            resp = None
            self._failed(request)
        try:
            if resp is not None:
                self._respond(request, resp)
        finally:
            self._task = None
            if self.transport is not None:
                if not self._keep_alive or self._closing:
                    self.transport.close()
                else:
                    self._next()

    def _respond(self, request: LightRequest, resp: Any) -> None:
        """Send what the handler returned, unless it already did (a stream) or cut the connection."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if isinstance(resp, LightStreamResponse):
            if not resp.prepared:
                resp.content_length = 0
                resp.start(request)
            resp.end()
            return
        if type(resp) is LightResponse:
            headers, body = resp.headers, resp.body
        else:  # a web.Response
            raw = resp.body if isinstance(resp, web.Response) else None
            headers, body = resp.headers.items(), raw if isinstance(raw, bytes) else b""
        length = f"Content-Length: {len(body)}\r\n"
        transport.write(self.head(resp.status, resp.reason, headers, length) + body)

    def _failed(self, request: LightRequest) -> None:
        log.exception("Error handling request %s", request.raw_path)
        self._keep_alive = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            body = b"500 Internal Server Error\n\nServer got itself in trouble"
            plain = [("Content-Type", "text/plain; charset=utf-8")]
            length = f"Content-Length: {len(body)}\r\n"
            transport.write(self.head(500, "Internal Server Error", plain, length) + body)

    def _idle(self) -> None:
        self._idle_since = self._loop.time()
        if self._idle_handle is None:
            self._idle_handle = self._loop.call_at(self._idle_since + KEEPALIVE_TIMEOUT_S, self._idle_check)

    def _idle_check(self) -> None:
        """One timer per connection, re-armed lazily: no timer work per request."""
        self._idle_handle = None
        if self.transport is None:
            return
        due = self._idle_since + KEEPALIVE_TIMEOUT_S
        now = self._loop.time()
        if self._task is None and now >= due:
            self.transport.close()
            return
        self._idle_handle = self._loop.call_at(max(due, now + 1.0), self._idle_check)

    def _hand_over(self) -> None:
        """From now on aiohttp's handler owns this connection, starting with the buffered bytes."""
        transport = self.transport
        assert transport is not None and self._task is None
        self._server.fronts.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        buf, self._buf = self._buf, b""
        self.transport = None
        if self._reader is not None:  # aiohttp reads through the transport from here on
            self._reader.close()
            self._reader = None
        handler = self._server.make_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if not transport.is_reading():
            transport.resume_reading()
        if buf:
            handler.data_received(bytes(buf))

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Take no new request; close now when idle, else once the one in flight is answered."""
        self._closing = True
        if self._task is None and self.transport is not None:
            self.transport.close()

    async def shutdown(self, grace_s: float | None) -> None:
        """Let the request in flight finish for ``grace_s``, then cancel it; close."""
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=grace_s)
        if self.transport is not None:
            self.transport.close()


_NOFILE: Final = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
_DUP_BELOW_FD: Final = 1 << 30 if _NOFILE == resource.RLIM_INFINITY else _NOFILE // 2
"""Connections on descriptors from here up are read by their transport (stamped when read): a
duplicate each would halve how many connections the mock can accept before ``EMFILE``."""


class _StampedReader:
    """Reads a front's connection for the kernel's receive times (``harness.engine.tcp``), so a
    request's ``arrived`` is when its bytes reached the socket, not when this loop got round to
    them: the mocks' latency model starts there, and at 1,000 new streams/s a busy mock read
    requests 0.3 ms late at p90 and 0.7-0.9 ms at p99, all of it counted into the TTFT it served
    (bench/fidelity.py). uvloop's transport reads into its own buffer and drops the stamp, so its
    reading stays paused and a duplicate of its descriptor is read here; writes, closing and
    everything else stay with the transport. A connection handed to aiohttp goes back to the
    transport's reads (``close``, then ``resume_reading``).

    uvloop starts the transport's reading only after ``connection_made`` returns, so it cannot be
    paused there: both read until the first read, whichever comes first (the transport's is
    stamped when read, as before), and then the transport's reading is paused for good
    (``take_over``). Reads are syscalls on one thread, so bytes reach the front in order."""

    __slots__ = ("_fd", "_front", "_loop", "_owned", "_reading", "_recvmsg", "_sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, front: FastFront) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._front = front
        self._recvmsg = sock.recvmsg
        self._reading = False
        self._owned = False  # the transport's own reading paused

    @classmethod
    def start(
        cls, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, front: FastFront
    ) -> _StampedReader | None:
        """A reader for a plain TCP transport, reading from now on; None where it cannot."""
        if transport.get_extra_info("ssl_object") is not None:
            return None
        tsock = transport.get_extra_info("socket")
        if tsock is None or tsock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        if tsock.fileno() >= _DUP_BELOW_FD:  # (descriptors are numbered lowest free first)
            return None
        try:
            sock = socket.socket(fileno=os.dup(tsock.fileno()))
        except OSError:
            return None
        if not stamp_receives(sock):
            sock.close()
            return None
        sock.setblocking(False)
        reader = cls(loop, sock, front)
        reader.resume()
        return reader

    def take_over(self) -> None:
        """Pause the transport's reading (once): reads are this reader's from now on."""
        if not self._owned:
            self._owned = True
            transport = self._front.transport
            if transport is not None and transport.is_reading():
                transport.pause_reading()

    def pause(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        if not self._reading and self._fd >= 0:
            self._reading = True
            self._loop.add_reader(self._fd, self._read)

    def close(self) -> None:
        """Stop reading and close the duplicate (the transport's own descriptor stays open)."""
        self.pause()
        if self._fd >= 0:
            self._fd = -1
            self._sock.close()

    def _read(self) -> None:
        try:
            data, ancillary, _, _ = self._recvmsg(READ_BYTES, CMSG_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        if not self._owned:
            self.take_over()
        front = self._front
        if not data:  # EOF or an error: the transport closes, as it would have on its own read
            self.close()
            transport = front.transport
            if transport is not None:
                transport.close()
            return
        now = time.monotonic_ns()
        front.received(data, (arrival_ns(ancillary, now) if ancillary else now) / 1e9)


class FrontServer:
    """What the fronts of one listening app share: its matcher, aiohttp's handler factory, the
    live fronts (for shutdown) and the cached ``Date`` header."""

    __slots__ = ("_date", "_date_at", "fronts", "header_kinds", "loop", "make_handler", "matcher")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, matcher: Matcher, make_handler: Callable[[], Any]
    ) -> None:
        self.loop = loop
        self.matcher = matcher
        self.make_handler = make_handler
        self.fronts: set[FastFront] = set()
        self.header_kinds: dict[tuple[str, ...], tuple[bool, bool, bool]] = {}  # kinds_of
        self._date = ""
        self._date_at = -1

    def kinds_of(self, names: tuple[str, ...]) -> tuple[bool, bool, bool]:
        """(has Date, has Server, has a framing header to drop) for response header ``names``,
        remembered per tuple (the mocks' own names: the cache stays small)."""
        kinds = {_HEADER_KINDS.get(name.lower(), 0) for name in names}
        found = (_DATE in kinds, _SERVER in kinds, _DROP in kinds)
        if len(self.header_kinds) >= _MAX_HEADER_SETS:
            self.header_kinds.clear()
        self.header_kinds[names] = found
        return found

    def date_line(self) -> str:
        """``Date: <IMF-fixdate>\\r\\n``, formatted once a second."""
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = f"Date: {formatdate(now, usegmt=True)}\r\n"
        return self._date

    def pre_shutdown(self) -> None:
        for front in list(self.fronts):
            front.close()

    async def shutdown(self, grace_s: float | None) -> None:
        fronts = list(self.fronts)
        if fronts:
            await asyncio.gather(*(f.shutdown(grace_s) for f in fronts), return_exceptions=True)
        self.fronts.clear()


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, without its cost for the plain case (no
    escapes: ``?api-version=2024-10-21``)."""
    if "%" in query or "+" in query or ";" in query:
        return parse_qsl(query, keep_blank_values=True)
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


@types.coroutine
def _resumed(coro: Any, first: Any) -> Generator[Any, Any, Any]:
    """Await the rest of ``coro``, which already ran up to yielding ``first`` (a future, to the
    task now driving it): sends, throws (cancellation) and the result pass straight through."""
    value = first
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # handed to the coroutine, as a task would
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


_REFUSING_NAMES: Final = frozenset({"transfer-encoding", "expect", "upgrade"})


def _parse_head(head: bytes, matcher: Matcher) -> Any:
    """(handler, match_info, path, target, query, headers, body length, keep-alive) of a plain
    HTTP/1.1 POST to a fast route, or ``_REFUSE`` for anything else (aiohttp takes those)."""
    if not head.startswith(b"POST /"):
        return _REFUSE
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        return _REFUSE
    target = parts[1]
    path, _, query = target.partition("?")
    if "%" in path or "#" in target:
        return _REFUSE
    route = matcher(path)
    if route is None:
        return _REFUSE
    pairs: list[tuple[str, str]] = []
    length: int | None = None
    keep_alive = True
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in " \t" or name[0] in " \t":
            return _REFUSE  # obs-fold, no colon, whitespace before the colon: aiohttp's call
        value = value.strip(" \t")
        low = name.lower()
        if low == "content-length":
            if length is not None or not value.isdigit() or not value.isascii():
                return _REFUSE
            length = int(value)
        elif low in _REFUSING_NAMES:
            return _REFUSE
        elif low == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "upgrade" in tokens:
                return _REFUSE
            if "close" in tokens:
                keep_alive = False
        pairs.append((name, value))
    if length is None or length > MAX_BODY_BYTES:
        return _REFUSE
    handler, match_info = route
    return handler, match_info, path, target, query, CIMultiDictProxy(CIMultiDict(pairs)), length, keep_alive
