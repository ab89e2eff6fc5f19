"""Every arrival process's statistics with a fixed seed: mean rate, dispersion and gap shape."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from pydantic import TypeAdapter

from harness.profile.models import Arrival, ClosedArrival, Profile
from harness.workload import build_plan, planned_rate_rps
from harness.workload.arrivals import AnyArrival, mean_rate_rps, offsets_ns, scaled_arrival
from harness.workload.closed import CLOSED_INDEX_BASE, closed_loops, closed_users

NS = 1_000_000_000
ADAPTER: TypeAdapter[AnyArrival] = TypeAdapter(Arrival)


def arrival(spec: dict) -> AnyArrival:
    return ADAPTER.validate_python(spec)


def offsets(spec: dict, duration_s: float, seed: int = 11) -> list[int]:
    return list(offsets_ns(arrival(spec), duration_s, random.Random(seed)))


def counts_per_bin(offs: list[int], duration_s: float, bin_s: float = 1.0) -> list[int]:
    bins = [0] * int(duration_s / bin_s)
    for t in offs:
        bins[int(t / (bin_s * NS))] += 1
    return bins


def dispersion(bins: list[int]) -> float:
    """Index of dispersion of counts: variance / mean (1 for Poisson, 0 for a constant rate)."""
    return statistics.pvariance(bins) / statistics.mean(bins)


def gap_cv(offs: list[int]) -> float:
    gaps = [b - a for a, b in itertools.pairwise(offs)]
    return statistics.pstdev(gaps) / statistics.mean(gaps)


def test_constant_rate_exact_and_no_dispersion() -> None:
    """Constant arrivals hit the rate exactly with zero count dispersion and zero gap variation."""
    offs = offsets({"process": "constant", "rate_rps": 250}, 40)
    assert len(offs) == 10_000
    assert dispersion(counts_per_bin(offs, 40)) == 0
    assert gap_cv(offs) < 1e-6


def test_poisson_rate_and_unit_dispersion() -> None:
    """Poisson arrivals have the mean rate within 2% and an index of dispersion near 1."""
    offs = offsets({"process": "poisson", "rate_rps": 250}, 100)
    assert abs(len(offs) / 100 - 250) / 250 < 0.02
    assert 0.75 < dispersion(counts_per_bin(offs, 100)) < 1.25
    assert 0.97 < gap_cv(offs) < 1.03


@pytest.mark.parametrize(("burstiness", "cv"), [(0.25, 2.0), (1.0, 1.0), (4.0, 0.5)])
def test_gamma_rate_and_burstiness(burstiness: float, cv: float) -> None:
    """Gamma arrivals keep the mean rate; gap CV is 1/sqrt(burstiness) and counts disperse as CV²."""
    spec = {"process": "gamma", "rate_rps": 250, "burstiness": burstiness}
    offs = offsets(spec, 200)
    assert abs(len(offs) / 200 - 250) / 250 < 0.03
    assert abs(gap_cv(offs) - cv) / cv < 0.04
    # a renewal process's count dispersion tends to CV² over windows much longer than a gap
    d = dispersion(counts_per_bin(offs, 200))
    assert 0.6 * cv * cv < d < 1.5 * cv * cv


@pytest.mark.parametrize("poisson", [False, True])
def test_ramp_rate_follows_the_line(poisson: bool) -> None:
    """A ramp's arrivals per window follow start + slope·t, then hold the end rate after ramp_s."""
    spec = {"process": "ramp", "start_rps": 100, "end_rps": 500, "ramp_s": 20, "poisson": poisson}
    offs = offsets(spec, 30)
    bins = counts_per_bin(offs, 30, bin_s=5.0)
    expected = [5 * (100 + 20 * (5 * i + 2.5)) for i in range(4)] + [2500, 2500]
    tolerance = 0.07 if poisson else 0.005
    for got, want in zip(bins, expected, strict=True):
        assert abs(got - want) / want < tolerance
    assert abs(len(offs) / 30 - mean_rate_rps(arrival(spec), 30)) / len(offs) * 30 < tolerance
    if poisson:  # a non-homogeneous Poisson process: unit dispersion within a flat stretch
        assert 0.6 < dispersion(counts_per_bin([t for t in offs if t >= 20 * NS], 30)[20:]) < 1.6


@pytest.mark.parametrize("poisson", [False, True])
def test_steps_rate_per_step(poisson: bool) -> None:
    """Steps hold each rate for its duration (zero-rate steps send nothing) and the last holds."""
    spec = {
        "process": "steps",
        "steps": [
            {"rate_rps": 200, "duration_s": 10},
            {"rate_rps": 0, "duration_s": 5},
            {"rate_rps": 600, "duration_s": 5},
        ],
        "poisson": poisson,
    }
    offs = offsets(spec, 30)
    per_s = counts_per_bin(offs, 30)
    tolerance = 0.06 if poisson else 0.01
    assert abs(sum(per_s[:10]) - 2000) / 2000 < tolerance
    assert sum(per_s[10:15]) == 0
    assert abs(sum(per_s[15:]) - 9000) / 9000 < tolerance
    assert mean_rate_rps(arrival(spec), 30) == (2000 + 9000) / 30
    d = dispersion(per_s[15:])
    assert (0.4 < d < 2.0) if poisson else d < 0.01


def closed_profile(**arrival_extra: object) -> Profile:
    return Profile.model_validate(
        {
            "name": "closed",
            "seed": 5,
            "duration_s": 10,
            "target": {"endpoints": {"a": {"base_url": "http://127.0.0.1:1"}}},
            "client": {"connections": 64},
            "scenarios": [
                {
                    "name": "users",
                    "arrival": {"process": "closed", "users": 8, "think_time_ms": 40, **arrival_extra},
                    "routes": [
                        {"endpoint": "a", "deployment": "d", "weight": 3},
                        {"endpoint": "a", "deployment": "e"},
                    ],
                },
                {
                    "name": "open",
                    "arrival": {"process": "constant", "rate_rps": 10},
                    "routes": [{"endpoint": "a", "deployment": "d"}],
                },
            ],
        }
    )


def test_closed_loop_plans_nothing_and_scales_users() -> None:
    """A closed loop adds no planned arrivals and no planned rate; scaling changes its user count."""
    prof = closed_profile()
    plan = list(build_plan(prof))
    assert len(plan) == 100 and all(p.scenario == 1 for p in plan)
    assert planned_rate_rps(prof) == 10
    users = prof.scenarios[0].arrival
    assert isinstance(users, ClosedArrival)
    assert mean_rate_rps(users, 10) == 0
    assert scaled_arrival(users, 2.5).users == 20  # type: ignore[union-attr]
    assert scaled_arrival(users, 0.01).users == 1  # type: ignore[union-attr]
    assert closed_users(prof) == 8
    assert CLOSED_INDEX_BASE > 10**12  # far above any plan index


def test_closed_loop_think_times_and_routes_are_seeded() -> None:
    """Exponential think times have the configured mean and CV 1, routes follow the weights, per user."""
    (loop,) = closed_loops(closed_profile(think="exponential", ramp_up_s=2))
    assert [loop.start_ns(u) for u in (0, 1, 7)] == [0, 250_000_000, 1_750_000_000]
    user = loop.user(3)
    thinks = [user.think_ns() for _ in range(20_000)]
    assert abs(statistics.mean(thinks) - 40_000_000) / 40_000_000 < 0.03
    assert abs(statistics.pstdev(thinks) / statistics.mean(thinks) - 1) < 0.03
    routes = [user.route() for _ in range(20_000)]
    assert abs(routes.count(0) / len(routes) - 0.75) < 0.015
    again = loop.user(3)
    assert [again.think_ns() for _ in range(5)] == thinks[:5]
    assert [loop.user(4).think_ns() for _ in range(5)] != thinks[:5]


def test_closed_loop_users_shard_across_workers() -> None:
    """With N workers every user runs in exactly one of them, the same one on every run."""
    prof = closed_profile()
    shares = [list(loop.my_users()) for w in range(3) for loop in closed_loops(prof, worker=w, workers=3)]
    assert sorted(u for share in shares for u in share) == list(range(8))
    assert shares[1] == [1, 4, 7]


def test_closed_loop_constant_think() -> None:
    """Constant think time is exactly the configured value; zero think means back-to-back requests."""
    (loop,) = closed_loops(closed_profile())
    assert {loop.user(0).think_ns() for _ in range(10)} == {40_000_000}
    (zero,) = closed_loops(closed_profile(think_time_ms=0))
    assert zero.user(0).think_ns() == 0


def test_closed_users_must_fit_the_in_flight_cap() -> None:
    """More closed-loop users than the in-flight cap is a profile error naming the scenario."""
    data = closed_profile().model_dump(by_alias=True)
    data["scenarios"][0]["arrival"]["users"] = 100
    with pytest.raises(ValueError, match="'users': 100 closed-loop users exceed"):
        Profile.model_validate(data)
