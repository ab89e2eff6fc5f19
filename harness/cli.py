"""``harness``: the command line. Thin: parses flags, calls the library, maps errors to exit codes.

Exit codes (harness.errors.ExitCode): 0 pass · 1 compliance failed · 2 invalid input (nothing
started) · 3 harness-bound (results untrustworthy) · 4 infrastructure (fleet/worker could not
start) · 5 thresholds failed · 130 interrupted (partial results written).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from harness.errors import ExitCode, HarnessError

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
) -> None:
    """Run a profile: start the embedded fleet if asked, dispatch, judge, write results/<run>/."""
    from harness.runner import prepare, run_loaded, run_with_uvloop

    try:
        loaded = prepare(profile, duration_s=duration_s)
        outcome = run_with_uvloop(run_loaded(loaded, results, console=err, progress=progress))
    except HarnessError as exc:
        raise _fail(exc) from None
    _print_final(outcome)
    raise typer.Exit(int(outcome.exit_code))


def _fmt(value: float | None, unit: str = "ms") -> str:
    return "—" if value is None else f"{value:,.1f} {unit}"


def _print_final(outcome) -> None:  # type: ignore[no-untyped-def]
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
    style = "bold green" if outcome.exit_code == ExitCode.PASS else "bold red"
    reasons = f" ({'; '.join(outcome.reasons)})" if outcome.reasons else ""
    out.print(f"[{style}]{outcome.verdict}[/]{reasons}", highlight=False)
    out.print(f"results: {outcome.run_dir}", highlight=False)


@app.command()
def mock(
    fleet: Annotated[Path, typer.Option(help="fleet TOML file (profiles/fleets/*.toml)")],
) -> None:
    """Serve a mock fleet on loopback; print one JSON line per endpoint once all are ready."""
    from harness.mocks.fleet import serve_fleet_forever

    raise typer.Exit(serve_fleet_forever(str(fleet)))


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
        app()
    except HarnessError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc.one_line()}")
        sys.exit(int(exc.exit_code))


if __name__ == "__main__":
    main()
