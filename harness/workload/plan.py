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
from pathlib import Path
from typing import Any

from harness.profile.models import Profile, Scenario
from harness.workload.arrivals import mean_rate_rps, offsets_ns
from harness.workload.traces import read_trace
from harness.workload.traces.rows import TraceRequest


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


# One arrival as the merged streams carry it: (offset_ns, scenario, sequence, route, turns, trace
# row or None). The per-stream sequence number breaks ties before the unorderable last element.
_Item = tuple[int, int, int, int, int, "TraceRequest | None"]


def _route_picker(seed: int, scenario: Scenario) -> Callable[[], int] | None:
    routes = scenario.routes
    if len(routes) == 1:
        return None
    cum = list(accumulate(r.weight for r in routes))
    choices = _rng(seed, scenario, "routes").choices
    population = range(len(routes))

    def pick_route() -> int:
        return choices(population, cum_weights=cum)[0]

    return pick_route


def _trace_stream(
    seed: int, duration_s: float, s_idx: int, scenario: Scenario, base_dir: Path
) -> Iterator[_Item]:
    """A trace scenario's rows up to ``duration_s``; a trace session keeps one route."""
    assert scenario.trace is not None
    limit_ns = int(duration_s * 1e9)
    pick_route = _route_picker(seed, scenario)
    session_routes: dict[str, int] = {}
    stream = read_trace(scenario.trace, base_dir, seed=seed)
    try:
        for seq, row in enumerate(stream):
            if row.offset_ns >= limit_ns:
                return
            if pick_route is None:
                route = 0
            elif row.session_id is None:
                route = pick_route()
            else:
                found = session_routes.get(row.session_id)
                if found is None:
                    found = session_routes[row.session_id] = pick_route()
                route = found
            yield (row.offset_ns, s_idx, seq, route, 1, row)
    finally:
        stream.close()


def _turns_drawer(seed: int, scenario: Scenario) -> Callable[[], int]:
    """Turns per arrival: 1, a session's fixed turns, or uniform in [turns, turns_max] (seeded)."""
    session = scenario.session
    if session is None:
        return lambda: 1
    if session.turns_max is not None and session.turns_max > session.turns:
        return partial(_rng(seed, scenario, "turns").randint, session.turns, session.turns_max)
    turns = session.turns
    return lambda: turns


def _mix_stream(
    seed: int, duration_s: float, name: str, arrival: Any, members: list[tuple[int, Scenario]]
) -> Iterator[_Item]:
    """One shared arrival process; each arrival is one request of a member scenario, chosen by
    weight from the mix's own seeded stream (routes and turns from the scenario's own streams)."""
    rng = random.Random(f"{seed}/mix/{name}/arrivals")
    pick = random.Random(f"{seed}/mix/{name}/scenarios").choices
    cum = list(accumulate(s.weight for _, s in members))
    population = range(len(members))
    routes = [_route_picker(seed, s) for _, s in members]
    turns = [_turns_drawer(seed, s) for _, s in members]
    for seq, t in enumerate(offsets_ns(arrival, duration_s, rng)):
        m = pick(population, cum_weights=cum)[0]
        route = routes[m]
        yield (t, members[m][0], seq, 0 if route is None else route(), turns[m](), None)


def _scenario_stream(
    seed: int, duration_s: float, s_idx: int, scenario: Scenario, base_dir: Path
) -> Iterator[_Item]:
    """One scenario's arrivals; a session's route is chosen once."""
    if scenario.trace is not None:
        yield from _trace_stream(seed, duration_s, s_idx, scenario, base_dir)
        return
    assert scenario.arrival is not None
    arrivals = offsets_ns(scenario.arrival, duration_s, _rng(seed, scenario, "arrivals"))
    session = scenario.session
    draw_turns: Callable[[], int] | None = None
    turns = 1 if session is None else session.turns
    if session is not None and session.turns_max is not None and session.turns_max > session.turns:
        draw_turns = partial(_rng(seed, scenario, "turns").randint, session.turns, session.turns_max)
    pick_route = _route_picker(seed, scenario)
    for seq, t in enumerate(arrivals):
        yield (
            t,
            s_idx,
            seq,
            0 if pick_route is None else pick_route(),
            turns if draw_turns is None else draw_turns(),
            None,
        )


def build_plan(profile: Profile, base_dir: Path | None = None) -> Iterator[Planned]:
    """Every arrival of the run, in intended-time order, each with its global index (a session
    start reserves one index per turn). ``base_dir`` is where trace files are found (the profile
    file's directory)."""
    base = base_dir if base_dir is not None else Path.cwd()
    streams = [
        _scenario_stream(profile.seed, profile.duration_s, i, s, base)
        for i, s in enumerate(profile.scenarios)
        if s.mix is None
    ]
    for name, arrival in profile.mixes.items():
        members = [(i, s) for i, s in enumerate(profile.scenarios) if s.mix == name]
        streams.append(_mix_stream(profile.seed, profile.duration_s, name, arrival, members))
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams)
    index = 0
    session = 0
    trace_sessions: list[dict[str, int]] = [{} for _ in profile.scenarios]
    for t, s_idx, _, r_idx, turns, row in merged:
        if row is not None:  # a trace row: its own sizes, and its session when it has one
            key = None
            if row.session_id is not None:
                keys = trace_sessions[s_idx]
                key = keys.get(row.session_id)
                if key is None:
                    key = keys[row.session_id] = len(keys)
            yield Planned(
                index,
                t,
                s_idx,
                r_idx,
                session=key,
                turn=row.turn or 0,
                prompt_tokens=max(1, row.tokens_in),
                max_tokens=max(1, row.tokens_out),
            )
        elif profile.scenarios[s_idx].session is not None:
            yield Planned(index, t, s_idx, r_idx, turns=turns, session=session)
            session += 1
        else:
            yield Planned(index, t, s_idx, r_idx)
        index += turns


def planned_requests(profile: Profile, base_dir: Path | None = None) -> int:
    """How many requests (session turns included) the plan holds."""
    total = 0
    for p in build_plan(profile, base_dir):
        total += p.turns
    return total


def mean_turns(scenario: Scenario) -> float:
    """Requests per arrival: 1, or a session's mean number of turns."""
    session = scenario.session
    if session is None:
        return 1.0
    return (session.turns + (session.turns_max or session.turns)) / 2


def _trace_rate_rps(profile: Profile, scenario: Scenario, base_dir: Path) -> float:
    """A trace scenario's rate over the run: its rows within the duration (one streaming pass)."""
    assert scenario.trace is not None
    limit_ns = int(profile.duration_s * 1e9)
    n = 0
    stream = read_trace(scenario.trace, base_dir, seed=profile.seed)
    try:
        for row in stream:
            if row.offset_ns >= limit_ns:
                break
            n += 1
    finally:
        stream.close()
    return n / profile.duration_s


def scenario_rates_rps(profile: Profile, base_dir: Path | None = None) -> list[float]:
    """Each scenario's planned mean request rate over the run (session turns and trace rows
    included; a trace scenario costs one streaming pass over its rows; closed-loop users plan
    nothing ahead: 0)."""
    base = base_dir if base_dir is not None else Path.cwd()
    rates = []
    for s in profile.scenarios:
        if s.trace is not None:
            rates.append(_trace_rate_rps(profile, s, base))
        elif s.mix is not None:
            share = s.weight / sum(m.weight for m in profile.scenarios if m.mix == s.mix)
            rates.append(mean_rate_rps(profile.mixes[s.mix], profile.duration_s) * share * mean_turns(s))
        else:
            assert s.arrival is not None
            rates.append(mean_rate_rps(s.arrival, profile.duration_s) * mean_turns(s))
    return rates


def planned_rate_rps(profile: Profile, base_dir: Path | None = None) -> float:
    """The profile's total planned mean request rate (see :func:`scenario_rates_rps`)."""
    return sum(scenario_rates_rps(profile, base_dir))
