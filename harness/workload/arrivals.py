"""Arrival processes: pure, seeded generators of intended send offsets (ns from the run epoch).

Each process yields absolute offsets, never gaps to sleep, so scheduling error cannot
accumulate (vegeta's pacer, guidellm's strategies). Offsets stop before ``duration_s``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from harness.profile.models import ConstantArrival, PoissonArrival

NS_PER_S = 1_000_000_000


def constant(rate_rps: float, duration_s: float) -> Iterator[int]:
    """The i-th arrival at ``i / rate_rps`` seconds: exactly ``floor(rate × duration)`` arrivals."""
    end_ns = int(duration_s * NS_PER_S)
    period_ns = NS_PER_S / rate_rps
    i = 0
    while True:
        t = int(i * period_ns)  # multiply, don't accumulate: no float drift over millions of arrivals
        if t >= end_ns:
            return
        yield t
        i += 1


def poisson(rate_rps: float, duration_s: float, rng: random.Random) -> Iterator[int]:
    """Exponential gaps of mean ``1 / rate_rps``; the first arrival is at 0 + one gap."""
    end_ns = duration_s * NS_PER_S
    expovariate = rng.expovariate
    t = 0.0
    while True:
        t += expovariate(rate_rps) * NS_PER_S
        if t >= end_ns:
            return
        yield int(t)


def offsets_ns(
    arrival: ConstantArrival | PoissonArrival, duration_s: float, rng: random.Random
) -> Iterator[int]:
    """Dispatch on the profile's arrival model."""
    if isinstance(arrival, ConstantArrival):
        return constant(arrival.rate_rps, duration_s)
    return poisson(arrival.rate_rps, duration_s, rng)


def mean_rate_rps(arrival: ConstantArrival | PoissonArrival) -> float:
    return arrival.rate_rps
