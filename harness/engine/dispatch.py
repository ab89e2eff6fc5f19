"""The open-loop dispatcher: the hot path.

Arrivals are sent at their planned absolute times whatever the target does; latency is
measured from the intended time, so a stalled target shows up as latency and drops rather
than as silently lower load (coordinated omission). Every planned arrival yields exactly
one Record — ok, error, timeout, dropped or cancelled — whatever happens.

An arrival is ``dropped`` (never silently delayed) when ``max_in_flight`` requests are
already in flight at its due time (the client's cap, or its scenario's own), or when the
dispatcher itself is more than ``lag_budget_ms`` late for it (the scenario's budget, else the
client's).
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import aiohttp
import yarl

from harness.auth import encode_header_lines
from harness.clock import RunEpoch
from harness.engine.sessions import SessionRunner
from harness.engine.targets import PreparedRoute
from harness.engine.timer import PreciseSleeper
from harness.engine.transport import LeanPool, RequestHead, TransportError, host_header, split_url
from harness.metrics.histogram import LatencyHistogram
from harness.profile.models import Client
from harness.protocols.events import StreamState, error_kind
from harness.protocols.fingerprint import attribute
from harness.protocols.retry import retry_after_s
from harness.results.record import Record
from harness.workload.closed import CLOSED_INDEX_BASE, ClosedLoop

CLOSED_DROP_WAIT_S: Final = (0.001, 0.1)
"""A closed-loop user that found the in-flight cap full waits at least this long before it tries
again: 1 ms, doubling while the cap stays full, at most 100 ms (``Dispatcher._closed_user``)."""
YOUNG_GC_EVERY: Final = 50_000
"""Net container allocations per young garbage collection during a run (CPython: 700); see
``Dispatcher.run``."""

RecordSink = Callable[[Record], None]


def status_error_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


class _Failed(Exception):
    """A transport failure, already classified (outcome and error kind) for the record."""

    def __init__(self, outcome: str, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.kind = kind
        self.detail = detail


class _StreamSink:
    """Receives a stream's body from the lean transport's ``data_received``: each read is parsed
    at once and its content chunks get the read's timestamp (ns from the run epoch)."""

    __slots__ = ("_error_body", "epoch_ns", "feed", "headers_ns", "nbytes", "parser", "status", "token_ns")

    def __init__(self, epoch_ns: int, parser: StreamState) -> None:
        self.epoch_ns = epoch_ns
        self.parser = parser
        self.feed = self.parser.feed
        self.token_ns: list[int] = []
        self.nbytes = 0
        self.status = 0
        self.headers_ns = 0
        self._error_body: list[bytes] = []

    def on_headers(self, status: int, headers: Any, t_ns: int) -> None:
        self.status = status
        self.headers_ns = t_ns

    def on_body(self, data: bytes, t_ns: int) -> None:
        self.nbytes += len(data)
        if self.status >= 400:  # an error answer to a stream request: keep it for the error detail
            self._error_body.append(data)
            return
        n = self.feed(data)
        if n:
            self.token_ns.extend([t_ns - self.epoch_ns] * n)

    def body(self) -> bytes:
        return b"".join(self._error_body)


class _Arrival:
    """A closed-loop request's place in time, shaped like a plan entry for ``_new_record``."""

    __slots__ = ("index", "offset_ns")

    def __init__(self, index: int, offset_ns: int) -> None:
        self.index = index
        self.offset_ns = offset_ns


class Counters:
    """Live counts the progress view reads; plain ints, updated only on the event loop."""

    __slots__ = (
        "cancelled",
        "dropped",
        "error",
        "in_flight",
        "max_in_flight_seen",
        "ok",
        "planned",
        "sent",
        "timeout",
        "timer_wakeups",
    )

    def __init__(self) -> None:
        self.planned = self.sent = self.in_flight = 0
        self.ok = self.error = self.timeout = self.dropped = self.cancelled = 0
        self.max_in_flight_seen = 0  # high-water mark of in_flight (bounded by the cap)
        self.timer_wakeups = 0  # scheduler timer wake-ups (its CPU cost is per wake-up)

    def finished(self) -> int:
        return self.ok + self.error + self.timeout + self.dropped + self.cancelled


def tls_context_of(client: Client) -> ssl.SSLContext:
    """The TLS context of both transports: the system's trust store (plus ``tls_ca_file``), with
    certificate and host-name checks unless the profile explicitly turns them off."""
    context = ssl.create_default_context(cafile=client.tls_ca_file)
    if not client.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_session(client: Client) -> aiohttp.ClientSession:
    """One ClientSession with every limit set explicitly from the profile (aiohttp's defaults
    silently queue beyond 100 connections and cut requests at 300 s)."""
    connector = aiohttp.TCPConnector(
        limit=client.connections,
        limit_per_host=client.connections_per_host,
        ttl_dns_cache=300,
        keepalive_timeout=30,
        # aiohttp's own verifying default unless the profile changes trust (building a context
        # loads the system CA store: tens of ms, which would make the first arrivals late)
        ssl=tls_context_of(client) if client.tls_ca_file or not client.tls_verify else True,
    )
    timeout = aiohttp.ClientTimeout(
        total=client.request_timeout_s,
        connect=client.connect_timeout_s,
        sock_read=client.sock_read_timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        headers={"User-Agent": "llm-loadharness/0.1"},
        trace_configs=[phase_trace()],
    )


def phase_trace() -> aiohttp.TraceConfig:
    """Connection-pool wait and connect time onto the record (``pool_wait_ns``, ``connect_ns``).

    The request passes its Record as ``trace_request_ctx``; aiohttp calls these around the
    pool queue (all ``limit`` connections busy) and around opening a new connection (TCP + TLS).
    A reused keep-alive connection fires neither, so the common case costs nothing extra.
    """
    mono = time.monotonic_ns
    trace = aiohttp.TraceConfig()

    async def queued_start(session: Any, ctx: Any, params: Any) -> None:
        ctx.queued_ns = mono()

    async def queued_end(session: Any, ctx: Any, params: Any) -> None:
        rec = ctx.trace_request_ctx
        if isinstance(rec, Record):
            rec.pool_wait_ns += mono() - ctx.queued_ns

    async def create_start(session: Any, ctx: Any, params: Any) -> None:
        ctx.connect_ns = mono()

    async def create_end(session: Any, ctx: Any, params: Any) -> None:
        rec = ctx.trace_request_ctx
        if isinstance(rec, Record):
            rec.connect_ns += mono() - ctx.connect_ns

    trace.on_connection_queued_start.append(queued_start)
    trace.on_connection_queued_end.append(queued_end)
    trace.on_connection_create_start.append(create_start)
    trace.on_connection_create_end.append(create_end)
    trace.freeze()
    return trace


def request_id_prefix() -> str:
    """A random UUID-shaped prefix for this run; the last 12 hex digits are the plan index.

    Ids are unique across runs (random 80 bits) and across a run's workers (global index), and
    cost one string format per request instead of a uuid4().
    """
    return str(uuid.uuid4())[:24]


class Dispatcher:
    """Sends one run's plan open-loop through one aiohttp session on the running loop."""

    def __init__(
        self,
        routes: list[list[PreparedRoute]],
        client: Client,
        epoch: RunEpoch,
        sink: RecordSink,
        *,
        worker: int = 0,
        id_prefix: str | None = None,
        closed: Sequence[ClosedLoop] = (),
    ) -> None:
        self.routes = routes
        self.closed = tuple(closed)  # closed-loop scenarios (harness.workload.closed), run beside the plan
        self._closed_seq = CLOSED_INDEX_BASE + (worker << 40)
        self.client = client
        self.epoch_ns = epoch.monotonic_ns
        self.sink = sink
        self.worker = worker
        self.id_prefix = id_prefix or request_id_prefix()
        self.max_in_flight = client.in_flight_cap
        # per scenario (from its prepared routes): in-flight cap, never above the client's, and lag budget
        self.scenario_caps = [
            min(r[0].max_in_flight or self.max_in_flight, self.max_in_flight) for r in routes
        ]
        self.scenario_budgets_ns = [
            int((r[0].lag_budget_ms or client.lag_budget_ms) * 1_000_000) for r in routes
        ]
        self.scenario_in_flight = [0] * len(routes)
        self.retry = client.retry
        self.counters = Counters()
        self.schedule_lag = LatencyHistogram()
        self.loop_lag = LatencyHistogram()
        self._tasks: set[asyncio.Task[None]] = set()
        self._users: set[asyncio.Task[None]] = set()  # closed-loop users
        self._session: aiohttp.ClientSession | None = None
        self._lean = client.transport == "lean"
        self._pools: dict[str, LeanPool] = {}  # by endpoint name (lean transport)
        self._heads: dict[int, RequestHead] = {}  # by id(route) (lean transport)
        self._var_heads: dict[int, RequestHead] = {}  # the same without Content-Length
        self.sessions = SessionRunner(self)
        self.stopped_early = False
        # after the plan, sessions still running get their scenario's graceful stop to finish
        self.graceful_stop_s = max(
            (r[0].session.graceful_stop_s for r in routes if r and r[0].session is not None), default=0.0
        )
        self.precise_timer = True  # timerfd wake-ups (harness.engine.timer); False: ms timers + yield
        self._sleeper: PreciseSleeper | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, plan: Iterable, *, drain_timeout_s: float | None = None) -> None:
        """Dispatch the whole plan, then wait for in-flight requests; cancelled ones are recorded.

        Cancelling the task running this method (SIGINT) stops scheduling at once, cancels every
        in-flight request (each recorded as ``cancelled``) and re-raises CancelledError.

        Everything alive when dispatch starts (hundreds of thousands of objects: the loaded
        modules, pandas and pyarrow above all) is frozen out of the garbage collector's walks for
        the run (``gc.freeze``) and thawed after: at 10k rps, full collections walking them paused
        the loop for milliseconds, and the schedule-lag p99 fell from 1.6 to 0.5-0.8 ms without
        them (bench/open_loop.py, docs/benchmarks.md).

        Young collections run every ``YOUNG_GC_EVERY`` net allocations instead of 700 for the
        run: each walks every young object still alive (the requests and streams in flight), so
        at a few hundred open streams they paused the loop every few ms; with them rarer, the
        event-loop lag p99 fell from 0.7 to 0.3 ms and the TTFT and ITL error p99s by 0.2-0.4 ms
        at 400-600 new streams/s (bench/fidelity.py). Objects die young by reference counting,
        so memory grows only by the cyclic garbage that waits longer.
        """
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_GC_EVERY, thresholds[1], thresholds[2])
        try:
            await self._run(plan, drain_timeout_s)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    async def _run(self, plan: Iterable, drain_timeout_s: float | None) -> None:
        if self._lean:
            self._open_pools()
        else:
            self._session = make_session(self.client)
        monitor = asyncio.create_task(self._monitor_loop_lag())
        try:
            self._start_users()
            await self._schedule(plan)
            timeout = (
                drain_timeout_s
                if drain_timeout_s is not None
                else max(self.client.request_timeout_s + 5, self.graceful_stop_s)
            )
            if self._users:  # users stop starting requests at the run's end, then finish their last
                end_ns = max(c.end_ns for c in self.closed) + self.epoch_ns
                await asyncio.wait(set(self._users), timeout=max(0, end_ns - time.monotonic_ns()) / 1e9)
                if self._users:
                    await asyncio.wait(set(self._users), timeout=timeout)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=timeout)
        except asyncio.CancelledError:
            self.stopped_early = True
            raise
        finally:
            monitor.cancel()
            for user in self._users:
                user.cancel()
            if self._users:
                await asyncio.gather(*self._users, return_exceptions=True)
            await self._cancel_in_flight()
            if self._session is not None:
                await self._session.close()
            await self.sessions.close()
            for pool in self._pools.values():
                pool.close()

    async def _cancel_in_flight(self) -> None:
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _monitor_loop_lag(self) -> None:
        """Event-loop lag: how late a 10 ms sleep wakes up. A busy loop delays every timestamp."""
        mono = time.monotonic_ns
        record = self.loop_lag.record_ns
        while True:
            t0 = mono()
            await asyncio.sleep(0.01)
            record(max(0, mono() - t0 - 10_000_000))

    # ------------------------------------------------------------------ scheduling

    async def _schedule(self, plan: Iterable) -> None:
        mono = time.monotonic_ns
        epoch_ns = self.epoch_ns
        routes = self.routes
        counters = self.counters
        cap = self.max_in_flight
        scenario_caps = self.scenario_caps
        scenario_budgets = self.scenario_budgets_ns
        scenario_in_flight = self.scenario_in_flight
        tasks = self._tasks
        discard = tasks.discard
        create_task = asyncio.get_running_loop().create_task
        sessions = self.sessions
        sleeper = self._sleeper = PreciseSleeper(allow_timerfd=self.precise_timer)
        until = sleeper.until
        yielded = mono()
        try:
            for p in plan:
                due = epoch_ns + p.offset_ns
                # Absolute due time; a precise (timerfd) wake-up only when not yet due, so a busy
                # dispatcher dispatches every arrival already due in one pass without sleeping —
                # but yields to the loop after 1 ms of such a pass, so responses keep flowing.
                now = mono()
                if now < due:
                    await until(due)
                    yielded = mono()
                elif now - yielded > 1_000_000:
                    await asyncio.sleep(0)
                    yielded = mono()
                counters.planned += p.turns
                route = routes[p.scenario][p.route]
                rec = self._new_record(p, route)
                now = mono()
                lag = now - due
                s_idx = p.scenario
                if counters.in_flight >= cap or scenario_in_flight[s_idx] >= scenario_caps[s_idx]:
                    self._drop_planned(p, route, rec, "in_flight_cap")
                    continue
                if lag > scenario_budgets[s_idx]:
                    self._drop_planned(p, route, rec, "lag_budget")
                    continue
                rec.sent_ns = now - epoch_ns  # (``_send`` stamps it again as it hands it over)
                counters.sent += 1
                counters.in_flight += 1
                counters.max_in_flight_seen = max(counters.max_in_flight_seen, counters.in_flight)
                scenario_in_flight[s_idx] += 1
                if route.session is not None:
                    coro = sessions.run(route, p, rec)
                elif p.session is not None and route.store:
                    coro = sessions.chained_turn(route, p, rec)
                elif p.prompt_tokens:  # a trace row
                    if p.session is not None:
                        rec.session_id = f"{self.id_prefix}s{p.scenario:x}-{p.session:x}"
                        rec.turn = p.turn
                    template, tokens_in = route.variant(p.prompt_tokens, p.max_tokens or route.max_tokens)
                    rec.tokens_in = tokens_in
                    rec.bytes_out = len(template.body)
                    coro = self._send(route, rec, template.body)
                else:
                    coro = self._send(route, rec)
                task = create_task(coro)
                tasks.add(task)
                task.add_done_callback(discard)
        finally:
            counters.timer_wakeups = sleeper.wakeups
            sleeper.close()

    # ------------------------------------------------------------------ closed loop

    def _start_users(self) -> None:
        create_task = asyncio.get_running_loop().create_task
        for loop in self.closed:
            for u in loop.my_users():
                task = create_task(self._closed_user(loop, u))
                self._users.add(task)
                task.add_done_callback(self._users.discard)

    async def _closed_user(self, loop: ClosedLoop, user: int) -> None:
        """One closed-loop user: send, wait for the whole response, think, repeat until the run ends.

        ``intended_ns`` is when the user meant to send (its start, then previous done + think
        time), so schedule lag stays the dispatcher's own lateness. At the in-flight cap (other
        scenarios filled it) the request is recorded as ``dropped`` and the user thinks again,
        for at least ``CLOSED_DROP_WAIT_S`` (doubling while it keeps finding the cap full):
        with no think time it would otherwise retry without ever yielding, starving the loop
        (the in-flight requests could not finish) and writing a dropped record per spin.
        """
        mono = time.monotonic_ns
        epoch_ns = self.epoch_ns
        counters = self.counters
        s_idx = loop.scenario
        routes = self.routes[s_idx]
        scenario_in_flight = self.scenario_in_flight
        scenario_cap = self.scenario_caps[s_idx]
        cap = self.max_in_flight
        stream = loop.user(user)
        sleep = asyncio.sleep
        intended = loop.start_ns(user)
        end = loop.end_ns
        wait_min_ns, wait_max_ns = (int(w * 1e9) for w in CLOSED_DROP_WAIT_S)
        drop_wait_ns = 0
        while intended < end:
            delay = epoch_ns + intended - mono()
            if delay > 0:
                await sleep(delay / 1e9)
            route = routes[stream.route()]
            index = self._closed_seq
            self._closed_seq = index + 1
            rec = self._new_record(_Arrival(index, intended), route)
            counters.planned += 1
            if counters.in_flight >= cap or scenario_in_flight[s_idx] >= scenario_cap:
                self._drop(rec, "in_flight_cap")
                drop_wait_ns = min(max(2 * drop_wait_ns, wait_min_ns), wait_max_ns)
                intended = mono() - epoch_ns + max(stream.think_ns(), drop_wait_ns)
                continue  # ≥ 1 ms ahead: the loop's top sleeps, so the event loop runs
            drop_wait_ns = 0
            counters.sent += 1  # (``_send`` stamps ``sent_ns`` and its lag as it hands it over)
            counters.in_flight += 1
            counters.max_in_flight_seen = max(counters.max_in_flight_seen, counters.in_flight)
            scenario_in_flight[s_idx] += 1
            await self._send(route, rec)
            intended = mono() - epoch_ns + stream.think_ns()

    def _new_record(self, p, route: PreparedRoute, index: int | None = None) -> Record:
        if index is None:
            index = p.index
        rec = Record(
            request_id=f"{self.id_prefix}{index:012x}",
            index=index,
            scenario=route.scenario,
            worker=self.worker,
            api=route.api,
            stream=route.stream,
            model=route.model,
            endpoint=route.endpoint,
            deployment=route.deployment,
            tenant=route.tenant,
            sold_through=route.sold_through,
            intended_ns=p.offset_ns,
            bytes_out=route.bytes_out,
        )
        rec.store = route.store
        return rec

    def _drop(self, rec: Record, kind: str) -> None:
        rec.outcome = "dropped"
        rec.error_kind = kind
        rec.bytes_out = 0
        self.counters.dropped += 1
        self.sink(rec)

    def _drop_planned(self, p, route: PreparedRoute, rec: Record, kind: str) -> None:
        """Drop an arrival: a session start drops every turn it planned."""
        if route.session is not None:
            self.sessions.drop_session(p, route, rec, 0, kind)
        else:
            self._drop(rec, kind)

    # ------------------------------------------------------------------ one request

    async def _send(self, route: PreparedRoute, rec: Record, body: bytes | None = None) -> None:
        """Send one planned request (with retries by policy) and hand its record to the sink once.

        ``body`` replaces the route's body (a trace row's sizes, a session turn's chaining)."""
        mono = time.monotonic_ns
        epoch_ns = self.epoch_ns
        counters = self.counters
        if rec.tokens_in is None:
            rec.tokens_in = route.tokens_in  # what was sent; the server's usage replaces it
        try:
            rec.attempts = 1
            # Handed to the transport now (the schema's ``sent_ns``), not when the caller decided
            # to send: a task created by the scheduler runs its first step behind every callback
            # already ready, and at 1,000 streams/s that wait was 0.2 ms at p90 and up to 1 ms at
            # p99, which a stamp taken in the scheduler counted into TTFT and latency "from the
            # actual send" instead of into the schedule lag (bench/fidelity.py).
            # The schedule-lag histogram is recorded here too, so it stays the records' own
            # ``sent_ns - intended_ns`` (workers and Locust merge it; the summary derives it).
            rec.sent_ns = rec.attempt_sent_ns = sent = mono() - epoch_ns
            self.schedule_lag.record_ns(max(0, sent - rec.intended_ns))
            while True:
                wait_s = await self._attempt(route, rec, body)
                if wait_s is None:
                    break
                t0 = mono()
                await asyncio.sleep(wait_s)
                rec.retry_wait_ns += mono() - t0
                rec.attempts += 1
                rec.attempt_sent_ns = mono() - epoch_ns
                rec.outcome = "ok"
                rec.error_kind = rec.error_detail = None
        except asyncio.CancelledError:
            rec.outcome = "cancelled"
            rec.error_kind = "interrupted"
            rec.done_ns = mono() - epoch_ns
            counters.cancelled += 1
            self.sink(rec)
            raise
        except _Failed as failed:
            self._fail(rec, failed.outcome, failed.kind, failed.detail)
        except aiohttp.ConnectionTimeoutError:
            self._fail(rec, "timeout", "timeout_connect", "connect timeout")
        except aiohttp.SocketTimeoutError:
            self._fail(rec, "timeout", "timeout_read", "no bytes within sock_read_timeout_s")
        except TimeoutError:
            self._fail(rec, "timeout", "timeout_total", "request exceeded request_timeout_s")
        except aiohttp.ClientConnectorError as exc:
            self._fail(rec, "error", "connect", str(exc))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            self._fail(rec, "error", "reset", str(exc) or type(exc).__name__)
        except aiohttp.ClientResponseError as exc:
            self._fail(rec, "error", "protocol", str(exc))
        except aiohttp.ClientError as exc:
            self._fail(rec, "error", "protocol", f"{type(exc).__name__}: {exc}")
        else:
            if rec.outcome == "ok":
                counters.ok += 1
            else:
                counters.error += 1
            self.sink(rec)
        finally:
            counters.in_flight -= 1
            self.scenario_in_flight[route.scenario_index] -= 1

    def _open_pools(self) -> None:
        """One lean pool per endpoint and one request head per route, built before the first send.

        Each pool may open up to ``connections`` connections; in flight never exceeds that in all,
        so a pool is never exhausted (the lean pool refuses rather than queueing).
        """
        client = self.client
        tls_context: ssl.SSLContext | None = None
        # token timing is measured on the kernel's receive times where streams are read (their
        # pools pay ~3 µs a request for it: harness.engine.tcp, LeanPool)
        streamed = {r.endpoint for routes in self.routes for r in routes if r.stream}
        for routes in self.routes:
            for route in routes:
                if route.headers_for is None:  # a WebSocket (realtime) route: aiohttp carries it
                    continue
                host, port, target, tls = split_url(route.url)
                if route.endpoint not in self._pools:
                    if tls and tls_context is None:
                        tls_context = tls_context_of(client)
                    self._pools[route.endpoint] = LeanPool(
                        host,
                        port,
                        limit=client.connections,
                        ssl=tls_context if tls else None,
                        server_hostname=host if tls else None,
                        connect_timeout_s=client.connect_timeout_s,
                        read_timeout_s=client.sock_read_timeout_s,
                        total_timeout_s=client.request_timeout_s,
                        kernel_stamps=route.endpoint in streamed,
                    )
                headers = route.headers_for("-")
                id_header = next(k for k, v in headers.items() if v == "-")
                del headers[id_header]
                headers.setdefault("User-Agent", "llm-loadharness/0.1")
                host_value = host_header(host, port, tls)
                self._heads[id(route)] = RequestHead(
                    "POST", target, host_value, headers, body_len=route.bytes_out, id_header=id_header
                )
                # for bodies of other sizes (trace rows, session turns): Content-Length per request
                self._var_heads[id(route)] = RequestHead(
                    "POST", target, host_value, headers, id_header=id_header
                )

    async def _attempt(self, route: PreparedRoute, rec: Record, body: bytes | None) -> float | None:
        if self._lean:
            try:
                return await self._attempt_lean(route, rec, body)
            except TransportError as exc:
                kind = exc.kind
                outcome = "timeout" if kind.startswith("timeout") else "error"
                raise _Failed(outcome, kind, str(exc) or type(exc).__name__) from None
        return await self._attempt_aiohttp(route, rec, body)

    async def _attempt_lean(self, route: PreparedRoute, rec: Record, body: bytes | None) -> float | None:
        """One attempt through the lean transport: chunks are timestamped per socket read in
        ``data_received`` and parsed in place, with no coroutine wake-up per chunk."""
        epoch_ns = self.epoch_ns
        if body is None:
            body = route.body
            head = self._heads[id(route)].with_id(rec.request_id)
        else:
            head = self._var_heads[id(route)].with_id_len(rec.request_id, len(body))
        if route.auth is not None:  # per-request credentials (cached by the provider), before the blank line
            head = head[:-2] + encode_header_lines(route.auth.headers("POST", route.url, body)) + b"\r\n"
        pool = self._pools[route.endpoint]
        assert route.spec is not None
        if route.stream:
            sink = _StreamSink(epoch_ns, route.spec.stream_parser())
            try:
                resp = await pool.request(head, body, sink)
            finally:
                # also on a reset or timeout mid-stream: keep what arrived (a failure is data)
                rec.done_ns = time.monotonic_ns() - epoch_ns
                rec.bytes_in += sink.nbytes
                rec.chunks = sink.parser.content_chunks
                if sink.status:  # the headers came: the request was served, even if cut short later
                    rec.status = sink.status
                    rec.first_byte_ns = sink.headers_ns - epoch_ns
                if sink.token_ns:
                    rec.first_token_ns = sink.token_ns[0]
                    rec.token_ns = sink.token_ns
        else:
            resp = await pool.request(head, body)
        rec.connect_ns += resp.connect_ns
        rec.first_byte_ns = resp.first_byte_ns - epoch_ns
        status = resp.status
        rec.status = status
        fp = attribute(resp.headers.indexed)
        rec.fp_cloud = fp.cloud
        rec.fp_region = fp.region
        rec.fp_request_id = fp.request_id
        rec.mock_cloud = fp.mock_cloud
        rec.mock_region = fp.mock_region
        if route.stream:
            if status >= 400:
                return self._error_answer(rec, route, status, sink.body(), resp.headers)
            parser = sink.parser
            parser.close()
            self._finish_stream(rec, parser)
            return None
        answer = resp.body or b""
        rec.done_ns = time.monotonic_ns() - epoch_ns
        rec.bytes_in += len(answer)
        if status >= 400:
            return self._error_answer(rec, route, status, answer, resp.headers)
        self._finish_body(rec, route, answer)
        return None

    async def _attempt_aiohttp(self, route: PreparedRoute, rec: Record, body: bytes | None) -> float | None:
        """One attempt; returns the seconds to wait before the next one, or None when done."""
        mono = time.monotonic_ns
        epoch_ns = self.epoch_ns
        assert self._session is not None and route.headers_for is not None
        data = route.body if body is None else body
        headers = route.headers_for(rec.request_id)
        url: Any = route.url
        if route.auth is not None:  # per-request credentials (cached by the provider)
            headers.update(route.auth.headers("POST", url, data))
            url = yarl.URL(url, encoded=True)  # sent exactly as signed (yarl would decode %3A)
        async with self._session.post(url, data=data, headers=headers, trace_request_ctx=rec) as resp:
            rec.first_byte_ns = mono() - epoch_ns
            status = resp.status
            rec.status = status
            fp = attribute(resp.headers)
            rec.fp_cloud = fp.cloud
            rec.fp_region = fp.region
            rec.fp_request_id = fp.request_id
            rec.mock_cloud = fp.mock_cloud
            rec.mock_region = fp.mock_region
            if status >= 400:
                answer = await resp.read()
                rec.done_ns = mono() - epoch_ns
                rec.bytes_in += len(answer)
                return self._error_answer(rec, route, status, answer, resp.headers)
            if route.stream:
                await self._read_stream(resp, rec, route)
                return None
            answer = await resp.read()
            rec.done_ns = mono() - epoch_ns
            rec.bytes_in += len(answer)
            self._finish_body(rec, route, answer)
            return None

    def _error_answer(
        self, rec: Record, route: PreparedRoute, status: int, body: bytes, headers: Any
    ) -> float | None:
        """Record an HTTP error answer; the retry policy's delay, or None when it is final."""
        assert route.spec is not None
        code, message = route.spec.read_error(body, headers)
        rec.outcome = "error"
        rec.error_kind = status_error_kind(status)
        rec.error_detail = f"{code}: {message}"[:300] if code else (message or "")[:300]
        return self._retry_delay(status, headers, rec.attempts)

    def _finish_body(self, rec: Record, route: PreparedRoute, body: bytes) -> None:
        """A complete non-stream answer: its id, tokens, and an error it may carry."""
        assert route.spec is not None
        result = route.spec.read_body(body)
        rec.response_id = result.response_id
        self._set_tokens(rec, result.usage_in, result.usage_out, result.tokens_out_approx)
        if result.error:
            rec.outcome = "error"
            rec.error_kind = error_kind(result.error)
            rec.error_detail = result.error[:300]
        else:
            rec.first_token_ns = rec.done_ns

    def _finish_stream(self, rec: Record, parser: StreamState) -> None:
        """A stream that ended (parser closed): its id, tokens, and an error it may carry."""
        rec.response_id = parser.response_id
        self._set_tokens(rec, parser.usage_in, parser.usage_out, parser.tokens_out_approx)
        if parser.error:
            rec.outcome = "error"
            rec.error_kind = error_kind(parser.error)
            rec.error_detail = parser.error[:300]

    def _retry_delay(self, status: int, headers: Any, attempts: int) -> float | None:
        """The policy's decision: wait this long and retry, or record the answer (None)."""
        retry = self.retry
        if retry.policy == "none" or attempts >= retry.max_attempts or status not in retry.statuses:
            return None
        delay = retry_after_s(headers)
        if delay is None or delay > retry.max_wait_s:
            return None
        return delay

    async def _read_stream(self, resp: aiohttp.ClientResponse, rec: Record, route: PreparedRoute) -> None:
        mono = time.monotonic_ns
        epoch_ns = self.epoch_ns
        assert route.spec is not None
        parser = route.spec.stream_parser()
        feed = parser.feed
        token_ns: list[int] = []
        nbytes = 0
        try:
            async for data in resp.content.iter_any():
                t = mono() - epoch_ns  # stamp before parsing: parse time is not network time
                nbytes += len(data)
                n = feed(data)
                if n:
                    token_ns.extend([t] * n)
            parser.close()
        finally:
            # also on a reset or timeout mid-stream: keep what arrived (a failure is data)
            rec.done_ns = mono() - epoch_ns
            rec.bytes_in += nbytes
            rec.chunks = parser.content_chunks
            if token_ns:
                rec.first_token_ns = token_ns[0]
                rec.token_ns = token_ns
        self._finish_stream(rec, parser)

    @staticmethod
    def _set_tokens(rec: Record, usage_in: int | None, usage_out: int | None, approx_out: int) -> None:
        """Tokens from the server's usage when reported, else the shared approximation (the
        record's ``tokens_in`` already holds what was sent)."""
        if usage_out is not None:
            rec.usage_from_server = True
            rec.tokens_out = usage_out
            if usage_in is not None:
                rec.tokens_in = usage_in
        else:
            rec.tokens_out = approx_out

    def _fail(self, rec: Record, outcome: str, kind: str, detail: str) -> None:
        rec.outcome = outcome
        rec.error_kind = kind
        rec.error_detail = detail[:300]
        rec.done_ns = time.monotonic_ns() - self.epoch_ns
        counters = self.counters
        if outcome == "timeout":
            counters.timeout += 1
        else:
            counters.error += 1
        self.sink(rec)
