"""The clock protocol: monotonic nanoseconds and the run epoch.

Every time on a record is ``time.monotonic_ns()`` minus the run epoch, so all offsets from
all workers of one run share one origin. Wall-clock time appears only in metadata.
Scheduling code takes a ``Clock`` so tests step time instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What scheduling code needs from time."""

    def monotonic_ns(self) -> int: ...


class SystemClock:
    """The real monotonic clock."""

    __slots__ = ()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class FakeClock:
    """A clock tests advance by hand."""

    __slots__ = ("now_ns",)

    def __init__(self, start_ns: int = 0) -> None:
        self.now_ns = start_ns

    def monotonic_ns(self) -> int:
        return self.now_ns

    def advance_ns(self, delta_ns: int) -> None:
        self.now_ns += delta_ns


class RunEpoch:
    """The origin of a run's time axis: a monotonic instant paired with the wall time it was taken."""

    __slots__ = ("monotonic_ns", "wall_ns")

    def __init__(self, monotonic_ns: int, wall_ns: int) -> None:
        self.monotonic_ns = monotonic_ns
        self.wall_ns = wall_ns

    @classmethod
    def now(cls, lead_ns: int = 0) -> RunEpoch:
        """An epoch ``lead_ns`` in the future, so workers can start before the first arrival."""
        return cls(time.monotonic_ns() + lead_ns, time.time_ns() + lead_ns)
