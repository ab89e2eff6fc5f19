"""Start a whole mock fleet in one event loop: one aiohttp server per endpoint, one admin server.

Admin API (bound to loopback only; the endpoints may listen elsewhere):

    GET  /admin/health                 {"ok": true}
    GET  /admin/endpoints              the endpoint info list (see ``RunningFleet.endpoints``)
    GET  /admin/ledger                 every endpoint's ledger as one Parquet file (LEDGER_SCHEMA)
    GET  /admin/ledger?format=json     the same rows as a JSON list of objects
    POST /admin/ledger/reset           forget every row

``serve_fleet_forever`` is the process entry point (``python -m harness.mocks``): it is the
only place here that installs uvloop; the library stays loop-agnostic.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

import orjson
import pyarrow as pa
from aiohttp import web

from harness.errors import ExitCode, HarnessError, InfrastructureError
from harness.mocks.azure_openai import make_azure_app
from harness.mocks.ledger import Ledger, table_to_parquet_bytes
from harness.mocks.runtime import EndpointRuntime
from harness.profile import load_fleet
from harness.profile.models import Fleet, FleetEndpoint
from harness.results.schema import LEDGER_SCHEMA

PARQUET_CONTENT_TYPE: Final = "application/vnd.apache.parquet"
ENDPOINT_KEYS: Final = ("name", "cloud", "dialect", "region", "base_url", "admin_url", "deployments")

AppFactory = Callable[[EndpointRuntime], web.Application]


def _lazy(module: str, factory: str) -> AppFactory:
    """A factory imported on first use, so a fleet without Bedrock never imports its code."""

    def make(runtime: EndpointRuntime) -> web.Application:
        return getattr(importlib.import_module(module), factory)(runtime)  # type: ignore[no-any-return]

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


def endpoint_seed(fleet_seed: int, index: int) -> int:
    """A distinct, stable 64-bit seed for the index-th endpoint of a fleet."""
    digest = hashlib.blake2b(f"{fleet_seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _url_host(bind_host: str) -> str:
    if bind_host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def _bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


class RunningFleet:
    """A started fleet: its endpoints' addresses, their ledgers, and ``stop()``."""

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


def _admin_app(running: RunningFleet) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def endpoints(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(running.endpoints), content_type="application/json")

    async def ledger(request: web.Request) -> web.Response:
        table = running.ledger_table()
        if request.query.get("format") == "json":
            return web.Response(body=orjson.dumps(table.to_pylist()), content_type="application/json")
        return web.Response(body=table_to_parquet_bytes(table), content_type=PARQUET_CONTENT_TYPE)

    async def reset(_: web.Request) -> web.Response:
        running.reset_ledgers()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/admin/health", health)
    app.router.add_get("/admin/endpoints", endpoints)
    app.router.add_get("/admin/ledger", ledger)
    app.router.add_post("/admin/ledger/reset", reset)
    return app


async def _start_site(app: web.Application, host: str, port: int, what: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
    except OSError as exc:
        await runner.cleanup()
        raise InfrastructureError(
            f"mock {what} cannot listen on {host}:{port}: {exc.strerror or exc}",
            "choose another port (0 picks a free one) or stop the process holding it",
        ) from None
    return runner


async def start_fleet(fleet: Fleet, *, admin_host: str = "127.0.0.1", admin_port: int = 0) -> RunningFleet:
    """Start every endpoint of ``fleet`` and the admin app in the running loop.

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
            runtime = EndpointRuntime(endpoint, ledger, endpoint_seed(fleet.seed, index))
            runtimes.append(runtime)
            app = factory(runtime)
            runner = await _start_site(app, endpoint.host, endpoint.port, f"endpoint {endpoint.name!r}")
            runners.append(runner)
            ledgers.append(ledger)
            bound.append((endpoint, _bound_port(runner)))

        running = RunningFleet(fleet, [], ledgers, "", runners)
        running.runtimes = runtimes
        admin = await _start_site(_admin_app(running), admin_host, admin_port, "admin API")
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


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop the fleet when stdin reaches EOF, i.e. when the parent that holds the pipe dies."""

    fd = sys.stdin.fileno()

    def read_until_eof() -> None:
        # os.read on the raw fd: a daemon thread blocked inside sys.stdin's buffered reader holds
        # its lock at interpreter shutdown, which aborts the process.
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:
            pass  # the loop is already closed

    threading.Thread(target=read_until_eof, name="fleet-stdin-watch", daemon=True).start()


async def _serve(fleet: Fleet, *, exit_on_stdin_eof: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    running = await start_fleet(fleet)
    try:
        out = sys.stdout.buffer
        for info in running.endpoints:
            out.write(orjson.dumps(info) + b"\n")
        out.flush()
        if exit_on_stdin_eof:
            _watch_stdin(loop, stop)
        await stop.wait()
    finally:
        await running.stop()


def serve_fleet_forever(fleet_path: str, *, exit_on_stdin_eof: bool = False) -> int:
    """Run the fleet in ``fleet_path`` until SIGINT/SIGTERM; return the process exit code.

    Prints one JSON object per endpoint (keys ``ENDPOINT_KEYS``) on stdout once all are
    listening. A bad fleet file prints one line to stderr and returns 2; a port that cannot be
    bound returns 4. With ``exit_on_stdin_eof`` the fleet also stops when stdin closes, so a
    fleet started as a child does not outlive a parent that was killed.
    """
    try:
        fleet = load_fleet(fleet_path)
    except HarnessError as exc:
        print(exc.one_line(), file=sys.stderr)
        return int(exc.exit_code)
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(_serve(fleet, exit_on_stdin_eof=exit_on_stdin_eof))
    except HarnessError as exc:
        print(exc.one_line(), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.PASS)
