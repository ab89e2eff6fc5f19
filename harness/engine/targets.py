"""Prepared routes: everything about a (scenario, route) pair decided once, before the run.

The dispatcher's per-request work is then a header-dict copy and a send. URLs, bodies and
parsers are built here (STYLE 5: decide at construction; keep the per-request call tiny).
Requests whose sizes come from a trace get their template from a small per-route cache keyed
by (prompt tokens, output tokens), so each distinct size is built once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.auth import AuthProvider
from harness.engine.apis import ApiSpec, TemplateFactory, record_api, spec_for
from harness.profile.models import Profile, Scenario
from harness.protocols.tokens import approx_tokens, prompt_text

_VARIANT_CACHE_MAX = 4096  # distinct (prompt, output) sizes kept per route


@dataclass(frozen=True, slots=True)
class ResolvedEndpoint:
    """An endpoint with its URL known and its secret read from the environment."""

    name: str
    dialect: str
    base_url: str
    api_key: str | None
    api_version: str = "2024-10-21"
    auth: AuthProvider | None = None  # per-request credential headers (entra, sigv4, adc); None: api_key

    def __repr__(self) -> str:  # never print the key
        return f"ResolvedEndpoint({self.name!r}, {self.dialect}, {self.base_url})"


def prompt_seed(profile_seed: int, scenario_index: int) -> int:
    """The seed of a scenario's prompt text (the same prompt for every run of the profile)."""
    return profile_seed * 1_000_003 + scenario_index


class PreparedRoute:
    """One scenario's request, ready to send to one endpoint/deployment."""

    __slots__ = (
        "_variants",
        "api",
        "auth",
        "base_url",
        "body",
        "bytes_out",
        "deployment",
        "dialect",
        "endpoint",
        "factory",
        "headers_for",
        "lag_budget_ms",
        "max_in_flight",
        "max_tokens",
        "model",
        "prompt_seed",
        "prompt_tokens",
        "scenario",
        "scenario_index",
        "session",
        "sold_through",
        "spec",
        "store",
        "stream",
        "template",
        "tenant",
        "tokens_in",
        "url",
    )

    def __init__(
        self,
        scenario: Scenario,
        scenario_index: int,
        endpoint: ResolvedEndpoint,
        deployment: str,
        seed: int,
    ) -> None:
        self.scenario = scenario.name
        self.scenario_index = scenario_index
        self.session = scenario.session
        self.max_in_flight = scenario.max_in_flight  # the scenario's own limits (None: the client's)
        self.lag_budget_ms = scenario.lag_budget_ms
        self.endpoint = endpoint.name
        self.auth = endpoint.auth  # merged per request by the dispatcher (None: key in the template)
        self.dialect = endpoint.dialect
        self.base_url = endpoint.base_url
        self.deployment = deployment
        self.model = scenario.model
        self.tenant = scenario.tenant
        self.sold_through = scenario.sold_through
        self.store: bool | None = scenario.stores if scenario.api == "responses" else None
        self.max_tokens = scenario.max_tokens
        self.prompt_tokens = scenario.prompt_tokens
        self.prompt_seed = prompt_seed(seed, scenario_index)
        self._variants: dict[tuple[int, int], tuple[Any, int]] = {}
        prompt = prompt_text(scenario.prompt_tokens, self.prompt_seed)
        self.tokens_in = approx_tokens(prompt)
        self.factory = TemplateFactory(
            scenario.api,
            endpoint.dialect,
            endpoint.base_url,
            deployment,
            endpoint.api_key,
            endpoint.api_version,
            stream=scenario.stream,
            include_usage=scenario.include_usage,
            store=bool(self.store),
        )
        self.stream = self.factory.stream or scenario.api == "realtime"
        self.spec: ApiSpec | None = None
        self.template: Any = None
        if scenario.api == "realtime":  # WebSocket sessions: no HTTP template
            self.api = "realtime"
            self.url = ""
            self.body = b""
            self.bytes_out = 0
            self.headers_for = None
            return
        self.spec = spec_for(scenario.api)
        template = self.factory(prompt, scenario.max_tokens)
        self._variants[(scenario.prompt_tokens, scenario.max_tokens)] = (template, self.tokens_in)
        self.template = template
        self.api = record_api(scenario.api, template)
        self.url = template.url
        self.body = template.body
        self.bytes_out = len(template.body)
        self.headers_for = template.headers_for

    def prompt(self, prompt_tokens: int, turn: int = 0) -> str:
        """A deterministic prompt of about ``prompt_tokens`` tokens (a new text for each turn)."""
        return prompt_text(prompt_tokens, self.prompt_seed * 7919 + turn)

    def variant(self, prompt_tokens: int, max_tokens: int) -> tuple[Any, int]:
        """(template, prompt tokens) for a request of other sizes than the scenario's (a trace row)."""
        key = (prompt_tokens, max_tokens)
        found = self._variants.get(key)
        if found is None:
            if len(self._variants) >= _VARIANT_CACHE_MAX:
                self._variants.clear()
            prompt = prompt_text(prompt_tokens, self.prompt_seed)
            found = (self.factory(prompt, max_tokens), approx_tokens(prompt))
            self._variants[key] = found
        return found


def prepare_routes(profile: Profile, endpoints: dict[str, ResolvedEndpoint]) -> list[list[PreparedRoute]]:
    """``result[scenario_index][route_index]`` for every route of every scenario."""
    return [
        [
            PreparedRoute(scenario, s_idx, endpoints[route.endpoint], route.deployment, profile.seed)
            for route in scenario.routes
        ]
        for s_idx, scenario in enumerate(profile.scenarios)
    ]
