"""Closed-loop throughput of the engine (``arrival = { process = "closed", users = N }``) with full
records, against Locust FastHttpUser on the same target, in the same run.

Every client runs in its own process pinned to core 1, the target on core 0. Engine rows run the
real Dispatcher closed-loop mode: N users, think time 0, each response parsed and fingerprinted
into a Record, every record streamed to Parquet by the RecordWriter and counted by the live
view's stats (what ``harness run`` does per request, minus the post-run report). The Locust row
does the same per-request work (Record, parse, fingerprint; bench/transport.py's script) inside
a FastHttpUser task with Locust's own stats on. Runs are interleaved and repeated; medians.

``req/CPU-s`` = requests per second of the client's own CPU time (user + system, all threads):
what one fully busy core does, independent of how busy the shared machine is.

    .venv/bin/python bench/closed_loop.py [--users 64] [--duration-s 10] [--warmup-s 2] [--repeat 3]
                                          [--target raw|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.transport import LOCUST_SCRIPT  # noqa: E402 — bench scripts run from anywhere

TARGETS = {"raw": "bench/raw_target.py", "aiohttp": "bench/minimal_target.py"}


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def engine(base: str, transport: str, users: int, warmup_s: float, duration_s: float) -> dict:
    from harness.clock import RunEpoch
    from harness.engine.dispatch import Dispatcher
    from harness.engine.targets import ResolvedEndpoint, prepare_routes
    from harness.metrics.live import LiveStats
    from harness.profile.models import Profile
    from harness.results.writer import RecordWriter
    from harness.workload import build_plan
    from harness.workload.closed import closed_loops

    prof = Profile.model_validate(
        {
            "name": "bench-closed",
            "seed": 1,
            "duration_s": warmup_s + duration_s + 0.5,
            "target": {"endpoints": {"target": {"base_url": base, "cloud": "azure"}}},
            "client": {"connections": users, "transport": transport},
            "scenarios": [
                {
                    "name": "chat",
                    "stream": False,
                    "prompt_tokens": 16,
                    "max_tokens": 16,
                    "arrival": {"process": "closed", "users": users},
                    "routes": [{"endpoint": "target", "deployment": "gpt-4o"}],
                }
            ],
        }
    )
    routes = prepare_routes(prof, {"target": ResolvedEndpoint("target", "azure_openai", base, "k")})
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordWriter(Path(tmp) / "requests.parquet")
        live = LiveStats([("chat", 0.0)])

        def sink(rec) -> None:  # type: ignore[no-untyped-def]
            writer.add(rec)
            live.add(rec)

        epoch = RunEpoch.now(lead_ns=100_000_000)
        dispatcher = Dispatcher(routes, prof.client, epoch, sink, closed=closed_loops(prof))
        counters = dispatcher.counters
        run = asyncio.ensure_future(dispatcher.run(build_plan(prof)))
        await asyncio.sleep(0.1 + warmup_s)
        s0 = (time.perf_counter(), cpu_s(), counters.ok, counters.error + counters.timeout)
        await asyncio.sleep(duration_s)
        s1 = (time.perf_counter(), cpu_s(), counters.ok, counters.error + counters.timeout)
        await run
        writer.close()
        rows = counters.finished()
    return {
        "n": s1[2] - s0[2],
        "wall_s": s1[0] - s0[0],
        "cpu_s": s1[1] - s0[1],
        "errors": s1[3] - s0[3],
        "records": rows,
    }


def pinned(cpu: int):  # type: ignore[no-untyped-def]
    return lambda: os.sched_setaffinity(0, {cpu})


def run_json(cmd: list[str], cpu: int, timeout: float) -> dict:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=pinned(cpu), check=False, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_engine":
        import uvloop

        base, transport, users, warm, dur = sys.argv[2:7]
        print(json.dumps(uvloop.run(engine(base, transport, int(users), float(warm), float(dur)))))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", choices=tuple(TARGETS), default="raw")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    target_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    print("load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    server = subprocess.Popen(
        [sys.executable, str(ROOT / TARGETS[args.target]), "--cpu", str(target_cpu)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert server.stdout is not None
    base = f"http://127.0.0.1:{int(server.stdout.readline())}"
    me = [sys.executable, str(Path(__file__).resolve()), "_engine", base]
    window = [str(args.warmup_s), str(args.duration_s)]
    clients = {
        "engine closed loop, lean": [*me, "lean", str(args.users), *window],
        "engine closed loop, aiohttp": [*me, "aiohttp", str(args.users), *window],
        "Locust FastHttpUser": [
            sys.executable,
            "-c",
            LOCUST_SCRIPT.format(root=str(ROOT)),
            base,
            str(args.users),
            *window,
        ],
    }
    results: dict[str, list[dict]] = {name: [] for name in clients}
    try:
        for _ in range(args.repeat):
            for name, cmd in clients.items():
                results[name].append(run_json(cmd, client_cpu, args.warmup_s + args.duration_s + 60))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        f"\n## closed loop, non-streaming, full records: target ({args.target}) on cpu {target_cpu}, each "
        f"client on cpu {client_cpu}, {args.users} users, think 0, {args.duration_s:.0f} s after "
        f"{args.warmup_s:.0f} s warm-up, median of {args.repeat} interleaved runs"
    )
    print(
        f"{'client':<30} {'req/s':>8} {'CPU µs/req':>10} {'req/CPU-s':>10} {'vs Locust':>9} "
        f"{'req/CPU-s vs Locust':>19} {'errors':>6}  runs (req/s)"
    )
    rows = {}
    for name, runs in results.items():
        rps = statistics.median(r["n"] / r["wall_s"] for r in runs)
        per_cpu = statistics.median(r["n"] / r["cpu_s"] for r in runs)
        rows[name] = (rps, per_cpu, sum(r["errors"] for r in runs), [r["n"] / r["wall_s"] for r in runs])
    ref_rps, ref_cpu = rows["Locust FastHttpUser"][:2]
    for name, (rps, per_cpu, errors, each) in rows.items():
        print(
            f"{name:<30} {rps:>8.0f} {1e6 / per_cpu:>10.1f} {per_cpu:>10.0f} {rps / ref_rps:>8.2f}× "
            f"{per_cpu / ref_cpu:>18.2f}× {errors:>6}  {' '.join(f'{x:.0f}' for x in each)}"
        )
    print("load average after the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
