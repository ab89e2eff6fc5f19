"""The router as a server: load the policy, find the backends, listen, print the ready line.

Routes (served by ``harness.router.server``): ``/openai/...`` and ``/v1/...`` (every inbound form,
see harness.router.decide) go to the proxy; the router's own loopback API is
``GET /router/health`` and ``GET /router/state`` (backends, in-flight counts, affinity entries,
injection and failover counts).

Ready line (one JSON object on stdout, once listening; ``READY_KEYS``)::

    name               "router"
    base_url           http://HOST:PORT                  (what AzureOpenAI(azure_endpoint=...) takes)
    azure_endpoint     the same
    azure_v1_base_url  http://HOST:PORT/openai/v1        (OpenAI(base_url=...) against Azure's v1 form)
    openai_base_url    http://HOST:PORT/v1               (OpenAI(base_url=...))
    router_url         http://HOST:PORT/router           (health and state)
    admin_url          the fleet's admin API (ledgers, faults, outages)
    log                absolute path of the injection log (JSONL, see harness.router.inject)
    policy             the policy's name
    pid                the router's process id
    backends           [{"name", "cloud", "region", "dialect", "base_url", "models"}]

``serve_router_forever`` is the process entry point: the only place here that installs uvloop.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from harness.childproc import stop_event
from harness.compliance.policy import CompiledPolicy
from harness.errors import ExitCode, HarnessError, InfrastructureError, InputError
from harness.profile import load_policy
from harness.router.backends import BackendTable, fetch_endpoints
from harness.router.decide import STRATEGIES, Balancer, Strategy
from harness.router.inject import SWITCHES, Injector, Rates
from harness.router.proxy import DEFAULT_API_VERSION, Proxy
from harness.router.server import Connection, Handler, Request, Server, serve
from harness.router.upstream import Upstream

if TYPE_CHECKING:
    from harness.mocks.process import FleetProcess

READY_KEYS: Final = (
    "name",
    "base_url",
    "azure_endpoint",
    "azure_v1_base_url",
    "openai_base_url",
    "router_url",
    "admin_url",
    "log",
    "policy",
    "pid",
    "backends",
)
CONNECT_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Everything ``harness router`` takes; exactly one of ``fleet`` and ``attach_admin``."""

    policy: str
    fleet: str | None = None
    attach_admin: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    log: str = "router-log.jsonl"
    rates: Rates = field(default_factory=Rates)
    strategy: Strategy = "round-robin"
    fleet_procs: int = 1
    connections: int = 1024  # upstream keep-alive connections per backend (more wait their turn)
    read_timeout_s: float = 300.0  # longest silence between two upstream reads
    api_version: str = DEFAULT_API_VERSION  # for OpenAI-form calls sent to Azure deployment paths

    def check(self) -> None:
        """Raise InputError for a flag combination that cannot work."""
        if (self.fleet is None) == (self.attach_admin is None):
            raise InputError(
                "the router needs exactly one of --fleet and --attach-admin",
                "pass --fleet FILE to start a fleet, or --attach-admin http://127.0.0.1:PORT/admin",
            )
        if self.strategy not in STRATEGIES:
            raise InputError(f"--balance must be one of {', '.join(STRATEGIES)}", "pick one of them")
        if self.fleet_procs < 1:
            raise InputError("--fleet-procs must be at least 1", "use 1 for a single process")
        if self.connections < 1:
            raise InputError("--connections must be at least 1", "use e.g. 1024")


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class RunningRouter:
    """A started router: its ready line (``info``), its parts, and ``stop()``."""

    __slots__ = ("_server", "fleet", "info", "injector", "proxy", "upstreams")

    def __init__(
        self,
        info: dict[str, Any],
        proxy: Proxy,
        server: Server,
        upstreams: list[Upstream],
        injector: Injector,
        fleet: FleetProcess | None,
    ) -> None:
        self.info = info
        self.proxy = proxy
        self._server = server
        self.upstreams = upstreams
        self.injector = injector
        self.fleet = fleet

    async def stop(self) -> None:
        """Stop listening, close the upstream pools and the log, stop the fleet if we started it."""
        try:
            await self._server.close()
            for upstream in self.upstreams:
                upstream.close()
        finally:
            self.injector.close()
            if self.fleet is not None:
                await self.fleet.stop()


_HEALTH: Final = b'{"ok":true}'
_JSON: Final = b"Content-Type: application/json\r\n"
_TEXT: Final = b"Content-Type: text/plain; charset=utf-8\r\n"


def make_router_handler(proxy: Proxy) -> Handler:
    """The server's handler: every inbound form goes to ``proxy.handle``; plus ``GET
    /router/health`` and ``GET /router/state``; anything else is a 404."""

    def state() -> bytes:
        backends = proxy.table.describe()
        for info, n in zip(backends, proxy.balancer.in_flight, strict=True):
            info["in_flight"] = n
        body = {
            **proxy.counts,
            "affinity_entries": len(proxy.affinity),
            "injections": proxy.injector.counts,
            "backends": backends,
        }
        return orjson.dumps(body)

    async def handle(request: Request, conn: Connection) -> None:
        path = request.path
        if path.startswith(("/openai/", "/v1/")):
            await proxy.handle(request, conn)
        elif path in ("/router/health", "/router/state"):
            if request.method != "GET":
                conn.respond(405, b"Allow: GET\r\n" + _TEXT, b"405: Method Not Allowed")
            else:
                conn.respond(200, _JSON, _HEALTH if path == "/router/health" else state())
        else:
            conn.respond(404, _TEXT, b"404: Not Found")

    return handle


async def start_router(config: RouterConfig) -> RunningRouter:
    """Load the policy, start (or attach to) the fleet, listen; raise HarnessError on bad input."""
    config.check()
    policy = CompiledPolicy(load_policy(config.policy))
    fleet: FleetProcess | None = None
    if config.fleet is not None:
        from harness.mocks.process import FleetProcess  # pyarrow: only when we start the fleet

        fleet = FleetProcess(config.fleet, procs=config.fleet_procs)
        endpoints = await fleet.start()
        admin_url = fleet.admin_url
    else:
        assert config.attach_admin is not None
        admin_url = config.attach_admin.rstrip("/")
        endpoints = await fetch_endpoints(admin_url)
    upstreams: list[Upstream] = []
    injector: Injector | None = None
    try:
        table = BackendTable.from_endpoints(endpoints)
        injector = Injector(config.rates, config.seed, config.log)
        upstreams = [
            Upstream(
                b.base_url,
                limit=config.connections,
                connect_timeout_s=CONNECT_TIMEOUT_S,
                read_timeout_s=config.read_timeout_s,
            )
            for b in table.backends
        ]
        proxy = Proxy(
            table,
            policy,
            injector,
            Balancer(len(table), config.strategy),
            upstreams,
            api_version=config.api_version,
        )
        try:
            server = await serve(make_router_handler(proxy), config.host, config.port, backlog=1024)
        except OSError as exc:
            raise InfrastructureError(
                f"the router cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                "choose another --port (0 picks a free one)",
            ) from None
    except BaseException:
        for upstream in upstreams:
            upstream.close()
        if injector is not None:
            injector.close()
        if fleet is not None:
            await fleet.stop()
        raise
    base = f"http://{_url_host(config.host)}:{server.port}"
    info = {
        "name": "router",
        "base_url": base,
        "azure_endpoint": base,
        "azure_v1_base_url": base + "/openai/v1",
        "openai_base_url": base + "/v1",
        "router_url": base + "/router",
        "admin_url": admin_url,
        "log": injector.log_path,
        "policy": policy.policy.name,
        "pid": os.getpid(),
        "backends": table.describe(),
    }
    return RunningRouter(info, proxy, server, upstreams, injector, fleet)


# --------------------------------------------------------------------------- process entry


def _stop_event(exit_on_stdin_eof: bool) -> asyncio.Event:
    return stop_event(exit_on_stdin_eof, "router")


async def _serve(config: RouterConfig, exit_on_stdin_eof: bool) -> None:
    stop = _stop_event(exit_on_stdin_eof)
    running = await start_router(config)
    gc.collect()
    gc.freeze()  # long-lived objects out of the collector's walks: fewer pauses inside streams
    try:
        sys.stdout.buffer.write(orjson.dumps(running.info) + b"\n")
        sys.stdout.buffer.flush()
        await stop.wait()
    finally:
        await running.stop()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional; only the entry point picks the loop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_router_forever(config: RouterConfig, *, exit_on_stdin_eof: bool = False) -> int:
    """Run the router until SIGINT/SIGTERM (or stdin EOF); return the process exit code.

    Bad input prints one line to stderr and returns 2; a fleet or port that cannot be started
    returns 4.
    """
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(_serve(config, exit_on_stdin_eof))
    except HarnessError as exc:
        print(exc.one_line(), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.PASS)


def rates_from_flags(**flags: float) -> Rates:
    """``Rates`` from ``misroute_rate=...`` style keywords (the CLI's flag names)."""
    return Rates(**{s: float(flags.get(f"{s}_rate", 0.0)) for s in SWITCHES})
