"""The per-endpoint behaviour every dialect's handlers share: admission (faults, rate limits,
load-dependent queueing), due-time sleeping for stream emission, the state store and the ledger.

A dialect handler's life cycle, whatever its wire format::

    admission = await runtime.admit(deployment, est_tokens)
    try:
        if admission.rejection is not None:
            ...render the cloud's own error (status, body, retry headers) and ledger it...
        plan = admission.plan          # faults drawn for this request
        ...await runtime.sleep_until(due) between chunks (absolute loop times)...
    finally:
        admission.release()

Dialects render; the runtime decides. That keeps one implementation of limits and faults for
Azure, OpenAI, Bedrock and Vertex.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from typing import Any, Final

from harness.mocks.latency import LatencyModel
from harness.mocks.ledger import Ledger
from harness.profile.models import Faults, FleetEndpoint


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request is refused before any work: the dialect turns this into its cloud's error."""

    status: int  # 429, 503 or an injected error status
    reason: str  # requests_per_min | tokens_per_min | queue_full | outage | fault
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults drawn for one request (all off by default)."""

    reset_before_response: bool = False
    first_byte_delay_s: float = 0.0
    disconnect_after_chunks: int | None = None  # abort the connection after this many stream chunks
    malformed_at_chunk: int | None = None  # replace this stream chunk's bytes with garbage


NO_FAULTS: Final = FaultPlan()


class Admission:
    """The outcome of ``admit``; ``release()`` must be called when the request ends (idempotent)."""

    __slots__ = ("_release", "plan", "queued_s", "rejection")

    def __init__(
        self, rejection: Rejection | None, plan: FaultPlan, queued_s: float = 0.0, release: Any = None
    ) -> None:
        self.rejection = rejection
        self.plan = plan
        self.queued_s = queued_s
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class StateStore:
    """Server-side state of stateful APIs (responses, conversations), per endpoint, by kind and id.

    A follow-up that names an id this endpoint does not hold gets the cloud's not-found error.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Any] = {}

    def put(self, kind: str, key: str, value: Any) -> None:
        self._items[(kind, key)] = value

    def get(self, kind: str, key: str) -> Any | None:
        return self._items.get((kind, key))

    def delete(self, kind: str, key: str) -> bool:
        return self._items.pop((kind, key), None) is not None

    def __len__(self) -> int:
        return len(self._items)


class EndpointRuntime:
    """Everything one mock endpoint shares across its dialect's handlers."""

    def __init__(self, endpoint: FleetEndpoint, ledger: Ledger, seed: int) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.cloud = endpoint.cloud
        self.region = endpoint.region
        self.deployments = frozenset(endpoint.deployments)
        self.ledger = ledger
        self.seed = seed
        self.latency = LatencyModel(endpoint.latency, seed)
        self.state = StateStore()
        self.faults: Faults = endpoint.faults
        self.pid = os.getpid()
        self._rng = random.Random(seed ^ 0x5EED)

    def set_faults(self, faults: Faults) -> None:
        """Switch faults at run time (admin API)."""
        self.faults = faults

    async def admit(self, deployment: str, est_tokens: int) -> Admission:
        """Decide whether and when a request may start: outage, injected faults, rate limits,
        concurrency budget (waiting in the queue counts into TTFT)."""
        faults = self.faults
        if faults.outage:
            return Admission(Rejection(503, "outage"), NO_FAULTS)
        rng = self._rng
        if faults.error_rate and rng.random() < faults.error_rate:
            return Admission(Rejection(faults.error_status, "fault"), NO_FAULTS)
        return Admission(None, NO_FAULTS)

    def rate_limit_headers(self, deployment: str) -> list[tuple[str, str]]:
        """The cloud's x-ratelimit-* headers for the deployment's current budget (none if unlimited)."""
        return []

    async def sleep_until(self, due: float) -> None:
        """Sleep until the loop time ``due`` (absolute, so sleep error never accumulates)."""
        delay = due - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
