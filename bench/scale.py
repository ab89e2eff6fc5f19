"""Memory at scale: many concurrent slow streams in one process, and a run of millions of requests.

1. Streams: the engine's closed-loop mode with N users (one stream each, lean transport, one
   connection per user) against bench/transport.py's raw SSE server, which writes every Azure
   chunk separately, ITL ms apart; users start spread over the ramp-up. Reported: the
   concurrency reached (in-flight high-water mark), completed streams, errors, and the client
   process's peak RSS (target: 10,000 streams under 1 GiB).
2. Requests: an open-loop run of R requests planned (constant rate × duration) against
   bench/raw_target.py, every record streamed to Parquet (what `harness run` does during the
   load phase). The rate may exceed what the core carries: arrivals it cannot start are
   `dropped` records, written like any other. Reported: planned, sent, dropped, rows in the
   file, and RSS sampled over the run (target: 2,000,000 requests under 300 MiB).

Target processes on core 0, the engine on core 1.

    .venv/bin/python bench/scale.py [--streams 10000] [--itl-ms 1000] [--tokens 10] [--ramp-s 10]
                                    [--requests 2000000] [--rate 20000] [--only streams|requests]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def profile(base: str, duration_s: float, arrival: dict, stream: bool, connections: int):  # type: ignore[no-untyped-def]
    from harness.profile.models import Profile

    return Profile.model_validate(
        {
            "name": "bench-scale",
            "seed": 1,
            "duration_s": duration_s,
            "target": {"endpoints": {"target": {"base_url": base, "cloud": "azure"}}},
            "client": {
                "connections": connections,
                "transport": "lean",
                "lag_budget_ms": 100,
                "connect_timeout_s": 30,
            },
            "scenarios": [
                {
                    "name": "chat",
                    "stream": stream,
                    "prompt_tokens": 16,
                    "max_tokens": 16,
                    "arrival": arrival,
                    "routes": [{"endpoint": "target", "deployment": "gpt-4o"}],
                }
            ],
        }
    )


async def engine(base: str, prof, samples: list[tuple[float, float]]) -> dict:  # type: ignore[no-untyped-def]
    from harness.clock import RunEpoch
    from harness.engine.dispatch import Dispatcher
    from harness.engine.targets import ResolvedEndpoint, prepare_routes
    from harness.results.writer import RecordWriter
    from harness.workload import build_plan
    from harness.workload.closed import closed_loops

    routes = prepare_routes(prof, {"target": ResolvedEndpoint("target", "azure_openai", base, "k")})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.parquet"
        writer = RecordWriter(path)
        epoch = RunEpoch.now(lead_ns=200_000_000)
        dispatcher = Dispatcher(routes, prof.client, epoch, writer.add, closed=closed_loops(prof))
        t0 = time.monotonic()

        async def sample() -> None:
            while True:
                samples.append((time.monotonic() - t0, rss_mib()))
                await asyncio.sleep(1.0)

        sampler = asyncio.ensure_future(sample())
        await dispatcher.run(build_plan(prof), drain_timeout_s=60)
        sampler.cancel()
        writer.close()
        import pyarrow.parquet as pq

        rows = pq.read_metadata(path).num_rows
    c = dispatcher.counters
    return {
        "planned": c.planned,
        "sent": c.sent,
        "ok": c.ok,
        "errors": c.error + c.timeout,
        "dropped": c.dropped,
        "max_in_flight": c.max_in_flight_seen,
        "rows": rows,
        "wall_s": time.monotonic() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss": samples,
    }


def child(kind: str, base: str, args: list[str]) -> dict:
    import uvloop

    samples: list[tuple[float, float]] = []
    if kind == "streams":
        streams, ramp_s, stream_s = int(args[0]), float(args[1]), float(args[2])
        arrival = {"process": "closed", "users": streams, "ramp_up_s": ramp_s}
        # every user runs about two streams after the ramp-up
        prof = profile(base, ramp_s + 2 * stream_s, arrival, True, streams)
    elif kind == "closed":  # as many requests as 64 closed-loop users get through in the time
        prof = profile(base, float(args[0]), {"process": "closed", "users": 64}, False, 64)
    else:
        requests, rate = int(args[0]), float(args[1])
        prof = profile(base, requests / rate, {"process": "constant", "rate_rps": rate}, False, 64)
    return uvloop.run(engine(base, prof, samples))


def pinned(cpu: int):  # type: ignore[no-untyped-def]
    return lambda: os.sched_setaffinity(0, {cpu})


def start(cmd: list[str], cpu: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=pinned(cpu), cwd=ROOT)  # noqa: PLW1509
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def run_child(argv: list[str], cpu: int, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_child", *argv],
        capture_output=True,
        text=True,
        preexec_fn=pinned(cpu),
        check=False,
        timeout=timeout,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4:])))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--itl-ms", type=float, default=1000.0)
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--ramp-s", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--rate", type=float, default=20_000.0)
    parser.add_argument(
        "--closed-s",
        type=float,
        default=None,
        help="requests part: closed loop (64 users) for this long instead",
    )
    parser.add_argument("--only", choices=("streams", "requests"))
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    target_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    print("load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.only != "requests":
        stream_s = args.tokens * args.itl_ms / 1000
        with tempfile.TemporaryDirectory() as tmp:
            server, port = start(
                [
                    sys.executable,
                    str(ROOT / "bench/transport.py"),
                    "_stream_server",
                    str(args.itl_ms),
                    str(args.tokens),
                    f"{tmp}/log.json",
                ],
                target_cpu,
            )
            try:
                r = run_child(
                    [
                        "streams",
                        f"http://127.0.0.1:{port}",
                        str(args.streams),
                        str(args.ramp_s),
                        str(stream_s),
                    ],
                    client_cpu,
                    args.ramp_s + 3 * stream_s + 180,
                )
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
        print(
            f"\n## 1. {args.streams} concurrent streams ({args.tokens} chunks {args.itl_ms:g} ms apart, each "
            f"chunk its own write), closed loop, lean transport, one process on cpu {client_cpu}"
        )
        print(
            f"in flight max {r['max_in_flight']}, streams ok {r['ok']}, errors {r['errors']}, "
            f"{r['wall_s']:.0f} s, peak RSS {r['peak_rss_mib']:.0f} MiB (target < 1024 MiB)"
        )
    if args.only != "streams":
        server, port = start(
            [sys.executable, str(ROOT / "bench/raw_target.py"), "--cpu", str(target_cpu)], target_cpu
        )
        try:
            if args.closed_s:
                r = run_child(
                    ["closed", f"http://127.0.0.1:{port}", str(args.closed_s)],
                    client_cpu,
                    args.closed_s + 300,
                )
            else:
                r = run_child(
                    ["requests", f"http://127.0.0.1:{port}", str(args.requests), str(args.rate)],
                    client_cpu,
                    args.requests / args.rate + 300,
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
        rss = r["rss"]
        marks = [rss[int(f * (len(rss) - 1))] for f in (0.0, 0.1, 0.5, 0.9, 1.0)]
        what = (
            f"closed loop (64 users, {args.closed_s:.0f} s"
            if args.closed_s
            else f"{args.requests:,} requests planned at {args.rate:,.0f} rps (open loop"
        )
        print(f"\n## 2. {what}, non-streaming, records to Parquet), one process on cpu {client_cpu}")
        print(
            f"planned {r['planned']:,}, sent {r['sent']:,}, ok {r['ok']:,}, dropped {r['dropped']:,}, "
            f"errors {r['errors']:,}, rows written {r['rows']:,}, {r['wall_s']:.0f} s"
        )
        print(
            "RSS MiB at "
            + ", ".join(f"{t:.0f} s: {m:.0f}" for t, m in marks)
            + f"; peak {r['peak_rss_mib']:.0f} MiB (target < 300 MiB)"
        )
    print("load average after the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
