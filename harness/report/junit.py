"""junit.xml: thresholds and compliance rules as JUnit test cases, for CI test-result views.

Two suites, in the common (Ant/Surefire) JUnit XML dialect that Jenkins, GitLab, Azure
Pipelines and GitHub test reporters read:

  thresholds   one testcase per entry of summary.json ``thresholds`` (none when absent),
               failed when ``passed`` is false; built-in thresholds have classname
               ``harness.thresholds.builtin``
  compliance   one testcase per rule of the policy (compliance.json ``rules``, policy order,
               plus any other rule that has violations, e.g. ``(default)``): failed with the
               violation count and the first violating request ids, else passed

No timing is meaningful for these checks, so every ``time`` is 0.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Final

from harness.report.markdown import compliance_rules, fmt_observed

MAX_IDS: Final = 20


def _suite(parent: ET.Element, name: str, timestamp: str | None) -> ET.Element:
    attrs = {"name": name, "tests": "0", "failures": "0", "errors": "0", "skipped": "0", "time": "0"}
    if timestamp:
        attrs["timestamp"] = timestamp
    return ET.SubElement(parent, "testsuite", attrs)


def _case(suite: ET.Element, classname: str, name: str, failure: tuple[str, str] | None) -> None:
    case = ET.SubElement(suite, "testcase", {"classname": classname, "name": name, "time": "0"})
    suite.set("tests", str(int(suite.get("tests", "0")) + 1))
    if failure is not None:
        message, text = failure
        node = ET.SubElement(case, "failure", {"message": message, "type": "AssertionError"})
        node.text = text
        suite.set("failures", str(int(suite.get("failures", "0")) + 1))


def render_junit(summary: dict[str, Any], compliance: dict[str, Any] | None) -> str:
    """The junit.xml text for a run's summary and compliance judgement."""
    meta = summary.get("meta", {})
    run_id = str(meta.get("run_id", "run"))
    timestamp = str(meta["started_at"])[:19] if meta.get("started_at") else None
    root = ET.Element("testsuites", {"name": f"harness {run_id}"})

    thresholds = _suite(root, "thresholds", timestamp)
    for t in summary.get("thresholds") or []:
        expression = str(t.get("expression", "?"))
        unit = str(t.get("unit", ""))
        observed = fmt_observed(t.get("observed"), unit)
        classname = "harness.thresholds.builtin" if t.get("builtin") else "harness.thresholds"
        failure = None
        if not t.get("passed"):
            message = str(t.get("reason") or f"{expression}: observed {observed}")
            limit = f", limit {fmt_observed(t.get('limit'), unit)}" if t.get("limit") is not None else ""
            failure = (message, f"threshold {expression} failed: observed {observed}{limit}")
        _case(thresholds, classname, expression, failure)

    rules = _suite(root, "compliance", timestamp)
    if compliance:
        policy = str(compliance.get("policy", "policy"))
        by_rule_ids: dict[str, list[str]] = {}
        for v in compliance.get("violations") or []:
            by_rule_ids.setdefault(str(v.get("rule")), []).append(str(v.get("request_id")))
        for rule, n in compliance_rules(compliance):
            failure = None
            if n:
                ids = by_rule_ids.get(rule, [])[:MAX_IDS]
                more = " …" if n > len(ids) else ""
                failure = (
                    f"{n} violation(s) of rule {rule}",
                    f"{n} request(s) served where policy {policy} rule {rule} does not allow.\n"
                    f"request ids: {', '.join(ids)}{more}",
                )
            _case(rules, f"harness.compliance.{policy}", rule, failure)

    for attr in ("tests", "failures"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in root)))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
