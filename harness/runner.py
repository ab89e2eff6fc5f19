"""One run, end to end: validate → start the embedded fleet → dispatch the plan → write results
→ judge compliance → verdict.

This is the library entry point behind ``harness run``; the CLI only parses flags, owns the
event loop and maps the verdict to an exit code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow.parquet as pq
from pydantic import ValidationError
from rich.console import Console

from harness.auth import build_provider
from harness.auth.mock import mock_auth
from harness.clock import RunEpoch
from harness.compliance import CompiledPolicy, judge, model_family, request_class
from harness.compliance.judge import attribute_records
from harness.compliance.router_log import read_log as read_router_log, self_test as router_self_test
from harness.engine.dispatch import Dispatcher, request_id_prefix
from harness.engine.targets import ResolvedEndpoint, prepare_routes
from harness.engine.workers import (
    EngineResult,
    LocalWorkers,
    endpoints_to_wire,
    make_spec,
    part_name,
    run_local_workers,
)
from harness.errors import ExitCode, HarnessError, InfrastructureError, Problem, ProfileError
from harness.gate.evaluate import RunData, check_selectors
from harness.gate.live import LiveGate
from harness.gate.verdict import (
    Verdict,
    compose,
    evaluate_all,
    load_baseline,
    parse_thresholds,
    threshold_error,
)
from harness.metrics.live import LiveStats, Snapshot, show_progress
from harness.mocks.process import FleetProcess
from harness.profile import LoadedProfile, Profile, check_remote, load_profile, resolve_secret
from harness.profile.load import problems_from
from harness.profile.models import ROUTER_ENDPOINT
from harness.results import rundir
from harness.results.reader import read_ledger, read_records
from harness.results.record import Record
from harness.results.summary import summarize, write_summary
from harness.results.writer import RecordWriter
from harness.workload import Planned, build_plan, planned_rate_rps
from harness.workload.closed import closed_loops
from harness.workload.plan import scenario_rates_rps

if TYPE_CHECKING:
    from harness.metrics.prometheus import PrometheusExporter
    from harness.router.process import RouterProcess

log = logging.getLogger("harness.run")

# The key the engine sends to the embedded mock fleet when the profile names no variable. Mocks
# accept any key; it is not a secret and is never written anywhere.
MOCK_API_KEY = "mock-key"
START_LEAD_NS = 200_000_000  # the epoch lies this far ahead so setup never eats into the plan
WORKER_SLACK_S = 30.0  # beyond the plan and its drain, how long workers may take to close their parts


@dataclass(slots=True)
class RunOutcome:
    run_dir: Path
    exit_code: ExitCode
    verdict: str
    reasons: list[str]
    summary: dict[str, Any]
    compliance: dict[str, Any]
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


class LiveJudge:
    """Counts violations as records complete, from their fingerprints, for the progress line.

    The authoritative judgement runs after the run on the records and the ledgers.
    """

    __slots__ = ("policy", "violations")

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self.violations = 0

    def __call__(self, rec: Record) -> bool:
        if rec.status <= 0:
            return False
        cloud = rec.mock_cloud or rec.fp_cloud
        cls = request_class(rec.api, rec.store, rec.previous_response_id)
        decision = self.policy.decide(
            cls,
            model_family(rec.model),
            rec.api,
            rec.tenant,
            rec.sold_through,
            cloud,
            rec.mock_region or rec.fp_region,
        )
        if not decision.allowed:
            self.violations += 1
            return True
        return False


def _resolve_endpoints(
    loaded: LoadedProfile, fleet_endpoints: list[dict[str, Any]]
) -> dict[str, ResolvedEndpoint]:
    """Every endpoint with its credentials: the mock key (or the mock's dummy credentials when
    it verifies them) for fleet endpoints, the profile's auth mode for external ones. Auth
    providers are built here and started by the caller (:func:`start_auth`)."""
    verify = {e.name: e for e in loaded.fleet.endpoints} if loaded.fleet is not None else {}
    resolved: dict[str, ResolvedEndpoint] = {}
    for info in fleet_endpoints:
        name = info["name"]
        fleet_ep = verify.get(name)
        auth = mock_auth(fleet_ep.auth_verify, fleet_ep.region) if fleet_ep is not None else None
        key = None if auth is not None else MOCK_API_KEY
        resolved[name] = ResolvedEndpoint(name, info["dialect"], info["base_url"], key, auth=auth)
    for name, ep in loaded.profile.target.endpoints.items():
        key = resolve_secret(ep.api_key_env, f"{loaded.path}: target.endpoints.{name}.api_key_env")
        provider = None
        if ep.auth not in ("api-key", "none"):  # api-key: the template carries the key (the fast path)
            provider = build_provider(
                ep.auth, ep.dialect, aws_region=ep.aws_region or ep.region, aws_service=ep.aws_service
            )
        resolved[name] = ResolvedEndpoint(name, ep.dialect, ep.base_url, key, ep.api_version, auth=provider)
    return resolved


async def start_auth(endpoints: dict[str, ResolvedEndpoint]) -> None:
    """Fetch every provider's first credentials before the first arrival (errors abort the run)."""
    for ep in endpoints.values():
        if ep.auth is not None:
            await ep.auth.start()
            log.info("endpoint %s: auth %s ready", ep.name, ep.auth.kind)


async def close_auth(endpoints: dict[str, ResolvedEndpoint]) -> None:
    for ep in endpoints.values():
        if ep.auth is not None:
            await ep.auth.close()


def _setup_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / rundir.RUN_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("harness").addHandler(handler)
    logging.getLogger("harness").setLevel(logging.INFO)
    return handler


def prepare(
    profile_path: str | Path, *, duration_s: float | None = None, thresholds: Sequence[str] = ()
) -> LoadedProfile:
    """Validate everything that can be validated before anything starts.

    ``duration_s`` overrides the profile's duration (it is validated like the profile's own
    value and recorded in the resolved profile). ``thresholds`` (``--threshold``) are appended
    to the profile's; every threshold is parsed and checked here, so a bad one is exit 2.
    """
    loaded = load_profile(profile_path)
    if duration_s is not None:
        data = loaded.profile.model_dump(by_alias=True)
        data["duration_s"] = duration_s
        try:
            profile = Profile.model_validate(data)
        except ValidationError as exc:
            raise ProfileError("--duration-s", problems_from(exc, data)) from None
        loaded = dataclasses.replace(loaded, profile=profile)
    _check_thresholds(loaded, thresholds)
    if thresholds:
        every = [*loaded.profile.thresholds, *thresholds]
        loaded = dataclasses.replace(loaded, profile=loaded.profile.model_copy(update={"thresholds": every}))
    check_remote(loaded)
    for name, ep in loaded.profile.target.endpoints.items():
        resolve_secret(ep.api_key_env, f"{loaded.path}: target.endpoints.{name}.api_key_env")
    return loaded


def _check_thresholds(loaded: LoadedProfile, extra: Sequence[str]) -> None:
    """Parse the profile's thresholds and ``--threshold`` ones; check selectors and the baseline."""
    profile = loaded.profile
    own, problems = parse_thresholds(profile.thresholds)
    cli, cli_problems = parse_thresholds(extra, "--threshold")
    problems += cli_problems
    keyed = [*own.items(), *cli.items()]
    scenarios = {s.name for s in profile.scenarios}
    endpoints = {r.endpoint for s in profile.scenarios for r in s.routes}
    for key, t in keyed:
        problem = check_selectors(t, scenarios, endpoints)
        if problem is not None:
            problems.append(Problem(key, problem.replace("this run", "this profile")))
        if t.baseline and profile.gate.baseline is None:
            problems.append(Problem(key, "compares with baseline, but gate.baseline names no run directory"))
    baseline = profile.gate.baseline
    uses_baseline = any(t.baseline for _, t in keyed)
    if baseline is not None and uses_baseline and not (Path(baseline) / rundir.SUMMARY).is_file():
        problems.append(Problem("gate.baseline", f"{baseline} is not a finished run directory"))
    if problems:
        raise threshold_error(str(loaded.path), problems)


async def run_loaded(
    loaded: LoadedProfile,
    results_root: Path,
    *,
    console: Console | None = None,
    progress: bool = True,
    report: bool = True,
    prometheus: tuple[str, int] | None = None,
    workers: int = 1,
) -> RunOutcome:
    """Run a validated profile and write its run directory. Installs SIGINT/SIGTERM handlers
    for the duration: the first signal stops the run gracefully, the second exits at once.

    With ``report``, the run directory also gets summary.md, report.html and junit.xml (the
    same files ``harness report`` rebuilds from disk). ``prometheus`` = (host, port) serves
    live metrics there while the run lasts (:mod:`harness.metrics.prometheus`; port 0: any).
    ``workers`` > 1 dispatches in that many worker processes, each on its shard of the plan
    (``harness.engine.workers``).
    """
    console = console or Console(stderr=True)
    profile = loaded.profile
    run_dir = rundir.new_run_dir(results_root, profile.name)
    handler = _setup_log(run_dir)
    try:
        outcome = await _run(loaded, run_dir, console, progress, prometheus, workers)
        if report:
            from harness.report import write_report  # matplotlib: only when a report is wanted

            started = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, write_report, run_dir)
            log.info("report written in %.1f s", time.monotonic() - started)
        return outcome
    finally:
        logging.getLogger("harness").removeHandler(handler)
        handler.close()


async def _run(
    loaded: LoadedProfile,
    run_dir: Path,
    console: Console,
    progress: bool,
    prometheus: tuple[str, int] | None = None,
    workers: int = 1,
) -> RunOutcome:
    profile = loaded.profile
    rundir.write_json(run_dir / rundir.PROFILE, profile.model_dump(mode="json", by_alias=True))
    log.info("run %s: profile %s, seed %d", run_dir.name, loaded.path, profile.seed)
    if not profile.client.tls_verify:
        log.warning("client.tls_verify = false: server certificates are NOT checked in this run")

    fleet: FleetProcess | None = None
    fleet_endpoints: list[dict[str, Any]] = []
    if loaded.fleet_path is not None:
        fleet = FleetProcess(loaded.fleet_path)
        fleet_endpoints = await fleet.start()
        for info in fleet_endpoints:
            log.info(
                "mock endpoint %s (%s, %s) at %s",
                info["name"],
                info["cloud"],
                info["region"],
                info["base_url"],
            )
    interrupted = False
    started_wall = datetime.now(UTC)
    endpoints: dict[str, ResolvedEndpoint] = {}
    exporter: PrometheusExporter | None = None
    gauges: asyncio.Future[None] | None = None
    router: RouterProcess | None = None
    events_task: asyncio.Future[None] | None = None
    events_applied: list[dict[str, Any]] = []
    fleet_failed = False
    try:
        endpoints = _resolve_endpoints(loaded, fleet_endpoints)
        if profile.target.router is not None and fleet is not None:
            router, endpoints[ROUTER_ENDPOINT] = await _start_router(loaded, fleet, run_dir)
        await start_auth(endpoints)
        routes = prepare_routes(profile, endpoints)
        if workers > 1:
            return await _run_workers(
                loaded, run_dir, endpoints, fleet, workers, started_wall, console, progress
            )
        policy = CompiledPolicy(loaded.policy)
        live_judge = LiveJudge(policy)
        writer = RecordWriter(run_dir / rundir.REQUESTS)

        live_gate = _live_gate(profile)
        rates = scenario_rates_rps(profile, loaded.path.parent)
        live = LiveStats([(s.name, r) for s, r in zip(profile.scenarios, rates, strict=True)])

        exporter = _start_exporter(prometheus, console)
        observe = exporter.observe if exporter is not None else None

        def sink(rec: Record) -> None:
            writer.add(rec)
            live.add(rec)
            violated = live_judge(rec)
            if live_gate is not None:
                live_gate.add(rec, violated)
            if observe is not None:
                observe(rec, violated)

        epoch = RunEpoch.now(lead_ns=START_LEAD_NS)
        dispatcher = Dispatcher(routes, profile.client, epoch, sink, closed=closed_loops(profile))
        counters = dispatcher.counters
        if exporter is not None:
            gauges = asyncio.ensure_future(_feed_gauges(exporter, counters))

        def snapshot() -> Snapshot:
            elapsed = max(0.0, (time.monotonic_ns() - epoch.monotonic_ns) / 1e9)
            return live.snapshot(
                elapsed,
                profile.duration_s,
                counters,
                live_judge.violations,
                dispatcher.schedule_lag,
                dispatcher.loop_lag,
            )

        if fleet is not None and profile.target.events:
            events_task = asyncio.ensure_future(_fleet_events(fleet, profile, epoch, events_applied))
        gate_check = _abort_check(live_gate, epoch, profile.gate.abort_grace_s) if live_gate else None
        fleet_check = _fleet_check(fleet) if fleet is not None else None
        checks = [c for c in (fleet_check, gate_check) if c is not None]

        def abort() -> str | None:
            return next((reason for check in checks if (reason := check()) is not None), None)

        interrupted, aborted = await _dispatch_with_signals(
            dispatcher,
            build_plan(profile, loaded.path.parent),
            snapshot,
            console,
            progress,
            abort if checks else None,
        )
        writer.close()
        finished_wall = datetime.now(UTC)
        fleet_failed = fleet is not None and fleet.returncode is not None
        if fleet is not None and not fleet_failed:
            ledger = await fleet.fetch_ledger()
            pq.write_table(ledger, run_dir / rundir.LEDGER)
    finally:
        for helper in (gauges, events_task):
            if helper is not None:
                helper.cancel()
                await asyncio.gather(helper, return_exceptions=True)
        await close_auth(endpoints)
        if exporter is not None:
            exporter.stop()
        if router is not None:
            await router.stop()
        if fleet is not None:
            await fleet.stop()

    return _judge_and_summarize(
        loaded,
        run_dir,
        EngineResult.from_dispatcher(dispatcher),
        started_wall,
        finished_wall,
        interrupted,
        declared=_declared_clouds(loaded),
        aborted=aborted,
        fleet_events=events_applied,
        epoch_wall_ns=epoch.wall_ns,
        fleet_failed=fleet_failed,
    )


def _start_exporter(prometheus: tuple[str, int] | None, console: Console) -> PrometheusExporter | None:
    if prometheus is None:
        return None
    from harness.metrics.prometheus import PrometheusExporter  # prometheus-client: only when asked

    exporter = PrometheusExporter(*prometheus, classify=_record_class)
    try:
        exporter.start()
    except OSError as exc:
        raise InfrastructureError(
            f"--prometheus-port: cannot listen on {prometheus[0]}:{prometheus[1]} ({exc.strerror})",
            "choose a free port, or 0 for any",
        ) from None
    console.print(f"prometheus metrics: {exporter.url}", highlight=False)
    log.info("prometheus metrics at %s", exporter.url)
    return exporter


async def _feed_gauges(exporter: PrometheusExporter, counters: Any) -> None:
    """Rate and in-flight gauges from the dispatcher's counters, once a second."""
    while True:
        exporter.update(counters)
        await asyncio.sleep(1.0)


def _record_class(rec: Record) -> str:
    return request_class(rec.api, rec.store, rec.previous_response_id)


async def _run_workers(
    loaded: LoadedProfile,
    run_dir: Path,
    endpoints: dict[str, ResolvedEndpoint],
    fleet: FleetProcess | None,
    workers: int,
    started_wall: datetime,
    console: Console,
    progress: bool,
) -> RunOutcome:
    """Dispatch in ``workers`` processes (one part each), then fetch the ledger and judge the union."""
    profile = loaded.profile
    if profile.gate.abort_on_fail and profile.thresholds:
        log.warning(
            "gate.abort_on_fail is not evaluated live with --workers; thresholds are judged at the end"
        )
    id_prefix = request_id_prefix()
    wire = endpoints_to_wire(endpoints, profile, loaded.fleet)
    policy = loaded.policy.model_dump(mode="json", by_alias=True)
    specs = [
        make_spec(
            profile,
            str(loaded.path),
            wire,
            shard_k=k,
            shards=workers,
            id_prefix=id_prefix,
            part=run_dir / rundir.PARTS / part_name(k),
            policy=policy,
        )
        for k in range(workers)
    ]
    target_rps = planned_rate_rps(profile, loaded.path.parent)

    def snapshot(epoch: RunEpoch, c: dict[str, int]) -> Snapshot:
        elapsed = max(0.0, (time.monotonic_ns() - epoch.monotonic_ns) / 1e9)
        return Snapshot(
            elapsed,
            profile.duration_s,
            target_rps,
            c.get("sent", 0),
            c.get("in_flight", 0),
            c.get("ok", 0),
            c.get("error", 0),
            c.get("timeout", 0),
            c.get("dropped", 0),
            c.get("violations", 0),
        )

    timeout_s = profile.duration_s + profile.client.request_timeout_s + 5 + WORKER_SLACK_S
    log.info("dispatching in %d worker processes, request ids %s…", workers, id_prefix)
    pool = LocalWorkers(specs, id_prefix)
    engine, interrupted = await run_local_workers(
        pool,
        lead_ns=START_LEAD_NS,
        timeout_s=timeout_s,
        snapshot=snapshot,
        console=console,
        progress=progress,
    )
    for reason in engine.missing:
        log.error("%s", reason)
    if pool.epoch is not None:  # the load started at the shared epoch, after the workers' start-up
        started_wall = datetime.fromtimestamp(pool.epoch.wall_ns / 1e9, UTC)
    finished_wall = datetime.now(UTC)
    if fleet is not None:
        pq.write_table(await fleet.fetch_ledger(), run_dir / rundir.LEDGER)
    return _judge_and_summarize(
        loaded,
        run_dir,
        engine,
        started_wall,
        finished_wall,
        interrupted,
        declared=_declared_clouds(loaded),
    )


def _fleet_check(fleet: FleetProcess) -> Callable[[], str | None]:
    """A check the dispatch loop calls every second: the embedded fleet died (reason), or None.

    Without it a dead fleet turns the rest of the run into connection errors, and the ledger it
    held is gone, so the run ends now, with partial results judged without a ledger (exit 4).
    """

    def check() -> str | None:
        code = fleet.returncode
        if code is None:
            return None
        return f"the mock fleet exited with code {code} mid-run; stopped early, judged without its ledger"

    return check


async def _fleet_events(
    fleet: FleetProcess, profile: Profile, epoch: RunEpoch, applied: list[dict[str, Any]]
) -> None:
    """Apply ``[[target.events]]`` on their schedule (seconds after the epoch) via the admin API."""
    for event in sorted(profile.target.events, key=lambda e: e.at_s):
        delay = (epoch.monotonic_ns + int(event.at_s * 1e9) - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        done: dict[str, Any] = {"at_s": event.at_s, "endpoint": event.endpoint}
        if event.faults is not None:
            await fleet.set_faults(event.endpoint, **event.faults.model_dump(exclude={"outage"}))
            done["faults"] = event.faults.model_dump(exclude_defaults=True)
        if event.outage is not None:
            await fleet.set_outage(event.endpoint, event.outage)
            done["outage"] = event.outage
        done["applied_s"] = round((time.monotonic_ns() - epoch.monotonic_ns) / 1e9, 6)
        applied.append(done)
        log.info("fleet event at %.3f s: %s", done["applied_s"], done)


async def _start_router(
    loaded: LoadedProfile, fleet: FleetProcess, run_dir: Path
) -> tuple[RouterProcess, ResolvedEndpoint]:
    """The reference router in front of the running fleet, judging by the run's policy; its
    injection log lands in the run directory."""
    from harness.router.inject import Rates
    from harness.router.process import RouterProcess

    cfg = loaded.profile.target.router
    assert cfg is not None
    rates = Rates(
        misroute=cfg.misroute_rate,
        spoof_fingerprint=cfg.spoof_fingerprint_rate,
        duplicate=cfg.duplicate_rate,
        break_affinity=cfg.break_affinity_rate,
    )
    router = RouterProcess(
        loaded.policy_path,
        attach_admin=fleet.admin_url,
        log=run_dir / rundir.ROUTER_LOG,
        seed=cfg.seed,
        rates=rates,
        balance=cfg.balance,
    )
    info = await router.start()
    log.info("reference router at %s (policy %s, switches %s)", info["base_url"], info["policy"], rates)
    return router, ResolvedEndpoint(ROUTER_ENDPOINT, cfg.dialect, info["base_url"], MOCK_API_KEY)


def _declared_clouds(loaded: LoadedProfile) -> dict[str, str]:
    return {n: ep.cloud for n, ep in loaded.profile.target.endpoints.items() if ep.cloud}


def _live_gate(profile: Profile) -> LiveGate | None:
    if not profile.gate.abort_on_fail or not profile.thresholds:
        return None
    parsed, _ = parse_thresholds(profile.thresholds)  # checked in prepare()
    gate = LiveGate(parsed.values())
    return gate if gate.thresholds else None


def _abort_check(gate: LiveGate, epoch: RunEpoch, grace_s: float) -> Callable[[], str | None]:
    """A check the dispatch loop calls every second: the reason to abort, or None."""

    def check() -> str | None:
        elapsed_s = (time.monotonic_ns() - epoch.monotonic_ns) / 1e9
        if elapsed_s < grace_s:
            return None
        failures = gate.failing()
        if not failures:
            return None
        f = failures[0]
        return f"aborted at {elapsed_s:.1f} s: {f.threshold} failed (observed {f.observed:g}; abort_on_fail)"

    return check


async def _dispatch_with_signals(
    dispatcher: Dispatcher,
    plan: Iterable[Planned],
    snapshot: Callable[[], Snapshot],
    console: Console,
    progress: bool,
    abort_check: Callable[[], str | None] | None = None,
) -> tuple[bool, str | None]:
    """Run the dispatcher; returns (interrupted by a signal, abort reason or None)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    run_task = asyncio.ensure_future(dispatcher.run(plan))
    signals_seen = 0
    aborted: str | None = None

    async def watch() -> None:
        nonlocal aborted
        assert abort_check is not None
        while not run_task.done():
            await asyncio.sleep(1.0)
            reason = abort_check()
            if reason is not None:
                aborted = reason
                console.print(f"[red]{reason}[/]")
                run_task.cancel()
                return

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            console.print(
                "[yellow]interrupted: cancelling in-flight requests and writing partial results "
                "(signal again to stop at once)[/]"
            )
            run_task.cancel()
        else:
            os._exit(int(ExitCode.INTERRUPTED))

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests), or Windows
            pass
    view = asyncio.ensure_future(show_progress(snapshot, console)) if progress else None
    watcher = asyncio.ensure_future(watch()) if abort_check is not None else None
    try:
        await run_task
        return False, None
    except asyncio.CancelledError:
        if task is not None and task.cancelling():
            raise  # our caller was cancelled, not the run
        return aborted is None, aborted
    finally:
        for helper in (view, watcher):
            if helper is not None:
                helper.cancel()
                await asyncio.gather(helper, return_exceptions=True)
        for sig in installed:
            loop.remove_signal_handler(sig)


def _judge_and_summarize(
    loaded: LoadedProfile,
    run_dir: Path,
    engine: EngineResult,
    started_wall: datetime,
    finished_wall: datetime,
    interrupted: bool,
    *,
    declared: dict[str, str],
    aborted: str | None = None,
    fleet_events: list[dict[str, Any]] | None = None,
    epoch_wall_ns: int | None = None,
    fleet_failed: bool = False,
) -> RunOutcome:
    profile = loaded.profile
    records = read_records(run_dir)
    ledger = read_ledger(run_dir)
    policy = CompiledPolicy(loaded.policy)
    compliance = judge(records, ledger, policy, declared_clouds=declared)
    router_log = run_dir / rundir.ROUTER_LOG
    if router_log.is_file():  # the reference router ran: check its injections against the judgement
        kinds = attribute_records(records, ledger, policy, declared_clouds=declared)["kind"]
        found = {rid: k for rid, k in zip(records["request_id"], kinds, strict=True) if isinstance(k, str)}
        started_ns = epoch_wall_ns if epoch_wall_ns is not None else int(started_wall.timestamp() * 1e9)
        compliance["router_self_test"] = router_self_test(read_router_log(router_log), found, started_ns)
    rundir.write_json(run_dir / rundir.COMPLIANCE, compliance)

    validity = profile.validity
    lag_p99_ms = engine.schedule_lag.percentile_ms(99) or 0.0
    loop_lag_p99_ms = engine.loop_lag.percentile_ms(99) or 0.0
    bound_reasons = []
    if lag_p99_ms > validity.max_schedule_lag_p99_ms:
        bound_reasons.append(
            f"schedule lag p99 {lag_p99_ms:.1f} ms > {validity.max_schedule_lag_p99_ms:g} ms"
        )
    if loop_lag_p99_ms > validity.max_event_loop_lag_p99_ms:
        bound_reasons.append(
            f"event-loop lag p99 {loop_lag_p99_ms:.1f} ms > {validity.max_event_loop_lag_p99_ms:g} ms"
        )
    meta = {
        "run_id": run_dir.name,
        "profile": profile.name,
        "profile_path": str(loaded.path),
        "policy": loaded.policy.name,
        "seed": profile.seed,
        "started_at": started_wall.isoformat(),
        "finished_at": finished_wall.isoformat(),
        "interrupted": interrupted,
        "client": profile.client.model_dump(),
        "request_id_prefix": engine.id_prefix,
        "fleet_events": fleet_events or [],
        "workers": engine.workers_expected,
        "incomplete": list(engine.missing),
        "policy_path": str(loaded.policy_path.resolve()),
    }
    duration_s = profile.duration_s
    if interrupted or aborted:
        duration_s = max(1e-3, (finished_wall - started_wall).total_seconds())
    meta["duration_s"] = duration_s  # what rates divide by; gates read it back
    planned_rps = planned_rate_rps(profile, loaded.path.parent)
    summary = summarize(records, duration_s=duration_s, planned_rate_rps=planned_rps, meta=meta)
    summary["validity"] = {
        "schedule_lag_p99_ms": lag_p99_ms,
        "event_loop_lag_p99_ms": loop_lag_p99_ms,
        "bounds": validity.model_dump(),
        "harness_bound": bool(bound_reasons),
        "reasons": bound_reasons,
    }
    summary["engine"] = engine.to_json()
    summary["compliance"] = {
        k: compliance[k]
        for k in ("policy", "verdict", "judged", "violations_total", "by_kind", "by_rule", "served_by_cloud")
    }
    if "router_self_test" in compliance:
        summary["compliance"]["router_self_test"] = compliance["router_self_test"]
    run = RunData(
        run_dir,
        records,
        ledger,
        summary,
        compliance,
        profile.model_dump(mode="json", by_alias=True),
        duration_s,
        policy=policy,
        policy_source=str(loaded.policy_path),
    )
    parsed, _ = parse_thresholds(profile.thresholds)  # parsed and checked in prepare()
    thresholds = list(parsed.values())
    baseline, baseline_problem = None, None
    if profile.gate.baseline is not None and any(t.baseline for t in thresholds):
        try:
            baseline = load_baseline(Path(profile.gate.baseline))
        except HarnessError as exc:  # it was there at start; each baseline threshold fails with this
            baseline_problem = exc.one_line()
    results = evaluate_all(
        run,
        thresholds,
        max_dropped_fraction=validity.max_dropped_fraction,
        baseline=baseline,
        baseline_problem=baseline_problem,
        strict=False,
    )
    verdict = compose(
        results,
        compliance=compliance,
        harness_bound=bound_reasons,
        interrupted=interrupted,
        incomplete=engine.missing,
    )
    if aborted is not None:
        # the threshold that stopped the run failed, whatever the partial data say at the end
        code = ExitCode.THRESHOLDS_FAILED if verdict.exit_code == ExitCode.PASS else verdict.exit_code
        if fleet_failed:
            code = ExitCode.INFRASTRUCTURE
        verdict = Verdict(code.name, code, (aborted, *verdict.reasons))
    summary["meta"]["aborted"] = aborted
    summary["thresholds"] = [r.to_json() for r in results]
    summary["verdict"] = verdict.to_json()
    write_summary(run_dir / rundir.SUMMARY, summary)
    reasons = list(verdict.reasons)
    log.info(
        "verdict %s (exit %d): %s",
        verdict.result,
        int(verdict.exit_code),
        "; ".join(reasons) or "all checks held",
    )
    return RunOutcome(run_dir, verdict.exit_code, verdict.result, reasons, summary, compliance, interrupted)


def run_profile(
    profile_path: str | Path, results_root: Path, *, progress: bool = True, console: Console | None = None
) -> RunOutcome:
    """Synchronous convenience: validate, then run on a fresh uvloop event loop."""
    loaded = prepare(profile_path)
    return run_with_uvloop(run_loaded(loaded, results_root, console=console, progress=progress))


T = TypeVar("T")


def run_with_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop where available; the entry point owns the loop (STYLE 13)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(coro)
    return uvloop.run(coro)
