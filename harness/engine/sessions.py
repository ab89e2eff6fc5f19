"""Stateful work: multi-turn sessions whose turns chain server-side state.

Three shapes, one record per turn (carrying ``session_id`` and ``turn``):

* **Responses sessions** (a scenario with a ``session`` table): each arrival starts a session of
  N turns on one route; turn k+1 is sent a think time after turn k's answer, with
  ``previous_response_id`` = turn k's response id (or on one ``conversation`` created for the
  session). The session's arrival is open-loop; its turns are, by nature, closed-loop.
* **Realtime sessions**: one WebSocket per session (``session.update`` once), then per turn a
  user message and ``response.create``; TTFT and ITL per turn, from the turn's send.
* **Trace sessions** (trace rows carrying a session key on a storing Responses scenario): each
  row is planned at its trace time; a row whose previous turn is still running waits for it (it
  holds its in-flight slot meanwhile) and is then sent chained to it. Its latency still counts
  from the trace time.

A turn that cannot be sent because its session broke (the previous turn failed, so there is no
state to chain to) is recorded ``dropped`` with error kind ``session_broken``; turns left unsent
when the run ends are ``dropped``/``run_ended`` (``cancelled``/``interrupted`` on a signal), so
every planned turn yields exactly one record.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from harness.protocols import realtime as rt
from harness.protocols.fingerprint import attribute
from harness.protocols.tokens import approx_tokens
from harness.results.record import Record

if TYPE_CHECKING:
    from harness.engine.dispatch import Dispatcher
    from harness.engine.targets import PreparedRoute
    from harness.profile.models import ThinkTime
    from harness.workload.plan import Planned


def think_sampler(think: ThinkTime, rng: random.Random) -> Callable[[], int]:
    """A function drawing one think time in ns."""
    mean_ns = think.mean_ms * 1e6
    if think.distribution == "constant":
        return lambda: int(mean_ns)
    if think.distribution == "exponential":
        if mean_ns <= 0:
            return lambda: 0
        expo = rng.expovariate
        rate = 1.0 / mean_ns
        return lambda: int(expo(rate))
    lo, hi = think.min_ms * 1e6, (think.max_ms or think.min_ms) * 1e6
    uniform = rng.uniform
    return lambda: int(uniform(lo, hi))


class _Link:
    """The latest turn of a trace session: its task while running, then its response id."""

    __slots__ = ("response_id", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.response_id: str | None = None


class SessionRunner:
    """Runs the sessions of one dispatcher; uses its send path, counters and sink."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self._links: dict[tuple[int, int], _Link] = {}
        self._http: aiohttp.ClientSession | None = None  # WebSockets and session set-up calls

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            from harness.engine.dispatch import make_session

            self._http = make_session(self.d.client)
        return self._http

    # ------------------------------------------------------------------ accounting

    def _turn_record(self, p: Planned, route: PreparedRoute, turn: int, session_id: str) -> Record:
        rec = self.d._new_record(p, route, index=p.index + turn)
        rec.session_id = session_id
        rec.turn = turn
        return rec

    def drop_session(
        self, p: Planned, route: PreparedRoute, first: Record | None, from_turn: int, kind: str
    ) -> None:
        """Record turns ``from_turn ..`` of a session as not sent (``first`` is turn ``from_turn``'s
        record when it exists already)."""
        d = self.d
        session_id = f"{d.id_prefix}{p.index:012x}"
        for t in range(from_turn, p.turns):
            rec = (
                first if t == from_turn and first is not None else self._turn_record(p, route, t, session_id)
            )
            rec.session_id = session_id
            rec.turn = t
            rec.sent_ns = None
            if kind == "interrupted":
                rec.outcome = "cancelled"
                rec.error_kind = kind
                rec.bytes_out = 0
                d.counters.cancelled += 1
                d.sink(rec)
            else:
                d._drop(rec, kind)

    def _begin(self, rec: Record, route: PreparedRoute) -> None:
        """A later turn goes out: sent now, in flight."""
        d = self.d
        rec.sent_ns = time.monotonic_ns() - d.epoch_ns
        d.counters.sent += 1
        d.counters.in_flight += 1
        d.scenario_in_flight[route.scenario_index] += 1

    async def _sleep_until(self, offset_ns: int) -> None:
        due = self.d.epoch_ns + offset_ns
        mono = time.monotonic_ns
        while True:
            delay = due - mono()
            if delay <= 0:
                return
            await asyncio.sleep(delay / 1e9 if delay > 1_000_000 else 0)

    def _end_kind(self) -> str:
        return "interrupted" if self.d.stopped_early else "run_ended"

    # ------------------------------------------------------------------ Responses sessions

    async def run(self, route: PreparedRoute, p: Planned, rec: Record) -> None:
        """One synthetic session; ``rec`` is turn 0, already sent and in flight."""
        if route.api == "realtime":
            await self._realtime(route, p, rec)
            return
        d = self.d
        session = route.session
        assert session is not None and route.template is not None
        session_id = rec.request_id
        rng = random.Random(f"{route.prompt_seed}/think/{p.index}")
        think = think_sampler(session.think_time, rng)
        template = route.template
        prev_id: str | None = None
        conversation: str | None = None
        turn = 0
        sending = True  # turn ``turn`` is in flight (recorded by _send whatever happens)
        try:
            if session.chain == "conversation":
                conversation = await self._create_conversation(route, rec)
                if conversation is None:  # set-up failed: recorded on turn 0 by _create_conversation
                    self._release(route)
                    d.counters.error += 1
                    d.sink(rec)
                    self.drop_session(p, route, None, 1, "session_broken")
                    return
            while True:
                rec.session_id = session_id
                rec.turn = turn
                rec.previous_response_id = prev_id
                prompt = route.prompt(route.prompt_tokens, turn)
                rec.tokens_in = approx_tokens(prompt)
                if conversation is not None:
                    body = template.body_for(conversation=conversation, input=prompt)
                else:
                    body = template.body_for(previous_response_id=prev_id, input=prompt)
                rec.bytes_out = len(body)
                sending = True
                await d._send(route, rec, body)
                sending = False
                turn += 1
                if turn >= p.turns:
                    return
                if rec.outcome != "ok" or (conversation is None and not rec.response_id):
                    self.drop_session(p, route, None, turn, "session_broken")
                    return
                prev_id = rec.response_id
                done = rec.done_ns if rec.done_ns is not None else time.monotonic_ns() - d.epoch_ns
                rec = self._turn_record(p, route, turn, session_id)
                rec.intended_ns = done + think()
                await self._sleep_until(rec.intended_ns)
                self._begin(rec, route)
                sending = True
        except asyncio.CancelledError:
            # _send recorded a turn in flight; a turn waiting out its think time was never sent
            first_unsent = turn + 1 if sending else turn
            if first_unsent < p.turns:
                self.drop_session(p, route, None if sending else rec, first_unsent, self._end_kind())
            raise

    def _release(self, route: PreparedRoute) -> None:
        d = self.d
        d.counters.in_flight -= 1
        d.scenario_in_flight[route.scenario_index] -= 1

    async def _create_conversation(self, route: PreparedRoute, rec: Record) -> str | None:
        """POST .../conversations for the session; on failure turn 0's record says why."""
        template = route.template
        url = template.url.replace("/responses", "/conversations", 1)
        headers = template.headers_for(rec.request_id + "/conversation")  # judge.SETUP_SUFFIX
        if route.auth is not None:
            headers.update(route.auth.headers("POST", url, b"{}"))
        try:
            async with self._client().post(url, data=b"{}", headers=headers) as resp:
                body = await resp.read()
                if resp.status < 400:
                    conv = orjson.loads(body).get("id")
                    if isinstance(conv, str):
                        return conv
                rec.status = resp.status
                detail = body[:200].decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, AttributeError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        rec.outcome = "error"
        rec.error_kind = "session_setup"
        rec.error_detail = f"creating the session's conversation failed: {detail}"[:300]
        rec.done_ns = time.monotonic_ns() - self.d.epoch_ns
        return None

    # ------------------------------------------------------------------ trace sessions

    async def chained_turn(self, route: PreparedRoute, p: Planned, rec: Record) -> None:
        """One trace row of a session: wait for the session's previous turn, then send chained."""
        d = self.d
        key = (p.scenario, p.session if p.session is not None else -1)
        prev = self._links.get(key)
        link = _Link(asyncio.current_task())
        self._links[key] = link
        prev_id = None
        if prev is not None:
            if prev.task is not None and not prev.task.done():
                try:
                    await asyncio.wait({prev.task})
                except asyncio.CancelledError:
                    rec.sent_ns = None
                    self._release(route)
                    d.counters.sent -= 1
                    kind = self._end_kind()
                    if kind == "interrupted":
                        rec.outcome, rec.error_kind = "cancelled", kind
                        d.counters.cancelled += 1
                        d.sink(rec)
                    else:
                        d._drop(rec, kind)
                    raise
                rec.sent_ns = time.monotonic_ns() - d.epoch_ns
            prev_id = prev.response_id
        rec.session_id = f"{d.id_prefix}s{key[0]:x}-{key[1]:x}"
        rec.turn = p.turn
        rec.previous_response_id = prev_id
        template, tokens_in = (
            route.variant(p.prompt_tokens, p.max_tokens or route.max_tokens)
            if p.prompt_tokens
            else (route.template, route.tokens_in)
        )
        body = template.body_for(previous_response_id=prev_id)
        rec.tokens_in = tokens_in
        rec.bytes_out = len(body)
        try:
            await d._send(route, rec, body)
        finally:
            link.task = None
            link.response_id = rec.response_id if rec.outcome == "ok" else None

    # ------------------------------------------------------------------ Realtime

    async def _realtime(self, route: PreparedRoute, p: Planned, rec: Record) -> None:
        """One Realtime session over one WebSocket; turn t is ledgered as ``<session id>/<t+1>``."""
        d = self.d
        session = route.session
        assert session is not None
        epoch_ns = d.epoch_ns
        mono = time.monotonic_ns
        crid = rec.request_id
        rng = random.Random(f"{route.prompt_seed}/think/{p.index}")
        think = think_sampler(session.think_time, rng)
        url_form: rt.UrlForm = "azure" if route.dialect == "azure_openai" else "openai"
        url = rt.realtime_url(
            route.base_url, url_form=url_form, model=route.deployment, api_version=route.factory.api_version
        )
        headers = rt.handshake_headers(route.factory.api_key, url_form=url_form, request_id=crid)
        if route.auth is not None:
            headers.update(route.auth.headers("GET", url, b""))
        turn = 0
        ws: aiohttp.ClientWebSocketResponse | None = None
        counted = True  # turn 0's in-flight slot is taken
        try:
            try:
                ws = await self._client().ws_connect(url, headers=headers, autoping=True, max_msg_size=0)
            except aiohttp.WSServerHandshakeError as exc:
                self._fail_turn(route, rec, crid, 0, "error", _status_kind(exc.status), str(exc), exc.status)
                self.drop_session(p, route, None, 1, "session_broken")
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._fail_turn(route, rec, crid, 0, "error", "connect", f"{type(exc).__name__}: {exc}", 0)
                self.drop_session(p, route, None, 1, "session_broken")
                return
            fp = attribute(ws._response.headers)
            await ws.send_str(rt.session_update(max_output_tokens=route.max_tokens))
            while True:
                rec.request_id = f"{crid}/{turn + 1}"
                rec.session_id = crid
                rec.turn = turn
                rec.attempts = 1
                rec.fp_cloud, rec.fp_region, rec.fp_request_id = fp.cloud, fp.region, fp.request_id
                rec.mock_cloud, rec.mock_region = fp.mock_cloud, fp.mock_region
                prompt = route.prompt(route.prompt_tokens, turn)
                rec.tokens_in = approx_tokens(prompt)
                frames = (rt.user_message(prompt), rt.response_create(max_output_tokens=route.max_tokens))
                rec.bytes_out = sum(len(f) for f in frames)
                rec.sent_ns = rec.attempt_sent_ns = mono() - epoch_ns
                for frame in frames:
                    await ws.send_str(frame)
                ok = await self._realtime_turn(ws, rec, route)
                counted = False
                self._release(route)
                self._count(rec)
                d.sink(rec)
                turn += 1
                if turn >= p.turns:
                    return
                if not ok:
                    self.drop_session(p, route, None, turn, "session_broken")
                    return
                done = rec.done_ns if rec.done_ns is not None else mono() - epoch_ns
                rec = self._turn_record(p, route, turn, crid)
                rec.intended_ns = done + think()
                await self._sleep_until(rec.intended_ns)
                d.counters.sent += 1
                d.counters.in_flight += 1
                d.scenario_in_flight[route.scenario_index] += 1
                counted = True
        except asyncio.CancelledError:
            first_unsent = turn
            if counted:  # the turn was in flight
                self._release(route)
                rec.outcome, rec.error_kind = "cancelled", "interrupted"
                rec.request_id = f"{crid}/{turn + 1}"
                rec.session_id, rec.turn = crid, turn
                rec.done_ns = mono() - epoch_ns
                d.counters.cancelled += 1
                d.sink(rec)
                first_unsent = turn + 1
            if first_unsent < p.turns:
                self.drop_session(p, route, None if counted else rec, first_unsent, self._end_kind())
            raise
        finally:
            if ws is not None and not ws.closed:
                await asyncio.shield(ws.close())

    async def _realtime_turn(
        self, ws: aiohttp.ClientWebSocketResponse, rec: Record, route: PreparedRoute
    ) -> bool:
        """Read one turn's server events into ``rec``; True when it completed."""
        d = self.d
        epoch_ns = d.epoch_ns
        mono = time.monotonic_ns
        parser = rt.RealtimeTurnParser()
        token_ns: list[int] = []
        timeout = d.client.sock_read_timeout_s
        deadline = mono() + int(d.client.request_timeout_s * 1e9)
        try:
            while not parser.ended:
                remaining = (deadline - mono()) / 1e9
                if remaining <= 0:
                    raise TimeoutError
                msg = await ws.receive(timeout=min(timeout, remaining))
                t = mono() - epoch_ns
                if msg.type != aiohttp.WSMsgType.TEXT:
                    parser.close()
                    break
                if rec.first_byte_ns is None:
                    rec.first_byte_ns = t
                rec.bytes_in += len(msg.data)
                if parser.feed(msg.data):
                    token_ns.append(t)
        except TimeoutError:
            rec.outcome, rec.error_kind = "timeout", "timeout_read"
            rec.error_detail = "no realtime event within the read timeout"
        rec.done_ns = mono() - epoch_ns
        rec.status = 101
        rec.chunks = parser.content_chunks
        if token_ns:
            rec.first_token_ns = token_ns[0]
            rec.token_ns = token_ns
        rec.response_id = parser.response_id
        if parser.usage_out is not None:
            rec.usage_from_server = True
            rec.tokens_out = parser.usage_out
            if parser.usage_in is not None:
                rec.tokens_in = parser.usage_in
        else:
            rec.tokens_out = parser.tokens_out_approx
        if rec.outcome == "ok" and parser.error:
            from harness.protocols.events import error_kind

            rec.outcome = "error"
            rec.error_kind = "http_429" if "rate" in parser.error.lower() else error_kind(parser.error)
            rec.error_detail = parser.error[:300]
        return rec.outcome == "ok"

    def _count(self, rec: Record) -> None:
        c = self.d.counters
        if rec.outcome == "ok":
            c.ok += 1
        elif rec.outcome == "timeout":
            c.timeout += 1
        else:
            c.error += 1

    def _fail_turn(
        self,
        route: PreparedRoute,
        rec: Record,
        crid: str,
        turn: int,
        outcome: str,
        kind: str,
        detail: str,
        status: int,
    ) -> None:
        rec.request_id = f"{crid}/{turn + 1}"
        rec.session_id = crid
        rec.turn = turn
        rec.attempts = 1
        rec.status = status
        rec.outcome, rec.error_kind, rec.error_detail = outcome, kind, detail[:300]
        rec.done_ns = time.monotonic_ns() - self.d.epoch_ns
        self._release(route)
        self._count(rec)
        self.d.sink(rec)


def _status_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"
