"""The verdict: one exit code from thresholds, compliance, validity and interruption.

Precedence, strongest first (the exit code is the first that applies; every reason is listed):

    INTERRUPTED (130)        the run was stopped early: its numbers describe part of a run
    HARNESS_BOUND (3)        the generator could not keep the schedule: nothing it measured
                             can be trusted, so a harness-bound run never passes
    COMPLIANCE_FAILED (1)    a request was served where the policy forbids it
    THRESHOLDS_FAILED (5)    a threshold failed, built-in or from the profile / command line
    PASS (0)

Two built-in thresholds hold for every run and are reported like the others
(``builtin: true`` in ``summary.json``): ``count(goodput) > 0`` (some request succeeded) and
``rate(dropped) <= validity.max_dropped_fraction`` (the planned load was delivered).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from harness.errors import ExitCode, HarnessError, Problem, ProfileError
from harness.gate.evaluate import JSON_UNIT, GateInputError, RunData, ThresholdResult, evaluate, load_run
from harness.gate.grammar import GateSyntaxError, Threshold, format_number, parse
from harness.results import rundir

GATE_FILE: Final = "gate.json"
GATE_SCHEMA_VERSION: Final = 1
NO_SUCCESS: Final = "count(goodput) > 0"
DEFAULT_MAX_DROPPED_FRACTION: Final = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """``result`` is the exit code's name (``PASS``, ``COMPLIANCE_FAILED``, …)."""

    result: str
    exit_code: ExitCode
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "exit_code": int(self.exit_code), "reasons": list(self.reasons)}


def compose(
    thresholds: Sequence[ThresholdResult],
    *,
    compliance: Mapping[str, Any] | None,
    harness_bound: Sequence[str] = (),
    interrupted: bool = False,
    incomplete: Sequence[str] = (),
) -> Verdict:
    """Combine every check into one verdict (precedence in the module docstring). ``incomplete``
    names missing shards (a worker lost mid-run): such a run is INCOMPLETE and never passes."""
    reasons: list[str] = []
    codes: list[ExitCode] = []
    if interrupted:
        reasons.append("interrupted: partial results")
        codes.append(ExitCode.INTERRUPTED)
    if incomplete:
        reasons.extend(f"incomplete: {m}" for m in incomplete)
        codes.append(ExitCode.INFRASTRUCTURE)
    if harness_bound:
        reasons.append("harness-bound (" + "; ".join(harness_bound) + "): results untrustworthy")
        codes.append(ExitCode.HARNESS_BOUND)
    if compliance is not None and compliance.get("verdict") != "pass":
        n, policy = compliance.get("violations_total", "?"), compliance.get("policy")
        reasons.append(f"{n} routing violation(s) of policy {policy}")
        codes.append(ExitCode.COMPLIANCE_FAILED)
    failed = [t for t in thresholds if not t.passed]
    if failed:
        reasons.extend(t.reason or f"{t.expression} failed" for t in failed)
        codes.append(ExitCode.THRESHOLDS_FAILED)
    code = codes[0] if codes else ExitCode.PASS
    name = "INCOMPLETE" if incomplete and code == ExitCode.INFRASTRUCTURE else code.name
    return Verdict(name, code, tuple(reasons))


# ------------------------------------------------------------------------------------ thresholds


def parse_thresholds(
    texts: Sequence[str], key: str = "thresholds"
) -> tuple[dict[str, Threshold], list[Problem]]:
    """Parse every expression, keyed ``key[i]``; the problems are returned so all are reported together."""
    parsed: dict[str, Threshold] = {}
    problems: list[Problem] = []
    for i, text in enumerate(texts):
        try:
            parsed[f"{key}[{i}]"] = parse(text)
        except GateSyntaxError as exc:
            problems.append(Problem(f"{key}[{i}]", f"{exc.problem} at column {exc.pos + 1} of {text!r}"))
    return parsed, problems


def threshold_error(file: str, problems: list[Problem]) -> ProfileError:
    """A ``ProfileError`` for threshold problems, hinting at the grammar rather than the schema."""
    exc = ProfileError(file, problems)
    exc.hint = "see docs/gates.md for the threshold grammar, e.g. p99(ttft) < 800ms or rate(errors) < 1%"
    return exc


def builtin_thresholds(max_dropped_fraction: float = DEFAULT_MAX_DROPPED_FRACTION) -> list[Threshold]:
    """The checks every run must pass: something succeeded, and the planned load was delivered."""
    return [parse(NO_SUCCESS), parse(f"rate(dropped) <= {format_number(max_dropped_fraction)}")]


def _builtin_reason(t: Threshold, result: ThresholdResult, run: RunData) -> str:
    if t.metric == "goodput":
        return f"no request succeeded ({result.expression})"
    counts = run.summary.get("counts") or {}
    return (
        f"{counts.get('dropped', '?')} of {counts.get('planned', '?')} arrivals dropped: "
        f"the planned load was not delivered ({result.expression})"
    )


def evaluate_all(
    run: RunData,
    thresholds: Sequence[Threshold],
    *,
    max_dropped_fraction: float = DEFAULT_MAX_DROPPED_FRACTION,
    baseline: RunData | None = None,
    baseline_problem: str | None = None,
    strict: bool = True,
) -> list[ThresholdResult]:
    """The built-in thresholds, then ``thresholds``, evaluated on ``run``.

    ``strict=False`` turns a threshold that cannot be evaluated (``GateInputError``: a baseline
    that vanished, no policy for attribution) into a failed one instead of raising; the runner
    uses it because by then the records are written and must be judged.
    """
    results = []
    for t in builtin_thresholds(max_dropped_fraction):
        r = evaluate(t, run, builtin=True)
        if not r.passed:
            reason = _builtin_reason(t, r, run)
            r = ThresholdResult(r.expression, r.observed, r.limit, r.unit, False, True, reason)
        results.append(r)
    for t in thresholds:
        try:
            results.append(evaluate(t, run, baseline=baseline, baseline_problem=baseline_problem))
        except HarnessError as exc:
            if strict:
                raise
            unit = JSON_UNIT[t.dimension]
            results.append(ThresholdResult(str(t), None, None, unit, False, False, f"{t}: {exc.one_line()}"))
    return results


def baseline_dir_of(profile: Mapping[str, Any], override: Path | None) -> Path | None:
    """``--baseline`` if given, else the profile's ``gate.baseline``."""
    if override is not None:
        return Path(override)
    value = (profile.get("gate") or {}).get("baseline")
    return Path(value) if isinstance(value, str) and value else None


def load_baseline(path: Path) -> RunData:
    """The baseline run, or a clear error naming the directory."""
    try:
        return load_run(path)
    except HarnessError as exc:
        raise GateInputError(
            f"baseline run {path}: {exc.message}", "pass --baseline with a finished run directory"
        ) from None


# ---------------------------------------------------------------------------------- harness gate


@dataclass(frozen=True, slots=True)
class GateOutcome:
    run_dir: Path
    thresholds: list[ThresholdResult]
    verdict: Verdict
    compliance: dict[str, Any]
    policy_source: str | None
    baseline: Path | None


def gate_run_dir(
    run_dir: Path,
    *,
    thresholds: Sequence[str] = (),
    baseline_dir: Path | None = None,
    policy_file: Path | None = None,
) -> GateOutcome:
    """Re-judge a finished run without re-running it and write ``gate.json`` into its directory.

    Thresholds: the built-ins, the run's profile thresholds (as resolved at run time, including
    ``harness run --threshold``) and ``thresholds``. With ``policy_file`` compliance is judged
    again from the records and ledger; otherwise ``compliance.json`` stands. Harness-bound and
    interrupted come from ``summary.json``, since the generator's own lag is not in the records.
    """
    run_dir = Path(run_dir)
    extra, cli_problems = parse_thresholds(thresholds, "--threshold")
    if cli_problems:
        raise threshold_error("--threshold", cli_problems)
    run = load_run(run_dir, policy_file=policy_file)
    stored, problems = parse_thresholds(run.profile.get("thresholds") or [])
    if problems:
        raise threshold_error(str(run_dir / rundir.PROFILE), problems)
    every = [*stored.values(), *extra.values()]
    base_path = baseline_dir_of(run.profile, baseline_dir)
    baseline = None
    if any(t.baseline for t in every):
        if base_path is None:
            t = next(t for t in every if t.baseline)
            raise GateInputError(
                f"threshold {str(t)!r} compares with a baseline run, but none is given",
                "pass --baseline RUN_DIR or set gate.baseline in the profile",
            )
        baseline = load_baseline(base_path)
    validity = run.summary.get("validity") or {}
    max_dropped = (validity.get("bounds") or {}).get("max_dropped_fraction", DEFAULT_MAX_DROPPED_FRACTION)
    results = evaluate_all(run, every, max_dropped_fraction=float(max_dropped), baseline=baseline)
    verdict = compose(
        results,
        compliance=run.compliance,
        harness_bound=list(validity.get("reasons") or []) if validity.get("harness_bound") else [],
        interrupted=bool((run.summary.get("meta") or {}).get("interrupted")),
        incomplete=[str(m) for m in (run.summary.get("meta") or {}).get("incomplete") or ()],
    )
    compliance = {
        k: run.compliance.get(k)
        for k in ("policy", "verdict", "judged", "violations_total", "by_kind", "by_rule", "served_by_cloud")
    }
    rundir.write_json(
        run_dir / GATE_FILE,
        {
            "schema_version": GATE_SCHEMA_VERSION,
            "run_id": run_dir.name,
            "gated_at": datetime.now(UTC).isoformat(),
            "policy": {"source": run.policy_source, "rejudged": policy_file is not None},
            "baseline": None if baseline is None or base_path is None else str(base_path),
            "compliance": compliance,
            "thresholds": [r.to_json() for r in results],
            "verdict": verdict.to_json(),
        },
    )
    return GateOutcome(run_dir, results, verdict, compliance, run.policy_source, base_path)
