"""Plain TCP connections whose reads carry the kernel's receive time.

Why: a timestamp taken when the event loop hands a read to Python is late by everything the
loop did first: the other sockets of the same ``epoll`` batch, a record slice being converted,
another request being written. At 1,000 new streams/s (20k chunks/s) that made 1% of the
engine's token timestamps 0.5-1.3 ms late, which was most of its TTFT and ITL error against a
mock with known timing (bench/fidelity.py). The kernel stamps every segment as it arrives
(``SO_TIMESTAMPNS``); reading with ``recvmsg`` returns that stamp with the bytes, and it does
not depend on when the loop got round to the socket (bench/transport.py: ITL error p99 0.01 ms
instead of 0.3-0.9 ms, for ~0.7 µs more CPU per read). uvloop's transports read into their own
buffer and drop ancillary data, so these connections do their own reads (``add_reader``) and
writes (``send``, ``add_writer`` while the kernel's buffer is full).

A read's time is the arrival of the last segment it returned, on the monotonic clock: the
kernel stamps in ``CLOCK_REALTIME``, converted with the two clocks read together at the read.
A stamp later than the read, or more than ``MAX_STAMP_AGE_NS`` before it (the wall clock was
stepped), is replaced by the read time; so is a read without a stamp (a kernel without
``SO_TIMESTAMPNS``, or the first reads of a machine where no socket asked for stamps before:
the kernel switches stamping on a little after the first one asks). A connection's read times
never go backwards (a read-time fallback can be later than the next read's stamp: the next one
then gets the same time). TLS connections are not read here (uvloop's transport: read times).

The protocol gets asyncio's calls, except that bytes come with their time:
``connection_made(transport)``, ``data_received_at(data, t_ns)``, ``eof_received()`` (False:
close) and ``connection_lost(exc)``, the last one soon after a close or a failure, once.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

__all__ = [
    "CMSG_BYTES",
    "MAX_STAMP_AGE_NS",
    "READ_BYTES",
    "StampedProtocol",
    "StampedTransport",
    "arrival_ns",
    "open_stamped",
    "stamp_receives",
]

READ_BYTES: Final = 64 * 1024
"""One ``recvmsg`` reads up to this much. Python allocates the whole size for each read and then
shrinks it: below glibc's 128 KiB ``mmap`` threshold that is a heap allocation, above it an
``mmap``/``munmap`` pair with page faults (256 KiB: ~15 µs per read instead of ~3 µs)."""
MAX_STAMP_AGE_NS: Final = 10_000_000_000
"""A kernel stamp older than this at the read is taken for a stepped wall clock, not a wait."""

# Python 3.11 does not name it; Linux's value on every architecture the project runs on
_SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else 0)
CMSG_BYTES: Final = socket.CMSG_SPACE(16) if _SO_TIMESTAMPNS else 0
"""``recvmsg``'s ancillary buffer size for the stamp."""
_SOL_SOCKET: Final = socket.SOL_SOCKET
_timespec: Final = struct.Struct("@ll").unpack_from
_mono: Final = time.monotonic_ns
_real: Final = time.time_ns


def stamp_receives(sock: socket.socket) -> bool:
    """Ask the kernel to stamp ``sock``'s incoming segments; False where it cannot."""
    if not _SO_TIMESTAMPNS:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def arrival_ns(ancillary: list[tuple[int, int, bytes]], now_ns: int) -> int:
    """The monotonic time the bytes of a ``recvmsg(..., CMSG_BYTES)`` read at ``now_ns`` arrived:
    the kernel's stamp converted from the wall clock, or ``now_ns`` without a plausible one."""
    for level, kind, raw in ancillary:
        if kind == _SO_TIMESTAMPNS and level == _SOL_SOCKET and len(raw) >= 16:
            sec, nsec = _timespec(raw)
            stamp = sec * 1_000_000_000 + nsec - (_real() - now_ns)
            if now_ns - MAX_STAMP_AGE_NS <= stamp <= now_ns:
                return stamp
    return now_ns


class StampedProtocol(Protocol):
    def connection_made(self, transport: Any) -> None: ...

    def data_received_at(self, data: bytes, t_ns: int) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


async def open_stamped(
    loop: asyncio.AbstractEventLoop, host: str, port: int, protocol: StampedProtocol
) -> StampedTransport:
    """Connect to ``host:port`` (each resolved address in turn, as ``create_connection`` does)
    and start reading for ``protocol``. Raises OSError when no address accepts."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned no address")
    errors: list[OSError] = []
    for family, type_, proto, _, address in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:  # cancelled or timed out: nothing may leak
            sock.close()
            raise
        return StampedTransport(loop, sock, protocol)
    if len(errors) == 1:
        raise errors[0]
    raise OSError("; ".join(str(e) for e in errors))


class StampedTransport:
    """One connected non-blocking TCP socket, read with ``recvmsg`` for the kernel's receive
    time (see the module docstring). The subset of ``asyncio.Transport`` the lean transport
    uses: ``write``, ``writelines``, ``close``, ``abort``, ``is_closing``, ``get_extra_info``."""

    __slots__ = (
        "_closing",
        "_deliver",
        "_fd",
        "_last_ns",
        "_loop",
        "_pending",
        "_protocol",
        "_recvmsg",
        "_send",
        "_sock",
        "stamped",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: StampedProtocol
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending = bytearray()  # bytes the kernel's send buffer had no room for yet
        self._last_ns = 0  # the previous read's time
        self._closing = False
        self.stamped = stamp_receives(sock)
        """Whether the kernel stamps this socket's reads (else each read is stamped when read)."""
        self._recvmsg = sock.recvmsg
        self._send = sock.send
        self._deliver = protocol.data_received_at
        protocol.connection_made(self)
        if not self._closing:
            loop.add_reader(self._fd, self._read)

    # ------------------------------------------------------------------ reading

    def _read(self) -> None:
        try:
            data, ancillary, _, _ = self._recvmsg(READ_BYTES, CMSG_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        now = _mono()
        if not data:
            self._loop.remove_reader(self._fd)
            if not self._protocol.eof_received():
                self.close()
            return
        t = arrival_ns(ancillary, now) if ancillary else now
        # A read without a stamp (the kernel's switch still off) gets its read time, which can be
        # later than the stamped arrival of the next read's bytes: keep a connection's times in
        # order, as ITL needs.
        t = max(t, self._last_ns)
        self._last_ns = t
        self._deliver(data, t)

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return
        if self._pending:
            self._pending += data
            return
        try:
            sent = self._send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        if sent < len(data):
            self._pending += memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_pending)

    def writelines(self, parts: Iterable[bytes]) -> None:
        self.write(b"".join(parts))  # (requests are small: one send beats a sendmsg vector)

    def _write_pending(self) -> None:
        pending = self._pending
        try:
            sent = self._sock.send(pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del pending[:sent]
        if not pending:
            self._loop.remove_writer(self._fd)

    # ------------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close now (a client connection has nothing worth flushing once it gives up)."""
        self._lost(None)

    def abort(self) -> None:
        self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        loop = self._loop
        loop.remove_reader(self._fd)
        if self._pending:
            loop.remove_writer(self._fd)
            self._pending.clear()
        self._sock.close()
        loop.call_soon(self._protocol.connection_lost, exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname() if not self._closing else default
        if name == "peername":
            return self._sock.getpeername() if not self._closing else default
        return default
