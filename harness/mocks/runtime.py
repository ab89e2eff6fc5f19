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

Admission, in this order (the first that applies wins):

1. ``faults.outage`` → ``Rejection(503, "outage")``.
2. ``faults.error_rate`` → ``Rejection(faults.error_status, "fault")``; otherwise the other
   faults are drawn into the request's ``FaultPlan`` (one seeded generator per endpoint).
3. Rate limits, one pair of token buckets per deployment, refilled continuously at
   ``per_min / 60`` per second and holding at most one minute's worth: a request takes one
   request token and ``est_tokens`` (prompt + max output) tokens. An empty bucket →
   ``Rejection(429, "requests_per_min" | "tokens_per_min", retry_after_s)`` where
   ``retry_after_s`` is the time until both buckets hold enough (0 < retry_after_s ≤ 60 s, so
   the openai SDK, which ignores delays above 120 s, retries after it).
4. Concurrency: at most ``capacity.max_concurrency`` requests per deployment hold a slot; later
   ones wait in FIFO order (``Admission.queued_s``, which adds to their TTFT) and beyond
   ``capacity.max_queue`` waiting → ``Rejection(429, "queue_full", 1.0)``.

With a mean service time S (TTFT + decode, seconds), a deployment serves at most
``max_concurrency / S`` requests per second: above that knee the queue grows, latency rises by
the queue's length × S / max_concurrency, and then 429s appear.

In a fleet served by N processes (``--procs N``), each process enforces ``1/N`` of every rate
limit and of ``max_concurrency`` and ``max_queue`` (at least 1), so the fleet as a whole keeps
the configured totals when the kernel spreads connections evenly.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from harness.engine.timer import precise_calls_for
from harness.mocks.latency import LatencyModel
from harness.mocks.ledger import Ledger
from harness.per_loop import PerLoop
from harness.profile.models import Faults, FleetEndpoint
from harness.protocols.fingerprint import VendorHeaders, mock_headers
from harness.protocols.openai_flavor import go_duration  # OpenAI's x-ratelimit-reset-* format

__all__ = [
    "NO_FAULTS",
    "Admission",
    "DueScheduler",
    "EndpointRuntime",
    "FaultPlan",
    "Rejection",
    "StateStore",
    "TokenBucket",
    "go_duration",
    "scheduler_for",
]

Clock = Callable[[], float]
"""Seconds on a monotonic clock (``time.monotonic`` unless a test injects one)."""

QUEUE_FULL_RETRY_AFTER_S: Final = 1.0
MIN_RETRY_AFTER_S: Final = 0.001
FAULT_CHUNK_RANGE: Final = (1, 8)
"""Midstream disconnects and malformed chunks happen at a chunk index drawn from this range."""
SLEEP_RESOLUTION_S: Final = 0.0001
"""Sleepers due within the same 0.1 ms share one wake-up (``harness.engine.timer.PreciseCalls``;
1 ms where the loop has no ``timerfd``, uvloop's clock being in ms)."""


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


def abort_connection(request: web.Request) -> None:
    """Drop the TCP connection now, without a response (or in the middle of one)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


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


# --------------------------------------------------------------------------- rate limits


class TokenBucket:
    """A continuously refilled bucket: ``capacity`` tokens, refilled at ``rate_per_s``."""

    __slots__ = ("capacity", "level", "rate_per_s", "stamp")

    def __init__(self, capacity: float, rate_per_s: float, now: float) -> None:
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> float:
        """Bring the level up to ``now``; return it."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.level = min(self.capacity, self.level + elapsed * self.rate_per_s)
            self.stamp = now
        return self.level

    def wait_s(self, need: float, now: float) -> float:
        """Seconds until ``need`` tokens are available (0 if they are now); a need larger than
        the bucket counts as a full bucket, so an oversized request is not refused forever."""
        need = min(need, self.capacity)
        deficit = need - self.refill(now)
        return deficit / self.rate_per_s if deficit > 0 else 0.0

    def take(self, need: float) -> None:
        """Remove tokens (after ``wait_s`` returned 0 at the same ``now``)."""
        self.level -= min(need, self.capacity)

    def full_in_s(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.refill(now)) / self.rate_per_s


# --------------------------------------------------------------------------- per deployment


class _Deployment:
    """One deployment's rate-limit buckets, concurrency slots and FIFO queue, in one process."""

    __slots__ = ("active", "limit", "max_queue", "requests", "tokens", "waiters")

    def __init__(
        self, requests: TokenBucket | None, tokens: TokenBucket | None, limit: int | None, max_queue: int
    ) -> None:
        self.requests = requests
        self.tokens = tokens
        self.limit = limit
        self.max_queue = max_queue
        self.active = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def release(self) -> None:
        """Free a slot: hand it to the first live waiter (FIFO), else count it free."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes on; ``active`` is unchanged
                return
        self.active -= 1

    async def wait_for_slot(self) -> None:
        await self.wait(self.enqueue())

    def enqueue(self) -> asyncio.Future[None]:
        """Take a place in the FIFO queue now (``wait`` on the returned future for the slot)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return fut

    async def wait(self, fut: asyncio.Future[None]) -> None:
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled: pass it on
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise


# --------------------------------------------------------------------------- due-time sleeping


def arrival_time(request: web.BaseRequest) -> float:
    """When ``request`` arrived: the monotonic time of its connection's latest read before the
    handler ran (the fleet's connections stamp them), else now. Latency (first byte, TTFT) is
    counted from here, as a service counts it from the request reaching it."""
    arrived = getattr(request.protocol, "arrived", None)
    now = time.monotonic()
    return arrived if arrived is not None and arrived <= now else now


class DueScheduler:
    """Batched wake-ups for one event loop: every sleeper due in the same ``resolution_s`` slot
    waits on its own future, and one precise timer call per slot wakes them all.

    ``asyncio.sleep`` costs a coroutine frame, a loop timer (a libuv timer under uvloop) and a
    Python callback per sleep; thousands of streams sleeping between tokens pay that tens of
    thousands of times a second. Here a sleep is one future and a list append, and the timers
    scale with distinct due slots (at most one per ``resolution_s``), not with streams. A sleeper
    wakes within ``resolution_s / 2`` of its due time (early or late) plus loop lag.
    """

    __slots__ = ("_buckets", "_calls", "_done", "_inv", "_res", "loop", "timers")

    def __init__(self, loop: Any, resolution_s: float | None = None, *, timer: Any = None) -> None:
        """``timer``: what keeps time and calls back (``time()``, ``call_at(when, cb, arg)``);
        the loop's ``PreciseCalls`` unless a test injects a clock."""
        self.loop = loop
        self._calls = timer if timer is not None else precise_calls_for(loop)
        if resolution_s is None:
            resolution_s = SLEEP_RESOLUTION_S if getattr(self._calls, "precise", False) else 0.001
        self._res = resolution_s
        self._inv = 1.0 / resolution_s
        self._buckets: dict[int, list[asyncio.Future[None]]] = {}
        self._done: asyncio.Future[None] = loop.create_future()
        self._done.set_result(None)
        self.timers = 0
        """Loop timers armed so far (one per distinct due slot)."""

    def sleep_until(self, due: float) -> asyncio.Future[None]:
        """A future that completes at loop time ``due`` (already complete if ``due`` has passed)."""
        if due <= self._calls.time():
            return self._done
        key = round(due * self._inv)
        fut: asyncio.Future[None] = self.loop.create_future()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [fut]
            self._calls.call_at(key * self._res, self._fire, key)
            self.timers += 1
        else:
            bucket.append(fut)
        return fut

    def _fire(self, key: int) -> None:
        for fut in self._buckets.pop(key, ()):
            if not fut.done():  # a cancelled sleeper is simply skipped
                fut.set_result(None)

    def pending(self) -> int:
        """Sleepers not yet woken (cancelled ones included until their slot fires)."""
        return sum(len(b) for b in self._buckets.values())


scheduler_for: Final[PerLoop[DueScheduler]] = PerLoop(DueScheduler)
"""The ``DueScheduler`` shared by everything running in a loop (created on first use)."""


# --------------------------------------------------------------------------- the runtime

_ADMIT_REASONS: Final = ("requests_per_min", "tokens_per_min", "queue_full", "outage", "fault")


class EndpointRuntime:
    """Everything one mock endpoint shares across its dialect's handlers.

    ``clock`` (seconds, monotonic) drives the rate-limit buckets and ``queued_s``; tests inject
    one. ``procs`` is the number of processes serving this endpoint together: each enforces
    ``1/procs`` of the limits (see the module docstring).
    """

    def __init__(
        self,
        endpoint: FleetEndpoint,
        ledger: Ledger,
        seed: int,
        *,
        clock: Clock | None = None,
        procs: int = 1,
    ) -> None:
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
        self.procs = procs
        self.clock: Clock = clock or time.monotonic
        self._rng = random.Random(seed ^ 0x5EED)
        self._share = 1.0 / procs
        self._faulty = _any_fault(endpoint.faults)
        self._limited = (
            endpoint.rate_limits.requests_per_min is not None
            or endpoint.rate_limits.tokens_per_min is not None
        )
        self._deps: dict[str, _Deployment] = {}
        self._sched: DueScheduler | None = None
        self.admitted = 0
        self.rejected: dict[str, int] = dict.fromkeys(_ADMIT_REASONS, 0)
        now = self.clock()
        for deployment in endpoint.deployments:
            self._deps[deployment] = self._new_deployment(now)
        self._header_names = _RATE_LIMIT_HEADERS.get(self.cloud)
        self.limited = (
            self._limited or type(self).rate_limit_headers is not EndpointRuntime.rate_limit_headers
        )
        """Whether ``rate_limit_headers`` can be non-empty (a limit is configured, or a subclass
        overrides it): the hot path skips the call otherwise."""
        if type(self).admit is not EndpointRuntime.admit:
            # a subclass that scripts ``admit`` (tests do) must see every admission
            self.admit_nowait = self.admit  # type: ignore[method-assign]
        self.vendor = VendorHeaders(self.cloud, self.region, mock_headers(self.cloud, self.region))
        """``vendor.build(crid)``: the cloud's fingerprint headers then the mock attestation, as a
        fresh list (the constant part is built once per endpoint, here)."""

    # ------------------------------------------------------------------ configuration

    def _new_deployment(self, now: float) -> _Deployment:
        limits, capacity, share = self.endpoint.rate_limits, self.endpoint.capacity, self._share
        requests = tokens = None
        if limits.requests_per_min is not None:
            rpm = limits.requests_per_min * share
            requests = TokenBucket(rpm, rpm / 60.0, now)
        if limits.tokens_per_min is not None:
            tpm = limits.tokens_per_min * share
            tokens = TokenBucket(tpm, tpm / 60.0, now)
        limit = None
        if capacity.max_concurrency is not None:
            limit = max(1, round(capacity.max_concurrency * share))
        max_queue = capacity.max_queue if self.procs == 1 else max(1, round(capacity.max_queue * share))
        return _Deployment(requests, tokens, limit, max_queue)

    def _deployment(self, name: str) -> _Deployment:
        dep = self._deps.get(name)
        if dep is None:  # a name the dialect did not 404 (e.g. a model alias): its own budget
            dep = self._deps[name] = self._new_deployment(self.clock())
        return dep

    def set_faults(self, faults: Faults) -> None:
        """Switch faults at run time (admin API)."""
        self.faults = faults
        self._faulty = _any_fault(faults)

    # ------------------------------------------------------------------ admission

    def draw_faults(self) -> FaultPlan | Rejection:
        """Draw this request's faults from the seeded generator (a Rejection for outage/error)."""
        faults = self.faults
        if faults.outage:
            return Rejection(503, "outage")
        rng = self._rng
        if faults.error_rate and rng.random() < faults.error_rate:
            return Rejection(faults.error_status, "fault")
        reset = bool(faults.reset_rate) and rng.random() < faults.reset_rate
        slow = bool(faults.slow_first_byte_rate) and rng.random() < faults.slow_first_byte_rate
        lo, hi = FAULT_CHUNK_RANGE
        disconnect = None
        if faults.midstream_disconnect_rate and rng.random() < faults.midstream_disconnect_rate:
            disconnect = rng.randint(lo, hi)
        malformed = None
        if faults.malformed_rate and rng.random() < faults.malformed_rate:
            malformed = rng.randint(lo, hi)
        if not (reset or slow or disconnect or malformed):
            return NO_FAULTS
        return FaultPlan(
            reset_before_response=reset,
            first_byte_delay_s=faults.slow_first_byte_ms / 1000.0 if slow else 0.0,
            disconnect_after_chunks=disconnect,
            malformed_at_chunk=malformed,
        )

    def _reject(self, rejection: Rejection) -> Admission:
        self.rejected[rejection.reason] = self.rejected.get(rejection.reason, 0) + 1
        return Admission(rejection, NO_FAULTS)

    async def admit(self, deployment: str, est_tokens: int) -> Admission:
        """Decide whether and when a request may start: outage, injected faults, rate limits,
        concurrency budget (waiting in the queue counts into TTFT)."""
        admission = self.admit_nowait(deployment, est_tokens)
        if isinstance(admission, Admission):
            return admission
        return await admission

    def admit_nowait(self, deployment: str, est_tokens: int) -> Admission | Awaitable[Admission]:
        """``admit`` without a coroutine when the answer is immediate (the common case): an
        ``Admission`` now, or an awaitable of one when the request has to queue for a slot.

        Hot paths call this and await only a non-Admission result; ``admit`` does just that.
        """
        plan = NO_FAULTS
        if self._faulty:
            drawn = self.draw_faults()
            if isinstance(drawn, Rejection):
                return self._reject(drawn)
            plan = drawn
        dep = self._deps.get(deployment) or self._deployment(deployment)
        if self._limited:
            rejection = self._take_rate(dep, est_tokens)
            if rejection is not None:
                return self._reject(rejection)
        limit = dep.limit
        if limit is not None and (dep.active >= limit or dep.waiters):
            if len(dep.waiters) >= dep.max_queue:
                return self._reject(Rejection(429, "queue_full", QUEUE_FULL_RETRY_AFTER_S))
            # the place in the queue is taken now, as if this were the coroutine's first step
            return self._queued(dep, dep.enqueue(), plan, self.clock())
        dep.active += 1
        self.admitted += 1
        return Admission(None, plan, 0.0, dep.release)

    async def _queued(
        self, dep: _Deployment, fut: asyncio.Future[None], plan: FaultPlan, start: float
    ) -> Admission:
        await dep.wait(fut)
        queued_s = self.clock() - start
        self.admitted += 1
        return Admission(None, plan, queued_s, dep.release)

    def _take_rate(self, dep: _Deployment, est_tokens: int) -> Rejection | None:
        now = self.clock()
        requests, tokens = dep.requests, dep.tokens
        wait_r = requests.wait_s(1.0, now) if requests is not None else 0.0
        wait_t = tokens.wait_s(est_tokens, now) if tokens is not None else 0.0
        if wait_r > 0 or wait_t > 0:
            reason = "requests_per_min" if wait_r > 0 else "tokens_per_min"
            return Rejection(429, reason, max(MIN_RETRY_AFTER_S, wait_r, wait_t))
        if requests is not None:
            requests.take(1.0)
        if tokens is not None:
            tokens.take(est_tokens)
        return None

    # ------------------------------------------------------------------ headers

    def rate_limit_headers(self, deployment: str) -> list[tuple[str, str]]:
        """The cloud's x-ratelimit-* headers for the deployment's current budget.

        azure: ``x-ratelimit-limit-*`` and ``x-ratelimit-remaining-*``; openai: also
        ``x-ratelimit-reset-*`` (time until the bucket is full, Go duration); aws, gcp and
        other clouds send none; nothing for a limit that is not configured. With N processes
        ``remaining`` is this process's share × N, an estimate.
        """
        names = self._header_names
        if names is None or not self._limited:
            return []
        dep = self._deps.get(deployment) or self._deployment(deployment)
        now = self.clock()
        limits = self.endpoint.rate_limits
        headers: list[tuple[str, str]] = []
        procs = self.procs
        for bucket, limit, (limit_h, remaining_h, reset_h) in (
            (dep.requests, limits.requests_per_min, names[0]),
            (dep.tokens, limits.tokens_per_min, names[1]),
        ):
            if bucket is None:
                continue
            remaining = max(0, math.floor(bucket.refill(now) * procs + 1e-9))
            headers.append((limit_h, str(limit)))
            headers.append((remaining_h, str(remaining)))
            if reset_h is not None:
                headers.append((reset_h, go_duration(bucket.full_in_s(now))))
        return headers

    # ------------------------------------------------------------------ emission

    def sleep_until(self, due: float) -> Awaitable[None]:
        """Sleep until the loop time ``due`` (absolute, so sleep error never accumulates).

        ``await runtime.sleep_until(due)``: batched on the loop's shared ``DueScheduler``; a
        due time in the past returns at once without yielding.
        """
        loop = asyncio.get_running_loop()
        sched = self._sched
        if sched is None or sched.loop is not loop:
            sched = self._sched = scheduler_for(loop)
        return sched.sleep_until(due)

    # ------------------------------------------------------------------ introspection

    def counts(self) -> dict[str, Any]:
        """What the admin API's ``/state`` reports for this process (JSON-ready)."""
        return {
            "pids": [self.pid],
            "admitted": self.admitted,
            "rejected": dict(self.rejected),
            "in_flight": sum(d.active for d in self._deps.values()),
            "queued": sum(len(d.waiters) for d in self._deps.values()),
            "state_items": len(self.state),
            "ledger_rows": len(self.ledger),
            "faults": self.faults.model_dump(),
        }


def _any_fault(faults: Faults) -> bool:
    return bool(
        faults.outage
        or faults.error_rate
        or faults.reset_rate
        or faults.midstream_disconnect_rate
        or faults.slow_first_byte_rate
        or faults.malformed_rate
    )


_HeaderNames = tuple[tuple[str, str, str | None], tuple[str, str, str | None]]
_RATE_LIMIT_HEADERS: Final[dict[str, _HeaderNames]] = {
    "azure": (
        ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", None),
        ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", None),
    ),
    "openai": (
        ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
        ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ),
}
