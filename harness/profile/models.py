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
Api = Literal[
    "chat.completions",
    "completions",
    "embeddings",
    "responses",
    "realtime",
    "bedrock.converse",
    "vertex.generate_content",
]
Dialect = Literal["azure_openai", "openai", "bedrock", "vertex"]
# The endpoint dialects each API can be sent to.
API_DIALECTS: dict[str, tuple[str, ...]] = {
    "chat.completions": ("azure_openai", "openai"),
    "completions": ("azure_openai", "openai"),
    "embeddings": ("azure_openai", "openai"),
    "responses": ("azure_openai", "openai"),
    "realtime": ("azure_openai", "openai"),
    "bedrock.converse": ("bedrock",),
    "vertex.generate_content": ("vertex",),
}
# Hosting clouds: who actually runs the hardware. "other" covers non-hyperscaler capacity.
Cloud = Literal["azure", "openai", "aws", "gcp", "oracle", "other"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


from harness.profile.trace import Trace  # noqa: E402  (trace.py subclasses Strict, defined just above)


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


class ThinkTime(Strict):
    """The pause between one turn's answer and the next turn's request (a user reading and
    typing), drawn per turn from the scenario's seeded stream: ``constant`` waits ``mean_ms``,
    ``exponential`` has mean ``mean_ms``, ``uniform`` lies in [``min_ms``, ``max_ms``]."""

    distribution: Literal["constant", "exponential", "uniform"] = "exponential"
    mean_ms: float = Field(default=1000.0, ge=0, le=3_600_000)
    min_ms: float = Field(default=0.0, ge=0)
    max_ms: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _uniform_bounds(self) -> ThinkTime:
        if self.distribution == "uniform":
            if self.max_ms is None:
                raise ValueError("a uniform think time needs max_ms")
            if self.max_ms < self.min_ms:
                raise ValueError(f"max_ms ({self.max_ms:g}) is below min_ms ({self.min_ms:g})")
        return self


class Session(Strict):
    """Multi-turn sessions: each arrival starts a session of ``turns`` turns (uniform between
    ``turns`` and ``turns_max`` when given), sent one after another on the route chosen for the
    session, ``think_time`` apart; each turn is its own record with the session id and turn index.

    ``chain`` says how a Responses turn carries the state: ``previous_response_id`` (the previous
    turn's response id) or ``conversation`` (a conversation created for the session). Realtime
    sessions keep one WebSocket open for all turns. When the plan ends, sessions still running
    get ``graceful_stop_s`` to finish; turns not sent by then are recorded as dropped (run_ended).
    """

    turns: int = Field(default=3, ge=1, le=10_000)
    turns_max: int | None = Field(default=None, ge=1, le=10_000)
    think_time: ThinkTime = Field(default_factory=ThinkTime)
    chain: Literal["previous_response_id", "conversation"] = "previous_response_id"
    graceful_stop_s: float = Field(default=30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _turn_range(self) -> Session:
        if self.turns_max is not None and self.turns_max < self.turns:
            raise ValueError(f"turns_max ({self.turns_max}) is below turns ({self.turns})")
        return self


class Scenario(Strict):
    """A stream of requests of one shape with its own arrival process."""

    name: str
    api: Api = "chat.completions"
    stream: bool = True
    include_usage: bool = Field(default=True, description="send stream_options.include_usage")
    model: str = Field(default="gpt-4o", description="model name; decides the model family")
    prompt_tokens: int = Field(default=64, ge=1, le=1_000_000)
    max_tokens: int = Field(default=32, ge=1, le=1_000_000)
    store: bool | None = Field(
        default=None,
        description="Responses: store the response server-side (default: true with a session, else false)",
    )
    session: Session | None = Field(default=None, description="multi-turn sessions (responses, realtime)")
    tenant: str = "default"
    sold_through: str = Field(default="direct", description="partner the call was sold through")
    arrival: Arrival | None = None
    trace: Trace | None = Field(default=None, description="replay a recorded trace instead of `arrival`")
    mix: str | None = Field(
        default=None, description="take a share of a profile-level arrival process ([mixes.NAME]) by weight"
    )
    weight: float = Field(default=1.0, gt=0, description="this scenario's share of its mix")
    routes: list[Route] = Field(min_length=1)
    max_in_flight: int | None = Field(
        default=None, ge=1, description="this scenario's own in-flight cap (within client.max_in_flight)"
    )
    lag_budget_ms: float | None = Field(
        default=None, gt=0, description="this scenario's own lag budget (default: client.lag_budget_ms)"
    )

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _api_options(self) -> Scenario:
        if self.api == "realtime" and self.session is None:
            raise ValueError("realtime runs as sessions: add a [scenarios.session] table (turns, think_time)")
        if self.session is not None and self.api not in ("responses", "realtime"):
            raise ValueError(
                f"sessions chain server-side state, which {self.api} has none of; "
                'use api = "responses" or "realtime", or remove the session table'
            )
        if self.session is not None and self.api == "responses" and self.store is False:
            raise ValueError("a Responses session chains stored responses: set store = true or remove it")
        if self.store is not None and self.api != "responses":
            raise ValueError(f'store applies to api = "responses" only, not {self.api}')
        return self

    @property
    def stores(self) -> bool:
        """Whether requests store state server-side (Responses ``store``)."""
        if self.api != "responses":
            return False
        return self.store if self.store is not None else self.session is not None

    @model_validator(mode="after")
    def _arrival_or_trace(self) -> Scenario:
        if sum(x is not None for x in (self.arrival, self.trace, self.mix)) != 1:
            raise ValueError(
                "a scenario needs exactly one of [arrival] (a generated process), [trace] (a replay) "
                'or mix = "NAME" (a weighted share of [mixes.NAME])'
            )
        return self


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
    # --- auth (issue 10): credentials only ever come from the environment or the cloud's chain
    auth: Literal["api-key", "entra", "sigv4", "adc", "none"] = Field(
        default="api-key",
        description="api-key (from api_key_env), entra (Microsoft Entra ID token), sigv4 (AWS signing), "
        "adc (GCP Application Default Credentials) or none",
    )
    aws_region: str | None = Field(default=None, description="SigV4 signing region (default: region)")
    aws_service: str = Field(default="bedrock", description="SigV4 signing service name")

    @model_validator(mode="after")
    def _auth_fits(self) -> Endpoint:
        if self.auth != "api-key" and self.api_key_env is not None:
            raise ValueError(
                f"api_key_env is only read with auth = 'api-key', not {self.auth!r}; remove one of them"
            )
        if self.auth == "sigv4" and not (self.aws_region or self.region):
            raise ValueError("auth = 'sigv4' needs aws_region (or region), e.g. aws_region = 'us-east-1'")
        return self

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


ROUTER_ENDPOINT = "router"  # the endpoint name routes use for the reference router


class RouterTarget(Strict):
    """The reference router (``harness router``) started in front of the embedded fleet: routes
    name the endpoint ``"router"`` and the router decides which backend serves each request by
    the run's policy. The self-test switches break the policy on purpose, each with its own
    probability per eligible request; the router logs exactly what it did
    (``router-log.jsonl`` in the run directory) so the judge's findings can be checked against it."""

    dialect: Literal["azure_openai", "openai"] = Field(
        default="azure_openai", description="URL form the engine uses toward the router"
    )
    balance: Literal["round-robin", "least-in-flight"] = "round-robin"
    seed: int = Field(default=0, ge=0, description="seed of the self-test switches' draws")
    misroute_rate: float = Field(default=0.0, ge=0, le=1, description="send to a backend the policy forbids")
    spoof_fingerprint_rate: float = Field(
        default=0.0, ge=0, le=1, description="serve from a forbidden backend behind Azure's headers"
    )
    duplicate_rate: float = Field(default=0.0, ge=0, le=1, description="send to two backends at once")
    break_affinity_rate: float = Field(
        default=0.0, ge=0, le=1, description="send a chained stateful call away from its state holder"
    )


class FleetEvent(Strict):
    """A scheduled change to an embedded fleet endpoint during the run (chaos on a timetable): at
    ``at_s`` seconds after the load starts, switch its region ``outage`` on or off, and/or replace
    its ``faults`` (fields as in the fleet file; omitted ones are off)."""

    at_s: float = Field(ge=0, description="seconds after the load starts")
    endpoint: str = Field(description="a fleet endpoint name")
    outage: bool | None = Field(default=None, description="region outage on (every request 503) or off")
    faults: Faults | None = Field(default=None, description="the endpoint's faults from then on")

    @model_validator(mode="after")
    def _does_something(self) -> FleetEvent:
        if self.outage is None and self.faults is None:
            raise ValueError("an event needs outage = true|false and/or a faults table")
        return self


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
    router: RouterTarget | None = Field(
        default=None, description='start the reference router in front of the fleet (endpoint "router")'
    )
    events: list[FleetEvent] = Field(
        default_factory=list, description="scheduled outages and faults on fleet endpoints during the run"
    )

    @model_validator(mode="after")
    def _router_needs_fleet(self) -> Target:
        if self.router is not None and self.fleet is None:
            raise ValueError("[target.router] fronts the embedded fleet: set target.fleet too")
        if self.events and self.fleet is None:
            raise ValueError("[[target.events]] change embedded fleet endpoints: set target.fleet too")
        if ROUTER_ENDPOINT in self.endpoints:
            raise ValueError(f"the endpoint name {ROUTER_ENDPOINT!r} is reserved for [target.router]")
        return self


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
    tls_verify: bool = Field(
        default=True,
        description="check server certificates and host names; false only for a test gateway with a "
        "self-signed certificate, never a real cloud (the run log and summary say so)",
    )
    tls_ca_file: str | None = Field(
        default=None, description="a PEM bundle to trust in addition to the system's (a private CA)"
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
    mixes: dict[str, Arrival] = Field(
        default_factory=dict,
        description="shared arrival processes: each arrival of [mixes.NAME] is one request of a scenario "
        "with mix = NAME, chosen by the scenarios' weights",
    )
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
        used = {s.mix for s in self.scenarios if s.mix is not None}
        unknown = sorted(used - set(self.mixes))
        if unknown:
            raise ValueError(f"scenarios name unknown mixes {', '.join(unknown)}; define them under [mixes]")
        unused = sorted(set(self.mixes) - used)
        if unused:
            raise ValueError(f"no scenario takes a share of mix(es) {', '.join(unused)}; remove them")
        closed = sorted(n for n, a in self.mixes.items() if isinstance(a, ClosedArrival))
        if closed:
            raise ValueError(f"mix(es) {', '.join(closed)} must be open-loop arrival processes, not closed")
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
    auth_verify: Literal["none", "sigv4", "bearer", "api-key"] = Field(
        default="none",
        description="check credentials (harness.mocks.auth_verify): none, sigv4 (bedrock), bearer, api-key",
    )

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _verify_fits(self) -> FleetEndpoint:
        if (self.auth_verify == "sigv4") != (self.dialect == "bedrock") and self.auth_verify != "none":
            raise ValueError(
                "auth_verify = 'sigv4' is for bedrock endpoints, and bedrock endpoints verify only sigv4"
            )
        return self


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
