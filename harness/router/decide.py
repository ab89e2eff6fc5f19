"""Pure routing decisions: what an inbound request is, where the policy lets it go, in what order.

No I/O and no clocks: the proxy hands in a path, a method and a parsed JSON body and gets back
a ``Classified`` request; ``allowed_backends`` splits the backends that serve its model into the
ones the policy allows and the ones it denies; ``Balancer`` orders the allowed ones.

Inbound URL forms (``../shared/protocols.md`` §2.1, §3.1)::

    azure_deployment  /openai/deployments/{deployment}/{op}?api-version=V   op: chat/completions, ...
    azure_classic     /openai/{op}?api-version=V                             op: responses, conversations
    azure_v1          /openai/v1/{op}                                        model in the body
    openai_v1         /v1/{op}                                               model in the body

The class comes from the API and its flags (``harness.compliance.request_class``), never from a
label the caller chose. Calls that address stored state (``previous_response_id``,
``conversation``, ``GET|DELETE /responses/{id}``, ``/conversations/{id}...``) carry a
``state_key``: they must go to the backend that holds that state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from harness.compliance.classify import model_family, request_class
from harness.compliance.policy import CompiledPolicy
from harness.router.backends import Backend

Form = Literal["azure_deployment", "azure_classic", "azure_v1", "openai_v1"]
StateKind = Literal["response", "conversation"]
Strategy = Literal["round-robin", "least-in-flight"]
STRATEGIES: Final = ("round-robin", "least-in-flight")

DEPLOYMENT_OPS: Final = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "images/generations",
        "images/edits",
        "audio/transcriptions",
        "audio/translations",
        "audio/speech",
    }
)


@dataclass(frozen=True, slots=True)
class Inbound:
    """Where an inbound request was sent: its URL form, the operation path and its deployment."""

    form: Form
    op: str  # the path after the form's prefix, e.g. "chat/completions", "responses/resp_1"
    deployment: str | None  # from an Azure deployment path

    @property
    def azure(self) -> bool:
        return self.form != "openai_v1"


@dataclass(frozen=True, slots=True)
class Classified:
    """What the router needs to know about one request to route it."""

    api: str  # the ledger's vocabulary: chat.completions, completions, embeddings, responses, ...
    request_class: str  # stateless | stateful
    model_family: str  # openai | other
    model: str | None  # None when the call names no model (GET /responses/{id}, conversations)
    stream: bool
    state_key: tuple[StateKind, str] | None  # the stored state this call must reach
    keeps_state: bool  # a reply's response/conversation id should be remembered (affinity)
    deletes_state: bool  # a DELETE of the addressed response or conversation


class BadRequest(Exception):
    """The request cannot be routed; the message names the field (rendered as a 400)."""


def parse_path(path: str) -> Inbound | None:
    """The URL form of ``path``, or None for a path the router does not serve."""
    if path.startswith("/v1/"):
        return Inbound("openai_v1", path[4:], None)
    if path.startswith("/openai/v1/"):
        return Inbound("azure_v1", path[11:], None)
    if path.startswith("/openai/deployments/"):
        deployment, _, op = path[20:].partition("/")
        if not deployment or not op:
            return None
        return Inbound("azure_deployment", op, deployment)
    if path.startswith("/openai/"):
        return Inbound("azure_classic", path[8:], None)
    return None


def _api_of(op: str) -> str:
    head = op.split("/", 1)[0]
    if head in ("responses", "conversations", "realtime"):
        return head
    return op.replace("/", ".")


def _string_or_id(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str):
        raise BadRequest(f"'{field}' must be a string or an object with an id")
    return value


def classify(inbound: Inbound, method: str, body: Any) -> Classified:
    """Classify one request from its URL form, method and JSON body (None when it had none).

    Raises BadRequest for a call the router cannot route (no model, unsupported API).
    """
    op = inbound.op
    api = _api_of(op)
    parts = op.split("/")
    payload: dict[str, Any] = body if isinstance(body, dict) else {}
    stream = payload.get("stream") is True
    if api == "realtime":
        raise BadRequest("the reference router does not proxy Realtime WebSockets; connect to a backend")
    if api == "responses" and len(parts) == 1:
        if method != "POST":
            raise BadRequest(f"{method} /responses is not an API; use POST")
        model = _model(inbound, payload)
        previous = _string_or_id(payload.get("previous_response_id"), "previous_response_id")
        conversation = _string_or_id(payload.get("conversation"), "conversation")
        store = payload.get("store")
        cls = request_class(api, store if isinstance(store, bool) else None, previous, conversation)
        key: tuple[StateKind, str] | None = None
        if previous:
            key = ("response", previous)
        elif conversation:
            key = ("conversation", conversation)
        return Classified(api, cls, model_family(model), model, stream, key, cls == "stateful", False)
    if api in ("responses", "conversations"):
        kind: StateKind = "response" if api == "responses" else "conversation"
        if len(parts) == 1:  # POST /conversations: creates state, names no model
            return Classified(api, "stateful", "openai", None, False, None, True, False)
        deletes = method == "DELETE" and len(parts) == 2
        return Classified(api, "stateful", "openai", None, stream, (kind, parts[1]), False, deletes)
    model = _model(inbound, payload)
    cls = request_class(api)
    return Classified(api, cls, model_family(model), model, stream, None, False, False)


def _model(inbound: Inbound, payload: dict[str, Any]) -> str:
    if inbound.deployment is not None:
        return inbound.deployment
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required (the deployment name on Azure)")
    return model


@dataclass(frozen=True, slots=True)
class Allowed:
    """The policy's split of the backends that serve a request."""

    rule: str  # the rule id that decided, or "(default)"
    allowed: tuple[Backend, ...]
    denied: tuple[Backend, ...]


def allowed_backends(
    policy: CompiledPolicy,
    req: Classified,
    candidates: Sequence[Backend],
    *,
    tenant: str = "default",
    sold_through: str = "direct",
) -> Allowed:
    """Split ``candidates`` by the policy rule that matches ``req`` (each backend's cloud/region)."""
    allowed: list[Backend] = []
    denied: list[Backend] = []
    rule_id = "(default)"
    for backend in candidates:
        decision = policy.decide(
            req.request_class, req.model_family, req.api, tenant, sold_through, backend.cloud, backend.region
        )
        rule_id = decision.rule_id or "(default)"
        (allowed if decision.allowed else denied).append(backend)
    if not candidates:
        rule = policy.rule(req.request_class, req.model_family, req.api, tenant, sold_through)
        rule_id = rule.id if rule is not None else "(default)"
    return Allowed(rule_id, tuple(allowed), tuple(denied))


class Balancer:
    """Orders allowed backends: round robin, or least in flight with round robin breaking ties;
    backends that just failed (ejected until a time on the caller's monotonic clock) go last.

    The first backend is the one to try; the rest are the failover order. The in-flight counts
    (indexed by ``Backend.index``) are kept by the proxy.
    """

    __slots__ = ("_next", "ejected_until", "in_flight", "strategy")

    def __init__(self, n_backends: int, strategy: Strategy = "round-robin") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        self.strategy = strategy
        self.in_flight = [0] * n_backends
        self.ejected_until = [0.0] * n_backends
        self._next = 0

    def eject(self, backend: Backend, until: float) -> None:
        """Try ``backend`` last until ``until`` (it answered 5xx or could not be reached)."""
        self.ejected_until[backend.index] = until

    def order(self, backends: Sequence[Backend], now: float = 0.0) -> list[Backend]:
        n = len(backends)
        if n <= 1:
            return list(backends)
        start = self._next % n
        self._next += 1
        rotated = [*backends[start:], *backends[:start]]
        if self.strategy == "least-in-flight":
            in_flight = self.in_flight
            rotated.sort(key=lambda b: in_flight[b.index])  # stable: round robin among equals
        ejected = self.ejected_until
        if any(ejected[b.index] > now for b in rotated):
            rotated.sort(key=lambda b: ejected[b.index] > now)  # stable: healthy ones first
        return rotated
