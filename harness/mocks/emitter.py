"""One timer wheel per event loop that writes the token chunks of every mock stream itself.

Emission cost per token is what limits how many concurrent streams one mock process can time
accurately (2,000 streams at 20 ms are 100k tokens/s). The stream-per-coroutine way costs, per
token: a due-time future, waking the task, resuming the handler's chain of coroutines and
aiohttp's ``StreamResponse.write`` (chunked framing, buffer bookkeeping, a drain check), then the
``send``. Here a stream hands its content tokens over once and the wheel, at each due
millisecond, writes every due stream's next chunk straight to its transport, framed for HTTP/1.1
chunked encoding exactly as aiohttp frames it::

    emission = emitter_for(loop).start(transport, head, pieces, tail, first, end, due, itl)
    outcome = await emission.done      # DONE | CLOSED | BACKLOG (see below)

Chunk ``i`` (``first <= i < end``, bytes ``head + pieces[i % len(pieces)] + tail``) is written
at due time ``due_i``: ``due_first = due`` and ``due_(i+1) = due_i + itl`` (``itl`` a float, or a
function that draws each gap); sleepers due in the same millisecond slot share one loop
timer (uvloop's clock is in ms), so a chunk goes out within half a millisecond of its due time
(plus loop lag), and a late timer catches up at once, as ``DueScheduler.sleep_until`` does.

Outcomes: ``DONE`` every token was written; ``CLOSED`` the transport closed under us (the client
went away: a mid-stream end, not an error); ``BACKLOG`` more than ``HIGH_WATER_BYTES`` wait in
the transport's buffer (a client that stopped reading): the wheel stops and the stream goes on
at ``emission.index`` / ``emission.due`` through the caller's own flow-controlled writes.
Cancelling the awaiting task drops the stream at its next due slot.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final

__all__ = ["BACKLOG", "CLOSED", "DONE", "HIGH_WATER_BYTES", "Emission", "TokenEmitter", "emitter_for"]

DONE: Final = "done"
CLOSED: Final = "closed"
BACKLOG: Final = "backlog"
HIGH_WATER_BYTES: Final = 64 * 1024
"""aiohttp's own write-buffer limit: above it ``StreamResponse.write`` would wait to drain."""
RESOLUTION_S: Final = 0.001


class Emission:
    """One stream's content tokens in the wheel: where it is (``index``, the due time of that
    token ``due``) and what went out (``tokens``, ``bytes`` of chunk payload, framing excluded).

    Chunk ``i`` is ``head + pieces[i % len(pieces)] + tail``: a stream's chunks differ only in
    their token, so they are spliced from pre-encoded bytes, not encoded per token.
    """

    __slots__ = (
        "bytes",
        "done",
        "due",
        "end",
        "head",
        "index",
        "itl",
        "next_itl",
        "pieces",
        "tail",
        "tokens",
        "transport",
    )

    def __init__(
        self,
        transport: Any,
        head: bytes,
        pieces: Sequence[bytes],
        tail: bytes,
        first: int,
        end: int,
        due: float,
        itl: float | Callable[[], float],
        done: asyncio.Future[str],
    ) -> None:
        self.transport = transport
        self.head = head
        self.pieces = pieces
        self.tail = tail
        self.index = first
        self.end = end
        self.due = due
        self.next_itl: Callable[[], float] | None = None if isinstance(itl, float | int) else itl
        self.itl = float(itl) if self.next_itl is None else 0.0  # type: ignore[arg-type]
        self.done = done
        self.tokens = 0
        self.bytes = 0


class TokenEmitter:
    """The wheel of one event loop: due-millisecond slots of emissions, one loop timer per slot."""

    __slots__ = ("_inv", "_res", "_slots", "loop", "timers")

    def __init__(self, loop: Any, resolution_s: float = RESOLUTION_S) -> None:
        self.loop = loop
        self._res = resolution_s
        self._inv = 1.0 / resolution_s
        self._slots: dict[int, list[Emission]] = {}
        self.timers = 0
        """Loop timers armed so far (one per distinct due slot)."""

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
    ) -> Emission:
        """Write chunks ``first <= i < end``, the first at loop time ``due``, then one every
        ``itl`` seconds (a float, or a function drawing each gap); await ``.done`` for the
        outcome. The transport must carry a chunked HTTP/1.1 body whose headers went out."""
        emission = Emission(transport, head, pieces, tail, first, end, due, itl, self.loop.create_future())
        if first >= end:
            emission.done.set_result(DONE)
        else:
            self._add(emission, round(due * self._inv))
        return emission

    def _add(self, emission: Emission, key: int) -> None:
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = [emission]
            self.loop.call_at(key * self._res, self._fire, key)
            self.timers += 1
        else:
            slot.append(emission)

    def _fire(self, key: int) -> None:
        emissions = self._slots.pop(key, None)
        if not emissions:
            return
        inv = self._inv
        slots = self._slots
        now_key = max(key, round(self.loop.time() * inv))  # a late timer: all due by now go out
        for em in emissions:
            done = em.done
            if done.done():  # the stream's task was cancelled
                continue
            transport = em.transport
            head, pieces, tail = em.head, em.pieces, em.tail
            while True:
                if transport.is_closing():
                    done.set_result(CLOSED)
                    break
                if transport.get_write_buffer_size() > HIGH_WATER_BYTES:
                    done.set_result(BACKLOG)
                    break
                index = em.index
                piece = pieces[index % len(pieces)]
                size = len(head) + len(piece) + len(tail)
                transport.write(b"%x\r\n%b%b%b\r\n" % (size, head, piece, tail))  # aiohttp's chunked framing
                em.bytes += size
                em.tokens += 1
                em.index = index = index + 1
                if index >= em.end:
                    done.set_result(DONE)
                    break
                next_itl = em.next_itl
                em.due += em.itl if next_itl is None else next_itl()
                next_key = round(em.due * inv)
                if next_key > now_key:
                    slot = slots.get(next_key)
                    if slot is None:
                        self._add(em, next_key)
                    else:
                        slot.append(em)
                    break

    def pending(self) -> int:
        """Emissions waiting for a slot (cancelled ones included until their slot fires)."""
        return sum(len(s) for s in self._slots.values())


_EMITTERS: weakref.WeakKeyDictionary[Any, TokenEmitter] = weakref.WeakKeyDictionary()


def emitter_for(loop: asyncio.AbstractEventLoop) -> TokenEmitter:
    """The ``TokenEmitter`` shared by every stream running in ``loop`` (created on first use)."""
    emitter = _EMITTERS.get(loop)
    if emitter is None:
        emitter = _EMITTERS[loop] = TokenEmitter(loop)
    return emitter
