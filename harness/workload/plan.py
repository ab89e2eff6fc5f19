"""The plan: a lazy, seeded, deterministic stream of ``Planned`` arrivals for a profile.

A profile plus its seed gives the same plan on every machine. Each scenario has its own
arrival process and its own random streams (derived from the seed and the scenario name, so
adding a scenario does not change the others); scenarios are merged in time order and numbered
with one global index.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from functools import partial
from itertools import accumulate

from harness.profile.models import Profile, Scenario
from harness.workload.arrivals import mean_rate_rps, offsets_ns


class Planned:
    """One planned request: when to send it (ns from epoch), which scenario, which route.

    A session start (a scenario with a ``session`` table) plans ``turns`` requests at once: its
    turns take the indices ``index .. index + turns - 1``, the first due at ``offset_ns`` and
    each later one a think time after the previous answer. A trace row may carry its own sizes
    (``prompt_tokens``/``max_tokens``, 0 = the scenario's) and a ``session`` key with a ``turn``:
    rows of one session are chained to each other by the engine.
    """

    __slots__ = (
        "index",
        "max_tokens",
        "offset_ns",
        "prompt_tokens",
        "route",
        "scenario",
        "session",
        "turn",
        "turns",
    )

    def __init__(
        self,
        index: int,
        offset_ns: int,
        scenario: int,
        route: int,
        *,
        turns: int = 1,
        session: int | None = None,
        turn: int = 0,
        prompt_tokens: int = 0,
        max_tokens: int = 0,
    ) -> None:
        self.index = index
        self.offset_ns = offset_ns
        self.scenario = scenario  # index into profile.scenarios
        self.route = route  # index into that scenario's routes
        self.turns = turns
        self.session = session
        self.turn = turn
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return f"Planned(#{self.index} at {self.offset_ns / 1e9:.6f}s s{self.scenario} r{self.route})"


def _rng(seed: int, scenario: Scenario, stream: str) -> random.Random:
    # random.Random(str) hashes the string with SHA-512: stable across processes and machines,
    # unlike hash(), which is randomised per process.
    return random.Random(f"{seed}/{scenario.name}/{stream}")


def _scenario_stream(
    seed: int, duration_s: float, s_idx: int, scenario: Scenario
) -> Iterator[tuple[int, int, int, int]]:
    """(offset_ns, scenario, route, turns) per arrival; a session's route is chosen once."""
    arrivals = offsets_ns(scenario.arrival, duration_s, _rng(seed, scenario, "arrivals"))
    routes = scenario.routes
    session = scenario.session
    draw_turns: Callable[[], int] | None = None
    turns = 1 if session is None else session.turns
    if session is not None and session.turns_max is not None and session.turns_max > session.turns:
        draw_turns = partial(_rng(seed, scenario, "turns").randint, session.turns, session.turns_max)
    pick_route: Callable[[], int] | None = None
    if len(routes) > 1:
        cum = list(accumulate(r.weight for r in routes))
        choices = _rng(seed, scenario, "routes").choices
        population = range(len(routes))

        def pick_route() -> int:
            return choices(population, cum_weights=cum)[0]

    for t in arrivals:
        yield (
            t,
            s_idx,
            0 if pick_route is None else pick_route(),
            turns if draw_turns is None else draw_turns(),
        )


def build_plan(profile: Profile) -> Iterator[Planned]:
    """Every arrival of the run, in intended-time order, each with its global index (a session
    start reserves one index per turn)."""
    streams = [
        _scenario_stream(profile.seed, profile.duration_s, i, s) for i, s in enumerate(profile.scenarios)
    ]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams)
    index = 0
    session = 0
    for t, s_idx, r_idx, turns in merged:
        if profile.scenarios[s_idx].session is not None:
            yield Planned(index, t, s_idx, r_idx, turns=turns, session=session)
            session += 1
        else:
            yield Planned(index, t, s_idx, r_idx)
        index += turns


def planned_requests(profile: Profile) -> int:
    """How many requests (session turns included) the plan holds."""
    total = 0
    for p in build_plan(profile):
        total += p.turns
    return total


def mean_turns(scenario: Scenario) -> float:
    """Requests per arrival: 1, or a session's mean number of turns."""
    session = scenario.session
    if session is None:
        return 1.0
    return (session.turns + (session.turns_max or session.turns)) / 2


def planned_rate_rps(profile: Profile) -> float:
    """The profile's total mean request rate over its duration (session turns included)."""
    return sum(mean_rate_rps(s.arrival, profile.duration_s) * mean_turns(s) for s in profile.scenarios)
