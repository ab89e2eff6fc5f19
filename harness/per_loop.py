"""One shared object per event loop, made on first use and dropped with its loop.

The mocks' token emitter, their due-time scheduler and the precise timer calls each exist once
per loop: every stream or request in that loop shares them (one timer for all, not one each),
and a loop in another thread or process gets its own.

The objects hold their loop (they schedule on it), so weak keys alone would never let a loop go:
the registry holds the object, the object holds the loop. Entries of closed loops are therefore
dropped whenever a new loop registers (a test suite makes a loop per test), and weak keys
still drop a loop that is collected some other way.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``per_loop(loop)``: the loop's ``T``, made by ``factory(loop)`` the first time."""

    __slots__ = ("_factory", "_items")

    def __init__(self, factory: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._factory = factory
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def __call__(self, loop: asyncio.AbstractEventLoop) -> T:
        item = self._items.get(loop)
        if item is None:
            for closed in [old for old in self._items if old.is_closed()]:
                del self._items[closed]
            item = self._items[loop] = self._factory(loop)
        return item

    def __len__(self) -> int:
        return len(self._items)
