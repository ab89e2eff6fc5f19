"""``harness``: the command line. Thin: parses flags, calls the library, maps errors to exit codes.

Exit codes (harness.errors.ExitCode): 0 pass · 1 compliance failed · 2 invalid input (nothing
started) · 3 harness-bound (results untrustworthy) · 4 infrastructure (fleet/worker could not
start, or a worker was lost mid-run: verdict INCOMPLETE, a shard's records are missing) · 5 thresholds
failed · 70 internal error (a bug) · 130 interrupted (partial results written).
"""

from __future__ import annotations

import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from harness.errors import ExitCode, HarnessError

if TYPE_CHECKING:
    from harness.runner import RunOutcome

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Open-loop load tests and routing-compliance checks for LLM inference APIs.",
    pretty_exceptions_enable=False,
)
profiles_app = typer.Typer(no_args_is_help=True, help="Validate profiles and print their schema.")
app.add_typer(profiles_app, name="profiles")

# soft_wrap: CI logs are not terminals; a wrapped verdict line is harder to grep
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class Engine(StrEnum):
    asyncio = "asyncio"
    locust = "locust"


def _fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
    return typer.Exit(int(exc.exit_code))


@app.command()
def run(
    profile: Annotated[Path, typer.Argument(help="profile TOML file")],
    results: Annotated[Path, typer.Option(help="directory that receives the run directory")] = Path(
        "results"
    ),
    progress: Annotated[bool, typer.Option(help="show the live progress line")] = True,
    duration_s: Annotated[
        float | None, typer.Option("--duration-s", help="override the profile's duration_s (seconds)")
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option("--threshold", help="add an SLO threshold, e.g. 'p99(ttft) < 800ms' (repeatable)"),
    ] = None,
    prometheus_port: Annotated[
        int | None,
        typer.Option(
            "--prometheus-port", min=0, max=65535, help="serve live Prometheus metrics on this port (0: any)"
        ),
    ] = None,
    prometheus_host: Annotated[
        str, typer.Option("--prometheus-host", help="address the metrics endpoint binds (default: loopback)")
    ] = "127.0.0.1",
    workers: Annotated[
        int,
        typer.Option(min=1, help="worker processes, each dispatching a shard of the plan (one uvloop each)"),
    ] = 1,
    engine: Annotated[
        Engine, typer.Option(help="asyncio: worker processes here; locust: a local Locust master + N workers")
    ] = Engine.asyncio,
) -> None:
    """Run a profile: start the embedded fleet if asked, dispatch, judge, write results/<run>/."""
    from harness.runner import prepare, run_loaded, run_with_uvloop

    metrics = None if prometheus_port is None else (prometheus_host, prometheus_port)
    try:
        loaded = prepare(profile, duration_s=duration_s, thresholds=threshold or ())
        if engine is Engine.locust:
            from harness.distributed.launch import run_locust

            outcome = run_with_uvloop(
                run_locust(
                    loaded,
                    results,
                    workers=workers,
                    duration_s=duration_s,
                    thresholds=threshold or (),
                    console=err,
                )
            )
        else:
            outcome = run_with_uvloop(
                run_loaded(
                    loaded, results, console=err, progress=progress, workers=workers, prometheus=metrics
                )
            )
    except HarnessError as exc:
        raise _fail(exc) from None
    _print_final(outcome)
    raise typer.Exit(int(outcome.exit_code))


def _fmt(value: float | None, unit: str = "ms") -> str:
    return "—" if value is None else f"{value:,.1f} {unit}"


def _print_final(outcome: RunOutcome) -> None:
    s = outcome.summary
    c = s["counts"]
    table = Table(title=f"run {s['meta']['run_id']}", show_header=True, header_style="bold")
    table.add_column("metric")
    for col in ("p50", "p90", "p99", "p99.9"):
        table.add_column(col, justify="right")
    for label, block in (
        ("latency (from intended)", s["latency_ms"]["from_intended"]),
        ("latency (from sent)", s["latency_ms"]["from_sent"]),
        ("TTFT (from intended)", s["ttft_ms"]["from_intended"]),
        ("TTFT (from sent)", s["ttft_ms"]["from_sent"]),
        ("inter-token latency", s["itl_ms"]),
        ("schedule lag", s["schedule_lag_ms"]),
    ):
        table.add_row(label, *(_fmt(block.get(k)) for k in ("p50", "p90", "p99", "p99.9")))
    out.print(table)
    rate = s["rate"]
    out.print(
        f"requests: planned {c['planned']}  ok {c['ok']}  error {c['error']}  timeout {c['timeout']}  "
        f"dropped {c['dropped']}  cancelled {c['cancelled']}   "
        f"rate: {rate['achieved_rps']:.1f} achieved / {rate['planned_rps']:.1f} planned rps",
        highlight=False,
    )
    if s.get("errors_by_kind"):
        out.print(
            "errors by kind: " + ", ".join(f"{k} {v}" for k, v in s["errors_by_kind"].items()),
            highlight=False,
        )
    comp = outcome.compliance
    served = ", ".join(f"{k} {v}" for k, v in comp["served_by_cloud"].items())
    out.print(
        f"compliance ({comp['policy']}): {comp['verdict'].upper()} — {comp['violations_total']} violation(s) "
        f"of {comp['judged']} judged; served by cloud: {served}",
        highlight=False,
    )
    _print_thresholds(s.get("thresholds") or [], all_rows=False)
    style = "bold green" if outcome.exit_code == ExitCode.PASS else "bold red"
    reasons = f" ({'; '.join(outcome.reasons)})" if outcome.reasons else ""
    out.print(f"[{style}]{outcome.verdict}[/]{reasons}", highlight=False)
    out.print(f"results: {outcome.run_dir}", highlight=False)


@app.command()
def capacity(
    profile: Annotated[Path, typer.Argument(help="profile TOML file; its thresholds define 'meets the SLO'")],
    start_rps: Annotated[float, typer.Option(help="first rate probed (total, all scenarios)")] = 10.0,
    max_rps: Annotated[float, typer.Option(help="never probe above this rate")] = 10_000.0,
    growth: Annotated[float, typer.Option(help="rate multiplier while expanding")] = 2.0,
    precision: Annotated[float, typer.Option(help="stop bisecting when within this fraction")] = 0.05,
    step_duration_s: Annotated[
        float, typer.Option("--step-duration-s", help="length of each probe run")
    ] = 10.0,
    max_probes: Annotated[int, typer.Option(help="give up after this many probe runs")] = 20,
    results: Annotated[Path, typer.Option(help="directory that receives the capacity directory")] = Path(
        "results"
    ),
) -> None:
    """Find the highest arrival rate that passes every threshold and stays compliant (knee plot included)."""
    from harness.capacity import SearchPlan, run_capacity
    from harness.runner import prepare

    try:
        loaded = prepare(profile)
        plan = SearchPlan(start_rps, max_rps, growth, precision, step_duration_s, max_probes)
        result, out_dir = run_capacity(loaded, plan, results, console=err)
    except HarnessError as exc:
        raise _fail(exc) from None
    if result.answer_rps is None:
        out.print(f"[bold red]no passing rate[/] ({result.stopped_because})", highlight=False)
    else:
        out.print(
            f"[bold green]capacity: {result.answer_rps:,.1f} rps[/] (first failing: "
            f"{result.first_failing_rps or float('nan'):,.1f} rps; {result.stopped_because})",
            highlight=False,
        )
    out.print(f"results: {out_dir} (capacity.json, knee.svg, probes/)", highlight=False)
    raise typer.Exit(0 if result.answer_rps is not None else int(ExitCode.THRESHOLDS_FAILED))


@app.command()
def mock(
    fleet: Annotated[Path, typer.Option(help="fleet TOML file (profiles/fleets/*.toml)")],
    procs: Annotated[
        int, typer.Option(min=1, help="processes serving every endpoint, sharing its port (SO_REUSEPORT)")
    ] = 1,
) -> None:
    """Serve a mock fleet on loopback; print one JSON line per endpoint once all are ready."""
    from harness.mocks.fleet import serve_fleet_forever

    raise typer.Exit(serve_fleet_forever(str(fleet), procs=procs))


@app.command()
def router(
    policy: Annotated[Path, typer.Option(help="routing policy TOML file (profiles/policies/*.toml)")],
    fleet: Annotated[Path | None, typer.Option(help="fleet TOML file: the router starts it itself")] = None,
    attach_admin: Annotated[
        str | None, typer.Option(help="admin URL of a running fleet, http://127.0.0.1:PORT/admin")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0 picks a free one)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the self-test switches")] = 0,
    log: Annotated[Path, typer.Option(help="injection log, JSONL (overwritten)")] = Path("router-log.jsonl"),
    balance: Annotated[str, typer.Option(help="round-robin or least-in-flight")] = "round-robin",
    misroute_rate: Annotated[float, typer.Option(help="send stateless calls to a denied backend")] = 0.0,
    break_affinity_rate: Annotated[float, typer.Option(help="send chained calls off their holder")] = 0.0,
    spoof_fingerprint_rate: Annotated[
        float, typer.Option(help="serve from a denied backend behind Azure's headers")
    ] = 0.0,
    duplicate_rate: Annotated[float, typer.Option(help="send calls to two backends, return one")] = 0.0,
) -> None:
    """Serve the reference router in front of a fleet; print one JSON line with its URLs once ready."""
    from harness.router.inject import Rates

    try:  # check the rates before importing the router (aiohttp, pandas): a typo fails fast
        rates = Rates(misroute_rate, spoof_fingerprint_rate, duplicate_rate, break_affinity_rate)
    except HarnessError as exc:
        raise _fail(exc) from None
    from harness.router.app import RouterConfig, serve_router_forever

    try:
        config = RouterConfig(
            policy=str(policy),
            fleet=str(fleet) if fleet is not None else None,
            attach_admin=attach_admin,
            host=host,
            port=port,
            seed=seed,
            log=str(log),
            rates=rates,
            strategy=balance,  # type: ignore[arg-type]  # checked by config.check()
        )
        config.check()
    except HarnessError as exc:
        raise _fail(exc) from None
    raise typer.Exit(serve_router_forever(config))


def _print_thresholds(thresholds: list[dict[str, Any]], *, all_rows: bool = True) -> None:
    """A table of threshold results; without ``all_rows``, passing built-ins are left out."""
    from harness.gate.evaluate import format_json_value as fmt

    rows = [t for t in thresholds if all_rows or not t.get("builtin") or not t.get("passed")]
    if not rows:
        return
    table = Table(title="thresholds", show_header=True, header_style="bold")
    for col, justify in (("threshold", "left"), ("observed", "right"), ("limit", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]  # str, not the Literal
    for t in rows:
        unit = str(t.get("unit", ""))
        name = t["expression"] + (" (built-in)" if t.get("builtin") else "")
        mark = "[green]pass[/]" if t["passed"] else "[red]FAIL[/]"
        table.add_row(name, fmt(t.get("observed"), unit), fmt(t.get("limit"), unit), mark)
    out.print(table)


@app.command()
def gate(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (results/<run>)")],
    threshold: Annotated[
        list[str] | None,
        typer.Option("--threshold", help="a threshold to add to the run's own, e.g. 'rate(errors) < 1%'"),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="run directory that `baseline` in thresholds refers to")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="re-judge compliance against this policy file instead")
    ] = None,
) -> None:
    """Re-judge a finished run (thresholds, compliance, validity) without re-running it; write gate.json."""
    from harness.gate.verdict import GATE_FILE, gate_run_dir

    try:
        outcome = gate_run_dir(run_dir, thresholds=threshold or (), baseline_dir=baseline, policy_file=policy)
    except HarnessError as exc:
        raise _fail(exc) from None
    _print_thresholds([r.to_json() for r in outcome.thresholds])
    comp = outcome.compliance
    out.print(
        f"compliance ({comp['policy']}{', re-judged' if policy else ''}): {str(comp['verdict']).upper()} — "
        f"{comp['violations_total']} violation(s) of {comp['judged']} judged",
        highlight=False,
    )
    v = outcome.verdict
    style = "bold green" if v.exit_code == ExitCode.PASS else "bold red"
    reasons = f" ({'; '.join(v.reasons)})" if v.reasons else ""
    out.print(f"[{style}]{v.result}[/]{reasons}", highlight=False)
    out.print(f"written: {outcome.run_dir / GATE_FILE}", highlight=False)
    raise typer.Exit(int(v.exit_code))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (results/<run>)")],
) -> None:
    """Rebuild summary.json, summary.md, report.html and junit.xml of a run from its files alone."""
    from harness.report import write_report

    try:
        paths = write_report(run_dir)
    except HarnessError as exc:
        raise _fail(exc) from None
    for path in paths:
        out.print(f"written: {path}", highlight=False)


@app.command()
def compare(
    run_dir: Annotated[Path, typer.Argument(help="the run to judge (results/<run>)")],
    baseline: Annotated[Path, typer.Argument(help="the baseline run directory")],
    tolerance: Annotated[
        float, typer.Option(help="relative change a metric may worsen by before it counts (0.05 = 5%)")
    ] = 0.05,
    confidence: Annotated[float, typer.Option(help="confidence level of the bootstrap intervals")] = 0.95,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples (100..100000)")] = 2000,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="where compare.json/.md go (default: the run directory)")
    ] = None,
) -> None:
    """Compare a run with a baseline: per-metric deltas with bootstrap intervals; exit 5 on a regression."""
    from harness.report.compare import compare_runs, table_rows, write_compare

    try:
        result = compare_runs(
            run_dir, baseline, tolerance=tolerance, confidence=confidence, resamples=resamples, seed=seed
        )
    except HarnessError as exc:
        raise _fail(exc) from None
    paths = write_compare(result, out_dir or run_dir)
    table = Table(title=f"{result['run']} vs baseline {result['baseline']}", header_style="bold")
    for col in ("metric", "baseline", "current", "Δ", "Δ %", f"{confidence:.0%} CI of Δ", "verdict"):
        table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    for row in table_rows(result):
        if row[-1] == "regressed":
            row[-1] = "[red]regressed[/]"
        table.add_row(*row)
    Console(soft_wrap=True, width=max(out.width, 110)).print(table)  # CI logs claim 80 columns
    for note in result["notes"]:
        out.print(f"note: {note}", highlight=False)
    for path in paths:
        out.print(f"written: {path}", highlight=False)
    if result["regressed"]:
        out.print(f"[bold red]REGRESSED[/] ({', '.join(result['regressed'])})", highlight=False)
        raise typer.Exit(int(ExitCode.THRESHOLDS_FAILED))
    out.print("[bold green]no regression[/]", highlight=False)


@app.command()
def trend(
    results_dir: Annotated[Path, typer.Argument(help="the directory holding run directories (results/)")],
) -> None:
    """Index every run under RESULTS_DIR (index.parquet) and draw each metric across runs (trend.html)."""
    from harness.report.trend import write_trend

    try:
        index, paths = write_trend(results_dir)
    except HarnessError as exc:
        raise _fail(exc) from None
    flagged = index[index["regressions"].map(len) > 0]
    out.print(f"{len(index)} run(s) indexed, {len(flagged)} with a regression", highlight=False)
    for _, row in flagged.iterrows():
        out.print(f"  {row['run_id']}: {', '.join(row['regressions'])}", highlight=False)
    for path in paths:
        out.print(f"written: {path}", highlight=False)


@profiles_app.command("validate")
def profiles_validate(
    files: Annotated[list[Path], typer.Argument(help="profile TOML files")],
) -> None:
    """Validate profiles (and the fleet and policy they reference); report every problem."""
    from harness.runner import prepare

    code = ExitCode.PASS
    for file in files:
        try:
            loaded = prepare(file)
        except HarnessError as exc:
            _fail(exc)
            code = exc.exit_code
            continue
        n = len(loaded.profile.scenarios)
        out.print(f"{file}: ok ({n} scenario(s), policy {loaded.policy.name})", highlight=False)
    raise typer.Exit(int(code))


@profiles_app.command("schema")
def profiles_schema() -> None:
    """Print the profile JSON Schema."""
    from harness.profile import profile_json_schema

    sys.stdout.write(orjson.dumps(profile_json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")


def main() -> None:
    try:
        app()  # standalone: usage errors exit 2 with a message, typer.Exit carries our codes
    except HarnessError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc.one_line()}")
        sys.exit(int(exc.exit_code))
    except Exception:  # a bug: print it, and never exit 1 (which means "compliance failed")
        traceback.print_exc()
        err.print(
            f"internal error (exit {int(ExitCode.INTERNAL)}): this is a harness bug; please report the "
            "traceback above with the run directory's run.log"
        )
        sys.exit(int(ExitCode.INTERNAL))


if __name__ == "__main__":
    main()
