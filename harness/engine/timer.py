"""Sub-millisecond wake-ups for the open-loop scheduler, without spinning a core.

Why: uvloop (libuv) keeps its clock and its timers in whole milliseconds, so ``asyncio.sleep``
wakes anywhere in about ±1 ms of the asked time; an open-loop generator at 10,000 rps with a
p99 schedule lag ≤ 1 ms cannot use it for the last millisecond. Spinning (``sleep(0)`` until
due) is exact but burns up to a core at moderate rates (PERF-ANCHORS: "exact timing by spinning
costs a core").

:class:`PreciseSleeper` arms a Linux ``timerfd`` (``CLOCK_MONOTONIC``, absolute ns, the clock of
``time.monotonic_ns``) and waits for it through the event loop's own poller
(``loop.add_reader``): the loop sleeps in ``epoll_wait`` and wakes when the kernel's hrtimer
expires, typically within 50–100 µs. Cost per wake-up: one ``timerfd_settime`` (ctypes, ~1 µs),
one future and one 8-byte ``read``. Nothing is armed when an arrival is already due, so a busy
dispatcher pays nothing.

Elsewhere (no ``timerfd``: macOS, Windows, no libc) it falls back to a hybrid: ``asyncio.sleep``
to about 1.5 ms before the due time, then yielding to the loop (``sleep(0)``) until due, which
is exact but spends CPU for up to 1.5 ms before each arrival when the loop has nothing else to do.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import heapq
import os
import time
from collections.abc import Callable
from typing import Any, Final

from harness.per_loop import PerLoop

_CLOCK_MONOTONIC: Final = 1
_TFD_NONBLOCK: Final = 0o4000
_TFD_CLOEXEC: Final = 0o2000000
_TFD_TIMER_ABSTIME: Final = 1
_NEVER: Final = 1 << 62  # PreciseCalls: nothing armed
_SPIN_NS: Final = 1_500_000  # fallback: sleep on loop timers until this close, then yield


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _libc() -> ctypes.CDLL | None:
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.timerfd_settime.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        )
    except (OSError, AttributeError):
        return None
    return libc


_LIBC: Final = _libc()


class _TimerFd:
    """One Linux ``timerfd`` (``CLOCK_MONOTONIC``, absolute ns) read through a loop's poller:
    ``arm(t_ns)`` makes the loop call ``callback`` once ``t_ns`` has passed. The part both
    :class:`PreciseSleeper` and :class:`PreciseCalls` stand on."""

    __slots__ = ("_loop", "_settime", "_spec", "_spec_ref", "fd")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        assert _LIBC is not None
        self._loop = loop
        self.fd = fd
        self._settime = _LIBC.timerfd_settime
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, callback: Any) -> _TimerFd | None:
        """A timerfd polled by ``loop``, or None where there is none (not Linux, no libc, a loop
        without ``add_reader``)."""
        if _LIBC is None:
            return None
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            return None
        try:
            loop.add_reader(fd, callback)
        except (NotImplementedError, RuntimeError):
            os.close(fd)
            return None
        return cls(loop, fd)

    def arm(self, when_ns: int) -> None:
        spec = self._spec
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(max(when_ns, 1), 1_000_000_000)
        self._settime(self.fd, _TFD_TIMER_ABSTIME, self._spec_ref, None)

    def expired(self) -> bool:
        """Consume the expiry the poller reported; False when there was none (spurious)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return False
        return True

    def close(self, *, loop_alive: bool = True, _close: Callable[[int], None] = os.close) -> None:
        # ``os.close`` bound at definition: a __del__ at interpreter exit may find ``os`` gone
        if self.fd >= 0:
            if loop_alive:
                self._loop.remove_reader(self.fd)
            try:
                _close(self.fd)
            except OSError:
                pass
            self.fd = -1


class PreciseSleeper:
    """``await sleeper.until(t_ns)`` returns at or shortly after monotonic time ``t_ns``.

    One per event loop and dispatcher; ``close()`` it when done. ``precise`` says whether the
    timerfd path is in use (else the spin fallback).
    """

    __slots__ = ("_fut", "_loop", "_tfd", "precise", "wakeups")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, allow_timerfd: bool = True) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._fut: asyncio.Future[None] | None = None
        self.wakeups = 0  # timer wake-ups (timerfd expiries or fallback sleeps), for CPU accounting
        self._tfd = _TimerFd.open(self._loop, self._fired) if allow_timerfd else None
        self.precise = self._tfd is not None

    async def until(self, due_ns: int) -> None:
        """Wait until ``time.monotonic_ns() >= due_ns`` (returns at once when already due)."""
        if self._tfd is None:
            await self._fallback(due_ns)
            return
        if time.monotonic_ns() >= due_ns:
            return
        self._tfd.arm(due_ns)
        fut = self._fut = self._loop.create_future()
        try:
            await fut
        finally:
            self._fut = None

    def _fired(self) -> None:
        assert self._tfd is not None
        if not self._tfd.expired():
            return
        self.wakeups += 1
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _fallback(self, due_ns: int) -> None:
        mono = time.monotonic_ns
        sleep = asyncio.sleep
        while True:
            delay = due_ns - mono()
            if delay <= 0:
                return
            self.wakeups += 1
            # loop timers are whole ms and may fire ~1 ms early or late: stop 1.5 ms short, then yield
            await sleep((delay - _SPIN_NS) / 1e9 if delay > _SPIN_NS + 1_000_000 else 0)

    def close(self) -> None:
        if self._tfd is not None:
            self._tfd.close()
            self._tfd = None


class PreciseCalls:
    """``call_at(when, callback, arg)`` on the monotonic clock (``time.monotonic()`` seconds),
    fired within ~0.1 ms of ``when`` instead of uvloop's whole milliseconds: one ``timerfd``
    armed for the earliest pending call and a heap of the rest, read through the loop's poller
    like :class:`PreciseSleeper`. Every call due by a wake-up runs in that wake-up, in time
    order. Without ``timerfd`` it is ``loop.call_at`` (uvloop's and asyncio's loop clocks are the
    monotonic clock too). One per event loop; ``close()`` it when the loop is done.

    The mocks' stream schedulers use it so that a mock told to answer in 50 ms with 20 ms
    between tokens does so to a tenth of a millisecond, not to a millisecond: the engine's
    fidelity is measured against it (bench/fidelity.py).
    """

    __slots__ = ("_armed", "_heap", "_loop", "_seq", "_tfd", "precise", "wakeups")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, allow_timerfd: bool = True) -> None:
        self._loop = loop
        self._heap: list[tuple[int, int, Any, Any]] = []
        self._seq = 0  # ties in time keep their order
        self._armed = _NEVER
        self.wakeups = 0
        self._tfd = _TimerFd.open(loop, self._fired) if allow_timerfd else None
        self.precise = self._tfd is not None

    def time(self) -> float:
        """Now on the clock ``call_at`` takes (seconds)."""
        return time.monotonic() if self._tfd is not None else self._loop.time()

    def call_at(self, when: float, callback: Any, arg: Any) -> None:
        """Run ``callback(arg)`` at monotonic time ``when`` (seconds), or at the next wake-up if
        that has passed."""
        if self._tfd is None:
            self._loop.call_at(when, callback, arg)
            return
        when_ns = int(when * 1e9)
        self._seq += 1
        heapq.heappush(self._heap, (when_ns, self._seq, callback, arg))
        if when_ns < self._armed:
            self._arm(when_ns)

    def _arm(self, when_ns: int) -> None:
        assert self._tfd is not None
        self._armed = when_ns
        self._tfd.arm(when_ns)

    def _fired(self) -> None:
        assert self._tfd is not None
        self._tfd.expired()  # a spurious wake-up still runs what is due
        self.wakeups += 1
        self._armed = _NEVER
        heap = self._heap
        pop = heapq.heappop
        now = time.monotonic_ns()
        while heap and heap[0][0] <= now:
            _, _, callback, arg = pop(heap)
            callback(arg)
            if heap and heap[0][0] > now:
                now = time.monotonic_ns()  # callbacks take time: run what fell due meanwhile
        if heap and heap[0][0] < self._armed:
            self._arm(heap[0][0])

    def pending(self) -> int:
        return len(self._heap)

    def close(self) -> None:
        if self._tfd is not None:
            self._tfd.close()
            self._tfd = None
        self._heap.clear()

    def __del__(self) -> None:  # the loop (and its reader) may be gone: do not leak the descriptor
        if self._tfd is not None:
            self._tfd.close(loop_alive=False)


precise_calls_for: Final[PerLoop[PreciseCalls]] = PerLoop(PreciseCalls)
"""The :class:`PreciseCalls` shared by everything scheduling on a loop (made on first use)."""
