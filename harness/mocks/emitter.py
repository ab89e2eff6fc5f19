"""One timer wheel per event loop that writes the token chunks of every mock stream itself.

Emission cost per token is what limits how many concurrent streams one mock process can time
accurately (2,000 streams at 20 ms are 100k tokens/s). The stream-per-coroutine way costs, per
token: a due-time future, waking the task, resuming the handler's chain of coroutines and
aiohttp's ``StreamResponse.write`` (chunked framing, buffer bookkeeping, a drain check), then the
``send``. Here a stream hands its content tokens over once and the wheel, at each due
slot, writes every due stream's next chunk straight to its socket, framed for HTTP/1.1
chunked encoding exactly as aiohttp frames it::

    emission = emitter_for(loop).start(transport, head, pieces, tail, first, end, due, itl)
    outcome = await emission.done      # DONE | CLOSED | BACKLOG (see below)

Chunk ``i`` (``first <= i < end``, bytes ``head + pieces[i % len(pieces)] + tail``) is written
at due time ``due_i``: ``due_first = due`` and ``due_(i+1) = due_i + itl`` (``itl`` a float, or a
function that draws each gap); chunks due in the same ``RESOLUTION_S`` (0.1 ms) slot share one
wake-up of a ``timerfd`` (``harness.engine.timer.PreciseCalls``: uvloop's own timers are whole
milliseconds, which alone made the inter-token error up to ±1 ms). A slot is the first one at or
after its chunks' due time, so a chunk never goes out before it is due (float rounding aside)
and at most a slot after (plus loop lag); a late wake-up catches up at once, as
``DueScheduler.sleep_until`` does. Due times are on the monotonic clock (``time.monotonic()``,
the clock under uvloop's ms loop time).

Per token the wheel does as little as it can (the kernel's loopback ``send`` is most of the
cost that is left): the framed chunk is one concatenation of a per-token *lead* (chunk size line
+ ``head`` + the token, shared by every stream with the same head and tail length) and the
stream's *mid* (``tail`` + CRLF); it goes out by ``send(2)`` on the transport's own socket
(``_BorrowedSocket``: no transport bookkeeping, and no ``write(2)`` VFS path) while nothing waits
in the transport's buffer, through ``transport.write`` otherwise; tokens and bytes are derived
from the index when asked, not counted per token.

Outcomes: ``DONE`` every token was written; ``CLOSED`` the transport closed under us (the client
went away: a mid-stream end, not an error); ``BACKLOG`` more than ``HIGH_WATER_BYTES`` wait in
the transport's buffer (a client that stopped reading): the wheel stops and the stream goes on
at ``emission.index`` / ``emission.due`` through the caller's own flow-controlled writes.
Cancelling the awaiting task drops the stream at its next due slot.

Emission timing (``EmissionStats``, on by default, ``TokenEmitter.stats``): for every chunk the
wheel writes, the *emission error* = write time (``time.monotonic()`` just before the send) −
due time, and from a stream's second wheel chunk on the *ITL error* = |this chunk's emission
error − the previous chunk's| (the gap written minus the gap due), in fixed 10 µs bins. The
mock's admin API serves them (``GET /admin/emission``).
"""

from __future__ import annotations

import _socket
import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from harness.engine.timer import precise_calls_for
from harness.per_loop import PerLoop

__all__ = [
    "BACKLOG",
    "BIN_S",
    "CLOSED",
    "DONE",
    "HIGH_WATER_BYTES",
    "Emission",
    "EmissionStats",
    "TokenEmitter",
    "emitter_for",
    "hist_percentile",
    "merge_snapshots",
    "with_percentiles",
]

DONE: Final = "done"
CLOSED: Final = "closed"
BACKLOG: Final = "backlog"
HIGH_WATER_BYTES: Final = 64 * 1024
"""aiohttp's own write-buffer limit: above it ``StreamResponse.write`` would wait to drain."""
RESOLUTION_S: Final = 0.0001
"""Slot width: chunks due within the same 0.1 ms share one wake-up (``PreciseCalls``; 1 ms on
loops without ``timerfd``) while the wheel carries at most ``FINE_MAX_STREAMS`` streams."""
FINE_MAX_STREAMS: Final = 256
COARSE_SLOTS: Final = 5
"""Above ``FINE_MAX_STREAMS`` streams, slots are ``COARSE_SLOTS`` fine slots (0.5 ms) wide: a
wake-up costs ~14 µs, and with thousands of streams 0.1 ms slots cost more CPU than the precision
is worth (bench/mocks.py c1: 800 streams at 20 ms went from 10.5 to 14 µs of CPU per token).
0.5 ms rather than 1 ms, compared back to back (docs/benchmarks.md): at 2,000 streams the mock
used 79% of its core instead of 85–86% and its server-side |ITL error| p99 was 0.12–0.56 ms
instead of 0.35–1.75 ms; at 600–800 new streams/s (bench/fidelity.py) the TTFT p99 error was
0.78–0.85 ms instead of 1.15–1.44 ms.

A stream's first chunk always gets a fine slot: rounding it up to a coarse one made every TTFT
0-0.5 ms late (0.25 ms at the median, bench/fidelity.py). The rounding moves to the stream's
first gap instead (one gap in ``end - first - 1``, at most 0.4 ms long), which the emission
stats count as ITL error; the extra wake-ups are at most one per stream."""
_CEIL: Final = 1.0 - 1e-3
"""``int(due / resolution + _CEIL)``: the first slot at or after ``due``, give or take 1 µs of
float rounding (due times add up floats; a due time a hair past a whole millisecond must not
wait a whole extra millisecond)."""

BIN_S: Final = 1e-5
"""Width of an emission-timing bin: 10 µs."""
BINS: Final = 10_000
"""Bins 0..BINS-1 cover 0-100 ms; bin BINS counts everything later."""
EARLY_TOLERANCE_S: Final = 2e-6
"""A chunk written more than this before its due time counts as ``early`` (never expected)."""


class EmissionStats:
    """Emission timing of the chunks one wheel wrote: fixed 10 µs bins (see the module doc)."""

    __slots__ = ("chunks", "early", "emit", "itl", "since")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.emit: list[int] = [0] * (BINS + 1)
        """Chunks by emission error (write time − due time)."""
        self.itl: list[int] = [0] * (BINS + 1)
        """Chunks after a stream's first wheel chunk by |ITL error|."""
        self.chunks = 0
        self.early = 0
        self.since = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        """JSON-able: counts as sparse ``[[bin, count], ...]`` (``bin_s`` wide, the last bin
        ``bins`` everything past), the chunk count (the emission histogram's total) and
        percentiles in ms (each the upper edge of its bin)."""
        emit, itl = self.emit, self.itl
        return {
            "bin_s": BIN_S,
            "bins": BINS,
            "chunks": sum(emit),
            "early": self.early,
            "seconds": time.monotonic() - self.since,
            "emission_error": [[i, n] for i, n in enumerate(emit) if n],
            "itl_error": [[i, n] for i, n in enumerate(itl) if n],
        }


def merge_snapshots(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several processes (their sparse bins, chunks and early counts)."""
    merged: dict[str, Any] = {"bin_s": BIN_S, "bins": BINS, "chunks": 0, "early": 0, "seconds": 0.0}
    for key in ("emission_error", "itl_error"):
        counts: dict[int, int] = {}
        for part in parts:
            for i, n in part.get(key, ()):
                counts[i] = counts.get(i, 0) + n
        merged[key] = [[i, counts[i]] for i in sorted(counts)]
    for part in parts:
        merged["chunks"] += part.get("chunks", 0)
        merged["early"] += part.get("early", 0)
        merged["seconds"] = max(merged["seconds"], part.get("seconds", 0.0))
    return merged


def hist_percentile(sparse: Sequence[Sequence[int]], q: float, bin_s: float = BIN_S) -> float | None:
    """The ``q`` quantile (0..1) of sparse ``[[bin, count], ...]`` in ms, as its bin's upper edge
    (inf in the overflow bin); None without counts."""
    total = sum(n for _, n in sparse)
    if total == 0:
        return None
    target = q * total
    acc = 0
    for i, n in sparse:
        acc += n
        if acc >= target:
            return float("inf") if i >= BINS else round((i + 1) * bin_s * 1000.0, 6)
    return float("inf")


def with_percentiles(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot plus ``percentiles_ms``: p50, p99, p99.9 of both histograms."""
    bin_s = snapshot.get("bin_s", BIN_S)
    snapshot["percentiles_ms"] = {
        key: {
            name: hist_percentile(snapshot[key], q, bin_s)
            for name, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))
        }
        for key in ("emission_error", "itl_error")
    }
    return snapshot


class _BorrowedSocket(_socket.socket):
    """A second socket object on a transport's file descriptor, for ``send`` alone. It never
    closes the descriptor, which the transport owns: garbage collection detaches it."""

    __slots__ = ()

    def __del__(self) -> None:
        self.detach()


def _borrow(transport: Any) -> _BorrowedSocket | None:
    """A borrowed socket for direct sends on a plain TCP transport (None for anything else,
    e.g. TLS, where the bytes must go through the transport)."""
    if transport.get_extra_info("ssl_object") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        return _BorrowedSocket(sock.family, sock.type, sock.proto, sock.fileno())
    except (OSError, ValueError, TypeError):
        return None


class _Leads:
    """Per-token leads (chunk size line + head + token) for one (pieces, head, tail length),
    and the cumulative piece lengths that give an emission's byte count."""

    __slots__ = ("cum", "fixed", "leads")

    def __init__(self, pieces: tuple[bytes, ...], head: bytes, tail_len: int) -> None:
        self.fixed = len(head) + tail_len
        self.leads = tuple(b"%x\r\n%b%b" % (self.fixed + len(p), head, p) for p in pieces)
        cum = [0]
        for p in pieces:
            cum.append(cum[-1] + len(p))
        self.cum = tuple(cum)

    def piece_bytes(self, upto: int) -> int:
        """Bytes of pieces 0 .. upto-1 (cycling)."""
        n = len(self.leads)
        q, r = divmod(upto, n)
        return q * self.cum[n] + self.cum[r]


class Emission:
    """One stream's content tokens in the wheel: where it is (``index``, the due time of that
    token ``due``) and what went out (``tokens``, ``bytes`` of chunk payload, framing excluded).

    Chunk ``i`` is ``head + pieces[i % len(pieces)] + tail``: a stream's chunks differ only in
    their token, so they are spliced from pre-encoded bytes, not encoded per token.
    """

    __slots__ = (
        "_table",
        "done",
        "due",
        "end",
        "err",
        "first",
        "index",
        "itl",
        "lead_in",
        "leads",
        "mid",
        "n",
        "next_itl",
        "send",
        "sock",
        "stopped",
        "transport",
    )

    def __init__(
        self,
        transport: Any,
        table: _Leads,
        tail: bytes,
        first: int,
        end: int,
        due: float,
        itl: float | Callable[[], float],
        done: asyncio.Future[str],
    ) -> None:
        self.transport = transport
        self._table = table
        self.leads = table.leads
        self.n = len(table.leads)
        self.mid = tail + b"\r\n"
        self.first = first
        self.index = first
        self.end = end
        self.due = due
        self.next_itl: Callable[[], float] | None = None if isinstance(itl, float | int) else itl
        self.itl = float(itl) if self.next_itl is None else 0.0  # type: ignore[arg-type]
        self.done = done
        self.stopped = False
        """``done`` is done: set by its callback (cheaper per token than asking the future)."""
        self.err = -1.0
        """The previous wheel chunk's emission error (s); negative before the first."""
        self.sock: _BorrowedSocket | None = None
        self.send: Callable[[bytes], int] | None = None
        """``sock.send`` while the transport's buffer is empty, else None (``transport.write``)."""
        self.lead_in = b""
        """Framed chunks that go out in the same write as the first token (``start``); empty
        once written."""

    @property
    def tokens(self) -> int:
        """Chunks written so far."""
        return self.index - self.first

    @property
    def bytes(self) -> int:
        """Chunk payload bytes written so far (framing excluded)."""
        table = self._table
        return self.tokens * table.fixed + table.piece_bytes(self.index) - table.piece_bytes(self.first)

    def _on_done(self, _: asyncio.Future[str]) -> None:
        self.stopped = True

    def _finish(self, outcome: str) -> None:
        self.send = None
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.detach()
        if not self.done.done():
            self.done.set_result(outcome)


class TokenEmitter:
    """The wheel of one event loop: due-time slots of emissions, one precise timer call per slot."""

    __slots__ = (
        "_calls",
        "_fine_max",
        "_fire_cb",
        "_inv",
        "_leads",
        "_pool",
        "_res",
        "_slots",
        "active",
        "loop",
        "stats",
        "timers",
    )

    def __init__(self, loop: Any, resolution_s: float = RESOLUTION_S, *, record: bool = True) -> None:
        self.loop = loop
        self._calls = precise_calls_for(loop)
        if not self._calls.precise:  # loop timers: whole milliseconds
            resolution_s = max(resolution_s, 0.001)
        self._res = resolution_s
        # coarse slots only where the fine ones are finer than a millisecond
        self._fine_max = FINE_MAX_STREAMS if resolution_s * COARSE_SLOTS <= 0.001 + 1e-9 else 1 << 62
        self._inv = 1.0 / resolution_s
        self._slots: dict[int, list[Emission]] = {}
        # Fired slots' lists are kept for reuse, and the callback bound once: a slot a millisecond
        # would otherwise allocate GC-tracked objects at a steady rate, and every collection of
        # the young generations they trigger stalls every stream.
        self._pool: list[list[Emission]] = []
        self._fire_cb = self._fire
        self._leads: dict[tuple[tuple[bytes, ...], bytes, int], _Leads] = {}
        self.timers = 0
        """Loop timers armed so far (one per distinct due slot)."""
        self.active = 0
        """Streams in the wheel (started, not finished)."""
        self.stats: EmissionStats | None = EmissionStats() if record else None
        """Emission timing, None while recording is off (``record``)."""

    @property
    def recording(self) -> bool:
        return self.stats is not None

    def record(self, on: bool) -> None:
        """Switch emission timing on (fresh counts) or off (counts dropped)."""
        if on and self.stats is None:
            self.stats = EmissionStats()
        elif not on:
            self.stats = None

    def _table(self, pieces: Sequence[bytes], head: bytes, tail_len: int) -> _Leads:
        key = (pieces if isinstance(pieces, tuple) else tuple(pieces), head, tail_len)
        table = self._leads.get(key)
        if table is None:
            if len(self._leads) >= 64:  # heads vary by endpoint and flavour, not by stream
                self._leads.clear()
            table = self._leads[key] = _Leads(key[0], head, tail_len)
        return table

    def start(
        self,
        transport: Any,
        head: bytes,
        pieces: Sequence[bytes],
        tail: bytes,
        first: int,
        end: int,
        due: float,
        itl: float | Callable[[], float],
        lead_in: Sequence[bytes] = (),
    ) -> Emission:
        """Write chunks ``first <= i < end``, the first at monotonic time ``due``, then one
        every ``itl`` seconds (a float, or a function drawing each gap); await ``.done`` for the
        outcome. ``lead_in``: whole chunks due with the first token (a chat stream's role chunk),
        written just before it in the same send, each its own HTTP chunk. The transport must
        carry a chunked HTTP/1.1 body whose headers went out, and nothing else may write to it
        until ``.done``; if ``lead_in`` is still unwritten then (``BACKLOG``, ``CLOSED``),
        ``emission.lead_in`` says so and the caller writes it."""
        table = self._table(pieces, head, len(tail))
        emission = Emission(transport, table, tail, first, end, due, itl, self.loop.create_future())
        if lead_in:
            emission.lead_in = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in lead_in)
        if first >= end:
            emission.done.set_result(DONE)
        else:
            # A cancelled awaiter cancels ``done``: this callback runs before the awaiter's own
            # (registered later), so every chunk written before it is in ``tokens`` when the
            # awaiter's ``finally`` reads it, and none is written after.
            emission.done.add_done_callback(emission._on_done)
            emission.sock = sock = _borrow(transport)
            if sock is not None and transport.get_write_buffer_size() == 0:
                emission.send = sock.send
            self.active += 1
            # the first chunk (the TTFT) always in a fine slot; coarse ones from the second on
            self._add(emission, int(due * self._inv + _CEIL))
        return emission

    def _add(self, emission: Emission, key: int) -> list[Emission]:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._pool.pop() if self._pool else []
            slot.append(emission)
            self._slots[key] = slot
            self._calls.call_at(key * self._res, self._fire_cb, key)
            self.timers += 1
        else:
            slot.append(emission)
        return slot

    def _fire(self, key: int) -> None:
        emissions = self._slots.pop(key, None)
        if not emissions:
            return
        inv = self._inv
        # a late timer: every chunk due by now goes out now (floor: never a slot still to come)
        now_key = max(key, int(time.monotonic() * inv + 1e-6))
        stats = self.stats
        if stats is not None:
            clock = time.monotonic
            emit_hist, itl_hist = stats.emit, stats.itl
        last_key = -1
        last_slot: list[Emission] = emissions  # (placeholder, never appended to while key -1)
        finished = 0
        coarse = self.active > self._fine_max
        for em in emissions:
            if em.stopped:  # the stream's task was cancelled
                finished += 1
                em._finish(CLOSED)
                continue
            transport = em.transport
            leads, n, mid, send = em.leads, em.n, em.mid, em.send
            while True:
                # Before every send: once the transport is closing its descriptor may be closed
                # and reused by a new connection, so the borrowed socket must not send again.
                if transport.is_closing():
                    finished += 1
                    em._finish(CLOSED)
                    break
                if send is None:
                    size = transport.get_write_buffer_size()
                    if size > HIGH_WATER_BYTES:
                        finished += 1
                        em._finish(BACKLOG)
                        break
                    if size == 0 and em.sock is not None:
                        em.send = send = em.sock.send  # drained: direct sends again
                index = em.index
                data = leads[index % n] + mid
                if em.lead_in:  # the chunks due with the first token, in the same send
                    data = em.lead_in + data
                    em.lead_in = b""
                if stats is not None:
                    err = clock() - em.due
                    if err < 0.0:
                        if err < -EARLY_TOLERANCE_S:
                            stats.early += 1
                        err = 0.0
                    b = int(err * 100_000.0)  # 1 / BIN_S
                    emit_hist[b if b < BINS else BINS] += 1
                    prev = em.err
                    if prev >= 0.0:
                        d = err - prev if err >= prev else prev - err
                        b = int(d * 100_000.0)
                        itl_hist[b if b < BINS else BINS] += 1
                    em.err = err
                if send is None:
                    transport.write(data)
                else:
                    try:
                        sent = send(data)
                    except BlockingIOError:
                        sent = 0
                    except OSError:  # the peer is gone: let the transport find out its own way
                        sent = -1
                    if sent != len(data):
                        em.send = send = None
                        transport.write(data if sent <= 0 else data[sent:])
                index += 1
                em.index = index
                if index >= em.end:
                    finished += 1
                    em._finish(DONE)
                    break
                next_itl = em.next_itl
                due = em.due = em.due + (em.itl if next_itl is None else next_itl())
                next_key = int(due * inv + _CEIL)
                if coarse:
                    next_key = -(-next_key // COARSE_SLOTS) * COARSE_SLOTS
                if next_key > now_key:
                    if next_key == last_key:
                        last_slot.append(em)
                    else:
                        last_slot = self._add(em, next_key)
                        last_key = next_key
                    break

        self.active -= finished
        emissions.clear()
        if len(self._pool) < 256:
            self._pool.append(emissions)

    def pending(self) -> int:
        """Emissions waiting for a slot (cancelled ones included until their slot fires)."""
        return sum(len(s) for s in self._slots.values())


emitter_for: Final[PerLoop[TokenEmitter]] = PerLoop(TokenEmitter)
"""The ``TokenEmitter`` shared by every stream running in a loop (created on first use)."""
