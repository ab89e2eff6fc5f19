"""harness.per_loop: one shared object per event loop, gone with its loop."""

from __future__ import annotations

import asyncio
import gc
import weakref

from harness.per_loop import PerLoop


class Thing:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop


def test_one_object_per_loop_made_once_and_dropped_with_the_loop() -> None:
    """The same loop gets the same object; another loop its own; once a loop is closed, the next
    new loop's registration drops its object (which holds the loop), so both can be collected."""
    made: list[Thing] = []

    def factory(loop: asyncio.AbstractEventLoop) -> Thing:
        made.append(Thing(loop))
        return made[-1]

    per_loop = PerLoop(factory)
    a, b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert per_loop(a) is per_loop(a)
        assert per_loop(b) is not per_loop(a)
        assert len(made) == 2 and made[0].loop is a
    finally:
        a.close()
        b.close()
    gone = weakref.ref(made[0])
    made.clear()
    del a
    c = asyncio.new_event_loop()
    try:
        per_loop(c)
        assert len(per_loop) == 1
    finally:
        c.close()
    gc.collect()
    assert gone() is None
