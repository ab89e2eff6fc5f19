"""``harness run --engine locust --workers N``: a local Locust master and N Locust workers.

A convenience for one machine (and the integration test): the same processes a cluster runs,
started as subprocesses on loopback. The run directory is made here and handed to the master,
so its Locust logs land next to the results (``locust-master.log``, ``locust-worker-<i>.log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson
from rich.console import Console

from harness.childproc import child_env
from harness.errors import ExitCode, InfrastructureError
from harness.profile import LoadedProfile
from harness.results import rundir
from harness.runner import RunOutcome

LOCUSTFILE: Final = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
STARTUP_SLACK_S: Final = 180.0
"""Beyond the plan and its drain: Locust and engine start-up, judging and the report."""
STOP_GRACE_S: Final = 15.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (Locust binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _spawn(args: Sequence[str], log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("wb") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "locust",
            *args,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(),
        )


async def _stop(procs: Sequence[asyncio.subprocess.Process], grace_s: float) -> None:
    for p in procs:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    try:
        async with asyncio.timeout(grace_s):
            await asyncio.gather(*(p.wait() for p in procs))
    except TimeoutError:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        await asyncio.gather(*(p.wait() for p in procs))


async def run_locust(
    loaded: LoadedProfile,
    results_root: Path,
    *,
    workers: int,
    duration_s: float | None = None,
    thresholds: Sequence[str] = (),
    console: Console | None = None,
    report: bool = True,
) -> RunOutcome:
    """Start a Locust master and ``workers`` Locust workers on loopback, wait for the verdict."""
    console = console or Console(stderr=True)
    profile = loaded.profile
    run_dir = rundir.new_run_dir(results_root, profile.name)
    outcome_file = run_dir / ".locust-outcome.json"
    port = free_port()
    master_args = [
        "-f",
        str(LOCUSTFILE),
        "--master",
        "--headless",
        "-u",
        "1",
        "-r",
        "1",
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "60",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--harness-profile",
        str(loaded.path),
        "--harness-run-dir",
        str(run_dir),
        "--harness-outcome",
        str(outcome_file),
    ]
    if duration_s is not None:
        master_args += ["--harness-duration-s", str(duration_s)]
    for t in thresholds:
        master_args += ["--harness-threshold", t]
    if not report:
        master_args.append("--harness-no-report")
    worker_args = [
        "-f",
        str(LOCUSTFILE),
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]
    master = await _spawn(master_args, run_dir / "locust-master.log")
    procs = [master]
    procs += [await _spawn(worker_args, run_dir / f"locust-worker-{i}.log") for i in range(workers)]
    console.print(
        f"Locust master (port {port}) and {workers} worker(s) started; logs in {run_dir}", highlight=False
    )
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # the master stops the workers, keeps partial results and judges
        with contextlib.suppress(ProcessLookupError):
            master.send_signal(signal.SIGTERM)  # Locust's own graceful shutdown

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    budget = profile.duration_s + profile.client.request_timeout_s + STARTUP_SLACK_S
    try:
        async with asyncio.timeout(budget):
            await master.wait()
    except TimeoutError:
        pass
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await _stop(procs, STOP_GRACE_S)
    return _outcome(run_dir, outcome_file, master.returncode)


def _outcome(run_dir: Path, outcome_file: Path, code: int | None) -> RunOutcome:
    verdict: dict[str, Any] = orjson.loads(outcome_file.read_bytes()) if outcome_file.is_file() else {}
    log_hint = f"see {run_dir / 'locust-master.log'}"
    if verdict.get("result") in ("ERROR", "INTERRUPTED") and not (run_dir / rundir.SUMMARY).is_file():
        error = InfrastructureError(
            f"the Locust run ended without results: {'; '.join(verdict['reasons'])}", log_hint
        )
        error.exit_code = ExitCode(int(verdict["exit_code"]))
        raise error
    summary_path = run_dir / rundir.SUMMARY
    if not verdict or not summary_path.is_file():
        raise InfrastructureError(f"the Locust master exited with code {code} without a verdict", log_hint)
    outcome_file.unlink()
    summary = orjson.loads(summary_path.read_bytes())
    compliance = orjson.loads((run_dir / rundir.COMPLIANCE).read_bytes())
    return RunOutcome(
        run_dir,
        ExitCode(int(verdict["exit_code"])),
        str(verdict["result"]),
        list(verdict["reasons"]),
        summary,
        compliance,
        bool(summary.get("meta", {}).get("interrupted")),
    )
