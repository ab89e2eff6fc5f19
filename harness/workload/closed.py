"""Closed-loop scenarios: N virtual users, each sending its next request a think time after its
previous one finished. Pure and seeded; the dispatcher supplies the time.

An open-loop plan is known in advance; a closed loop's is not (each send time depends on when
the previous response came back), so this module gives, per user, *when it starts* and *what it
does after each response* — the think time and the route of its next request — from random
streams derived from the profile seed, the scenario name and the user number. The same seed
gives every user the same sequence of think times and routes on every machine; only the send
times follow the target's speed.

Closed-loop requests are numbered apart from the plan: ``index = CLOSED_INDEX_BASE +
worker × 2^40 + n`` with n counting the dispatcher's closed-loop sends, so request ids never
collide with planned ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import accumulate

from harness.profile.models import ClosedArrival, Profile

NS_PER_MS = 1_000_000
CLOSED_INDEX_BASE = 1 << 46  # request ids keep 12 hex digits of index: 2^46 + 2^40·w + n < 16^12


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """One closed-loop scenario, ready for the dispatcher."""

    scenario: int  # index into profile.scenarios
    name: str
    users: int
    think_time_ns: int  # mean
    exponential: bool
    ramp_up_ns: int
    end_ns: int  # no request is started at or after this offset from the epoch
    seed: int
    route_weights: tuple[float, ...]
    worker: int = 0  # with N worker processes, worker w runs users w, w + N, w + 2N, ...
    workers: int = 1

    def my_users(self) -> range:
        """The users this worker runs (all of them with one worker)."""
        return range(self.worker, self.users, self.workers)

    def start_ns(self, user: int) -> int:
        """User ``user`` (0-based) sends its first request at this offset: starts spread evenly."""
        return self.ramp_up_ns * user // self.users

    def user(self, user: int) -> UserStream:
        return UserStream(self, user)


class UserStream:
    """One user's seeded choices: the think time after each response and each request's route."""

    __slots__ = ("_cum", "_pick", "_population", "_think", "_think_rng", "exponential", "mean_ns")

    def __init__(self, loop: ClosedLoop, user: int) -> None:
        self.mean_ns = loop.think_time_ns
        self.exponential = loop.exponential
        self._think_rng = random.Random(f"{loop.seed}/{loop.name}/think/{user}")
        self._think = self._think_rng.expovariate
        weights = loop.route_weights
        self._population = range(len(weights))
        self._cum = list(accumulate(weights)) if len(weights) > 1 else None
        self._pick = random.Random(f"{loop.seed}/{loop.name}/routes/{user}").choices

    def think_ns(self) -> int:
        """The pause before this user's next request (ns)."""
        if self.mean_ns == 0:
            return 0
        if not self.exponential:
            return self.mean_ns
        return int(self._think(1.0) * self.mean_ns)

    def route(self) -> int:
        """The route index of this user's next request (by the scenario's route weights)."""
        if self._cum is None:
            return 0
        return self._pick(self._population, cum_weights=self._cum)[0]


def closed_loops(profile: Profile, *, worker: int = 0, workers: int = 1) -> list[ClosedLoop]:
    """Every closed-loop scenario of ``profile`` (empty when all are open loops); with ``workers``
    processes, each gets a deterministic share of every scenario's users (user u → worker u mod N)."""
    loops = []
    end_ns = int(profile.duration_s * 1e9)
    for i, s in enumerate(profile.scenarios):
        a = s.arrival
        if not isinstance(a, ClosedArrival):
            continue
        loops.append(
            ClosedLoop(
                scenario=i,
                name=s.name,
                users=a.users,
                think_time_ns=int(a.think_time_ms * NS_PER_MS),
                exponential=a.think == "exponential",
                ramp_up_ns=min(int(a.ramp_up_s * 1e9), end_ns),
                end_ns=end_ns,
                seed=profile.seed,
                route_weights=tuple(r.weight for r in s.routes),
                worker=worker,
                workers=workers,
            )
        )
    return loops


def closed_users(profile: Profile) -> int:
    """The total number of closed-loop users in ``profile``."""
    return sum(s.arrival.users for s in profile.scenarios if isinstance(s.arrival, ClosedArrival))
