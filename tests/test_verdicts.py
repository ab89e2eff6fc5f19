"""Every exit code of `harness run` that a run can end with, through the real CLI."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import sys
from pathlib import Path

import pandas as pd
from aiohttp import web

from harness.errors import ExitCode
from tests.conftest import PROFILES, ROOT, run_cli

POLICY = PROFILES / "policies/azure-stateless-exclusive.toml"
FLEET = PROFILES / "fleets/default.toml"


def external_profile(tmp_path: Path, url: str, *, rate: float, duration: float, client: str = "") -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f"""
name = "verdict"
duration_s = {duration}
[target]
policy = "{POLICY}"
[target.endpoints.t]
base_url = "{url}"
cloud = "azure"
[client]
{client}
[validity]  # these tests are about other verdicts; a loaded test machine must not make them harness-bound
max_schedule_lag_p99_ms = 1000
max_event_loop_lag_p99_ms = 1000
[[scenarios]]
name = "chat"
stream = false
arrival = {{ process = "constant", rate_rps = {rate} }}
routes = [{{ endpoint = "t", deployment = "d" }}]
""")
    return path


async def serve(handler) -> tuple[web.AppRunner, str]:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_post("/openai/deployments/{d}/chat/completions", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def run_cli_async(
    *args: str, signal_after_s: float | None = None, started: Path | None = None
) -> tuple[int, str]:
    """Run the CLI as a subprocess without blocking this test's event loop (which serves the target).

    With ``started`` (a results directory), ``signal_after_s`` counts from the moment the run has
    begun writing records there, so a slow interpreter start on a loaded machine cannot make the
    signal arrive before the run exists."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    if signal_after_s is not None:
        if started is not None:
            for _ in range(600):  # at most 60 s
                if glob.glob(f"{started}/*/requests.parquet.partial") or proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(signal_after_s)
        proc.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def run_dir_of(results: Path) -> Path:
    (run_dir,) = list(results.iterdir())
    return run_dir


def test_harness_bound_run_exits_3(tmp_path: Path) -> None:
    """A run whose generator exceeds its lag bound is harness-bound (exit 3), never a pass."""
    text = (PROFILES / "smoke.toml").read_text()
    text = text.replace('fleet = "fleets/default.toml"', f'fleet = "{FLEET}"')
    text = text.replace('policy = "policies/azure-stateless-exclusive.toml"', f'policy = "{POLICY}"')
    text += "\n[validity]\nmax_event_loop_lag_p99_ms = 0.000001\n"
    profile = tmp_path / "bound.toml"
    profile.write_text(text)
    result = run_cli(
        "run", str(profile), "--duration-s", "2", "--results", str(tmp_path / "r"), "--no-progress"
    )
    assert result.returncode == ExitCode.HARNESS_BOUND, result.stdout + result.stderr
    assert "harness-bound" in result.stdout
    summary = json.loads((run_dir_of(tmp_path / "r") / "summary.json").read_text())
    assert summary["validity"]["harness_bound"] is True
    assert summary["verdict"]["exit_code"] == 3


async def test_dropped_arrivals_fail_the_run(tmp_path: Path) -> None:
    """Arrivals dropped at the in-flight cap mean the planned load was not delivered: exit 1."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), timeout=0.3)
        return web.Response()

    async def handler(request: web.Request) -> web.Response:
        try:
            return await slow(request)
        except TimeoutError:
            return web.Response(status=503)

    runner, url = await serve(handler)
    try:
        profile = external_profile(tmp_path, url, rate=50, duration=1, client="connections = 2")
        code, out = await run_cli_async(
            "run", str(profile), "--results", str(tmp_path / "r"), "--no-progress"
        )
    finally:
        await runner.cleanup()
    assert code == ExitCode.THRESHOLDS_FAILED, out
    assert "arrivals dropped" in out
    summary = json.loads((run_dir_of(tmp_path / "r") / "summary.json").read_text())
    assert summary["counts"]["dropped"] > 30


async def test_no_success_fails_the_run(tmp_path: Path) -> None:
    """A run in which every request failed cannot pass, even with zero violations."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"code": "500", "message": "boom"}},
            status=500,
            headers={"x-ms-region": "East US", "apim-request-id": "x"},
        )

    runner, url = await serve(handler)
    try:
        profile = external_profile(tmp_path, url, rate=20, duration=0.5)
        code, out = await run_cli_async(
            "run", str(profile), "--results", str(tmp_path / "r"), "--no-progress"
        )
    finally:
        await runner.cleanup()
    assert code == ExitCode.THRESHOLDS_FAILED, out
    assert "no request succeeded" in out


async def test_sigint_leaves_valid_partial_results(tmp_path: Path) -> None:
    """SIGINT mid-run cancels in-flight requests, writes valid partial results and exits 130."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(status=200)

    runner, url = await serve(handler)
    try:
        profile = external_profile(tmp_path, url, rate=50, duration=30)
        code, out = await run_cli_async(
            "run",
            str(profile),
            "--results",
            str(tmp_path / "r"),
            "--no-progress",
            signal_after_s=2.0,
            started=tmp_path / "r",
        )
    finally:
        await runner.cleanup()
    assert code == ExitCode.INTERRUPTED, out
    run_dir = run_dir_of(tmp_path / "r")
    records = pd.read_parquet(run_dir / "requests.parquet")
    summary = json.loads((run_dir / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["planned"] == len(records) > 0
    assert counts["cancelled"] > 0
    assert counts["planned"] == sum(counts[k] for k in ("ok", "error", "timeout", "dropped", "cancelled"))
    assert summary["meta"]["interrupted"] is True
    assert not list(run_dir.glob("*.partial"))


def test_fleet_that_cannot_start_exits_4(tmp_path: Path) -> None:
    """When the embedded fleet cannot bind its port, `harness run` exits 4 with a one-line reason."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(f"""
name = "busy"
[[endpoints]]
name = "azure-busy"
cloud = "azure"
region = "eastus"
port = {port}
deployments = ["gpt-4o"]
""")
        profile = tmp_path / "p.toml"
        profile.write_text(f"""
name = "busy"
duration_s = 1
[target]
fleet = "{fleet}"
policy = "{POLICY}"
[[scenarios]]
name = "chat"
arrival = {{ process = "constant", rate_rps = 5 }}
routes = [{{ endpoint = "azure-busy", deployment = "gpt-4o" }}]
""")
        result = run_cli("run", str(profile), "--results", str(tmp_path / "r"), "--no-progress")
    assert result.returncode == ExitCode.INFRASTRUCTURE, result.stdout + result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and str(port) in message, message
