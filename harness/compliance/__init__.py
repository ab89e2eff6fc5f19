"""Routing compliance: classify each request, attribute the cloud that served it, judge it."""

from harness.compliance.classify import model_family, request_class
from harness.compliance.judge import judge
from harness.compliance.policy import CompiledPolicy, Decision

__all__ = ["CompiledPolicy", "Decision", "judge", "model_family", "request_class"]
