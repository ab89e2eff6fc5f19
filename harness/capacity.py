"""Capacity search: the highest arrival rate at which a profile still passes every check.

Each probe is a complete, independent ``harness run`` of the profile with every scenario's
arrival rate scaled by one factor (relative mix preserved), for a short step duration. A probe
*passes* when its verdict is PASS: every threshold held, no routing violation, no dropped
load, the generator was not harness-bound. The search:

1. **Expand**: start at ``start_rps`` and multiply the rate by ``growth`` until a probe fails
   (or ``max_rps`` is reached).
2. **Bisect** between the highest passing and the lowest failing rate until they are within
   ``precision`` (relative) of each other.

The answer is the highest passing rate. A probe that is harness-bound is not a fact about the
target; the search stops there and says so rather than reporting the generator's limit as the
target's capacity.

Outputs in ``results/<UTC>-<profile>-capacity/``: one run directory per probe under
``probes/``, ``capacity.json`` (every probe with its rate, verdict and key percentiles, and the
answer) and ``knee.svg`` (p99 latency and TTFT against rate, the answer marked).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.errors import ExitCode, InputError
from harness.profile import LoadedProfile
from harness.results import rundir
from harness.runner import RunOutcome, run_loaded, run_with_uvloop
from harness.workload import planned_rate_rps
from harness.workload.arrivals import scaled_arrival

CAPACITY_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class SearchPlan:
    start_rps: float
    max_rps: float
    growth: float = 2.0
    precision: float = 0.05
    step_duration_s: float = 10.0
    max_probes: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.start_rps <= self.max_rps:
            raise InputError(
                f"capacity: need 0 < start ({self.start_rps:g}) <= max ({self.max_rps:g}) rps",
                "pass --start-rps and --max-rps with start <= max",
            )
        if self.growth <= 1 or not 0 < self.precision < 1:
            raise InputError(
                "capacity: growth must be > 1 and precision in (0, 1)", "e.g. --growth 2 --precision 0.05"
            )


@dataclass(slots=True)
class Probe:
    rate_rps: float
    passed: bool
    verdict: str
    exit_code: int
    reasons: list[str]
    run_dir: str
    latency_p99_ms: float | None
    ttft_p99_ms: float | None
    achieved_rps: float
    error_rate: float


@dataclass(slots=True)
class CapacityResult:
    profile: str
    answer_rps: float | None
    first_failing_rps: float | None
    stopped_because: str
    probes: list[Probe] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": CAPACITY_SCHEMA_VERSION,
            "profile": self.profile,
            "answer_rps": self.answer_rps,
            "first_failing_rps": self.first_failing_rps,
            "stopped_because": self.stopped_because,
            "probes": [dataclasses.asdict(p) for p in self.probes],
        }


def scaled(loaded: LoadedProfile, rate_rps: float, duration_s: float) -> LoadedProfile:
    """The profile with its total mean arrival rate set to ``rate_rps`` (mix kept) and a new duration."""
    profile = loaded.profile
    factor = rate_rps / planned_rate_rps(profile.model_copy(update={"duration_s": duration_s}))
    scenarios = [  # trace scenarios are refused by run_capacity; mixed ones scale with their mix
        s if s.arrival is None else s.model_copy(update={"arrival": scaled_arrival(s.arrival, factor)})
        for s in profile.scenarios
    ]
    mixes = {name: scaled_arrival(a, factor) for name, a in profile.mixes.items()}
    new = profile.model_copy(update={"scenarios": scenarios, "mixes": mixes, "duration_s": duration_s})
    return dataclasses.replace(loaded, profile=new)


def _probe(outcome: RunOutcome, rate: float) -> Probe:
    s = outcome.summary
    counts = s["counts"]
    planned = counts["planned"] or 1
    return Probe(
        rate_rps=rate,
        passed=outcome.exit_code == ExitCode.PASS,
        verdict=outcome.verdict,
        exit_code=int(outcome.exit_code),
        reasons=list(outcome.reasons),
        run_dir=str(outcome.run_dir),
        latency_p99_ms=s["latency_ms"]["from_intended"].get("p99"),
        ttft_p99_ms=s["ttft_ms"]["from_intended"].get("p99"),
        achieved_rps=s["rate"]["achieved_rps"],
        error_rate=(counts["error"] + counts["timeout"]) / planned,
    )


RunProbe = Callable[[LoadedProfile, Path], RunOutcome]


def search(
    loaded: LoadedProfile,
    plan: SearchPlan,
    probes_dir: Path,
    run_probe: RunProbe,
    on_probe: Callable[[Probe], None] | None = None,
) -> CapacityResult:
    """Expand, then bisect; every probe is a full run whose directory is kept."""
    result = CapacityResult(loaded.profile.name, None, None, "")

    def probe(rate: float) -> Probe | None:
        if len(result.probes) >= plan.max_probes:
            return None
        outcome = run_probe(scaled(loaded, rate, plan.step_duration_s), probes_dir)
        p = _probe(outcome, rate)
        result.probes.append(p)
        if on_probe:
            on_probe(p)
        return p

    lo: float | None = None  # highest passing rate
    hi: float | None = None  # lowest failing rate
    rate = plan.start_rps
    while True:
        p = probe(rate)
        if p is None:
            result.stopped_because = "max_probes reached while expanding"
            break
        if p.exit_code == ExitCode.HARNESS_BOUND:
            hi = rate
            result.stopped_because = (
                f"harness-bound at {rate:g} rps: the generator, not the target, is the limit"
            )
            break
        if not p.passed:
            hi = rate
            break
        lo = rate
        if rate >= plan.max_rps:
            result.stopped_because = f"passed at max_rps {plan.max_rps:g}: capacity is at least that"
            break
        rate = min(rate * plan.growth, plan.max_rps)

    if hi is not None and not result.stopped_because:
        if lo is None:
            result.stopped_because = f"failed already at start_rps {plan.start_rps:g}"
        else:
            while (hi - lo) / lo > plan.precision:
                mid = (lo + hi) / 2
                p = probe(mid)
                if p is None:
                    result.stopped_because = "max_probes reached while bisecting"
                    break
                if p.exit_code == ExitCode.HARNESS_BOUND:
                    hi = mid
                    result.stopped_because = (
                        f"harness-bound at {mid:g} rps: the generator, not the target, is the limit"
                    )
                    break
                if p.passed:
                    lo = mid
                else:
                    hi = mid
            else:
                result.stopped_because = f"bisected to within {plan.precision:.0%}"
    result.answer_rps = lo
    result.first_failing_rps = hi
    return result


def knee_svg(result: CapacityResult) -> str:
    """p99 latency and TTFT (from the intended time) against offered rate, the answer marked."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = sorted(result.probes, key=lambda p: p.rate_rps)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rates = [p.rate_rps for p in probes]
    nan = float("nan")  # a probe without the value: a gap in the line
    latency = [nan if p.latency_p99_ms is None else p.latency_p99_ms for p in probes]
    ttft = [nan if p.ttft_p99_ms is None else p.ttft_p99_ms for p in probes]
    ax.plot(rates, latency, "o-", label="latency p99 (from intended)")
    ax.plot(rates, ttft, "s-", label="TTFT p99 (from intended)")
    for p in probes:
        ax.annotate(
            "pass" if p.passed else p.verdict.lower(),
            (p.rate_rps, p.latency_p99_ms or 0),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=7,
        )
    if result.answer_rps is not None:
        ax.axvline(
            result.answer_rps, color="green", linestyle="--", label=f"capacity {result.answer_rps:.1f} rps"
        )
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title(f"capacity search: {result.profile}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def run_capacity(
    loaded: LoadedProfile, plan: SearchPlan, results_root: Path, console: Console | None = None
) -> tuple[CapacityResult, Path]:
    """Run a capacity search and write its directory; returns the result and the directory."""
    console = console or Console(stderr=True)
    traced = [s.name for s in loaded.profile.scenarios if s.trace is not None]
    if traced:
        raise InputError(
            f"{loaded.path}: scenario(s) {', '.join(traced)} replay a trace, whose rate a capacity "
            "search cannot scale",
            "search with generated arrivals (arrival = {...}), or replay the trace at chosen speeds "
            "with trace.rate_rps",
        )
    out_dir = rundir.new_run_dir(results_root, f"{loaded.profile.name}-capacity")
    probes_dir = out_dir / "probes"
    probes_dir.mkdir()

    def run_probe(probe_loaded: LoadedProfile, where: Path) -> RunOutcome:
        return run_with_uvloop(run_loaded(probe_loaded, where, console=console, progress=False, report=False))

    def report(p: Probe) -> None:
        mark = "[green]pass[/]" if p.passed else f"[red]{p.verdict.lower()}[/]"
        lat = f"{p.latency_p99_ms:.1f}" if p.latency_p99_ms is not None else "—"
        console.print(f"probe {p.rate_rps:10.1f} rps: {mark}  latency p99 {lat} ms  " + "; ".join(p.reasons))

    result = search(loaded, plan, probes_dir, run_probe, report)
    rundir.write_json(out_dir / "capacity.json", result.to_json())
    if result.probes:
        (out_dir / "knee.svg").write_text(knee_svg(result), encoding="utf-8")
    return result, out_dir
