"""Evaluate parsed thresholds on a finished run, from its run directory alone.

Every number comes from the records through ``harness.results.derive`` and the same HDR
histogram as ``summary.json`` (1 µs .. 1 h, 3 significant digits), so ``p99(ttft)`` here is
``ttft_ms.from_intended.p99`` there and ``avg(goodput)`` is ``rate.completed_rps``.

Selectors: ``scenario`` and ``endpoint`` filter on the records; ``cloud``, ``region``,
``class`` and ``rule`` on the per-request attribution the compliance judge computes
(``harness.compliance.judge.attribute_records``), which needs the run's policy: the file
``--policy`` names, else the one the run used (``meta.policy_path`` in summary.json). Rates
divide by the matching requests: planned ones for errors, 429s and drops, served (judged)
ones for violations. A threshold with no data (an empty percentile, a rate over nothing)
fails: a gate that cannot see must not pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

from harness.compliance import CompiledPolicy, judge
from harness.compliance.judge import attribute_records
from harness.errors import InputError, ProfileError
from harness.gate.grammar import Dimension, Threshold, compare
from harness.metrics.histogram import LatencyHistogram
from harness.profile.load import load_policy
from harness.results import derive, rundir
from harness.results.reader import read_ledger, read_records

JSON_UNIT: Final[dict[Dimension, str]] = {
    "time": "ms",
    "count": "count",
    "fraction": "fraction",
    "per_s": "rps",
    "tokens_per_s": "tokens/s",
}
_ATTRIBUTED_SELECTORS: Final = frozenset({"cloud", "region", "class", "rule"})
_ERROR_OUTCOMES: Final = ("error", "timeout")


class GateInputError(InputError):
    """A threshold that cannot be evaluated on this run: no baseline, an unknown scenario, no policy."""


@dataclass(slots=True)
class RunData:
    """What thresholds read about one finished run; ``attribution()`` is computed on first use."""

    run_dir: Path
    records: pd.DataFrame
    ledger: pd.DataFrame | None
    summary: dict[str, Any]
    compliance: dict[str, Any]
    profile: dict[str, Any]  # profile.resolved.json
    duration_s: float
    policy: CompiledPolicy | None = None
    policy_source: str | None = None  # where ``policy`` came from, for messages and gate.json
    check_policy: bool = False  # compare re-attributed violations with compliance.json
    _attribution: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def declared_clouds(self) -> dict[str, str]:
        endpoints = (self.profile.get("target") or {}).get("endpoints") or {}
        return {n: ep["cloud"] for n, ep in endpoints.items() if isinstance(ep, dict) and ep.get("cloud")}

    @property
    def scenarios(self) -> set[str]:
        names = {str(s.get("name")) for s in self.profile.get("scenarios") or [] if isinstance(s, dict)}
        return names | {str(v) for v in self.records["scenario"].dropna().unique()}

    @property
    def endpoints(self) -> set[str]:
        names = {
            str(r.get("endpoint"))
            for s in self.profile.get("scenarios") or []
            if isinstance(s, dict)
            for r in s.get("routes") or []
            if isinstance(r, dict)
        }
        return names | {str(v) for v in self.records["endpoint"].dropna().unique()}

    def attribution(self) -> pd.DataFrame:
        if self._attribution is None:
            if self.policy is None:
                raise GateInputError(
                    f"{self.run_dir}: the policy this run was judged with cannot be found, so requests "
                    "cannot be attributed to a cloud, region, class or rule",
                    "pass --policy FILE to re-judge the run with that policy",
                )
            frame = attribute_records(
                self.records, self.ledger, self.policy, declared_clouds=self.declared_clouds
            )
            if self.check_policy and int(frame["kind"].notna().sum()) != self.compliance.get(
                "violations_total"
            ):
                raise GateInputError(
                    f"{self.run_dir}: policy {self.policy_source} no longer gives the violations in "
                    "compliance.json (it changed since the run)",
                    "pass --policy FILE to re-judge the run with a policy of your choice",
                )
            self._attribution = frame
        return self._attribution


def _read_json(path: Path, what: str, required: bool) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        if not required:
            return {}
        raise GateInputError(
            f"{path.parent}: no {path.name}: the run did not finish", f"{what} is written when a run ends"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise GateInputError(f"{path}: not valid JSON ({exc})", "the run directory is damaged") from None
    if not isinstance(data, dict):
        raise GateInputError(f"{path}: expected a JSON object", "the run directory is damaged")
    return data


def run_duration_s(summary: dict[str, Any], profile: dict[str, Any]) -> float:
    """The load phase length rates divide by, as the runner used it for summary.json."""
    meta = summary.get("meta") or {}
    if isinstance(meta.get("duration_s"), int | float):
        return float(meta["duration_s"])
    if meta.get("interrupted") and meta.get("started_at") and meta.get("finished_at"):
        span = datetime.fromisoformat(meta["finished_at"]) - datetime.fromisoformat(meta["started_at"])
        return max(1e-3, span.total_seconds())
    return float(profile.get("duration_s") or 0.0)


def _run_policy(
    summary: dict[str, Any], profile: dict[str, Any], name: str | None
) -> tuple[CompiledPolicy | None, str | None]:
    """The policy file the run was judged with, if it still exists and still has the same name."""
    meta = summary.get("meta") or {}
    candidates: list[Path] = []
    if meta.get("policy_path"):
        candidates.append(Path(meta["policy_path"]))
    target_policy = (profile.get("target") or {}).get("policy")
    if meta.get("profile_path") and isinstance(target_policy, str):
        candidates.append(Path(meta["profile_path"]).parent / target_policy)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            policy = load_policy(path)
        except ProfileError:
            continue
        if policy.name == name:
            return CompiledPolicy(policy), str(path)
    return None, None


def load_run(run_dir: Path, *, policy_file: Path | None = None) -> RunData:
    """Read a run directory; with ``policy_file``, re-judge its compliance against that policy."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    ledger = read_ledger(run_dir)
    summary = _read_json(run_dir / rundir.SUMMARY, "summary.json", required=True)
    profile = _read_json(run_dir / rundir.PROFILE, "profile.resolved.json", required=False)
    compliance = _read_json(run_dir / rundir.COMPLIANCE, "compliance.json", required=policy_file is None)
    run = RunData(run_dir, records, ledger, summary, compliance, profile, run_duration_s(summary, profile))
    if policy_file is not None:
        run.policy = CompiledPolicy(load_policy(policy_file))
        run.policy_source = str(policy_file)
        run.compliance = judge(records, ledger, run.policy, declared_clouds=run.declared_clouds)
    else:
        run.policy, run.policy_source = _run_policy(summary, profile, compliance.get("policy"))
        run.check_policy = True
    return run


# --------------------------------------------------------------------------------- observation


def _eq(s: pd.Series, value: str) -> npt.NDArray[np.bool_]:
    return (s == value).to_numpy(dtype=bool, na_value=False)


def _isin(s: pd.Series, values: Sequence[str]) -> npt.NDArray[np.bool_]:
    return s.isin(values).to_numpy(dtype=bool, na_value=False)


def row_mask(t: Threshold, run: RunData) -> npt.NDArray[np.bool_]:
    """Rows the selectors pick (``kind`` excluded: it selects events, not requests)."""
    df = run.records
    mask = np.ones(len(df), dtype=bool)
    columns = {"cloud": "served_cloud", "region": "served_region", "class": "request_class", "rule": "rule"}
    for key, value in t.selectors:
        if key in ("scenario", "endpoint"):
            mask &= _eq(df[key], value)
        elif key in columns:
            mask &= _eq(run.attribution()[columns[key]], value)
    return mask


def _distribution(metric: str, df: pd.DataFrame) -> npt.NDArray[np.float64]:
    if metric == "latency":
        values: Any = derive.latency_ms(df, "intended")
    elif metric == "latency_sent":
        values = derive.latency_ms(df, "sent")
    elif metric == "ttft":
        values = derive.ttft_ms(df, "intended")
    elif metric == "ttft_sent":
        values = derive.ttft_ms(df, "sent")
    elif metric == "itl":
        values = derive.itl_ms(df)
    elif metric == "tpot":
        values = derive.tpot_ms(df)
    else:  # harness_lag
        values = derive.schedule_lag_ms(df)
    return np.asarray(values, dtype=np.float64)


def _from_histogram(function: str, values_ms: npt.NDArray[np.float64]) -> float | None:
    h = LatencyHistogram.from_ms(values_ms)
    if function == "count":
        return float(h.count)
    if function == "avg":
        mean = h.mean_ms()
        return None if mean is None else round(mean, 3)  # as summary.json rounds it
    if function == "min":
        return h.min_ms()
    if function == "max":
        return h.max_ms()
    return h.percentile_ms(float(function[1:]))


def _ratio(n: int, d: int) -> float | None:
    return n / d if d else None


def _violations(t: Threshold, run: RunData) -> float | None:
    kind = t.selector("kind")
    if all(k == "kind" for k, _ in t.selectors):  # compliance.json answers it exactly
        c = run.compliance
        n = int((c.get("by_kind") or {}).get(kind, 0)) if kind else int(c.get("violations_total", 0))
        return float(n) if t.function == "count" else _ratio(n, int(c.get("judged", 0)))
    frame = run.attribution()
    rows = row_mask(t, run)
    events = rows & frame["kind"].notna().to_numpy(dtype=bool)
    if kind is not None:
        events &= _eq(frame["kind"], kind)
    served = rows & frame["served"].to_numpy(dtype=bool, na_value=False)
    return float(events.sum()) if t.function == "count" else _ratio(int(events.sum()), int(served.sum()))


def observe(t: Threshold, run: RunData) -> float | None:
    """The left-hand side on ``run``, in base units (ms, count, fraction, per second); None: no data."""
    spec = t.spec
    if t.metric == "violations":
        return _violations(t, run)
    df = run.records
    rows = row_mask(t, run)
    if spec.family == "distribution":
        return _from_histogram(t.function, _distribution(t.metric, df[rows]))
    if spec.family == "throughput":
        if t.metric == "tokens_per_s":
            return derive.tokens_per_s(df[rows], run.duration_s) if run.duration_s > 0 else None
        ok = int((rows & derive.ok_mask(df)).sum())
        if t.function == "count":
            return float(ok)
        return ok / run.duration_s if run.duration_s > 0 else None
    kind = t.selector("kind")
    if t.metric == "errors":
        events = _isin(df["outcome"], _ERROR_OUTCOMES)
    elif t.metric == "dropped":
        events = _eq(df["outcome"], "dropped")
    else:  # http_429
        events = _eq(df["error_kind"], "http_429")
    if kind is not None:
        events &= _eq(df["error_kind"], kind)
    n = int((rows & events).sum())
    return float(n) if t.function == "count" else _ratio(n, int(rows.sum()))


# ---------------------------------------------------------------------------------- evaluation


def format_value(value: float | None, dim: Dimension) -> str:
    """A base-unit value for people: ``912.3 ms``, ``0.42%``, ``17``, ``98.5 rps``."""
    if value is None:
        return "no data"
    if dim == "time":
        return f"{value:,.1f} ms" if value >= 10 else f"{value:.3g} ms"
    if dim == "fraction":
        return f"{value * 100:.3g}%"
    if dim == "count":
        return f"{value:,.0f}"
    return f"{value:,.1f} {JSON_UNIT[dim]}"


def format_json_value(value: float | None, unit: str) -> str:
    """``format_value`` for a value as ``ThresholdResult.to_json`` writes it (``unit`` from there)."""
    dims = {u: d for d, u in JSON_UNIT.items()}
    return format_value(value, dims.get(unit, "count"))


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """One evaluated threshold; ``observed`` and ``limit`` in base units (see ``unit``)."""

    expression: str
    observed: float | None
    limit: float | None
    unit: str
    passed: bool
    builtin: bool = False
    reason: str = ""  # why it failed, one line; empty when it passed
    baseline: float | None = None  # the baseline run's value, for baseline thresholds

    def to_json(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "observed": self.observed,
            "passed": self.passed,
            "builtin": self.builtin,
            "limit": self.limit,
            "unit": self.unit,
            "baseline": self.baseline,
            "reason": self.reason,
        }


def check_selectors(t: Threshold, scenarios: set[str], endpoints: set[str]) -> str | None:
    """A selector value the run cannot have (an unknown scenario or endpoint), as a sentence.

    Checked because a misspelt scenario would otherwise make ``count(errors{...}) == 0`` pass.
    """
    for key, known in (("scenario", scenarios), ("endpoint", endpoints)):
        value = t.selector(key)
        if value is not None and value not in known:
            return f"{key}={value!r} is not in this run (it has {', '.join(sorted(known)) or 'none'})"
    return None


def evaluate(
    t: Threshold,
    run: RunData,
    *,
    baseline: RunData | None = None,
    baseline_problem: str | None = None,
    builtin: bool = False,
) -> ThresholdResult:
    """Evaluate one threshold on ``run`` (and on ``baseline`` for ``baseline`` thresholds).

    ``baseline_problem`` says why ``baseline`` is missing when the caller tried to load it.
    """
    expression = str(t)
    problem = check_selectors(t, run.scenarios, run.endpoints)
    if problem is not None:
        raise GateInputError(f"threshold {expression!r}: {problem}", "fix the selector value")
    observed = observe(t, run)
    base: float | None = None
    if t.baseline:
        if baseline is None and baseline_problem is not None:
            raise GateInputError(f"threshold {expression!r}: {baseline_problem}", "")
        if baseline is None:
            raise GateInputError(
                f"threshold {expression!r} compares with a baseline run, but none is given",
                "pass --baseline RUN_DIR or set gate.baseline in the profile",
            )
        base = observe(t, baseline)
        limit = None if base is None else base * t.factor
    else:
        limit = t.limit
    passed = observed is not None and limit is not None and compare(observed, t.op, limit)
    reason = ""
    if not passed:
        dim = t.dimension
        if observed is None:
            reason = f"{expression}: no data (no request matches)"
        elif limit is None:
            reason = f"{expression}: the baseline run has no data for it"
        elif t.baseline:
            reason = (
                f"{expression}: observed {format_value(observed, dim)}, "
                f"baseline {format_value(base, dim)} × {t.factor:g} = {format_value(limit, dim)}"
            )
        else:
            reason = f"{expression}: observed {format_value(observed, dim)}"
    return ThresholdResult(expression, observed, limit, JSON_UNIT[t.dimension], passed, builtin, reason, base)
