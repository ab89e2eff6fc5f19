"""Turn a profile into a lazy, seeded, deterministic stream of planned arrivals."""

from harness.workload.plan import Planned, build_plan, planned_rate_rps

__all__ = ["Planned", "build_plan", "planned_rate_rps"]
