"""What the reference router says it did (``router-log.jsonl``), next to what the judge found.

The router's self-test switches break the policy on purpose and log each injection; a run with
``[target.router]`` keeps that log in its directory. This module counts it and checks it
against the judged violations: every injected request must be reported with the violation kind
its switch produces, and nothing else may be reported. A mismatch means the gate would miss (or
invent) a misroute, so the self-test fails the compliance verdict.

    switch             expected violation kind
    misroute           cloud
    spoof_fingerprint  attestation_mismatch
    duplicate          served_twice
    break_affinity     affinity
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Final

import orjson

EXPECTED_KIND: Final = {
    "misroute": "cloud",
    "spoof_fingerprint": "attestation_mismatch",
    "duplicate": "served_twice",
    "break_affinity": "affinity",
}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's lines (an unreadable trailing line, from a killed router, is ignored)."""
    out = []
    with path.open("rb") as f:
        for line in f:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return out


def self_test(
    events: list[dict[str, Any]], violations: dict[str, str], started_wall_ns: int | None = None
) -> dict[str, Any]:
    """Injections per switch against ``violations`` (request id → violation kind, every one the
    judge found): per switch, applied / reported with the expected kind / missed; plus reported
    violations no injection explains (false positives), failovers, and whether all matched."""
    applied = [e for e in events if e.get("event") == "applied"]
    skipped = Counter(e.get("switch") for e in events if e.get("event") == "skipped")
    failovers = [e for e in events if e.get("event") == "failover"]
    injected: dict[str, str] = {}
    switches: dict[str, Any] = {}
    for switch, kind in EXPECTED_KIND.items():
        ids = {e["request_id"] for e in applied if e.get("switch") == switch and e.get("request_id")}
        injected.update(dict.fromkeys(ids, switch))
        reported = {rid for rid in ids if violations.get(rid) == kind}
        switches[switch] = {
            "applied": len(ids),
            "skipped": skipped.get(switch, 0),
            "reported": len(reported),
            "missed": sorted(ids - reported)[:20],
            "expected_kind": kind,
        }
    unexplained = sorted(rid for rid in violations if rid not in injected)
    block: dict[str, Any] = {
        "switches": switches,
        "unexplained_violations": len(unexplained),
        "unexplained_examples": unexplained[:20],
        "failovers": len(failovers),
        "failovers_by_backend": dict(Counter(e.get("from_backend") for e in failovers)),
        "failovers_left_allowed_set": sum(1 for e in failovers if e.get("backend_allowed") is False),
    }
    if failovers and started_wall_ns is not None:
        first = min(int(e["ts_ns"]) for e in failovers)
        last = max(int(e["ts_ns"]) for e in failovers)
        block["first_failover_s"] = round((first - started_wall_ns) / 1e9, 3)
        block["last_failover_s"] = round((last - started_wall_ns) / 1e9, 3)
    block["consistent"] = not unexplained and all(s["applied"] == s["reported"] for s in switches.values())
    return block
