"""A policy compiled for fast, repeated decisions: first matching rule wins."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from harness.profile.models import Policy, Rule


@dataclass(frozen=True, slots=True)
class Decision:
    rule_id: str | None  # None: no rule matched, the policy default applied
    allowed: bool


def _matches(rule: Rule, cls: str, family: str, api: str, tenant: str, sold_through: str) -> bool:
    m = rule.match
    return (
        (m.request_class is None or m.request_class == cls)
        and (m.model_family is None or m.model_family == family)
        and (m.api is None or api in m.api)
        and (m.tenant is None or tenant in m.tenant)
        and (m.sold_through is None or sold_through in m.sold_through)
    )


def _allows(values: list[str], value: str | None) -> bool:
    if "*" in values:
        return True
    return value is not None and value in values


class CompiledPolicy:
    """Decide where a request may be served; decisions are cached per distinct key."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.rule = lru_cache(maxsize=4096)(self._rule)
        self.decide = lru_cache(maxsize=16384)(self._decide)

    def _rule(self, cls: str, family: str, api: str, tenant: str, sold_through: str) -> Rule | None:
        for rule in self.policy.rules:
            if _matches(rule, cls, family, api, tenant, sold_through):
                return rule
        return None

    def _decide(
        self,
        cls: str,
        family: str,
        api: str,
        tenant: str,
        sold_through: str,
        cloud: str | None,
        region: str | None,
    ) -> Decision:
        rule = self.rule(cls, family, api, tenant, sold_through)
        if rule is None:
            return Decision(None, self.policy.default == "allow")
        return Decision(rule.id, _allows(rule.allow_clouds, cloud) and _allows(rule.allow_regions, region))
