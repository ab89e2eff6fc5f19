"""Distributed runs on real Locust processes: a master and 2 workers on loopback, the mock fleet."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import psutil
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import ExitCode
from harness.metrics.histogram import LatencyHistogram
from harness.profile import load_profile
from harness.results import derive
from harness.results.reader import read_records
from harness.runner import RunOutcome, prepare
from harness.workload import build_plan
from tests.test_workers import smoke_profile


async def run_cluster(profile_path: Path, results: Path) -> RunOutcome:
    """`harness run --engine locust --workers 2`, through the library (no report)."""
    from harness.distributed.launch import run_locust

    return await run_locust(prepare(profile_path), results, workers=2, report=False)


async def test_master_and_two_workers_merge_into_one_run_directory(tmp_path: Path) -> None:
    """Two Locust workers split one plan: records == plan, merged percentiles == union's, the gate runs."""
    profile_path = smoke_profile(tmp_path, rate=50, duration=4)
    outcome = await run_cluster(profile_path, tmp_path / "r")
    assert outcome.exit_code == ExitCode.PASS, outcome.reasons
    run_dir = outcome.run_dir
    plan = list(build_plan(load_profile(profile_path).profile))
    records = read_records(run_dir)
    assert len(records) == len(plan)
    assert sorted(records["index"]) == list(range(len(plan)))
    assert set(records["worker"]) == {0, 1}
    for worker, index in zip(records["worker"].tolist(), records["index"].tolist(), strict=True):
        assert index % 2 == worker
    summary = outcome.summary
    engine = summary["engine"]
    assert engine["complete"] and engine["workers_finished"] == [0, 1]
    assert summary["counts"]["planned"] == summary["counts"]["ok"] == len(plan)
    union_latency = LatencyHistogram.from_ms(derive.latency_ms(records)).stats_ms()
    union_lag = LatencyHistogram.from_ms(derive.schedule_lag_ms(records)).stats_ms()
    assert engine["merged_ms"]["latency"] == union_latency == summary["latency_ms"]["from_intended"]
    assert engine["merged_ms"]["schedule_lag"] == union_lag == summary["schedule_lag_ms"]
    master_log = (run_dir / "locust-master.log").read_text()
    assert "harness  chat" in master_log  # live samples reached Locust's stats
    gate = await asyncio.to_thread(CliRunner().invoke, app, ["gate", str(run_dir)], env={"COLUMNS": "200"})
    assert gate.exit_code == ExitCode.PASS, gate.output
    assert json.loads((run_dir / "gate.json").read_text())["verdict"]["result"] == "PASS"


def locust_workers() -> list[psutil.Process]:
    """This process's Locust worker children."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "locust" in cmd and "--worker" in cmd:
            found.append(child)
    return found


async def test_a_killed_locust_worker_makes_the_run_incomplete(tmp_path: Path) -> None:
    """SIGKILL on one Locust worker mid-run: the master reports its shard missing, INCOMPLETE, exit 4."""
    profile_path = smoke_profile(tmp_path, rate=30, duration=6)
    run = asyncio.ensure_future(run_cluster(profile_path, tmp_path / "r"))
    deadline = time.monotonic() + 90
    started: list[Path] = []
    while len(started) < 2 and time.monotonic() < deadline and not run.done():
        await asyncio.sleep(0.2)
        started = list((tmp_path / "r").glob("*/parts/part-*.parquet.partial"))
    assert len(started) == 2, "the workers' engines never started"
    await asyncio.sleep(1.0)  # mid-run
    workers = locust_workers()
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGKILL)
    outcome = await asyncio.wait_for(run, timeout=120)
    assert outcome.exit_code == ExitCode.INFRASTRUCTURE, outcome.reasons
    assert outcome.verdict == "INCOMPLETE"
    assert "of 2 missing" in outcome.reasons[0] and "Locust worker" in outcome.reasons[0]
    summary = outcome.summary
    assert summary["engine"]["complete"] is False
    assert len(summary["engine"]["workers_finished"]) == 1
    assert summary["verdict"]["result"] == "INCOMPLETE"
