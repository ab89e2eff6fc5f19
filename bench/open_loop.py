"""Open-loop accuracy of `harness run` at fixed arrival rates against a minimal target.

The target (bench/minimal_target.py) is pinned to core 0 and the harness to core 1, so they do not
share a core. For each rate, `harness run` sends constant-rate non-streaming chat completions for
DURATION seconds and its summary.json gives the achieved rate, schedule lag and drops.

For scale, the same run first measures the closed-loop ceiling of a stock aiohttp ClientSession
loop (64 concurrent, on the same core, against the same target): no open-loop generator built on
stock aiohttp can sustain more than that on this machine.

    .venv/bin/python bench/open_loop.py [--rates 1000,5000,10000] [--duration-s 10]
                                        [--transports aiohttp,lean]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


def pinned(cpu: int):  # type: ignore[no-untyped-def]
    return lambda: os.sched_setaffinity(0, {cpu})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1000,5000,10000")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--transports", default="aiohttp,lean", help="engine transports to compare")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    target_cpu, harness_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    target = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/minimal_target.py"), "--cpu", str(target_cpu)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert target.stdout is not None
        port = int(target.stdout.readline())
        url = f"http://127.0.0.1:{port}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        raw = subprocess.run(
            [sys.executable, "-c", RAW_CLIENT, url, "5"],
            capture_output=True,
            text=True,
            preexec_fn=pinned(harness_cpu),
            check=True,
            timeout=120,
        )
        raw_rps = float(raw.stdout.strip())
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
            f"harness on cpu {harness_cpu}, target on cpu {target_cpu}, {args.duration_s:.0f} s per rate, "
            f"constant arrivals, non-streaming, {args.connections} connections"
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
    finally:
        target.terminate()
        target.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
