"""Prepared routes: everything about a (scenario, route) pair decided once, before the run.

The dispatcher's per-request work is then a header-dict copy and a send. URLs, bodies and
parsers are built here (STYLE 5: decide at construction; keep the per-request call tiny).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.auth import AuthProvider
from harness.profile.models import Profile
from harness.protocols.azure_openai import ChatRequestTemplate
from harness.protocols.tokens import approx_tokens, prompt_text


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


class PreparedRoute:
    """One scenario's request, ready to send to one endpoint/deployment."""

    __slots__ = (
        "api",
        "auth",
        "body",
        "bytes_out",
        "deployment",
        "endpoint",
        "headers_for",
        "lag_budget_ms",
        "max_in_flight",
        "model",
        "scenario",
        "scenario_index",
        "sold_through",
        "stream",
        "tenant",
        "tokens_in",
        "url",
    )

    def __init__(
        self,
        scenario: str,
        endpoint: str,
        deployment: str,
        template: ChatRequestTemplate,
        *,
        api: str,
        model: str,
        stream: bool,
        tenant: str,
        sold_through: str,
        tokens_in: int,
        scenario_index: int = 0,
        max_in_flight: int | None = None,
        lag_budget_ms: float | None = None,
        auth: AuthProvider | None = None,
    ) -> None:
        self.auth = auth  # merged per request by the dispatcher; None: credentials are in the template
        self.scenario = scenario
        self.scenario_index = scenario_index
        self.max_in_flight = max_in_flight  # the scenario's own limits (None: the client's)
        self.lag_budget_ms = lag_budget_ms
        self.endpoint = endpoint
        self.deployment = deployment
        self.url = template.url
        self.body = template.body
        self.bytes_out = len(template.body)
        self.headers_for = template.headers_for
        self.api = api
        self.model = model
        self.stream = stream
        self.tenant = tenant
        self.sold_through = sold_through
        self.tokens_in = tokens_in


def prepare_routes(profile: Profile, endpoints: dict[str, ResolvedEndpoint]) -> list[list[PreparedRoute]]:
    """``result[scenario_index][route_index]`` for every route of every scenario."""
    prepared: list[list[PreparedRoute]] = []
    for s_idx, scenario in enumerate(profile.scenarios):
        prompt = prompt_text(scenario.prompt_tokens, profile.seed * 1_000_003 + s_idx)
        tokens_in = approx_tokens(prompt)
        routes = []
        for route in scenario.routes:
            ep = endpoints[route.endpoint]
            template = ChatRequestTemplate(
                ep.base_url,
                route.deployment,
                ep.api_version,
                ep.api_key,
                model=route.deployment,
                prompt=prompt,
                max_tokens=scenario.max_tokens,
                stream=scenario.stream,
                include_usage=scenario.include_usage,
            )
            routes.append(
                PreparedRoute(
                    scenario.name,
                    route.endpoint,
                    route.deployment,
                    template,
                    scenario_index=s_idx,
                    max_in_flight=scenario.max_in_flight,
                    lag_budget_ms=scenario.lag_budget_ms,
                    api=scenario.api,
                    model=scenario.model,
                    stream=scenario.stream,
                    tenant=scenario.tenant,
                    sold_through=scenario.sold_through,
                    tokens_in=tokens_in,
                    auth=ep.auth,
                )
            )
        prepared.append(routes)
    return prepared
