"""Open-loop accuracy of the engine and of `harness run` at fixed arrival rates against a minimal target.

The target is pinned to core 0 and the load generator to core 1, so they do not share a core.
By default the target is bench/raw_target.py (a raw uvloop protocol, several times cheaper per
request than an aiohttp handler: on this machine class bench/minimal_target.py saturates near the
rates measured here); ``--target aiohttp`` uses bench/minimal_target.py.

1. Engine timer (in process, one process per row): the Dispatcher with the lean transport and the
   run's full per-record work (a RecordWriter streaming Parquet, the live view's stats), constant
   arrivals, non-streaming. Rows compare the scheduler's timers, interleaved at each rate:
   ``timerfd`` (harness.engine.timer, the default) and ``yield`` (ms loop timers to 1.5 ms before
   due, then yielding to the loop until due). Reported: achieved rate, schedule lag, event-loop
   lag, drops, the generator's CPU (user + system, all threads) and timer wake-ups.
2. `harness run` end to end (profile → records → summary → verdict) on both transports.

For scale, the run first measures the closed-loop ceiling of a stock aiohttp ClientSession loop
(64 concurrent, on the same core, against the same target).

    .venv/bin/python bench/open_loop.py [--rates 1000,5000,10000,20000] [--duration-s 10]
                                        [--transports aiohttp,lean] [--target raw|aiohttp]
                                        [--only engine|run]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILE = """
name = "bench-open-loop-{rate}"
seed = 1
duration_s = {duration}
[target]
policy = "{policy}"
[target.endpoints.target]
base_url = "http://127.0.0.1:{port}"
cloud = "azure"
[client]
connections = {connections}
max_in_flight = {connections}
transport = "{transport}"
lag_budget_ms = 1000
[validity]
max_schedule_lag_p99_ms = 50
[[scenarios]]
name = "chat"
stream = false
prompt_tokens = 16
max_tokens = 1
arrival = {{ process = "constant", rate_rps = {rate} }}
routes = [{{ endpoint = "target", deployment = "gpt-4o" }}]
"""


RAW_CLIENT = """
import asyncio, sys, time, aiohttp, uvloop
async def main(url, conc, dur):
    n = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        end = time.monotonic() + dur
        async def worker():
            nonlocal n
            while time.monotonic() < end:
                async with s.post(url, data=b'{}') as r:
                    await r.read()
                    n += 1
        await asyncio.gather(*[worker() for _ in range(conc)])
    print(n / dur)
uvloop.run(main(sys.argv[1], 64, float(sys.argv[2])))
"""


TARGETS = {"raw": "bench/raw_target.py", "aiohttp": "bench/minimal_target.py"}


def pinned(cpu: int):  # type: ignore[no-untyped-def]
    return lambda: os.sched_setaffinity(0, {cpu})


ENGINE_ROW = (
    "{timer:>8} {rate:>7} {achieved:>9.1f} {ratio:>8.3f} {lag50:>6.3f}ms {lag99:>6.3f}ms {lag999:>7.2f}ms "
    "{loop99:>6.2f}ms {dropped:>8} {cpu:>5.0f}% {cpu_us:>7.1f} {wakeups:>8} {rss:>5.0f}"
)


async def engine_run(url: str, rate: float, duration_s: float, timer: str, connections: int) -> dict:
    """One in-process open-loop run of the Dispatcher (lean transport), records to Parquet."""
    from harness.clock import RunEpoch
    from harness.engine.dispatch import Dispatcher
    from harness.engine.targets import ResolvedEndpoint, prepare_routes
    from harness.metrics.live import LiveStats
    from harness.profile.models import Profile
    from harness.results.writer import RecordWriter
    from harness.workload import build_plan

    base = url.split("/openai/", maxsplit=1)[0]
    prof = Profile.model_validate(
        {
            "name": "bench-engine",
            "seed": 1,
            "duration_s": duration_s,
            "target": {"endpoints": {"target": {"base_url": base, "cloud": "azure"}}},
            "client": {"connections": connections, "transport": "lean", "lag_budget_ms": 1000},
            "scenarios": [
                {
                    "name": "chat",
                    "stream": False,
                    "prompt_tokens": 16,
                    "max_tokens": 1,
                    "arrival": {"process": "constant", "rate_rps": rate},
                    "routes": [{"endpoint": "target", "deployment": "gpt-4o"}],
                }
            ],
        }
    )
    routes = prepare_routes(prof, {"target": ResolvedEndpoint("target", "azure_openai", base, "k")})
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordWriter(Path(tmp) / "requests.parquet")
        live = LiveStats([("chat", rate)])

        def sink(rec) -> None:  # type: ignore[no-untyped-def]
            writer.add(rec)
            live.add(rec)

        epoch = RunEpoch.now(lead_ns=200_000_000)
        dispatcher = Dispatcher(routes, prof.client, epoch, sink)
        dispatcher.precise_timer = timer == "timerfd"
        await asyncio.sleep(0.2)
        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await dispatcher.run(build_plan(prof))
        ru1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        writer.close()
    c = dispatcher.counters
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    lag, loop = dispatcher.schedule_lag, dispatcher.loop_lag
    return {
        "timer": timer,
        "rate": rate,
        "achieved": c.sent / duration_s,
        "ratio": c.sent / duration_s / rate,
        "lag50": lag.percentile_ms(50) or 0.0,
        "lag99": lag.percentile_ms(99) or 0.0,
        "lag999": lag.percentile_ms(99.9) or 0.0,
        "loop99": loop.percentile_ms(99) or 0.0,
        "dropped": c.dropped,
        "cpu": 100 * cpu / (t1 - t0),
        "cpu_us": 1e6 * cpu / max(c.sent, 1),
        "wakeups": c.timer_wakeups,
        "rss": ru1.ru_maxrss / 1024,
    }


def bench_engine(args: argparse.Namespace, url: str, harness_cpu: int) -> None:
    rows = []
    for rate in (int(r) for r in args.rates.split(",")):
        for timer in ("timerfd", "yield"):
            proc = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_engine",
                    url,
                    str(rate),
                    str(args.duration_s),
                    timer,
                    str(args.connections),
                ],
                capture_output=True,
                text=True,
                preexec_fn=pinned(harness_cpu),
                check=True,
                timeout=args.duration_s + 120,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"\n## 1. engine in process (lean transport, records to Parquet), {args.duration_s:.0f} s per row, "
        f"constant arrivals, non-streaming, {args.connections} connections; generator on cpu {harness_cpu}"
    )
    print(
        f"{'timer':>8} {'rate':>7} {'achieved':>9} {'ach/plan':>8} {'lag p50':>8} {'lag p99':>8} "
        f"{'lag p99.9':>9} {'loop p99':>8} {'dropped':>8} {'CPU':>6} {'µs/req':>7} "
        f"{'wake-ups':>8} {'RSS MiB':>5}"
    )
    for row in rows:
        print(ENGINE_ROW.format(**row))


def bench_run(args: argparse.Namespace, port: int, harness_cpu: int, raw_rps: float, target_cpu: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(t, int(r)) for r in args.rates.split(",") for t in args.transports.split(",")]
        for transport, rate in runs:  # interleaved: both transports see the same machine state
            profile = Path(tmp) / f"open-loop-{transport}-{rate}.toml"
            profile.write_text(
                PROFILE.format(
                    transport=transport,
                    rate=rate,
                    duration=args.duration_s,
                    port=port,
                    connections=args.connections,
                    policy=ROOT / "profiles/policies/azure-stateless-exclusive.toml",
                )
            )
            results = Path(tmp) / f"results-{transport}-{rate}"
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "harness",
                    "run",
                    str(profile),
                    "--results",
                    str(results),
                    "--no-progress",
                ],
                capture_output=True,
                text=True,
                preexec_fn=pinned(harness_cpu),
                check=False,
                timeout=600,
            )
            run_dir = next(results.iterdir())
            s = json.loads((run_dir / "summary.json").read_text())
            rows.append((transport, rate, s, proc.returncode))
    print(
        f"\n## 2. harness run: harness on cpu {harness_cpu}, target on cpu {target_cpu}, "
        f"{args.duration_s:.0f} s per rate, constant arrivals, non-streaming, {args.connections} connections"
    )
    print(f"stock aiohttp closed-loop ceiling on the same core: {raw_rps:.0f} rps (64 concurrent)")
    print(
        f"{'transport':>9} {'rate':>7} {'achieved':>9} {'ach/plan':>8} {'lag p50':>8} {'lag p99':>8} "
        f"{'lag p99.9':>9} "
        f"{'loop p99':>8} {'dropped':>8} {'ok/s':>8} {'ok/ceiling':>10} {'lat p99':>9} {'exit':>4}"
    )
    for transport, rate, s, code in rows:
        lag, lat = s["schedule_lag_ms"], s["latency_ms"]["from_intended"]
        achieved = s["rate"]["achieved_rps"]
        ok_rps = s["counts"]["ok"] / args.duration_s
        print(
            f"{transport:>9} {rate:>7} {achieved:>9.1f} {achieved / rate:>8.3f} "
            f"{lag['p50']:>6.2f}ms {lag['p99']:>6.2f}ms "
            f"{lag['p99.9']:>7.2f}ms {s['validity']['event_loop_lag_p99_ms']:>6.2f}ms "
            f"{s['counts']['dropped']:>8} {ok_rps:>8.0f} {ok_rps / raw_rps:>10.2f} "
            f"{lat['p99']:>7.1f}ms {code:>4}"
        )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_engine":
        import uvloop

        url, rate, duration, timer, conns = sys.argv[2:7]
        result = uvloop.run(engine_run(url, float(rate), float(duration), timer, int(conns)))
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1000,5000,10000,20000")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--transports", default="aiohttp,lean", help="engine transports to compare")
    parser.add_argument(
        "--target", choices=("raw", "aiohttp"), default="raw", help="raw_target.py or minimal_target.py"
    )
    parser.add_argument("--only", choices=("engine", "run"))
    parser.add_argument(
        "--ceiling-s", type=float, default=5.0, help="how long the stock aiohttp ceiling run lasts"
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    target_cpu, harness_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    print("load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    target = subprocess.Popen(
        [sys.executable, str(ROOT / TARGETS[args.target]), "--cpu", str(target_cpu)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert target.stdout is not None
        port = int(target.stdout.readline())
        url = f"http://127.0.0.1:{port}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        if args.only != "run":
            bench_engine(args, url, harness_cpu)
        if args.only != "engine":
            raw = subprocess.run(
                [sys.executable, "-c", RAW_CLIENT, url, f"{args.ceiling_s:g}"],
                capture_output=True,
                text=True,
                preexec_fn=pinned(harness_cpu),
                check=True,
                timeout=120,
            )
            bench_run(args, port, harness_cpu, float(raw.stdout.strip()), target_cpu)
        print("load average after the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        target.terminate()
        target.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
