"""The plan: a lazy, seeded, deterministic stream of ``Planned`` arrivals for a profile.

A profile plus its seed gives the same plan on every machine. Each scenario has its own
arrival process and its own random streams (derived from the seed and the scenario name, so
adding a scenario does not change the others); scenarios are merged in time order and numbered
with one global index.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from itertools import accumulate

from harness.profile.models import Profile, Scenario
from harness.workload.arrivals import mean_rate_rps, offsets_ns


class Planned:
    """One planned request: when to send it (ns from epoch), which scenario, which route."""

    __slots__ = ("index", "offset_ns", "route", "scenario")

    def __init__(self, index: int, offset_ns: int, scenario: int, route: int) -> None:
        self.index = index
        self.offset_ns = offset_ns
        self.scenario = scenario  # index into profile.scenarios
        self.route = route  # index into that scenario's routes

    def __repr__(self) -> str:
        return f"Planned(#{self.index} at {self.offset_ns / 1e9:.6f}s s{self.scenario} r{self.route})"


def _rng(seed: int, scenario: Scenario, stream: str) -> random.Random:
    # random.Random(str) hashes the string with SHA-512: stable across processes and machines,
    # unlike hash(), which is randomised per process.
    return random.Random(f"{seed}/{scenario.name}/{stream}")


def _scenario_stream(
    seed: int, duration_s: float, s_idx: int, scenario: Scenario
) -> Iterator[tuple[int, int, int]]:
    arrivals = offsets_ns(scenario.arrival, duration_s, _rng(seed, scenario, "arrivals"))
    routes = scenario.routes
    if len(routes) == 1:
        for t in arrivals:
            yield (t, s_idx, 0)
        return
    cum = list(accumulate(r.weight for r in routes))
    pick = _rng(seed, scenario, "routes").choices
    population = range(len(routes))
    for t in arrivals:
        yield (t, s_idx, pick(population, cum_weights=cum)[0])


def build_plan(profile: Profile) -> Iterator[Planned]:
    """Every arrival of the run, in intended-time order, each with its global index."""
    streams = [
        _scenario_stream(profile.seed, profile.duration_s, i, s) for i, s in enumerate(profile.scenarios)
    ]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams)
    for index, (t, s_idx, r_idx) in enumerate(merged):
        yield Planned(index, t, s_idx, r_idx)


def planned_rate_rps(profile: Profile) -> float:
    """The profile's total mean arrival rate over its duration."""
    return sum(mean_rate_rps(s.arrival, profile.duration_s) for s in profile.scenarios)
