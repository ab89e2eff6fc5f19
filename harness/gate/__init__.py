"""SLO gates: threshold expressions evaluated on a finished run → a verdict and an exit code.

    grammar    parse / render ``p99(ttft{scenario="chat"}) < 800ms``, ``rate(errors) < 1%``,
               ``violations == 0``, ``p95(latency) <= baseline * 1.10`` (docs/gates.md)
    evaluate   each threshold's observed value on a run directory (and on a baseline run)
    verdict    precedence of interrupted > harness-bound > compliance > thresholds; the two
               built-in thresholds; ``harness gate`` (re-judge a run, write gate.json)

Errors (all ``InputError``, exit 2; nothing is judged):

    InputError
    ├── GateSyntaxError   an expression that does not parse or does not fit its metric (column given)
    └── GateInputError    an expression this run cannot answer: no baseline given, an unknown
                          scenario or endpoint, no policy to attribute clouds with

Names are imported lazily (PEP 562): parsing a threshold does not import pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.gate.evaluate import GateInputError, RunData, ThresholdResult, evaluate, load_run, observe
    from harness.gate.grammar import METRICS, GateSyntaxError, Threshold, parse, render
    from harness.gate.verdict import (
        GateOutcome,
        Verdict,
        builtin_thresholds,
        compose,
        evaluate_all,
        gate_run_dir,
        parse_thresholds,
    )

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("METRICS", "GateSyntaxError", "Threshold", "parse", "render"), "grammar"),
    **dict.fromkeys(
        ("GateInputError", "RunData", "ThresholdResult", "evaluate", "load_run", "observe"), "evaluate"
    ),
    **dict.fromkeys(
        (
            "GateOutcome",
            "Verdict",
            "builtin_thresholds",
            "compose",
            "evaluate_all",
            "gate_run_dir",
            "parse_thresholds",
        ),
        "verdict",
    ),
}

__all__ = [
    "METRICS",
    "GateInputError",
    "GateOutcome",
    "GateSyntaxError",
    "RunData",
    "Threshold",
    "ThresholdResult",
    "Verdict",
    "builtin_thresholds",
    "compose",
    "evaluate",
    "evaluate_all",
    "gate_run_dir",
    "load_run",
    "observe",
    "parse",
    "parse_thresholds",
    "render",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.gate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"harness.gate.{module}"), name)
