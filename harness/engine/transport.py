"""A lean HTTP/1.1 client transport for the engine's hot path.

Why: with a stock aiohttp ``ClientSession`` about 80% of a load generator's CPU is aiohttp's
own per-request Python code (request and response objects, timeout timers, connector
bookkeeping), and a token stream costs one coroutine wake-up per socket read
(``../shared/PERF-ANCHORS.md``). Here each keep-alive connection is an ``asyncio.Protocol``
whose ``data_received`` (called directly by the event loop) feeds httptools (llhttp, C):

- every socket read is timestamped once, at the top of ``data_received`` (uvloop's transport),
  or, in a pool with ``kernel_stamps`` on plain TCP, with the kernel's receive time of its last
  segment (``harness.engine.tcp``: the connection reads with ``recvmsg`` itself), and each body
  piece of that read goes synchronously to the request's sink as ``on_body(data, t_ns)``: no
  StreamReader, no wake-up per chunk;
- the request coroutine awaits one future, resolved when the message completes;
- no timer per request: one timer per connection, re-armed lazily only when it fires, enforces
  both the read deadline (no byte for ``read_timeout_s``) and the total deadline.

The pool never queues: a request that finds no idle connection while ``limit`` connections
are open raises :class:`PoolExhausted` (the engine caps in-flight requests at the connection
count and reads :meth:`LeanPool.available`). Requests are never retried, not even on a reused
connection the server had just closed: that is a ``reset``, recorded as such.

Times are ``time.monotonic_ns()`` values (absolute; subtract the run epoch yourself).
Not supported: pipelining, HEAD requests, proxies, compression (bodies are passed as sent).

Use (one pool per endpoint and worker process; heads built once per route)::

    host, port, target, tls = split_url(route_url)
    pool = LeanPool(host, port, limit=64, ssl=ctx if tls else None, server_hostname=host,
                    connect_timeout_s=10, read_timeout_s=60, total_timeout_s=600)
    head = RequestHead("POST", target, host_header(host, port, tls), headers, body_len=len(body))
    resp = await pool.request(head.with_id(request_id), body)        # resp.body buffered
    resp = await pool.request(head.with_id(request_id), body, sink)  # body to sink.on_body
    fp = attribute(resp.headers.indexed)                              # cloud fingerprint
    pool.close()

Exception tree; ``kind`` is the ``harness.results.schema.ERROR_KINDS`` value the engine records:

    TransportError
    ├── ConnectError      connect           refused, unreachable, TLS handshake failed
    ├── ConnectTimeout    timeout_connect   no connection within connect_timeout_s
    ├── ResetError        reset             closed or reset before the response completed
    ├── ProtocolError     protocol          bytes that are not a valid HTTP/1.1 response
    ├── ReadTimeout       timeout_read      no byte for read_timeout_s while a response was due
    ├── TotalTimeout      timeout_total     the request exceeded total_timeout_s
    └── PoolExhausted     in_flight_cap     no idle connection and ``limit`` open: a caller bug
                                            (cap in-flight at ``limit``), never a hidden queue

An exception raised by a sink propagates out of :meth:`LeanPool.request` unchanged (and
closes the connection).
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, Protocol
from urllib.parse import urlsplit

from httptools import HttpParserCallbackError, HttpParserError, HttpResponseParser

from harness.engine.tcp import open_stamped

_mono: Final = time.monotonic_ns

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class TransportError(Exception):
    """Base of every per-request failure of the lean transport."""

    kind: str = "protocol"


class ConnectError(TransportError):
    kind = "connect"


class ConnectTimeout(TransportError):
    kind = "timeout_connect"


class ResetError(TransportError):
    kind = "reset"


class ProtocolError(TransportError):
    kind = "protocol"


class ReadTimeout(TransportError):
    kind = "timeout_read"


class TotalTimeout(TransportError):
    kind = "timeout_total"


class PoolExhausted(TransportError):
    kind = "in_flight_cap"


# ---------------------------------------------------------------------------------------------
# Request heads
# ---------------------------------------------------------------------------------------------

_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _check_header(name: str, value: str) -> None:
    if not name or not set(name) <= _TOKEN_CHARS:
        raise ValueError(f"invalid HTTP header name {name!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {name!r} has a CR, LF or NUL in its value")


class RequestHead:
    """The request-head bytes of one route, built once; per request only one header (the
    request id) varies, so :meth:`with_id` is two concatenations.

    ``headers`` should include ``User-Agent`` and ``Content-Type`` as wanted; ``Host`` and
    ``Content-Length`` (when ``body_len`` is given) are added here. Ids must be printable
    ASCII; servers strip leading and trailing spaces from header values (RFC 9110 §5.5).
    """

    __slots__ = ("prefix", "suffix")

    def __init__(
        self,
        method: str,
        target: str,
        host: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        body_len: int | None = None,
        id_header: str | None = "x-ms-client-request-id",
    ) -> None:
        if not method or not set(method) <= _TOKEN_CHARS:
            raise ValueError(f"invalid HTTP method {method!r}")
        if not target or any(c in target for c in " \r\n\0"):
            raise ValueError(f"invalid request target {target!r}")
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        _check_header("Host", host)
        for name, value in items:
            _check_header(name, value)
            if name.lower() in ("host", "content-length", "transfer-encoding"):
                raise ValueError(f"header {name!r} is set by the transport")
            lines.append(f"{name}: {value}")
        if body_len is not None:
            lines.append(f"Content-Length: {body_len}")
        head = "\r\n".join(lines) + "\r\n"
        if id_header is None:
            self.prefix = (head + "\r\n").encode("latin-1")
            self.suffix = b""
        else:
            _check_header(id_header, "")
            self.prefix = (head + id_header + ": ").encode("latin-1")
            self.suffix = b"\r\n\r\n"

    def with_id(self, request_id: str) -> bytes:
        """The whole head for one request; ValueError when the id is not printable ASCII."""
        if not request_id.isprintable():  # rejects CR/LF/NUL (header injection); C-speed
            raise ValueError(f"request id {request_id!r} is not printable")
        return self.prefix + request_id.encode("ascii") + self.suffix

    def with_id_len(self, request_id: str, body_len: int) -> bytes:
        """The whole head for one request whose body size varies (a head built without
        ``body_len``): the id header, then ``Content-Length``."""
        if not request_id.isprintable():
            raise ValueError(f"request id {request_id!r} is not printable")
        if not self.suffix:
            raise ValueError("this head has no id header")
        return b"%s%s\r\nContent-Length: %d\r\n\r\n" % (self.prefix, request_id.encode("ascii"), body_len)

    def without_id(self) -> bytes:
        """The head with no id header (only for ``id_header=None``)."""
        if self.suffix:
            raise ValueError("this head has an id header: use with_id()")
        return self.prefix


def split_url(url: str) -> tuple[str, int, str, bool]:
    """``(host, port, request target, tls)`` of an ``http(s)://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    tls = parts.scheme == "https"
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, target, tls


def host_header(host: str, port: int, tls: bool) -> str:
    """The Host header value: the port only when it is not the scheme's default."""
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if tls else 80) else f"{name}:{port}"


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------

#: Headers indexed while parsing (lower-case), so ``Headers.get`` for them is a dict lookup:
#: the cloud fingerprint (harness.protocols.fingerprint.attribute) and rate-limit hints.
INDEXED_HEADERS: Final = (
    "apim-request-id",
    "x-ms-region",
    "x-request-id",
    "openai-version",
    "openai-processing-ms",
    "x-amzn-requestid",
    "server",
    "x-mock-cloud",
    "x-mock-region",
    "x-mock-aws-region",
    "retry-after",
    "retry-after-ms",
    "content-type",
)


class Headers(Mapping[str, str]):
    """Response headers: the raw ``(name, value)`` byte pairs in wire order, plus a case-
    insensitive lookup. Indexed names are found in a dict; others by a scan (first wins).

    ``indexed`` is that plain dict (lower-case name → first value) of the pool's indexed
    headers; pass it to ``fingerprint.attribute`` for C-speed lookups (~1 µs saved per response).
    """

    __slots__ = ("_names", "indexed", "raw")

    def __init__(
        self, raw: list[tuple[bytes, bytes]], indexed: dict[str, str], names: frozenset[str]
    ) -> None:
        self.raw = raw
        self.indexed = indexed
        self._names = names

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self.indexed.get(name)
        if value is not None:
            return value
        if name in self._names:
            return default
        key = name.lower().encode("latin-1")
        for n, v in self.raw:
            if n.lower() == key:
                return v.decode("latin-1")
        return default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name``, in wire order."""
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.raw if n.lower() == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(n.decode("latin-1").lower() for n, _ in self.raw))

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self.raw})

    def __repr__(self) -> str:
        return f"Headers({[(n.decode('latin-1'), v.decode('latin-1')) for n, v in self.raw]!r})"


class Response:
    """A completed response. ``body`` is the whole body when the request had no sink (else
    None: the sink got it); ``first_byte_ns`` is the monotonic time of its first read;
    ``connect_ns`` how long opening its connection took (0 on a reused keep-alive connection)."""

    __slots__ = ("body", "connect_ns", "first_byte_ns", "headers", "status")

    def __init__(self, status: int, headers: Headers, first_byte_ns: int, body: bytes | None) -> None:
        self.status = status
        self.headers = headers
        self.first_byte_ns = first_byte_ns
        self.body = body
        self.connect_ns = 0

    def __repr__(self) -> str:
        size = "sink" if self.body is None else f"{len(self.body)} B"
        return f"Response({self.status}, body={size}, first_byte_ns={self.first_byte_ns})"


class BodySink(Protocol):
    """What a request hands its response to, synchronously from ``data_received``.

    ``t_ns`` is the monotonic time of the socket read that carried the bytes, taken before
    any parsing. Keep both methods short: they run inside the event loop's read callback.
    """

    def on_headers(self, status: int, headers: Headers, t_ns: int) -> None: ...

    def on_body(self, data: bytes, t_ns: int) -> None: ...


# ---------------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------------

_NO_DEADLINE: Final = 1 << 62
_MIN_REARM_S: Final = 0.001  # uvloop rounds timers to whole ms; never re-arm a 0 ms timer


class _Unsolicited(Exception):
    """Response bytes arrived while no request was waiting."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; serves one request at a time."""

    __slots__ = (
        "_chunks",
        "_counted",
        "_deadline_ns",
        "_first_byte_ns",
        "_fp",
        "_fut",
        "_headers",
        "_last_read_ns",
        "_loop",
        "_parser",
        "_pool",
        "_raw",
        "_sink",
        "_status",
        "_t",
        "_timer",
        "_timer_at_ns",
        "_transport",
        "_wanted",
    )

    def __init__(self, pool: LeanPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self._fut: asyncio.Future[Response] | None = None
        self._sink: BodySink | None = None
        self._wanted = pool._wanted
        self._chunks: list[bytes] = []
        self._raw: list[tuple[bytes, bytes]] = []
        self._fp: dict[str, str] = {}
        self._headers: Headers | None = None
        self._status = 0
        self._t = 0
        self._first_byte_ns = 0
        self._last_read_ns = 0
        self._deadline_ns = _NO_DEADLINE
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ns = 0
        self._counted = True  # holds one of the pool's ``limit`` slots

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """A read through an asyncio transport: stamped now, before any parsing."""
        self.data_received_at(data, _mono())

    def data_received_at(self, data: bytes, t: int) -> None:
        """A read that arrived at monotonic time ``t`` (``harness.engine.tcp``: the kernel's
        receive time of its last segment)."""
        self._t = t
        self._last_read_ns = t
        if self._fut is None:
            self._abort()  # bytes on an idle connection: it cannot be trusted any more
            return
        if self._first_byte_ns == 0:
            self._first_byte_ns = t
        try:
            self._parser.feed_data(data)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Unsolicited) or cause is None:
                self._fail(ProtocolError(str(cause or exc)))
            else:
                self._fail(cause)  # a sink's own exception reaches the caller unchanged
        except HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool:
        if self._fut is None:
            self._release()  # idle: leave the pool now, before a request picks it up
        return False  # close; connection_lost decides what the EOF means

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._release()
        fut = self._fut
        if fut is None:
            return
        self._fut = None
        if fut.done():
            return
        if self._status and self._read_until_eof():
            fut.set_result(self._finish())
            return
        where = "after the response headers" if self._status else "before the response headers"
        detail = f": {exc}" if exc else ""
        fut.set_exception(ResetError(f"connection closed {where}{detail}"))

    # ---------------------------------------------------------------- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))
        key = self._wanted.get(name.lower())
        if key is not None and key not in self._fp:
            self._fp[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._fut is None:
            raise _Unsolicited("a response arrived while no request was waiting")
        status = self._parser.get_status_code()
        if status < 200:  # 1xx interim response: llhttp starts the next message after it
            self._raw = []
            self._fp = {}
            return
        self._status = status
        headers = self._headers = Headers(self._raw, self._fp, self._pool._names)
        if self._sink is not None:
            self._sink.on_headers(status, headers, self._t)

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is None:
            self._chunks.append(body)
        else:
            sink.on_body(body, self._t)

    def on_message_complete(self) -> None:
        if self._status == 0:
            return  # end of a 1xx interim response
        fut = self._fut
        if fut is None:
            return
        self._fut = None
        response = self._finish()
        if self._parser.should_keep_alive() and self._transport is not None:
            self._pool._idle.append(self)
        else:
            self._close()
        if not fut.done():
            fut.set_result(response)

    # ---------------------------------------------------------------- requests

    def send(
        self, head: bytes, body: bytes, sink: BodySink | None, t0: int, start_ns: int
    ) -> asyncio.Future[Response]:
        """Write one request; ``t0`` (now) starts the read deadline, ``start_ns`` the total one."""
        pool = self._pool
        fut: asyncio.Future[Response] = self._loop.create_future()
        self._fut = fut
        self._sink = sink
        if sink is None:
            self._chunks = []
        self._raw = []
        self._fp = {}
        self._status = 0
        self._first_byte_ns = 0
        self._last_read_ns = t0
        deadline = self._deadline_ns = start_ns + pool._total_ns
        due = min(t0 + pool._read_ns, deadline)
        if due < _NO_DEADLINE and (self._timer is None or self._timer_at_ns > due):
            self._arm(due, t0)
        transport = self._transport
        assert transport is not None
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)
        return fut

    def _finish(self) -> Response:
        body = None
        if self._sink is None:
            body = b"".join(self._chunks)
            self._chunks = []
        self._sink = None
        assert self._headers is not None
        return Response(self._status, self._headers, self._first_byte_ns, body)

    def _read_until_eof(self) -> bool:
        """True when the response has no length and no chunked encoding: EOF ends its body."""
        if self._status in (204, 304):
            return False
        for name, value in self._raw:
            lname = name.lower()
            if lname == b"content-length":
                return False
            if lname == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    def abandon(self, fut: asyncio.Future[Response]) -> None:
        """The caller gave up on ``fut`` (cancelled): the response state is unknown, so close."""
        if self._fut is fut:
            self._fut = None
            self._sink = None
            self._abort()

    # ---------------------------------------------------------------- timers

    def _arm(self, due_ns: int, now_ns: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at_ns = due_ns
        delay = max((due_ns - now_ns) / 1e9, _MIN_REARM_S)
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._fut is None:
            return  # idle; the next request re-arms
        now = _mono()
        pool = self._pool
        if now >= self._deadline_ns:
            self._fail(TotalTimeout(f"request exceeded total_timeout_s={pool.total_timeout_s}"))
        elif now >= self._last_read_ns + pool._read_ns:
            self._fail(ReadTimeout(f"no bytes within read_timeout_s={pool.read_timeout_s}"))
        else:
            self._arm(min(self._last_read_ns + pool._read_ns, self._deadline_ns), now)

    # ---------------------------------------------------------------- closing

    def _fail(self, exc: BaseException) -> None:
        fut = self._fut
        self._fut = None
        self._sink = None
        self._abort()
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _release(self) -> None:
        """Give back the pool slot (once) and leave the idle stack."""
        if self._counted:
            self._counted = False
            pool = self._pool
            pool._open -= 1
            pool._conns.discard(self)
            try:
                pool._idle.remove(self)
            except ValueError:
                pass
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        self._release()
        if self._transport is not None:
            self._transport.close()

    def _abort(self) -> None:
        self._release()
        if self._transport is not None:
            self._transport.abort()


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------


class LeanPool:
    """Up to ``limit`` keep-alive connections to one ``host:port``, reused newest-first.

    Timeouts (seconds; None disables): ``connect_timeout_s`` bounds opening a connection;
    ``read_timeout_s`` is the longest silence while a response is due (from the send, then
    between reads); ``total_timeout_s`` bounds a request from :meth:`request` to the last byte.
    Timeouts fire up to ~1 ms late (the event loop's timer resolution).

    ``kernel_stamps`` (plain TCP only): reads carry the kernel's receive time instead of the
    time the loop handed them over (``harness.engine.tcp``), for pools whose per-chunk timing is
    measured (token streams). It costs ~3 µs of CPU per request (bench/closed_loop.py: 38 against
    35 µs), which a non-stream open loop at 10k rps on one core cannot spare.
    """

    __slots__ = (
        "_conns",
        "_idle",
        "_names",
        "_open",
        "_read_ns",
        "_total_ns",
        "_wanted",
        "connect_timeout_s",
        "host",
        "kernel_stamps",
        "limit",
        "port",
        "read_timeout_s",
        "server_hostname",
        "ssl",
        "total_timeout_s",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        limit: int,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout_s: float | None = 10.0,
        read_timeout_s: float | None = 60.0,
        total_timeout_s: float | None = 600.0,
        indexed_headers: Iterable[str] = INDEXED_HEADERS,
        kernel_stamps: bool = False,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.kernel_stamps = kernel_stamps and ssl is None
        self.host = host
        self.port = port
        self.limit = limit
        self.ssl = ssl
        self.server_hostname = server_hostname if ssl is not None else None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.total_timeout_s = total_timeout_s
        self._read_ns = _NO_DEADLINE if read_timeout_s is None else int(read_timeout_s * 1e9)
        self._total_ns = _NO_DEADLINE if total_timeout_s is None else int(total_timeout_s * 1e9)
        names = [n.lower() for n in indexed_headers]
        self._wanted = {n.encode("latin-1"): n for n in names}
        self._names = frozenset(names)
        self._idle: list[_Connection] = []
        self._conns: set[_Connection] = set()
        self._open = 0

    def __repr__(self) -> str:
        return (
            f"LeanPool({self.host}:{self.port}, limit={self.limit}, open={self._open}, "
            f"idle={len(self._idle)}, tls={self.ssl is not None})"
        )

    def available(self) -> int:
        """Requests that can start now without PoolExhausted: idle plus unopened connections."""
        return len(self._idle) + self.limit - self._open

    @property
    def open_connections(self) -> int:
        """Connections open or being opened."""
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(self, head: bytes, body: bytes = b"", sink: BodySink | None = None) -> Response:
        """Send one request and wait for its whole response.

        ``head`` is the complete request head (see :class:`RequestHead`); with a ``sink`` the
        headers and body go to it as they arrive (``Response.body`` is then None), without one
        the body is buffered into ``Response.body``. Raises a :class:`TransportError`.
        """
        t0 = _mono()
        idle = self._idle
        if idle:
            conn = idle.pop()
            fut = conn.send(head, body, sink, t0, t0)
        else:
            if self._open >= self.limit:
                raise PoolExhausted(f"all {self.limit} connections are busy")
            conn = await self._connect()
            t1 = _mono()
            fut = conn.send(head, body, sink, t1, t0)  # connecting counts towards the total
            try:
                resp = await fut
            except asyncio.CancelledError:
                conn.abandon(fut)
                raise
            resp.connect_ns = t1 - t0
            return resp
        try:
            return await fut
        except asyncio.CancelledError:
            conn.abandon(fut)
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self._open += 1
        conn = _Connection(self, loop)
        timeout = self.connect_timeout_s
        total = self.total_timeout_s
        total_bound = total is not None and (timeout is None or total < timeout)
        if total_bound:
            timeout = total
        try:
            async with asyncio.timeout(timeout):
                if self.kernel_stamps:  # reads stamped by the kernel (harness.engine.tcp)
                    await open_stamped(loop, self.host, self.port, conn)
                else:
                    await loop.create_connection(
                        lambda: conn, self.host, self.port, ssl=self.ssl, server_hostname=self.server_hostname
                    )
        except TimeoutError:
            conn._release()
            if total_bound:
                raise TotalTimeout(f"no connection within total_timeout_s={total}") from None
            raise ConnectTimeout(f"no connection within connect_timeout_s={timeout}") from None
        except OSError as exc:
            conn._release()
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        except BaseException:
            conn._release()
            raise
        if conn._transport is None:  # closed between connect and now
            conn._release()
            raise ResetError(f"connection to {self.host}:{self.port} closed right after opening")
        self._conns.add(conn)
        return conn

    def close(self) -> None:
        """Close every connection; requests in flight fail with ResetError."""
        for conn in list(self._conns):
            conn._fail(ResetError("pool closed"))
        self._idle.clear()
