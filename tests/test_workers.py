"""Sharding of the plan and `harness run --workers N`: parts, lossless merge, lost workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from harness.engine.shard import shard, shard_counts, shard_key
from harness.engine.workers import EngineResult
from harness.errors import ExitCode, InputError
from harness.metrics.histogram import LatencyHistogram
from harness.profile import load_profile
from harness.results import derive
from harness.results.reader import read_records
from harness.runner import RunOutcome, prepare, run_loaded
from harness.workload import Planned, build_plan
from tests.conftest import PROFILES


def smoke_profile(tmp_path: Path, *, rate: float = 100, duration: float = 3) -> Path:
    """The smoke profile with absolute paths, its own rate and duration, and relaxed validity."""
    text = (PROFILES / "smoke.toml").read_text()
    text = text.replace('fleet = "fleets/', f'fleet = "{PROFILES}/fleets/')
    text = text.replace('policy = "policies/', f'policy = "{PROFILES}/policies/')
    text = text.replace("duration_s = 20", f"duration_s = {duration}")
    text = text.replace("rate_rps = 100 }", f"rate_rps = {rate} }}")
    text += "\n[validity]\nmax_schedule_lag_p99_ms = 1000\nmax_event_loop_lag_p99_ms = 1000\n"
    path = tmp_path / "smoke.toml"
    path.write_text(text)
    return path


class Turn(Planned):
    """A planned arrival that belongs to a session (the stateful shape of Planned)."""

    __slots__ = ("session",)

    def __init__(self, index: int, session: int | None) -> None:
        super().__init__(index, index * 1000, 0, 0)
        self.session = session


def test_shards_partition_the_plan_exactly(tmp_path: Path) -> None:
    """The shards of a plan are disjoint, their union is the plan, and every call gives the same split."""
    profile = load_profile(smoke_profile(tmp_path)).profile
    plan = [(p.index, p.offset_ns, p.scenario, p.route) for p in build_plan(profile)]
    n = 3
    shards = [
        [(p.index, p.offset_ns, p.scenario, p.route) for p in shard(build_plan(profile), k, n)]
        for k in range(n)
    ]
    again = [[p.index for p in shard(build_plan(profile), k, n)] for k in range(n)]
    assert sorted(x for s in shards for x in s) == plan
    assert sum(len(s) for s in shards) == len(plan)
    assert [[x[0] for x in s] for s in shards] == again
    assert all(x[0] % n == k for k, s in enumerate(shards) for x in s)
    assert shard_counts(build_plan(profile), n) == [len(s) for s in shards]


def test_sessions_stay_on_one_shard() -> None:
    """Every turn of a session lands on the same shard; arrivals without a session split by index."""
    plan = [Turn(i, session=i // 4 if i < 40 else None) for i in range(60)]
    n = 3
    owner: dict[int, int] = {}
    seen = []
    for k in range(n):
        for p in shard(iter(plan), k, n):
            seen.append(p.index)
            if p.session is not None:
                assert owner.setdefault(p.session, k) == k
            else:
                assert p.index % n == k
    assert sorted(seen) == list(range(60))
    assert len(owner) == 10 and shard_key(plan[5]) == 1 and shard_key(plan[50]) == 50


def test_a_shard_that_does_not_exist_is_refused() -> None:
    """Asking for shard k of n with k outside 0..n-1 is an input error, not an empty shard."""
    with pytest.raises(InputError):
        list(shard(iter([]), 2, 2))


def test_engine_result_merge_equals_histogram_of_the_union() -> None:
    """Merging workers' encoded histograms gives the histogram of all their values together."""
    values = [[1_000 * i + 7 for i in range(500)], [250_000 + 13 * i for i in range(300)]]
    merged = EngineResult("p", workers_expected=2)
    union = LatencyHistogram()
    for k, vals in enumerate(values):
        h = LatencyHistogram()
        for v in vals:
            h.record_ns(v)
            union.record_ns(v)
        merged.add_shard(
            {"shard": k, "counters": {"ok": len(vals)}, "histograms": {"schedule_lag": h.encode()}}
        )
    assert merged.schedule_lag == union
    assert merged.counters["ok"] == 800 and merged.complete


async def run_workers(profile_path: Path, results: Path, workers: int = 2) -> RunOutcome:
    """Run a profile with worker processes through the library (no report, no progress line)."""
    loaded = prepare(profile_path)
    return await run_loaded(loaded, results, progress=False, report=False, workers=workers)


async def test_two_workers_write_disjoint_complete_parts(tmp_path: Path) -> None:
    """`--workers 2`: one part per worker holding its shard; together exactly the plan; merged == union."""
    profile_path = smoke_profile(tmp_path, rate=100, duration=3)
    outcome = await run_workers(profile_path, tmp_path / "r")
    assert outcome.exit_code == ExitCode.PASS, outcome.reasons
    run_dir = outcome.run_dir
    assert not (run_dir / "requests.parquet").exists()
    plan = list(build_plan(load_profile(profile_path).profile))
    for k in range(2):
        part = pd.read_parquet(run_dir / "parts" / f"part-{k}.parquet")
        assert set(part["worker"]) == {k}
        assert sorted(part["index"]) == [p.index for p in plan if p.index % 2 == k]
    records = read_records(run_dir)
    assert len(records) == len(plan)
    assert sorted(records["index"]) == list(range(len(plan)))
    assert records["request_id"].is_unique
    summary = outcome.summary
    assert summary["counts"]["planned"] == summary["counts"]["ok"] == len(plan)
    engine = summary["engine"]
    assert engine["complete"] and engine["workers_finished"] == [0, 1]
    assert engine["counters"]["planned"] == len(plan)
    union_lag = LatencyHistogram.from_ms(derive.schedule_lag_ms(records)).stats_ms()
    union_latency = LatencyHistogram.from_ms(derive.latency_ms(records)).stats_ms()
    assert engine["merged_ms"]["schedule_lag"] == union_lag == summary["schedule_lag_ms"]
    assert engine["merged_ms"]["latency"] == union_latency == summary["latency_ms"]["from_intended"]


def worker_children() -> list[psutil.Process]:
    """This process's worker children (``python -m harness.engine.workers``)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "harness.engine.workers" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


async def test_a_killed_worker_makes_the_run_incomplete(tmp_path: Path) -> None:
    """SIGKILL on one worker mid-run: the verdict is INCOMPLETE naming its shard, exit 4, never a pass."""
    profile_path = smoke_profile(tmp_path, rate=40, duration=5)
    run = asyncio.ensure_future(run_workers(profile_path, tmp_path / "r"))
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while not partial and time.monotonic() < deadline and not run.done():
        await asyncio.sleep(0.2)
        partial = list((tmp_path / "r").glob("*/parts/part-1.parquet.partial"))
    assert partial, "worker 1 never started its part"
    await asyncio.sleep(1.0)  # mid-run
    victims = worker_children()
    assert len(victims) == 2
    victim = max(victims, key=lambda p: p.pid)
    victim.send_signal(signal.SIGKILL)
    outcome = await asyncio.wait_for(run, timeout=60)
    assert outcome.exit_code == ExitCode.INFRASTRUCTURE, outcome.reasons
    assert outcome.verdict == "INCOMPLETE"
    assert f"(pid {victim.pid}) was killed by signal 9" in outcome.reasons[0]
    assert "of 2 missing" in outcome.reasons[0]
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert summary["verdict"]["result"] == "INCOMPLETE"
    assert summary["engine"]["complete"] is False
    assert summary["meta"]["incomplete"] and len(summary["engine"]["workers_finished"]) == 1


async def test_sigint_reaches_the_workers_and_leaves_valid_partial_parts(tmp_path: Path) -> None:
    """SIGINT mid-run: every worker cancels its in-flight requests and closes its part; exit 130."""
    profile_path = smoke_profile(tmp_path, rate=40, duration=30)
    run = asyncio.ensure_future(run_workers(profile_path, tmp_path / "r"))
    deadline = time.monotonic() + 60
    started: list[Path] = []
    while len(started) < 2 and time.monotonic() < deadline and not run.done():
        await asyncio.sleep(0.2)
        started = list((tmp_path / "r").glob("*/parts/part-*.parquet.partial"))
    assert len(started) == 2, "the workers never started"
    await asyncio.sleep(1.5)
    os.kill(os.getpid(), signal.SIGINT)  # the run's handler forwards it to the workers
    outcome = await asyncio.wait_for(run, timeout=60)
    assert outcome.exit_code == ExitCode.INTERRUPTED, outcome.reasons
    assert outcome.summary["engine"]["complete"] and outcome.summary["meta"]["interrupted"]
    counts = outcome.summary["counts"]
    assert counts["cancelled"] > 0 and counts["planned"] < 30 * 40
    assert counts["planned"] == sum(counts[k] for k in ("ok", "error", "timeout", "dropped", "cancelled"))
    for k in range(2):
        part = pd.read_parquet(outcome.run_dir / "parts" / f"part-{k}.parquet")
        assert (part["outcome"] == "cancelled").any()
    assert not list(outcome.run_dir.glob("parts/*.partial"))
