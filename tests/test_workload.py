"""Arrival processes and the plan: exact, seeded, deterministic."""

from __future__ import annotations

import itertools
import random
import statistics

from harness.profile.models import Profile
from harness.workload import build_plan
from harness.workload.arrivals import constant, poisson


def make_profile(scenarios: list[dict], seed: int = 1, duration_s: float = 10) -> Profile:
    return Profile.model_validate(
        {
            "name": "t",
            "seed": seed,
            "duration_s": duration_s,
            "target": {
                "endpoints": {
                    "a": {"base_url": "http://127.0.0.1:1"},
                    "b": {"base_url": "http://127.0.0.1:2"},
                }
            },
            "scenarios": scenarios,
        }
    )


def test_constant_is_exact() -> None:
    """Constant arrivals are exactly 1/rate apart and number floor(rate × duration)."""
    offsets = list(constant(1000, 2.5))
    assert len(offsets) == 2500
    assert offsets[:3] == [0, 1_000_000, 2_000_000]
    assert offsets[-1] == 2_499_000_000


def test_constant_does_not_drift_over_many_arrivals() -> None:
    """The i-th constant arrival is computed, not accumulated, so there is no float drift."""
    offsets = constant(3, 1_000_000)
    for i, t in enumerate(offsets):
        if i == 2_000_000:
            assert t == 666_666_666_666_666  # 2e6 / 3 s, truncated to ns
            break


def test_poisson_rate_and_dispersion() -> None:
    """Poisson arrivals have the requested mean rate and an index of dispersion near 1."""
    rate, duration = 200.0, 200.0
    offsets = list(poisson(rate, duration, random.Random(7)))
    assert abs(len(offsets) / duration - rate) / rate < 0.02
    bins = [0] * int(duration)
    for t in offsets:
        bins[t // 1_000_000_000] += 1
    dispersion = statistics.pvariance(bins) / statistics.mean(bins)
    assert 0.8 < dispersion < 1.2
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    cv = statistics.pstdev(gaps) / statistics.mean(gaps)
    assert 0.95 < cv < 1.05  # exponential gaps: coefficient of variation 1


def test_plan_is_deterministic_per_seed() -> None:
    """The same profile and seed give the same plan; another seed gives another."""
    scen = [
        {
            "name": "c",
            "arrival": {"process": "poisson", "rate_rps": 50},
            "routes": [
                {"endpoint": "a", "deployment": "d", "weight": 9},
                {"endpoint": "b", "deployment": "d"},
            ],
        }
    ]
    first = [(p.index, p.offset_ns, p.route) for p in build_plan(make_profile(scen))]
    again = [(p.index, p.offset_ns, p.route) for p in build_plan(make_profile(scen))]
    other = [(p.index, p.offset_ns, p.route) for p in build_plan(make_profile(scen, seed=2))]
    assert first == again
    assert first != other


def test_route_weights() -> None:
    """Routes are chosen in proportion to their weights."""
    scen = [
        {
            "name": "c",
            "arrival": {"process": "constant", "rate_rps": 1000},
            "routes": [
                {"endpoint": "a", "deployment": "d", "weight": 9},
                {"endpoint": "b", "deployment": "d"},
            ],
        }
    ]
    plan = list(build_plan(make_profile(scen)))
    share_b = sum(p.route for p in plan) / len(plan)
    assert abs(share_b - 0.1) < 0.01


def test_scenarios_merge_in_time_order_with_global_index() -> None:
    """Two scenarios interleave in intended-time order, numbered 0..n-1, each keeping its own stream."""
    a = {
        "name": "a",
        "arrival": {"process": "constant", "rate_rps": 10},
        "routes": [{"endpoint": "a", "deployment": "d"}],
    }
    b = {
        "name": "b",
        "arrival": {"process": "poisson", "rate_rps": 7},
        "routes": [{"endpoint": "b", "deployment": "d"}],
    }
    plan = list(build_plan(make_profile([a, b])))
    assert [p.index for p in plan] == list(range(len(plan)))
    assert all(x.offset_ns <= y.offset_ns for x, y in itertools.pairwise(plan))
    only_b = [p.offset_ns for p in plan if p.scenario == 1]
    alone = [p.offset_ns for p in build_plan(make_profile([b]))]
    assert only_b == alone  # adding scenario "a" does not change scenario "b"
