"""Start a whole mock fleet: one aiohttp server per endpoint and one admin server, in one event
loop, or spread over N processes that share every endpoint's port (SO_REUSEPORT).

Admin API (bound to loopback only; the endpoints may listen elsewhere):

    GET  /admin/health                        {"ok": true}
    GET  /admin/endpoints                     the endpoint info list (see ``RunningFleet.endpoints``)
    GET  /admin/workers                       [{"pid", "admin_url"}] of each serving process
    GET  /admin/ledger                        every endpoint's ledger as one Parquet file (LEDGER_SCHEMA)
    GET  /admin/ledger?format=json            the same rows as a JSON list of objects
    POST /admin/ledger/reset                  forget every row
    GET  /admin/endpoints/{name}/faults       the endpoint's current faults (the fleet file's keys)
    PUT  /admin/endpoints/{name}/faults       replace them: a JSON object of ``Faults`` fields, the
                                              ones left out take their defaults (off)
    POST /admin/endpoints/{name}/outage       {"outage": true|false}: the region outage switch
    GET  /admin/endpoints/{name}/state        counts: admitted, rejected by reason, in flight, queued,
                                              stored state items, ledger rows, faults, pids
    GET  /admin/emission                      emission timing of the stream chunks the emitter wheel
                                              wrote (every process summed): sparse 10 µs histograms
                                              of emission error and |ITL error|, percentiles in ms
    POST /admin/emission/reset                start those counts afresh (e.g. after a warm-up)
    PUT  /admin/emission                      {"record": true|false}: switch the recording on or off

Bad input answers 400 with ``{"error": "<one line naming the field>"}``; an unknown endpoint 404.

Multi-process (``procs > 1``): the parent resolves every port-0 endpoint to a concrete port
(binding it with SO_REUSEPORT and holding it until the workers listen), then starts N worker
processes (``python -m harness.mocks --worker K``) that each serve every endpoint on those ports
with ``reuse_port=True``, so the kernel spreads connections across them. Each worker has a
private loopback admin API; the parent's admin API fans out to them: ledgers are concatenated,
fault and outage switches reach every worker, state counts are summed. The parent prints the
endpoint lines only when every worker is ready, and stops the fleet if a worker dies.

``serve_fleet_forever`` is the process entry point (``python -m harness.mocks``): it is the
only place here that installs uvloop; the library stays loop-agnostic.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
import orjson
import pyarrow as pa
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from pydantic import ValidationError

from harness.childproc import child_env, stop_event, terminate
from harness.errors import ExitCode, HarnessError, InfrastructureError
from harness.mocks.azure_openai import make_azure_app
from harness.mocks.emitter import emitter_for, merge_snapshots, with_percentiles
from harness.mocks.front import FAST_ROUTES, FastFront, FrontServer
from harness.mocks.ledger import Ledger, parquet_bytes_to_table, table_to_parquet_bytes
from harness.mocks.runtime import EndpointRuntime
from harness.profile import load_fleet
from harness.profile.load import problems_from
from harness.profile.models import Faults, Fleet, FleetEndpoint
from harness.results.schema import LEDGER_SCHEMA

PARQUET_CONTENT_TYPE: Final = "application/vnd.apache.parquet"
ENDPOINT_KEYS: Final = ("name", "cloud", "dialect", "region", "base_url", "admin_url", "deployments")

AppFactory = Callable[[EndpointRuntime], web.Application]


def _lazy(module: str, factory: str) -> AppFactory:
    """A factory imported on first use, so a fleet without Bedrock never imports its code."""

    def make(runtime: EndpointRuntime) -> web.Application:
        return getattr(importlib.import_module(module), factory)(runtime)

    return make


APP_FACTORIES: Final[dict[str, AppFactory]] = {
    "azure_openai": make_azure_app,
    "openai": _lazy("harness.mocks.azure_openai", "make_openai_app"),
    "bedrock": _lazy("harness.mocks.bedrock", "make_bedrock_app"),
    "vertex": _lazy("harness.mocks.vertex", "make_vertex_app"),
}

_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})
# aiohttp waits up to this long for in-flight requests (long streams) at stop(), twice: once for
# them to finish, once after cancelling them. The harness reads the ledger before it stops a fleet.
SHUTDOWN_TIMEOUT_S: Final = 1.0
WORKER_READY_TIMEOUT_S: Final = 60.0
"""How long the parent of a multi-process fleet waits for every worker to listen."""
WORKER_STOP_GRACE_S: Final = 5.0
ADMIN_FANOUT_TIMEOUT_S: Final = 60.0
FULL_GC_EVERY: Final = 100
"""Generation-1 collections per full collection in a serving process (CPython's default: 10)."""
YOUNG_GC_EVERY: Final = 50_000
"""Net container allocations per young collection in a serving process (CPython's default: 700).
Each young collection walks every young object still alive, i.e. the state of the requests and
streams in flight: with a few hundred open streams that is a pause every few ms, and together
with the generation-1 collections it made the TTFT and inter-token p99s 2–2.6 ms at 400 new
streams/s; at 50,000 they are 0.7–0.9 ms (bench/fidelity.py, docs/benchmarks.md). Objects die
young by reference counting, so what a collection finds grows with the work in flight, not
with this threshold; cyclic garbage waits longer for its memory."""
_PROJECT_ROOT: Final = str(Path(__file__).resolve().parents[2])


def endpoint_seed(fleet_seed: int, index: int, proc: int = 0) -> int:
    """A distinct, stable 64-bit seed for the index-th endpoint of a fleet (in worker ``proc``)."""
    key = f"{fleet_seed}/{index}" if proc == 0 else f"{fleet_seed}/{index}/{proc}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _url_host(bind_host: str) -> str:
    if bind_host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def _bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _json_error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class RunningFleet:
    """A started fleet: its endpoints' addresses, their ledgers and runtimes, and ``stop()``."""

    __slots__ = ("_runners", "admin_url", "endpoints", "fleet", "ledgers", "runtimes")

    def __init__(
        self,
        fleet: Fleet,
        endpoints: list[dict[str, Any]],
        ledgers: list[Ledger],
        admin_url: str,
        runners: list[web.AppRunner],
    ) -> None:
        self.fleet = fleet
        self.runtimes: list[EndpointRuntime] = []
        """One per endpoint, in fleet order: faults and state are switched through these."""
        self.endpoints = endpoints
        """One dict per endpoint, keys ``ENDPOINT_KEYS``."""
        self.ledgers = ledgers
        self.admin_url = admin_url
        self._runners = runners

    def runtime(self, name: str) -> EndpointRuntime | None:
        """The runtime of the endpoint called ``name``, if there is one."""
        for runtime in self.runtimes:
            if runtime.name == name:
                return runtime
        return None

    def ledger_table(self) -> pa.Table:
        """Every endpoint's ledger rows, concatenated in fleet order."""
        tables = [ledger.to_table() for ledger in self.ledgers]
        return pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()

    def reset_ledgers(self) -> None:
        for ledger in self.ledgers:
            ledger.reset()

    async def stop(self) -> None:
        """Stop every server (admin last); in-flight requests get up to 2 × ``SHUTDOWN_TIMEOUT_S``."""
        runners, self._runners = self._runners, []
        await asyncio.gather(*(r.cleanup() for r in runners[:-1]), return_exceptions=True)
        if runners:
            await runners[-1].cleanup()


# --------------------------------------------------------------------------- admin API


class AdminBackend(Protocol):
    """What the admin app needs: the local fleet (one process) or the workers (fan-out)."""

    @property
    def endpoints(self) -> list[dict[str, Any]]: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def has(self, name: str) -> bool: ...
    async def ledger_table(self) -> pa.Table: ...
    async def reset_ledgers(self) -> None: ...
    async def get_faults(self, name: str) -> dict[str, Any]: ...
    async def set_faults(self, name: str, faults: Faults) -> dict[str, Any]: ...
    async def set_outage(self, name: str, on: bool) -> dict[str, Any]: ...
    async def state(self, name: str) -> dict[str, Any]: ...
    async def emission(self) -> dict[str, Any]: ...
    async def reset_emission(self) -> None: ...
    async def record_emission(self, on: bool) -> None: ...


def _emission_snapshot() -> dict[str, Any]:
    """This process's emitter wheel timing (``harness.mocks.emitter.EmissionStats``)."""
    emitter = emitter_for(asyncio.get_running_loop())
    stats = emitter.stats
    snapshot = merge_snapshots([stats.snapshot()] if stats is not None else [])
    snapshot["recording"] = stats is not None
    return snapshot


class _LocalAdmin:
    """The admin backend of a fleet running in this process."""

    __slots__ = ("running",)

    def __init__(self, running: RunningFleet) -> None:
        self.running = running

    @property
    def endpoints(self) -> list[dict[str, Any]]:
        return self.running.endpoints

    def workers(self) -> list[dict[str, Any]]:
        return [{"pid": os.getpid(), "admin_url": self.running.admin_url}]

    def _rt(self, name: str) -> EndpointRuntime:
        runtime = self.running.runtime(name)
        assert runtime is not None  # the handlers check has() first
        return runtime

    def has(self, name: str) -> bool:
        return self.running.runtime(name) is not None

    async def ledger_table(self) -> pa.Table:
        return self.running.ledger_table()

    async def reset_ledgers(self) -> None:
        self.running.reset_ledgers()

    async def get_faults(self, name: str) -> dict[str, Any]:
        return self._rt(name).faults.model_dump()

    async def set_faults(self, name: str, faults: Faults) -> dict[str, Any]:
        self._rt(name).set_faults(faults)
        return faults.model_dump()

    async def set_outage(self, name: str, on: bool) -> dict[str, Any]:
        runtime = self._rt(name)
        runtime.set_faults(runtime.faults.model_copy(update={"outage": on}))
        return runtime.faults.model_dump()

    async def state(self, name: str) -> dict[str, Any]:
        return {"name": name, "procs": 1, **self._rt(name).counts()}

    async def emission(self) -> dict[str, Any]:
        return {"procs": 1, "pids": [os.getpid()], **_emission_snapshot()}

    async def reset_emission(self) -> None:
        stats = emitter_for(asyncio.get_running_loop()).stats
        if stats is not None:
            stats.reset()

    async def record_emission(self, on: bool) -> None:
        emitter_for(asyncio.get_running_loop()).record(on)


def merge_counts(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge per-process ``/state`` objects: counts and rejections by reason add up, pids
    concatenate, anything else (the faults, which every process shares) comes from the first."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in merged:
                merged[key] = dict(value) if key == "rejected" else value
            elif key in _SUMMED:
                merged[key] += value
            elif key == "pids":
                merged[key] = [*merged[key], *value]
            elif key == "rejected":
                for reason, n in value.items():
                    merged[key][reason] = merged[key].get(reason, 0) + n
    return merged


_SUMMED: Final = frozenset({"admitted", "in_flight", "queued", "state_items", "ledger_rows"})


class _FanOutAdmin:
    """The admin backend of a multi-process fleet: forwards to every worker's private admin API."""

    __slots__ = ("_names", "_session", "_workers", "endpoints", "worker_admin_urls")

    def __init__(self, endpoints: list[dict[str, Any]], workers: list[dict[str, Any]]) -> None:
        self.endpoints = endpoints
        self._workers = workers
        self.worker_admin_urls = [str(w["admin_url"]) for w in workers]
        self._names = frozenset(e["name"] for e in endpoints)
        self._session: aiohttp.ClientSession | None = None

    def workers(self) -> list[dict[str, Any]]:
        return self._workers

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _each(self, method: str, path: str, body: Any = None) -> list[bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADMIN_FANOUT_TIMEOUT_S))
        session = self._session
        data = orjson.dumps(body) if body is not None else None

        async def one(url: str) -> bytes:
            async with session.request(method, url + path, data=data) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise InfrastructureError(
                        f"mock worker admin {method} {url}{path} answered {resp.status}: "
                        f"{payload[:200].decode(errors='replace')}",
                        "check the fleet's stderr",
                    )
                return payload

        return list(await asyncio.gather(*(one(url) for url in self.worker_admin_urls)))

    def has(self, name: str) -> bool:
        return name in self._names

    async def ledger_table(self) -> pa.Table:
        parts = [parquet_bytes_to_table(b) for b in await self._each("GET", "/ledger")]
        return pa.concat_tables(parts) if parts else LEDGER_SCHEMA.empty_table()

    async def reset_ledgers(self) -> None:
        await self._each("POST", "/ledger/reset")

    async def get_faults(self, name: str) -> dict[str, Any]:
        return orjson.loads((await self._each("GET", f"/endpoints/{name}/faults"))[0])

    async def set_faults(self, name: str, faults: Faults) -> dict[str, Any]:
        replies = await self._each("PUT", f"/endpoints/{name}/faults", faults.model_dump())
        return orjson.loads(replies[0])

    async def set_outage(self, name: str, on: bool) -> dict[str, Any]:
        replies = await self._each("POST", f"/endpoints/{name}/outage", {"outage": on})
        return orjson.loads(replies[0])

    async def state(self, name: str) -> dict[str, Any]:
        parts = [orjson.loads(b) for b in await self._each("GET", f"/endpoints/{name}/state")]
        merged = merge_counts(parts)
        merged["procs"] = len(parts)
        return merged

    async def emission(self) -> dict[str, Any]:
        parts = [orjson.loads(b) for b in await self._each("GET", "/emission")]
        merged = merge_snapshots(parts)
        merged["recording"] = all(p["recording"] for p in parts)
        return {"procs": len(parts), "pids": [pid for p in parts for pid in p["pids"]], **merged}

    async def reset_emission(self) -> None:
        await self._each("POST", "/emission/reset")

    async def record_emission(self, on: bool) -> None:
        await self._each("PUT", "/emission", {"record": on})


async def _json_body(request: web.Request) -> tuple[Any, web.Response | None]:
    try:
        return orjson.loads(await request.read()), None
    except orjson.JSONDecodeError:
        return None, _json_error(400, "the body is not valid JSON")


def _admin_app(backend: AdminBackend) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def endpoints(_: web.Request) -> web.Response:
        return _json(backend.endpoints)

    async def workers(_: web.Request) -> web.Response:
        return _json(backend.workers())

    async def ledger(request: web.Request) -> web.Response:
        table = await backend.ledger_table()
        if request.query.get("format") == "json":
            return _json(table.to_pylist())
        return web.Response(body=table_to_parquet_bytes(table), content_type=PARQUET_CONTENT_TYPE)

    async def reset(_: web.Request) -> web.Response:
        await backend.reset_ledgers()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    def unknown(name: str) -> web.Response | None:
        if backend.has(name):
            return None
        known = ", ".join(e["name"] for e in backend.endpoints)
        return _json_error(404, f"no endpoint named {name!r} (this fleet has: {known})")

    async def faults_get(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return unknown(name) or _json(await backend.get_faults(name))

    async def faults_put(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if (missing := unknown(name)) is not None:
            return missing
        data, bad = await _json_body(request)
        if bad is not None:
            return bad
        if not isinstance(data, dict):
            return _json_error(400, "faults: expected a JSON object of fault fields")
        try:
            faults = Faults.model_validate(data)
        except ValidationError as exc:
            problems = problems_from(exc, data)
            return _json_error(400, "; ".join(f"faults.{p}" for p in problems))
        return _json(await backend.set_faults(name, faults))

    async def outage(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if (missing := unknown(name)) is not None:
            return missing
        data, bad = await _json_body(request)
        if bad is not None:
            return bad
        if not isinstance(data, dict) or set(data) != {"outage"} or not isinstance(data["outage"], bool):
            return _json_error(400, 'outage: expected {"outage": true} or {"outage": false}')
        return _json(await backend.set_outage(name, data["outage"]))

    async def state(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return unknown(name) or _json(await backend.state(name))

    async def emission_get(_: web.Request) -> web.Response:
        return _json(with_percentiles(await backend.emission()))

    async def emission_reset(_: web.Request) -> web.Response:
        await backend.reset_emission()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def emission_put(request: web.Request) -> web.Response:
        data, bad = await _json_body(request)
        if bad is not None:
            return bad
        if not isinstance(data, dict) or set(data) != {"record"} or not isinstance(data["record"], bool):
            return _json_error(400, 'emission: expected {"record": true} or {"record": false}')
        await backend.record_emission(data["record"])
        return _json({"recording": data["record"]})

    app = web.Application()
    app.router.add_get("/admin/health", health)
    app.router.add_get("/admin/endpoints", endpoints)
    app.router.add_get("/admin/workers", workers)
    app.router.add_get("/admin/ledger", ledger)
    app.router.add_post("/admin/ledger/reset", reset)
    app.router.add_get("/admin/endpoints/{name}/faults", faults_get)
    app.router.add_put("/admin/endpoints/{name}/faults", faults_put)
    app.router.add_post("/admin/endpoints/{name}/outage", outage)
    app.router.add_get("/admin/endpoints/{name}/state", state)
    app.router.add_get("/admin/emission", emission_get)
    app.router.add_post("/admin/emission/reset", emission_reset)
    app.router.add_put("/admin/emission", emission_put)
    return app


class _ArrivalStampingHandler(RequestHandler):
    """aiohttp's connection handler, plus the monotonic time of its latest socket read: the
    moment a request's last bytes arrived, which the mocks' latency model starts from
    (``runtime.arrival_time``), instead of the moment the handler got to run (on a busy mock
    ~0.3 ms later at the median and a few ms at the tail; bench/fidelity.py)."""

    __slots__ = ("arrived",)

    def data_received(self, data: bytes) -> None:
        self.arrived = time.monotonic()
        super().data_received(data)


class _ArrivalStampingServer(web.Server):
    """aiohttp's server whose connections start on the app's fast front (``harness.mocks.front``)
    when it has one, and on ``_ArrivalStampingHandler`` otherwise (or once handed over)."""

    front: FrontServer | None = None  # set by _MockRunner (the class is swapped in: no __init__)

    def handler(self) -> RequestHandler:
        return _ArrivalStampingHandler(self, loop=self._loop, **self._kwargs)

    def __call__(self) -> Any:
        front = self.front
        return self.handler() if front is None else FastFront(front)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        if self.front is not None:
            self.front.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        if self.front is None:
            await super().shutdown(timeout)
            return
        await asyncio.gather(super().shutdown(timeout), self.front.shutdown(timeout))


class _MockRunner(web.AppRunner):
    """An ``AppRunner`` whose connections stamp their reads (``_ArrivalStampingHandler``) and
    start on the app's fast front, if it declares one (``FAST_ROUTES``)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ArrivalStampingServer  # same object, a few methods more specific
        assert isinstance(server, _ArrivalStampingServer)
        matcher = self.app.get(FAST_ROUTES)
        if matcher is not None:
            server.front = FrontServer(asyncio.get_running_loop(), matcher, server.handler)
        return server


async def _start_site(
    app: web.Application, host: str, port: int, what: str, *, reuse_port: bool = False
) -> web.AppRunner:
    # handler_cancellation: a client that gives up (timeout, interrupt) cancels its handler at once, so
    # the ledger row is written when the client left, not when the handler would have finished: the
    # harness reads the ledger right after its last request, and a late row would be missing from it.
    runner = _MockRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024, reuse_port=reuse_port or None).start()
    except OSError as exc:
        await runner.cleanup()
        raise InfrastructureError(
            f"mock {what} cannot listen on {host}:{port}: {exc.strerror or exc}",
            "choose another port (0 picks a free one) or stop the process holding it",
        ) from None
    return runner


async def start_fleet(
    fleet: Fleet,
    *,
    admin_host: str = "127.0.0.1",
    admin_port: int = 0,
    ports: Sequence[int] | None = None,
    procs: int = 1,
    proc_index: int = 0,
) -> RunningFleet:
    """Start every endpoint of ``fleet`` and the admin app in the running loop.

    ``ports`` overrides the endpoints' ports (in fleet order); with ``procs > 1`` this is worker
    ``proc_index`` of ``procs``: it binds with SO_REUSEPORT and enforces 1/procs of every limit.
    Raises InfrastructureError (after stopping whatever had started) if a port cannot be bound.
    """
    runners: list[web.AppRunner] = []
    ledgers: list[Ledger] = []
    runtimes: list[EndpointRuntime] = []
    bound: list[tuple[FleetEndpoint, int]] = []
    try:
        for index, endpoint in enumerate(fleet.endpoints):
            ledger = Ledger()
            factory = APP_FACTORIES.get(endpoint.dialect)
            if factory is None:
                raise InfrastructureError(
                    f"endpoint {endpoint.name!r}: no mock for dialect {endpoint.dialect!r} yet",
                    f"use one of: {', '.join(sorted(APP_FACTORIES))}",
                )
            seed = endpoint_seed(fleet.seed, index, proc_index)
            runtime = EndpointRuntime(endpoint, ledger, seed, procs=procs)
            runtimes.append(runtime)
            app = factory(runtime)
            port = endpoint.port if ports is None else ports[index]
            runner = await _start_site(
                app, endpoint.host, port, f"endpoint {endpoint.name!r}", reuse_port=procs > 1
            )
            runners.append(runner)
            ledgers.append(ledger)
            bound.append((endpoint, _bound_port(runner)))

        running = RunningFleet(fleet, [], ledgers, "", runners)
        running.runtimes = runtimes
        admin = await _start_site(_admin_app(_LocalAdmin(running)), admin_host, admin_port, "admin API")
    except BaseException:
        await asyncio.gather(*(r.cleanup() for r in runners), return_exceptions=True)
        raise
    runners.append(admin)
    running.admin_url = f"http://{_url_host(admin_host)}:{_bound_port(admin)}/admin"
    running.endpoints.extend(
        {
            "name": endpoint.name,
            "cloud": endpoint.cloud,
            "dialect": endpoint.dialect,
            "region": endpoint.region,
            "base_url": f"http://{_url_host(endpoint.host)}:{port}",
            "admin_url": running.admin_url,
            "deployments": list(endpoint.deployments),
        }
        for endpoint, port in bound
    )
    return running


# --------------------------------------------------------------------------- process entry


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional; only the entry point may pick the loop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _stop_event(exit_on_stdin_eof: bool) -> asyncio.Event:
    return stop_event(exit_on_stdin_eof, "fleet")


def _print_lines(infos: list[dict[str, Any]]) -> None:
    out = sys.stdout.buffer
    for info in infos:
        out.write(orjson.dumps(info) + b"\n")
    out.flush()


async def _serve(
    fleet: Fleet,
    *,
    exit_on_stdin_eof: bool,
    ports: Sequence[int] | None = None,
    procs: int = 1,
    proc_index: int = 0,
) -> None:
    stop = _stop_event(exit_on_stdin_eof)
    running = await start_fleet(fleet, ports=ports, procs=procs, proc_index=proc_index)
    # Everything alive now lives as long as the process: keep it out of the collector's way, so
    # a full collection walks only per-request objects (a 60k-object walk stalls every stream
    # for ~30 ms on this machine class, which shows up as inter-token outliers).
    gc.collect()
    gc.freeze()
    # Frozen objects do not count as long-lived, so after the freeze every 10th young collection
    # would be a full one, and with a few thousand open streams a full collection walks ~100k
    # per-stream objects (20-70 ms here: every stream late by that much, then a backlog to work
    # off). One in ``FULL_GC_EVERY`` instead: a ramp to 2,000 streams no longer triggers one;
    # cyclic garbage that outlived two young collections waits longer for its memory back.
    gc.set_threshold(YOUNG_GC_EVERY, gc.get_threshold()[1], FULL_GC_EVERY)
    try:
        _print_lines(running.endpoints)
        await stop.wait()
    finally:
        await running.stop()


def reserve_ports(fleet: Fleet) -> tuple[list[int], list[socket.socket]]:
    """Bind every endpoint's (host, port) with SO_REUSEPORT, resolving port 0 to a free port.

    The sockets are bound but not listening: they keep the ports from being taken until the
    workers listen on them, and receive no connections. Close them afterwards.
    """
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        for endpoint in fleet.endpoints:
            host = endpoint.host or "0.0.0.0"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, endpoint.port))
            except OSError as exc:
                raise InfrastructureError(
                    f"mock endpoint {endpoint.name!r} cannot listen on {host}:{endpoint.port}: "
                    f"{exc.strerror or exc}",
                    "choose another port (0 picks a free one) or stop the process holding it",
                ) from None
            ports.append(int(sock.getsockname()[1]))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return ports, held


class _Worker:
    """One worker process of a multi-process fleet, as its parent sees it."""

    __slots__ = ("endpoints", "index", "proc")

    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.proc = proc
        self.endpoints: list[dict[str, Any]] = []

    async def read_ready(self, expected: int) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while len(self.endpoints) < expected:
            line = await stdout.readline()
            if not line:
                code = await self.proc.wait()
                raise InfrastructureError(
                    f"mock worker {self.index} exited with code {code} before it was ready",
                    "its error is on the fleet's stderr",
                )
            self.endpoints.append(orjson.loads(line))

    async def stop(self) -> None:
        await terminate(self.proc, WORKER_STOP_GRACE_S)


async def _spawn_worker(fleet_path: str, ports: list[int], index: int, procs: int) -> _Worker:
    env = child_env()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness.mocks",
        "--fleet",
        fleet_path,
        "--exit-on-stdin-eof",
        "--worker",
        f"{index}/{procs}",
        "--ports",
        ",".join(map(str, ports)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # a terminal's Ctrl-C reaches the parent, which stops the workers
    )
    return _Worker(index, proc)


async def _serve_procs(fleet: Fleet, fleet_path: str, procs: int, *, exit_on_stdin_eof: bool) -> None:
    stop = _stop_event(exit_on_stdin_eof)
    ports, held = reserve_ports(fleet)
    workers: list[_Worker] = []
    admin: web.AppRunner | None = None
    backend: _FanOutAdmin | None = None
    try:
        workers = [await _spawn_worker(fleet_path, ports, k, procs) for k in range(procs)]
        expected = len(fleet.endpoints)
        try:
            async with asyncio.timeout(WORKER_READY_TIMEOUT_S):
                await asyncio.gather(*(w.read_ready(expected) for w in workers))
        except TimeoutError:
            raise InfrastructureError(
                f"mock workers did not all listen within {WORKER_READY_TIMEOUT_S:g} s",
                "the machine may be overloaded; try fewer --procs",
            ) from None
        for sock in held:
            sock.close()
        held = []
        infos = [dict(info) for info in workers[0].endpoints]
        backend = _FanOutAdmin(
            infos, [{"pid": w.proc.pid, "admin_url": str(w.endpoints[0]["admin_url"])} for w in workers]
        )
        admin = await _start_site(_admin_app(backend), "127.0.0.1", 0, "admin API")
        admin_url = f"http://127.0.0.1:{_bound_port(admin)}/admin"
        for info in infos:
            info["admin_url"] = admin_url
        _print_lines(infos)
        stopped = asyncio.create_task(stop.wait())
        exits = [asyncio.create_task(w.proc.wait()) for w in workers]
        done, _ = await asyncio.wait([stopped, *exits], return_when=asyncio.FIRST_COMPLETED)
        for task in (stopped, *exits):
            task.cancel()
        if stopped not in done:
            dead = next(w for w in workers if w.proc.returncode is not None)
            raise InfrastructureError(
                f"mock worker {dead.index} (pid {dead.proc.pid}) exited with code "
                f"{dead.proc.returncode}; stopping the fleet",
                "its error is on the fleet's stderr",
            )
    finally:
        for sock in held:
            sock.close()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        if backend is not None:
            await backend.close()
        if admin is not None:
            await admin.cleanup()


def _run(main: Any) -> int:
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(main)
    except HarnessError as exc:
        print(exc.one_line(), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.PASS)


def _load(fleet_path: str) -> Fleet | int:
    try:
        return load_fleet(fleet_path)
    except HarnessError as exc:
        print(exc.one_line(), file=sys.stderr)
        return int(exc.exit_code)


def serve_fleet_forever(fleet_path: str, *, procs: int = 1, exit_on_stdin_eof: bool = False) -> int:
    """Run the fleet in ``fleet_path`` until SIGINT/SIGTERM; return the process exit code.

    Prints one JSON object per endpoint (keys ``ENDPOINT_KEYS``) on stdout once all are
    listening (in every one of ``procs`` processes). A bad fleet file prints one line to stderr
    and returns 2; a port that cannot be bound, or a worker that dies, returns 4. With
    ``exit_on_stdin_eof`` the fleet also stops when stdin closes, so a fleet started as a child
    does not outlive a parent that was killed.
    """
    if procs < 1:
        print(f"--procs must be at least 1, not {procs}", file=sys.stderr)
        return int(ExitCode.INVALID_INPUT)
    fleet = _load(fleet_path)
    if isinstance(fleet, int):
        return fleet
    if procs == 1:
        return _run(_serve(fleet, exit_on_stdin_eof=exit_on_stdin_eof))
    return _run(_serve_procs(fleet, fleet_path, procs, exit_on_stdin_eof=exit_on_stdin_eof))


def serve_worker_forever(fleet_path: str, *, index: int, procs: int, ports: Sequence[int]) -> int:
    """Worker ``index`` of a ``procs``-process fleet (started by the parent, never by hand):
    serve every endpoint on ``ports`` with SO_REUSEPORT until stdin closes or SIGTERM."""
    fleet = _load(fleet_path)
    if isinstance(fleet, int):
        return fleet
    if len(ports) != len(fleet.endpoints):
        print(f"--ports needs {len(fleet.endpoints)} ports, got {len(ports)}", file=sys.stderr)
        return int(ExitCode.INVALID_INPUT)
    return _run(_serve(fleet, exit_on_stdin_eof=True, ports=ports, procs=procs, proc_index=index))
