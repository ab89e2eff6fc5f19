"""Worker processes: one uvloop loop each, one shard of the global plan, one shared epoch.

One Python process tops out at one core; ``harness run --workers N`` (and every Locust worker)
runs the dispatcher in N child processes instead. Each child builds the same seeded plan and
keeps its shard (``harness.engine.shard``), so only a small JSON spec crosses the pipe.

The child is ``python -m harness.engine.workers`` and speaks JSON lines (like the mock fleet's
``FleetProcess``)::

    stdin  1: {"spec": {...}}           profile, endpoints (no secrets), shard k of n, id prefix, part
    stdout  : {"ready": k}              routes prepared, secrets resolved, uvloop running
    stdin  2: {"start": EPOCH_WALL_NS}  or {"stop": 1}
    stdout  : {"progress": {...}}       counters every PROGRESS_EVERY_S (plus live samples for Locust)
    stdout  : {"result": {...}}         counters and encoded HDR histograms, after the part is closed

The epoch is shipped as wall-clock ns and each child maps it onto its own monotonic clock, so
processes (and machines, with synchronised clocks) share one time axis. SIGINT/SIGTERM, a
``stop`` line or the end of stdin (the parent died) cancel the run: in-flight requests become
``cancelled`` records and the part is still closed and valid. A child that exits without a
``result`` line leaves its shard missing, and the run is INCOMPLETE, never a pass.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from harness.childproc import child_env
from harness.clock import RunEpoch
from harness.engine.shard import check_shard, shard
from harness.engine.targets import ResolvedEndpoint, prepare_routes
from harness.errors import HarnessError, InfrastructureError
from harness.metrics.histogram import LatencyHistogram
from harness.metrics.live import Snapshot, show_progress
from harness.profile import Profile, resolve_secret
from harness.profile.models import Fleet
from harness.results.record import Record
from harness.results.writer import RecordWriter
from harness.workload import build_plan
from harness.workload.closed import closed_loops

log = logging.getLogger("harness.workers")

PROGRESS_EVERY_S: Final = 0.5
READY_TIMEOUT_S: Final = 60.0
STOP_GRACE_S: Final = 10.0
STDERR_TAIL_LINES: Final = 20
COUNTER_NAMES: Final = ("planned", "sent", "in_flight", "ok", "error", "timeout", "dropped", "cancelled")
HISTOGRAMS: Final = ("schedule_lag", "loop_lag", "latency")
"""What every worker ships: schedule lag and event-loop lag (validity), and latency from the
intended time of ok requests (the same definition as ``derive.latency_ms``), all in µs."""


def part_name(k: int) -> str:
    """The records file of worker ``k`` inside ``results/<run>/parts/``."""
    return f"part-{k}.parquet"


# --------------------------------------------------------------------------- engine result


@dataclass(slots=True)
class EngineResult:
    """What the judge needs from the engine, however many processes ran it.

    Histograms are merged losslessly (same HDR layout everywhere); ``missing`` names every
    shard that did not report, with why.
    """

    id_prefix: str
    histograms: dict[str, LatencyHistogram] = field(
        default_factory=lambda: {name: LatencyHistogram() for name in HISTOGRAMS}
    )
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    workers_expected: int = 1
    workers_finished: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def schedule_lag(self) -> LatencyHistogram:
        return self.histograms["schedule_lag"]

    @property
    def loop_lag(self) -> LatencyHistogram:
        return self.histograms["loop_lag"]

    @property
    def complete(self) -> bool:
        return not self.missing and len(self.workers_finished) == self.workers_expected

    @classmethod
    def from_dispatcher(cls, dispatcher: Any) -> EngineResult:
        """The result of the in-process engine (one Dispatcher, worker 0)."""
        c = dispatcher.counters
        result = cls(dispatcher.id_prefix, workers_finished=[dispatcher.worker])
        result.histograms["schedule_lag"] = dispatcher.schedule_lag
        result.histograms["loop_lag"] = dispatcher.loop_lag
        result.counters = {name: int(getattr(c, name)) for name in COUNTER_NAMES}
        return result

    def add_shard(self, report: dict[str, Any]) -> None:
        """Merge one worker's ``result`` message."""
        for name, encoded in report["histograms"].items():
            hist = LatencyHistogram.decode(encoded)
            if name in self.histograms:
                self.histograms[name].merge(hist)
            else:
                self.histograms[name] = hist
        for name, value in report["counters"].items():
            self.counters[name] = self.counters.get(name, 0) + int(value)
        self.workers_finished.append(int(report["shard"]))
        self.workers_finished.sort()

    def to_json(self) -> dict[str, Any]:
        """The ``engine`` block of summary.json."""
        return {
            "workers_expected": self.workers_expected,
            "workers_finished": list(self.workers_finished),
            "complete": self.complete,
            "missing_shards": list(self.missing),
            "counters": dict(self.counters),
            "merged_ms": {name: h.stats_ms() for name, h in self.histograms.items()},
        }


# --------------------------------------------------------------------------- specs


def epoch_from_wall(wall_ns: int) -> RunEpoch:
    """The run epoch on this process's monotonic clock, from the epoch's wall-clock time."""
    return RunEpoch(time.monotonic_ns() + (wall_ns - time.time_ns()), wall_ns)


def _auth_spec(name: str, profile: Profile, fleet: Fleet | None) -> dict[str, Any] | None:
    """How a worker rebuilds an endpoint's auth provider (never the credentials themselves: each
    worker reads them from its own environment or the cloud's chain, as the parent did)."""
    declared = profile.target.endpoints.get(name)
    if declared is not None:
        if declared.auth in ("api-key", "none"):
            return None
        return {
            "mode": declared.auth,
            "dialect": declared.dialect,
            "aws_region": declared.aws_region or declared.region,
            "aws_service": declared.aws_service,
        }
    mock = next((e for e in fleet.endpoints if e.name == name), None) if fleet is not None else None
    if mock is not None and mock.auth_verify != "none":
        return {"mock": mock.auth_verify, "region": mock.region}
    return None


def endpoints_to_wire(
    resolved: dict[str, ResolvedEndpoint], profile: Profile, fleet: Fleet | None = None
) -> list[dict[str, Any]]:
    """Endpoints as JSON without secrets: a key from a profile variable travels as the variable's
    name and is read from each worker's own environment; other keys (the mocks' fixed key) are
    not secrets and travel as they are; auth providers travel as their configuration."""
    wire = []
    for name, ep in resolved.items():
        declared = profile.target.endpoints.get(name)
        key_env = declared.api_key_env if declared is not None else None
        wire.append(
            {
                "name": ep.name,
                "dialect": ep.dialect,
                "base_url": ep.base_url,
                "api_version": ep.api_version,
                "key_env": key_env,
                "key": None if key_env else ep.api_key,
                "auth": _auth_spec(name, profile, fleet),
            }
        )
    return wire


def endpoints_from_wire(wire: list[dict[str, Any]], source: str) -> dict[str, ResolvedEndpoint]:
    """The inverse of ``endpoints_to_wire``, reading secrets from this process's environment;
    auth providers are built here and started by the caller."""
    from harness.auth import build_provider
    from harness.auth.mock import mock_auth

    out = {}
    for e in wire:
        key = e.get("key")
        if e.get("key_env"):
            key = resolve_secret(e["key_env"], f"{source}: target.endpoints.{e['name']}.api_key_env")
        spec = e.get("auth")
        provider = None
        if spec is not None and "mock" in spec:
            provider = mock_auth(spec["mock"], spec["region"])
        elif spec is not None:
            provider = build_provider(
                spec["mode"], spec["dialect"], aws_region=spec["aws_region"], aws_service=spec["aws_service"]
            )
        out[e["name"]] = ResolvedEndpoint(
            e["name"], e["dialect"], e["base_url"], key, e["api_version"], auth=provider
        )
    return out


def make_spec(
    profile: Profile,
    source: str,
    endpoints: list[dict[str, Any]],
    *,
    shard_k: int,
    shards: int,
    id_prefix: str,
    part: Path,
    policy: dict[str, Any] | None = None,
    live_samples: bool = False,
) -> dict[str, Any]:
    """The JSON spec of one worker (see the module docstring)."""
    check_shard(shard_k, shards)
    return {
        "profile": profile.model_dump(mode="json", by_alias=True),
        "source": source,
        "base_dir": str(Path(source).resolve().parent),  # where the profile's trace files are
        "endpoints": endpoints,
        "shard": shard_k,
        "shards": shards,
        "id_prefix": id_prefix,
        "part": str(part),
        "policy": policy,
        "live_samples": live_samples,
    }


# --------------------------------------------------------------------------- the child


class ShardRun:
    """One worker's run of its shard: dispatcher, part writer, progress and result messages."""

    def __init__(
        self,
        spec: dict[str, Any],
        emit: Callable[[dict[str, Any]], None],
        judge: Callable[[Record], bool] | None = None,
    ) -> None:
        from harness.engine.dispatch import Dispatcher  # aiohttp: only once a worker runs

        self.spec = spec
        self.emit = emit
        self.judge = judge
        self.k = int(spec["shard"])
        self.n = int(spec["shards"])
        self.profile = Profile.model_validate(spec["profile"])
        self.endpoints = endpoints_from_wire(spec["endpoints"], spec["source"])
        self.routes = prepare_routes(self.profile, self.endpoints)
        self.latency = LatencyHistogram()
        self.violations = 0
        self.live = bool(spec.get("live_samples"))
        self._samples: dict[str, list[float]] = collections.defaultdict(list)
        self._errors: dict[str, dict[str, int]] = collections.defaultdict(dict)
        self._dispatcher_cls = Dispatcher
        self.dispatcher: Any = None
        self.writer: RecordWriter | None = None

    async def start_auth(self) -> None:
        """Fetch every auth provider's first credentials (before the worker reports ready)."""
        for ep in self.endpoints.values():
            if ep.auth is not None:
                await ep.auth.start()

    def _sink(self, rec: Record) -> None:
        assert self.writer is not None
        self.writer.add(rec)
        if self.judge is not None and self.judge(rec):
            self.violations += 1
        ok = rec.outcome == "ok" and rec.done_ns is not None
        if ok:
            self.latency.record_ns(rec.done_ns - rec.intended_ns)  # type: ignore[operator]
        if self.live:
            if ok:
                self._samples[rec.scenario].append(round((rec.done_ns - rec.intended_ns) / 1e6, 3))  # type: ignore[operator]
            elif rec.outcome != "cancelled":
                kinds = self._errors[rec.scenario]
                kind = rec.error_kind or rec.outcome
                kinds[kind] = kinds.get(kind, 0) + 1

    def counters(self) -> dict[str, int]:
        c = self.dispatcher.counters if self.dispatcher is not None else None
        out = {name: int(getattr(c, name)) if c is not None else 0 for name in COUNTER_NAMES}
        out["violations"] = self.violations
        return out

    def progress(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"shard": self.k, "counters": self.counters()}
        if self.live:
            msg["samples"], self._samples = dict(self._samples), collections.defaultdict(list)
            msg["errors"], self._errors = dict(self._errors), collections.defaultdict(dict)
        return msg

    async def run(self, epoch_wall_ns: int | None, stop: asyncio.Event) -> None:
        """Dispatch the shard from the epoch (None: stopped before start) and emit the result."""
        part = Path(self.spec["part"])
        part.parent.mkdir(parents=True, exist_ok=True)
        self.writer = RecordWriter(part)
        interrupted = epoch_wall_ns is None
        providers = [ep.auth for ep in self.endpoints.values() if ep.auth is not None]
        if epoch_wall_ns is not None:
            epoch = epoch_from_wall(epoch_wall_ns)
            self.dispatcher = self._dispatcher_cls(
                self.routes,
                self.profile.client,
                epoch,
                self._sink,
                worker=self.k,
                id_prefix=self.spec["id_prefix"],
                closed=closed_loops(self.profile, worker=self.k, workers=self.n),
            )
            plan = shard(build_plan(self.profile, Path(self.spec["base_dir"])), self.k, self.n)
            task = asyncio.ensure_future(self.dispatcher.run(plan))
            stopper = asyncio.ensure_future(stop.wait())
            ticker = asyncio.ensure_future(self._tick())
            try:
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not task.done():
                    interrupted = True
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                for helper in (stopper, ticker):
                    helper.cancel()
                await asyncio.gather(stopper, ticker, return_exceptions=True)
            interrupted = interrupted or self.dispatcher.stopped_early
        for provider in providers:
            await provider.close()
        self.writer.close()
        self.emit({"progress": self.progress()})
        histograms = {"latency": self.latency.encode()}
        if self.dispatcher is not None:
            histograms["schedule_lag"] = self.dispatcher.schedule_lag.encode()
            histograms["loop_lag"] = self.dispatcher.loop_lag.encode()
        self.emit(
            {
                "result": {
                    "shard": self.k,
                    "counters": {k: v for k, v in self.counters().items() if k != "in_flight"},
                    "histograms": histograms,
                    "interrupted": interrupted,
                    "part": str(part),
                }
            }
        )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self.emit({"progress": self.progress()})


def _live_judge(policy: dict[str, Any] | None) -> Callable[[Record], bool] | None:
    """The live violation count of ``harness.runner.LiveJudge``, without importing the runner
    (its imports would add seconds to every worker's start)."""
    if policy is None:
        return None
    from harness.compliance import CompiledPolicy, model_family, request_class
    from harness.profile import Policy

    compiled = CompiledPolicy(Policy.model_validate(policy))

    def violated(rec: Record) -> bool:
        if rec.status <= 0:
            return False
        cls = request_class(rec.api, rec.store, rec.previous_response_id)
        decision = compiled.decide(
            cls,
            model_family(rec.model),
            rec.api,
            rec.tenant,
            rec.sold_through,
            rec.mock_cloud or rec.fp_cloud,
            rec.mock_region or rec.fp_region,
        )
        return not decision.allowed

    return violated


async def child_main() -> int:
    """The worker process: read the spec, report ready, run from the epoch, report the result."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    def emit(msg: dict[str, Any]) -> None:
        out.write(orjson.dumps(msg) + b"\n")
        out.flush()

    line = await reader.readline()
    if not line:
        return 0
    spec = orjson.loads(line)["spec"]
    try:
        run = ShardRun(spec, emit, _live_judge(spec.get("policy")))
        await run.start_auth()
    except HarnessError as exc:
        emit({"error": exc.one_line()})
        return int(exc.exit_code)
    stop = asyncio.Event()

    def on_signal() -> None:
        stop.set()  # repeated signals (terminal Ctrl-C plus the parent's forward) change nothing

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    emit({"ready": run.k})

    start: int | None = None
    reading = asyncio.ensure_future(reader.readline())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if reading.done() and reading.result():
        start = orjson.loads(reading.result()).get("start")
    for pending in (reading, stopping):
        pending.cancel()

    async def watch_stdin() -> None:
        while True:  # a "stop" line or EOF (the parent is gone) ends the run early
            line = await reader.readline()
            if not line or "stop" in orjson.loads(line):
                stop.set()
                return

    watcher = asyncio.ensure_future(watch_stdin()) if start is not None else None
    try:
        await run.run(start, stop)
    finally:
        if watcher is not None:
            watcher.cancel()
    return 0


def main() -> None:
    """The process entry point owns the loop (STYLE 13): uvloop where available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        sys.exit(asyncio.run(child_main()))
    sys.exit(uvloop.run(child_main()))


# --------------------------------------------------------------------------- the parent


class WorkerProcess:
    """One worker child, driven from the parent's event loop."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.k = int(spec["shard"])
        self.proc: asyncio.subprocess.Process | None = None
        self.counters: dict[str, int] = {}
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.ready = asyncio.Event()
        self.on_progress: Callable[[dict[str, Any]], None] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def spawn(self) -> None:
        env = child_env()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "harness.engine.workers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the parent, which forwards it
        )
        self.send({"spec": self.spec})
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._drain_stderr())]

    def send(self, msg: dict[str, Any]) -> None:
        proc = self.proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.write(orjson.dumps(msg) + b"\n")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if "progress" in msg:
                self.counters = msg["progress"]["counters"]
                if self.on_progress is not None:
                    self.on_progress(msg["progress"])
            elif "result" in msg:
                self.result = msg["result"]
            elif "ready" in msg:
                self.ready.set()
            elif "error" in msg:
                self.error = str(msg["error"])
        self.ready.set()  # EOF: whoever waits for ready must look at the exit instead

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self._stderr.append(line.decode(errors="replace").rstrip())

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return code

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def missing_reason(self, n: int) -> str:
        """Why this worker's shard is missing, for the verdict."""
        code = self.proc.returncode if self.proc is not None else None
        how = f"exited with code {code}" if code is not None else "did not finish in time"
        if code is not None and code < 0:
            how = f"was killed by signal {-code}"
        detail = self.error or (self._stderr[-1] if self._stderr else "")
        return f"shard {self.k} of {n} missing: worker {self.k} (pid {self.pid}) {how} before reporting" + (
            f" ({detail})" if detail else ""
        )


class LocalWorkers:
    """N worker children on this machine: start, handshake, forward signals, merge results."""

    def __init__(self, specs: list[dict[str, Any]], id_prefix: str) -> None:
        self.workers = [WorkerProcess(s) for s in specs]
        self.id_prefix = id_prefix
        self.epoch: RunEpoch | None = None
        self.stop_before_start = False

    def totals(self) -> dict[str, int]:
        """Counters summed over the workers' latest progress messages."""
        out: collections.Counter[str] = collections.Counter()
        for w in self.workers:
            out.update(w.counters)
        return dict(out)

    async def start(self, lead_ns: int) -> RunEpoch:
        """Spawn every worker, wait until all are ready, then send them one epoch ``lead_ns`` ahead."""
        await asyncio.gather(*(w.spawn() for w in self.workers))
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await asyncio.gather(*(w.ready.wait() for w in self.workers))
        except TimeoutError:
            pass
        not_ready = [w for w in self.workers if w.proc is None or w.proc.returncode is not None or w.error]
        if not_ready:
            await self.stop()
            w = not_ready[0]
            if w.proc is not None and w.proc.returncode is None:
                w.signal(signal.SIGKILL)
            await w.wait()
            raise InfrastructureError(
                w.missing_reason(len(self.workers)),
                "run `harness run` without --workers to see the whole error",
            )
        self.epoch = RunEpoch.now(lead_ns=lead_ns)
        for w in self.workers:  # interrupted while starting: each closes an empty part and reports
            w.send({"stop": 1} if self.stop_before_start else {"start": self.epoch.wall_ns})
        log.info(
            "%d workers ready (pids %s); epoch %d ns wall",
            len(self.workers),
            ", ".join(str(w.pid) for w in self.workers),
            self.epoch.wall_ns,
        )
        return self.epoch

    def interrupt(self) -> None:
        """SIGINT every worker: each cancels its in-flight requests and closes its part.

        Before the start (workers still importing) nothing is signalled: they are told to stop
        instead of start once ready.
        """
        if self.epoch is None:
            self.stop_before_start = True
            return
        for w in self.workers:
            w.signal(signal.SIGINT)

    async def stop(self) -> None:
        """Ask every worker to stop (end of stdin), then make sure none outlives the run."""
        for w in self.workers:
            if w.proc is not None and w.proc.stdin is not None:
                w.proc.stdin.close()
        await self._reap(STOP_GRACE_S)

    async def _reap(self, grace_s: float) -> None:
        alive = [w for w in self.workers if w.proc is not None]
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.gather(*(w.wait() for w in alive))
        except TimeoutError:
            for w in alive:
                w.signal(signal.SIGKILL)
            await asyncio.gather(*(w.wait() for w in alive))

    async def finish(self, timeout_s: float) -> EngineResult:
        """Wait for every worker (killing any still running after ``timeout_s``) and merge."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(w.wait() for w in self.workers))
        except TimeoutError:
            pass
        log.info(
            "workers exited with codes %s", [w.proc.returncode if w.proc else None for w in self.workers]
        )
        await self.stop()
        n = len(self.workers)
        result = EngineResult(self.id_prefix, workers_expected=n)
        for w in self.workers:
            if w.result is not None:
                result.add_shard(w.result)
            else:
                result.missing.append(w.missing_reason(n))
        return result

    def interrupted(self) -> bool:
        return any(w.result is not None and w.result.get("interrupted") for w in self.workers)


async def run_local_workers(
    pool: LocalWorkers,
    *,
    lead_ns: int,
    timeout_s: float,
    snapshot: Callable[[RunEpoch, dict[str, int]], Snapshot],
    console: Any,
    progress: bool,
) -> tuple[EngineResult, bool]:
    """Run the pool with the parent's SIGINT/SIGTERM forwarded; returns (result, interrupted).

    The first signal is forwarded to every worker (they write partial parts); a second one
    kills the workers and exits at once, like the in-process run.
    """
    from harness.errors import ExitCode

    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            console.print(
                "[yellow]interrupted: workers are cancelling in-flight requests and writing partial "
                "results (signal again to stop at once)[/]"
            )
            pool.interrupt()
        else:
            for w in pool.workers:
                w.signal(signal.SIGKILL)
            os._exit(int(ExitCode.INTERRUPTED))

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    view: asyncio.Future[None] | None = None
    try:
        epoch = await pool.start(lead_ns)
        if progress:
            view = asyncio.ensure_future(show_progress(lambda: snapshot(epoch, pool.totals()), console))
        result = await pool.finish(timeout_s)
    finally:
        if view is not None:
            view.cancel()
            await asyncio.gather(view, return_exceptions=True)
        for sig in installed:
            loop.remove_signal_handler(sig)
        await pool.stop()
    return result, signals_seen > 0 or pool.interrupted()


if __name__ == "__main__":
    main()
