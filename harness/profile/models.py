"""Typed, frozen models of the three TOML file kinds: profiles, fleets and policies.

Units are in field names (``duration_s``, ``rate_rps``, ``ttft_base_ms``). Every model
forbids unknown keys so a typo is an error, never a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# The APIs the harness can drive. The request class (stateless/stateful) is derived from the
# API and its flags by harness.compliance, never taken from a label in the profile.
Api = Literal["chat.completions"]
Dialect = Literal["azure_openai", "openai", "bedrock", "vertex"]
# Hosting clouds: who actually runs the hardware. "other" covers non-hyperscaler capacity.
Cloud = Literal["azure", "openai", "aws", "gcp", "oracle", "other"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return value


# --------------------------------------------------------------------------- arrivals


class ConstantArrival(Strict):
    """Arrivals exactly ``1 / rate_rps`` seconds apart."""

    process: Literal["constant"]
    rate_rps: float = Field(gt=0, le=1_000_000, description="arrivals per second")


class PoissonArrival(Strict):
    """Arrivals with exponential gaps of mean ``1 / rate_rps`` (a memoryless open-loop source)."""

    process: Literal["poisson"]
    rate_rps: float = Field(gt=0, le=1_000_000, description="mean arrivals per second")


class GammaArrival(Strict):
    """Gamma-distributed gaps of mean ``1 / rate_rps``: ``burstiness`` is the gamma shape k (as in
    vLLM's benchmark): k = 1 is Poisson, k < 1 is burstier (gap CV = 1/sqrt(k)), k > 1 smoother."""

    process: Literal["gamma"]
    rate_rps: float = Field(gt=0, le=1_000_000)
    burstiness: float = Field(default=1.0, gt=0, le=1000)


class RampArrival(Strict):
    """The rate moves linearly from ``start_rps`` to ``end_rps`` over ``ramp_s`` (default: the run),
    then holds ``end_rps``. Arrivals are evenly spaced in cumulative intensity, or a
    non-homogeneous Poisson process with ``poisson = true``."""

    process: Literal["ramp"]
    start_rps: float = Field(ge=0, le=1_000_000)
    end_rps: float = Field(ge=0, le=1_000_000)
    ramp_s: float | None = Field(default=None, gt=0)
    poisson: bool = False

    @model_validator(mode="after")
    def _some_rate(self) -> RampArrival:
        if self.start_rps == 0 and self.end_rps == 0:
            raise ValueError("start_rps and end_rps cannot both be 0")
        return self


class Step(Strict):
    rate_rps: float = Field(ge=0, le=1_000_000)
    duration_s: float = Field(gt=0)


class StepsArrival(Strict):
    """Piecewise-constant rate: each step holds ``rate_rps`` for ``duration_s``; the last step
    holds until the run ends. Evenly spaced within a step, or Poisson with ``poisson = true``."""

    process: Literal["steps"]
    steps: list[Step] = Field(min_length=1)
    poisson: bool = False


class ClosedArrival(Strict):
    """Closed loop: ``users`` concurrent virtual users, each sending its next request
    ``think_time_ms`` after its previous one finished (Locust's and k6's VU model).

    The offered rate follows the target's speed (users / (latency + think time)), so a closed
    loop measures capacity, never latency under a given load (coordinated omission by design).
    Think times are ``constant`` or ``exponential`` with that mean (seeded); users start spread
    evenly over ``ramp_up_s``. A user's request is sent at its intended time, or is late by the
    dispatcher's own lag (recorded as schedule lag) — it is never dropped, since no arrival
    exists before a user is free. For an open loop with a concurrency ceiling, use an open
    process with the scenario's ``max_in_flight``: arrivals beyond the ceiling are ``dropped``.
    """

    process: Literal["closed"]
    users: int = Field(ge=1, le=100_000, description="concurrent virtual users")
    think_time_ms: float = Field(default=0.0, ge=0, le=3_600_000, description="mean pause between requests")
    think: Literal["constant", "exponential"] = "constant"
    ramp_up_s: float = Field(default=0.0, ge=0, description="users start evenly spread over this time")


OpenArrival = ConstantArrival | PoissonArrival | GammaArrival | RampArrival | StepsArrival

Arrival = Annotated[
    ConstantArrival | PoissonArrival | GammaArrival | RampArrival | StepsArrival | ClosedArrival,
    Field(discriminator="process"),
]


# --------------------------------------------------------------------------- profile


class Route(Strict):
    """One place a scenario's requests may be sent, chosen per request by weight."""

    endpoint: str = Field(description="an endpoint name from the fleet file or [target.endpoints]")
    deployment: str = Field(description="Azure deployment name (the model for other dialects)")
    weight: float = Field(default=1.0, gt=0)


class Scenario(Strict):
    """A stream of requests of one shape with its own arrival process."""

    name: str
    api: Api = "chat.completions"
    stream: bool = True
    include_usage: bool = Field(default=True, description="send stream_options.include_usage")
    model: str = Field(default="gpt-4o", description="model name; decides the model family")
    prompt_tokens: int = Field(default=64, ge=1, le=1_000_000)
    max_tokens: int = Field(default=32, ge=1, le=1_000_000)
    tenant: str = "default"
    sold_through: str = Field(default="direct", description="partner the call was sold through")
    arrival: Arrival
    routes: list[Route] = Field(min_length=1)
    max_in_flight: int | None = Field(
        default=None, ge=1, description="this scenario's own in-flight cap (within client.max_in_flight)"
    )
    lag_budget_ms: float | None = Field(
        default=None, gt=0, description="this scenario's own lag budget (default: client.lag_budget_ms)"
    )

    _name = field_validator("name")(_check_name)


class Endpoint(Strict):
    """An external endpoint (a gateway or a real cloud); mock endpoints come from the fleet."""

    dialect: Dialect = "azure_openai"
    base_url: str = Field(description="scheme://host[:port], e.g. https://myres.openai.azure.com")
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the API key"
    )
    api_version: str = "2024-10-21"
    cloud: Cloud | None = Field(
        default=None, description="declared hosting cloud, used when responses carry no fingerprint"
    )
    region: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https:// followed by a host")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError(
                "must be the *name* of an environment variable (e.g. AZURE_OPENAI_API_KEY), "
                "never the key itself"
            )
        return value


class Target(Strict):
    """What the run talks to: an embedded mock fleet and/or external endpoints, and the policy."""

    fleet: str | None = Field(
        default=None, description="fleet file to start on loopback, relative to the profile file"
    )
    policy: str = Field(
        default="policies/azure-stateless-exclusive.toml",
        description="routing policy, relative to the profile file",
    )
    allow_remote: bool = Field(default=False, description="permit endpoints outside loopback")
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)


class Retry(Strict):
    """What the generator does with a throttled or unavailable answer.

    ``none`` records it as it came (the default: a load test measures the target, not the SDK).
    ``honour-retry-after`` waits as the server asks — ``retry-after-ms`` first, then
    ``retry-after`` (seconds or an HTTP date) — and tries again, up to ``max_attempts`` in all;
    an answer without either header, or asking for more than ``max_wait_s``, is recorded as is.
    The request keeps its in-flight slot while it waits.
    """

    policy: Literal["none", "honour-retry-after"] = "none"
    max_attempts: int = Field(default=3, ge=1, le=20)
    max_wait_s: float = Field(default=60.0, gt=0, le=3600)
    statuses: list[int] = Field(default_factory=lambda: [429, 503])


class Client(Strict):
    """Resource limits of the load generator, all explicit (aiohttp's defaults are not)."""

    connections: int = Field(default=256, ge=1, le=100_000, description="TCPConnector limit")
    connections_per_host: int = Field(default=0, ge=0, description="0 = no per-host limit")
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="arrivals beyond this many in flight are recorded as dropped; default and maximum: "
        "connections (HTTP/1.1 carries one request per connection, and requests beyond the "
        "connection limit would otherwise wait invisibly in the client's pool)",
    )
    lag_budget_ms: float = Field(
        default=1000.0, gt=0, description="an arrival that cannot start this late is dropped"
    )
    connect_timeout_s: float = Field(default=5.0, gt=0)
    sock_read_timeout_s: float = Field(default=30.0, gt=0, description="max gap between reads")
    request_timeout_s: float = Field(default=60.0, gt=0, description="whole request, first to last byte")
    retry: Retry = Field(default_factory=Retry)
    transport: Literal["aiohttp", "lean"] = Field(
        default="lean",
        description="lean (default): the engine's own HTTP/1.1 transport (harness.engine.transport), "
        "3-4x cheaper per request and ~2x per streamed chunk, held to the same protocol tests; or "
        "aiohttp, for what lean does not do (proxies, compression, every TLS option)",
    )

    @model_validator(mode="after")
    def _in_flight_within_connections(self) -> Client:
        if self.max_in_flight is not None and self.max_in_flight > self.connections:
            raise ValueError(
                f"max_in_flight ({self.max_in_flight}) exceeds connections ({self.connections}): requests "
                "beyond the connection limit would queue invisibly in the pool; raise connections or "
                "lower max_in_flight"
            )
        return self

    @property
    def in_flight_cap(self) -> int:
        return self.max_in_flight if self.max_in_flight is not None else self.connections


class Validity(Strict):
    """When a run cannot pass: the load generator limited it, or the planned load was not delivered."""

    max_schedule_lag_p99_ms: float = Field(
        default=50.0, gt=0, description="p99 of (sent - intended) above this: harness-bound"
    )
    max_event_loop_lag_p99_ms: float = Field(
        default=20.0, gt=0, description="p99 lateness of a 10 ms timer above this: harness-bound"
    )
    max_dropped_fraction: float = Field(
        default=0.0, ge=0, le=1, description="dropped arrivals / planned above this: the run fails"
    )


class Gate(Strict):
    """How thresholds are applied."""

    abort_on_fail: bool = Field(default=False, description="stop the run early once a threshold fails")
    abort_grace_s: float = Field(default=10.0, ge=0, description="no early abort in the first seconds")
    baseline: str | None = Field(
        default=None, description="run directory that `baseline` in threshold expressions refers to"
    )


class Profile(Strict):
    """A load-test profile: what to send, how fast, where, and how to judge it."""

    name: str
    description: str = ""
    seed: int = Field(default=0, ge=0)
    duration_s: float = Field(gt=0, le=7 * 24 * 3600)
    target: Target
    client: Client = Field(default_factory=Client)
    validity: Validity = Field(default_factory=Validity)
    scenarios: list[Scenario] = Field(min_length=1)
    thresholds: list[str] = Field(
        default_factory=list,
        description="SLO expressions such as 'p99(ttft{scenario=\"chat\"}) < 800ms' (docs/gates.md)",
    )
    gate: Gate = Field(default_factory=Gate)

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _unique_scenarios(self) -> Profile:
        names = [s.name for s in self.scenarios]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"scenario names must be unique; repeated: {', '.join(dupes)}")
        if self.target.fleet is None and not self.target.endpoints:
            raise ValueError(
                "target needs a fleet file (target.fleet) or at least one target.endpoints entry"
            )
        return self

    @model_validator(mode="after")
    def _closed_users_fit(self) -> Profile:
        cap = self.client.in_flight_cap
        for s in self.scenarios:
            if isinstance(s.arrival, ClosedArrival):
                limit = min(s.max_in_flight or cap, cap)
                if s.arrival.users > limit:
                    raise ValueError(
                        f"scenario {s.name!r}: {s.arrival.users} closed-loop users exceed its in-flight "
                        f"cap of {limit} (client.connections / max_in_flight); raise the cap or lower users"
                    )
        return self


# --------------------------------------------------------------------------- fleet


class Latency(Strict):
    """The mock's seeded latency model.

    TTFT = ``ttft_base_ms`` + ``prefill_us_per_token`` × prompt tokens, then one token every
    ``itl_ms``; each delay is scaled by a factor drawn uniformly from [1 - jitter, 1 + jitter].
    """

    ttft_base_ms: float = Field(default=30.0, ge=0)
    prefill_us_per_token: float = Field(default=20.0, ge=0)
    itl_ms: float = Field(default=10.0, ge=0)
    jitter_frac: float = Field(default=0.1, ge=0, lt=1)
    output_tokens: int | None = Field(
        default=None, ge=1, description="tokens per reply; default: the request's max_tokens"
    )


class RateLimits(Strict):
    """Token buckets per deployment, refilled continuously; an empty bucket answers 429 with the
    cloud's own body and retry headers."""

    requests_per_min: int | None = Field(default=None, ge=1)
    tokens_per_min: int | None = Field(default=None, ge=1, description="prompt + max output tokens")


class Capacity(Strict):
    """Load-dependent queueing per deployment: at most ``max_concurrency`` requests generate at
    once; more wait in a FIFO queue (their TTFT grows), and beyond ``max_queue`` waiting the
    endpoint answers 429, as a saturated real deployment does. Capacity tests find this knee."""

    max_concurrency: int | None = Field(default=None, ge=1)
    max_queue: int = Field(default=1000, ge=0)


class Faults(Strict):
    """Injected faults, each a probability per request (seeded); switchable at run time through
    the admin API."""

    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=500, ge=400, le=599)
    reset_rate: float = Field(default=0.0, ge=0, le=1, description="close the connection before answering")
    midstream_disconnect_rate: float = Field(default=0.0, ge=0, le=1)
    slow_first_byte_rate: float = Field(default=0.0, ge=0, le=1)
    slow_first_byte_ms: float = Field(default=0.0, ge=0)
    malformed_rate: float = Field(default=0.0, ge=0, le=1, description="corrupt one stream chunk")
    outage: bool = Field(default=False, description="region outage: every request gets 503")


class FleetEndpoint(Strict):
    """One mock endpoint: a listening port that speaks one dialect as one cloud in one region."""

    name: str
    cloud: Cloud = Field(description="the hosting cloud this endpoint stands for")
    dialect: Dialect = "azure_openai"
    region: str
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    deployments: list[str] = Field(
        min_length=1, description="Azure deployment names; model ids for openai, bedrock and vertex"
    )
    latency: Latency = Field(default_factory=Latency)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    capacity: Capacity = Field(default_factory=Capacity)
    faults: Faults = Field(default_factory=Faults)

    _name = field_validator("name")(_check_name)


class Fleet(Strict):
    """A set of mock endpoints started together (clouds × regions × deployments)."""

    name: str
    seed: int = Field(default=0, ge=0)
    endpoints: list[FleetEndpoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Fleet:
        names = [e.name for e in self.endpoints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"endpoint names must be unique; repeated: {', '.join(dupes)}")
        return self


# --------------------------------------------------------------------------- policy

RequestClass = Literal["stateless", "stateful"]
ModelFamily = Literal["openai", "other"]


class Match(Strict):
    """Which requests a rule applies to; an omitted key matches everything."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    request_class: RequestClass | None = Field(default=None, alias="class")
    model_family: ModelFamily | None = None
    api: list[str] | None = None
    tenant: list[str] | None = None
    sold_through: list[str] | None = None


class Rule(Strict):
    """Where matching requests may be served. ``"*"`` allows any cloud or region."""

    id: str
    description: str = ""
    match: Match = Field(default_factory=Match)
    allow_clouds: list[str] = Field(min_length=1)
    allow_regions: list[str] = Field(default_factory=lambda: ["*"])
    affinity: Literal["none", "state-holder"] = "none"


class Policy(Strict):
    """A routing policy: the first rule that matches a request decides it."""

    name: str
    description: str = ""
    default: Literal["allow", "deny"] = Field(
        default="allow", description="verdict for a request no rule matches"
    )
    rules: list[Rule] = Field(min_length=1)
