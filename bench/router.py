"""What does the reference router add to TTFT? Direct-to-mock and through-the-router streams,
interleaved in one open-loop run (even arrivals direct, odd ones through the router), so both
see the same machine at the same moment; compare the two columns, not runs.

The fleet is one Azure endpoint (fixed TTFT, fixed inter-token time, no jitter) with a
concurrency budget; its capacity is ``max_concurrency / (TTFT + (tokens - 1) × ITL)`` requests
per second, and the run offers ``--load`` (default 0.5) of it in total. TTFT is measured from
each request's intended send time to the arrival of its first content token, client side; the
run is repeated (``--repeat``) and the verdict is the median of the runs' p99 differences.
The fleet and the router are pinned to core 0 and this client to core 1 (``--no-pin`` to
leave them where the kernel puts them). The router's CPU per request comes from /proc (psutil).

    .venv/bin/python bench/router.py [--duration-s 10] [--repeat 3] [--load 0.5] [--tokens 16]
                                     [--ttft-ms 20] [--itl-ms 5] [--max-concurrency 32] [--warmup-s 2]

Target (issue 6): the router adds ≤ 1 ms to TTFT p99 at half capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.mocks.process import FleetProcess  # noqa: E402
from harness.router.process import RouterProcess  # noqa: E402

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
POLICY = ROOT / "profiles/policies/azure-stateless-exclusive.toml"
FLEET = """
name = "bench-router"
seed = 1
[[endpoints]]
name = "azure-eastus"
cloud = "azure"
dialect = "azure_openai"
region = "eastus"
deployments = ["gpt-4o"]
latency = {{ ttft_base_ms = {ttft}, prefill_us_per_token = 0, itl_ms = {itl}, jitter_frac = 0 }}
capacity = {{ max_concurrency = {conc}, max_queue = 10000 }}
"""
FIRST_TOKEN = b'"content":" '


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, due: float, out: list[float], errors: list[str]
) -> None:
    try:
        async with session.post(
            url, data=body, headers={"api-key": "k", "Content-Type": "application/json"}
        ) as resp:
            if resp.status != 200:
                errors.append(f"http_{resp.status}")
                await resp.read()
                return
            first = None
            async for chunk in resp.content.iter_any():
                if first is None and FIRST_TOKEN in chunk:
                    first = time.perf_counter()
            if first is None:
                errors.append("no_token")
                return
            out.append((first - due) * 1000)
    except (aiohttp.ClientError, TimeoutError) as exc:
        errors.append(type(exc).__name__)


async def _phase(
    session: aiohttp.ClientSession, urls: tuple[str, str], body: bytes, rate: float, duration_s: float
) -> tuple[list[float], list[float], list[str], list[str]]:
    """Open loop at ``rate`` (total): arrival i is due at t0 + i / rate, alternating targets."""
    direct: list[float] = []
    routed: list[float] = []
    errors_direct: list[str] = []
    errors_routed: list[str] = []
    n = int(rate * duration_s)
    tasks = []
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i % 2 == 0:
            coro = _one(session, urls[0], body, due, direct, errors_direct)
        else:
            coro = _one(session, urls[1], body, due, routed, errors_routed)
        tasks.append(asyncio.ensure_future(coro))
    await asyncio.gather(*tasks)
    return direct, routed, errors_direct, errors_routed


def _pin(pid: int, cores: set[int]) -> None:
    try:
        os.sched_setaffinity(pid, cores)
    except (AttributeError, OSError) as exc:  # pragma: no cover - not Linux, or a single core
        print(f"note: could not pin pid {pid}: {exc}", file=sys.stderr)


async def main(args: argparse.Namespace) -> int:
    import psutil

    duration_per_request_s = (args.ttft_ms + (args.tokens - 1) * args.itl_ms) / 1000
    capacity_rps = args.max_concurrency / duration_per_request_s
    rate = args.load * capacity_rps
    with tempfile.TemporaryDirectory() as tmp:
        fleet_file = Path(tmp) / "fleet.toml"
        fleet_file.write_text(FLEET.format(ttft=args.ttft_ms, itl=args.itl_ms, conc=args.max_concurrency))
        async with FleetProcess(fleet_file) as fleet:
            router = RouterProcess(POLICY, attach_admin=fleet.admin_url, log=Path(tmp) / "router.jsonl")
            async with router:
                router_pid = int(router.info["pid"])
                if args.pin and (os.cpu_count() or 1) >= 2:
                    assert fleet.pid is not None
                    _pin(fleet.pid, {0})
                    _pin(router_pid, {0})
                    _pin(os.getpid(), {1})
                endpoint = fleet.endpoints[0]["base_url"]
                urls = (endpoint + CHAT, router.base_url + CHAT)
                body = (
                    b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":%d,"stream":true}'
                    % args.tokens
                )
                connector = aiohttp.TCPConnector(limit=1024, limit_per_host=512)
                timeout = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=30)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                    await _phase(session, urls, body, rate, args.warmup_s)
                    procs = (psutil.Process(router_pid), psutil.Process(fleet.pid))
                    runs = []
                    for _ in range(args.repeat):
                        cpu0 = [sum(p.cpu_times()[:2]) for p in procs]
                        result = await _phase(session, urls, body, rate, args.duration_s)
                        cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(procs, cpu0, strict=True)]
                        runs.append((result, cpu))
    print(
        f"fleet capacity {capacity_rps:,.0f} rps (max_concurrency {args.max_concurrency}, "
        f"{duration_per_request_s * 1000:.0f} ms per stream); offered {rate:,.0f} rps "
        f"({args.load:.0%}) for {args.duration_s:g} s × {args.repeat}, streaming {args.tokens} tokens, "
        f"TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms"
    )
    p99_diffs: list[float] = []
    lateness: list[float] = []
    for k, ((direct, routed, err_d, err_r), (router_cpu_s, fleet_cpu_s)) in enumerate(runs, 1):
        head = (
            f"{'run ' + str(k):<14}{'n':>7}{'errors':>8}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}"
        )
        print(head + "  (TTFT ms from intended)")
        for name, values, errors in (("direct", direct, err_d), ("via router", routed, err_r)):
            cols = [_pct(values, q) for q in (50, 90, 99, 99.9)] + [max(values, default=float("nan"))]
            print(f"{name:<14}{len(values):>7}{len(errors):>8}" + "".join(f"{c:>9.2f}" for c in cols))
        diffs = [_pct(routed, q) - _pct(direct, q) for q in (50, 90, 99, 99.9)]
        print(f"{'router adds':<14}{'':>15}" + "".join(f"{d:>+9.2f}" for d in diffs))
        p99_diffs.append(diffs[2])
        lateness.append(_pct(direct, 50) - args.ttft_ms)
        n_routed = len(routed) + len(err_r)
        n_all = n_routed + len(direct) + len(err_d)
        if n_routed:
            per_router = router_cpu_s * 1e6 / n_routed
            per_mock = fleet_cpu_s * 1e6 / n_all
            print(
                f"CPU per streamed request: router {per_router:,.0f} µs, mock {per_mock:,.0f} µs "
                f"(router / mock = {per_router / per_mock:.2f}×)"
            )
    added = statistics.median(p99_diffs)
    late = statistics.median(lateness)
    if late > 5.0:  # the direct path alone is late: the machine, not the router, sets the numbers
        print(
            f"INVALID: direct TTFT p50 is {late:.1f} ms over the mock's {args.ttft_ms:g} ms "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); rerun on a quiet machine"
        )
        return 2
    verdict = "PASS" if added <= 1.0 else "FAIL"
    print(f"target: router adds ≤ 1 ms to TTFT p99 (median of {len(runs)}) → {verdict} ({added:+.2f} ms)")
    return 0 if verdict == "PASS" else 1


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="length of each measured run")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--load", type=float, default=0.5, help="fraction of the fleet's capacity offered")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--max-concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="measured runs; the verdict is their median")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    return parser.parse_args()


if __name__ == "__main__":
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        sys.exit(runner.run(main(_parse())))
