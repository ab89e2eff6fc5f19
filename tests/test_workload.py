"""Arrival processes and the plan: exact, seeded, deterministic."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from harness.profile.models import Profile
from harness.workload import build_plan
from harness.workload.arrivals import constant, poisson

NS = 1_000_000_000


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


def test_gamma_rate_and_burstiness() -> None:
    """Gamma gaps keep the mean rate; their coefficient of variation is 1/sqrt(burstiness)."""
    from harness.workload.arrivals import gamma

    for k in (0.25, 1.0, 4.0):
        offsets = list(gamma(500.0, k, 100.0, random.Random(11)))
        assert abs(len(offsets) / 100.0 - 500.0) / 500.0 < 0.03
        gaps = [b - a for a, b in itertools.pairwise(offsets)]
        cv = statistics.pstdev(gaps) / statistics.mean(gaps)
        assert abs(cv - 1 / k**0.5) / (1 / k**0.5) < 0.08, (k, cv)


def _arrival(spec: dict):  # type: ignore[no-untyped-def]
    return (
        make_profile([{"name": "s", "arrival": spec, "routes": [{"endpoint": "a", "deployment": "d"}]}])
        .scenarios[0]
        .arrival
    )


def test_ramp_deterministic_follows_the_intensity() -> None:
    """A 0→100 rps ramp over 10 s yields 500 arrivals, a quarter of them in the first half."""
    from harness.workload.arrivals import offsets_ns

    arrival = _arrival({"process": "ramp", "start_rps": 0, "end_rps": 100})
    offsets = list(offsets_ns(arrival, 10.0, random.Random(1)))
    assert len(offsets) == 500  # Λ(10 s) = 500: arrivals k = 0..499, like constant's i = 0..n-1
    first_half = sum(1 for t in offsets if t < 5 * NS)
    assert first_half == 125  # Λ(5 s) = 125
    assert offsets == sorted(offsets)


def test_ramp_then_hold_and_poisson_variant() -> None:
    """After ramp_s the end rate holds; the Poisson variant has the same expected count."""
    from harness.workload.arrivals import mean_rate_rps, offsets_ns

    arrival = _arrival({"process": "ramp", "start_rps": 100, "end_rps": 300, "ramp_s": 10})
    det = list(offsets_ns(arrival, 20.0, random.Random(1)))
    assert len(det) == 2000 + 3000  # ramp area (100+300)/2 × 10 s, then 300 rps × 10 s
    assert mean_rate_rps(arrival, 20.0) == 250.0
    late = [t for t in det if t >= 15 * NS]
    assert abs(len(late) - 1500) <= 1  # 300 rps held for the last 5 s
    pois = _arrival({"process": "ramp", "start_rps": 100, "end_rps": 300, "ramp_s": 10, "poisson": True})
    counts = [len(list(offsets_ns(pois, 20.0, random.Random(seed)))) for seed in range(5)]
    assert abs(statistics.mean(counts) - 5000) < 5000 * 0.02


def test_steps_hold_each_rate() -> None:
    """Each step holds its rate for its duration; the last holds until the run ends."""
    from harness.workload.arrivals import mean_rate_rps, offsets_ns

    arrival = _arrival(
        {
            "process": "steps",
            "steps": [
                {"rate_rps": 10, "duration_s": 2},
                {"rate_rps": 0, "duration_s": 1},
                {"rate_rps": 50, "duration_s": 1},
            ],
        }
    )
    offsets = list(offsets_ns(arrival, 6.0, random.Random(1)))
    per_second = [sum(1 for t in offsets if s * NS <= t < (s + 1) * NS) for s in range(6)]
    assert per_second == [10, 10, 0, 50, 50, 50]
    assert mean_rate_rps(arrival, 6.0) == (20 + 150) / 6


def test_scaled_arrival_multiplies_every_rate() -> None:
    """Scaling keeps the process and its shape and multiplies each rate."""
    from harness.workload.arrivals import scaled_arrival

    ramp = scaled_arrival(_arrival({"process": "ramp", "start_rps": 1, "end_rps": 3}), 2.0)
    assert (ramp.start_rps, ramp.end_rps) == (2.0, 6.0)
    steps = scaled_arrival(_arrival({"process": "steps", "steps": [{"rate_rps": 5, "duration_s": 1}]}), 3.0)
    assert steps.steps[0].rate_rps == 15.0
    g = scaled_arrival(_arrival({"process": "gamma", "rate_rps": 4, "burstiness": 0.5}), 0.5)
    assert (g.rate_rps, g.burstiness) == (2.0, 0.5)


def test_a_mix_shares_one_arrival_process_between_scenarios_by_weight() -> None:
    """Scenarios with ``mix`` take weighted shares of one profile-level arrival process: the
    merged arrivals are exactly the mix's process, split about 3:1, deterministically."""
    from harness.profile.models import Profile
    from harness.workload.plan import scenario_rates_rps

    def profile(seed: int) -> Profile:
        return Profile.model_validate(
            {
                "name": "mix",
                "seed": seed,
                "duration_s": 20,
                "target": {"endpoints": {"e": {"base_url": "http://127.0.0.1:9"}}},
                "mixes": {"interactive": {"process": "constant", "rate_rps": 100}},
                "scenarios": [
                    {
                        "name": "chat",
                        "mix": "interactive",
                        "weight": 3,
                        "routes": [{"endpoint": "e", "deployment": "d"}],
                    },
                    {
                        "name": "embed",
                        "api": "embeddings",
                        "mix": "interactive",
                        "weight": 1,
                        "routes": [{"endpoint": "e", "deployment": "d"}],
                    },
                ],
            }
        )

    plan = list(build_plan(profile(1)))
    assert [p.offset_ns for p in plan] == [i * 10_000_000 for i in range(2000)]
    share = sum(p.scenario == 0 for p in plan) / len(plan)
    assert 0.72 < share < 0.78
    assert [(p.scenario, p.route) for p in plan] == [(p.scenario, p.route) for p in build_plan(profile(1))]
    assert [p.scenario for p in plan] != [p.scenario for p in build_plan(profile(2))]
    assert scenario_rates_rps(profile(1)) == [75.0, 25.0]


def test_mix_references_are_checked() -> None:
    """A scenario naming an unknown mix, a mix nobody uses, or a scenario with both an arrival and
    a mix is refused with the fix."""
    from pydantic import ValidationError

    from harness.profile.models import Profile

    base = {
        "name": "mix",
        "duration_s": 1,
        "target": {"endpoints": {"e": {"base_url": "http://127.0.0.1:9"}}},
    }
    route = [{"endpoint": "e", "deployment": "d"}]
    cases = [
        ({"scenarios": [{"name": "a", "mix": "nope", "routes": route}]}, "unknown mixes nope"),
        (
            {
                "mixes": {"m": {"process": "constant", "rate_rps": 1}},
                "scenarios": [
                    {"name": "a", "arrival": {"process": "constant", "rate_rps": 1}, "routes": route}
                ],
            },
            "no scenario takes a share of mix(es) m",
        ),
        (
            {
                "mixes": {"m": {"process": "constant", "rate_rps": 1}},
                "scenarios": [
                    {
                        "name": "a",
                        "mix": "m",
                        "arrival": {"process": "constant", "rate_rps": 1},
                        "routes": route,
                    }
                ],
            },
            "exactly one of [arrival]",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationError) as err:
            Profile.model_validate({**base, **extra})
        assert message in str(err.value)
