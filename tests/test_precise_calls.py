"""``PreciseCalls``: monotonic-clock callbacks through a timerfd, in time order, never early,
also when callbacks schedule more calls; the loop-timer fallback behaves the same; the mocks'
stream wheel uses fine slots for a few streams and millisecond slots for thousands."""

from __future__ import annotations

import asyncio
import gc
import os
import statistics

import pytest

from harness.engine.timer import PreciseCalls, precise_calls_for
from harness.mocks.emitter import COARSE_SLOTS, FINE_MAX_STREAMS, TokenEmitter


@pytest.mark.parametrize("allow_timerfd", [True, False])
async def test_calls_run_in_time_order_and_never_early(allow_timerfd: bool) -> None:
    loop = asyncio.get_running_loop()
    calls = PreciseCalls(loop, allow_timerfd=allow_timerfd)
    try:
        now = calls.time()
        dues = [now + 0.002 + (49 - i * 7 % 50) * 0.0003 for i in range(50)]  # shuffled, latest first
        ran: list[tuple[float, float]] = []
        done = loop.create_future()

        def fire(due: float) -> None:
            ran.append((due, calls.time()))
            if len(ran) == len(dues):
                done.set_result(None)

        for due in dues:
            calls.call_at(due, fire, due)
        await asyncio.wait_for(done, timeout=5)
        assert [d for d, _ in ran] == sorted(dues)
        early = 0.0 if allow_timerfd else 0.0011  # loop timers: whole ms, may fire up to 1 ms early
        assert all(t >= d - early for d, t in ran)
        if allow_timerfd:  # on time, not at the next armed call or the next millisecond
            assert statistics.median(t - d for d, t in ran) < 0.0005
        assert calls.precise is allow_timerfd
        assert calls.pending() == 0
    finally:
        calls.close()


async def test_a_callback_can_schedule_the_next_call() -> None:
    """A chain of calls 0.5 ms apart: each wake-up runs what is due and re-arms for the rest."""
    loop = asyncio.get_running_loop()
    calls = precise_calls_for(loop)
    assert precise_calls_for(loop) is calls
    lateness: list[float] = []
    done = loop.create_future()
    start = calls.time() + 0.001

    def step(i: int) -> None:
        lateness.append(calls.time() - (start + i * 0.0005))
        if i == 40:
            done.set_result(None)
        else:
            calls.call_at(start + (i + 1) * 0.0005, step, i + 1)

    calls.call_at(start, step, 0)
    await asyncio.wait_for(done, timeout=5)
    assert min(lateness) >= 0
    if calls.precise:  # sub-millisecond: uvloop's own timers could not do this at 0.5 ms steps
        assert statistics.median(lateness) < 0.0005


async def test_emitter_slots_are_fine_for_few_streams_and_coarse_for_many() -> None:
    emitter = TokenEmitter(asyncio.get_running_loop())
    if not emitter._calls.precise:
        pytest.skip("no timerfd: the wheel runs on millisecond loop timers")
    assert emitter._res == pytest.approx(0.0001)
    assert emitter._fine_max == FINE_MAX_STREAMS and COARSE_SLOTS * emitter._res == pytest.approx(0.0005)


def test_no_descriptor_is_left_behind() -> None:
    """One descriptor per PreciseCalls, closed by close() (and when it is collected)."""
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    loop = asyncio.new_event_loop()
    try:
        for _ in range(20):
            PreciseCalls(loop).close()
        for _ in range(20):
            PreciseCalls(loop)  # never closed: __del__
    finally:
        loop.close()
    gc.collect()
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) <= before + 1
