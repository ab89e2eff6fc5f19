"""Soak: a long steady `harness run` against the embedded mock fleet, watching for leaks.

A load generator that slowly leaks memory or file descriptors passes every short test and then
dies (or skews its own timing) in the fourth hour of a real test. This runs `harness run` as a
real subprocess at a constant rate and samples the harness process's resident memory (VmRSS) and
open file descriptors from /proc every ``--sample-s`` seconds while the plan runs.

Growth is judged after warm-up (connections opened, caches and pools filled): the record writer
fills 8192-row batches, so RSS is a sawtooth with a period of 8192 / rate seconds; the peak RSS of
the first post-warm-up window is compared with the peak of the last window, each at least one
sawtooth period long. Targets: RSS growth < 5 %, fd delta 0. Sockets are counted apart: the client keeps up to
``client.connections`` keep-alive connections, and aiohttp reuses them first-in first-out, so a pool
that grew during a burst of concurrency stays that size; that is a bounded high-water mark, not a
leak. Any other descriptor that accumulates is.

    .venv/bin/python bench/soak.py [--duration-s 600] [--rate-rps 100] [--transport aiohttp]
                                   [--warmup-s 60] [--sample-s 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH_ROWS = 8192  # harness.results.writer.RecordWriter's default batch
PROFILE = """
name = "soak"
seed = 3
duration_s = {duration}
[target]
fleet = "{fleet}"
policy = "{policy}"
[client]
connections = 256
transport = "{transport}"
sock_read_timeout_s = 10
request_timeout_s = 30
lag_budget_ms = 5000
[validity]  # a soak looks for leaks; timing on a shared machine is not its question
max_schedule_lag_p99_ms = 5000
max_event_loop_lag_p99_ms = 5000
max_dropped_fraction = 0.01
[[scenarios]]
name = "chat"
stream = true
prompt_tokens = 128
max_tokens = 24
arrival = {{ process = "constant", rate_rps = {rate} }}
routes = [
  {{ endpoint = "azure-eastus", deployment = "gpt-4o" }},
  {{ endpoint = "azure-swedencentral", deployment = "gpt-4o" }},
]
"""


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, or None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def open_fds(pid: int) -> tuple[int, int] | None:
    """(all open fds, sockets among them) of ``pid``, or None once the process is gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return None
    sockets = 0
    for name in names:
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except OSError:
            pass  # closed since listdir
    return len(names), sockets


Sample = tuple[float, int, int, int]  # (s since the run directory appeared, RSS KiB, fds, sockets)


def window(samples: list[Sample], lo: float, hi: float) -> tuple[int, Sample]:
    """(peak RSS KiB, last sample) over the samples with lo <= t < hi."""
    inside = [s for s in samples if lo <= s[0] < hi]
    if not inside:
        raise SystemExit(f"no samples between {lo:.0f} s and {hi:.0f} s; lengthen --duration-s")
    return max(s[1] for s in inside), inside[-1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--rate-rps", type=float, default=100.0)
    parser.add_argument("--transport", choices=("aiohttp", "lean"), default="aiohttp")
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    args = parser.parse_args()
    period_s = BATCH_ROWS / args.rate_rps
    window_s = max(period_s * 1.05, 30.0)
    if args.warmup_s + 2 * window_s > args.duration_s:
        print(
            f"warning: duration {args.duration_s:g} s is shorter than warm-up + two windows "
            f"({args.warmup_s + 2 * window_s:.0f} s); the windows overlap",
            file=sys.stderr,
        )
        window_s = max(args.sample_s * 2, (args.duration_s - args.warmup_s) / 2)
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "soak.toml"
        profile.write_text(
            PROFILE.format(
                duration=args.duration_s,
                rate=args.rate_rps,
                transport=args.transport,
                fleet=ROOT / "profiles/fleets/default.toml",
                policy=ROOT / "profiles/policies/azure-stateless-exclusive.toml",
            )
        )
        results = Path(tmp) / "results"
        proc = subprocess.Popen(
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
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        samples: list[Sample] = []
        t_start: float | None = None
        try:
            while proc.poll() is None:
                if t_start is None and results.is_dir() and any(results.iterdir()):
                    t_start = time.monotonic()
                if t_start is not None:
                    t = time.monotonic() - t_start
                    if t > args.duration_s:
                        break  # judging and the report come next: not steady state
                    rss, fds = rss_kib(proc.pid), open_fds(proc.pid)
                    if rss is not None and fds is not None:
                        samples.append((t, rss, *fds))
                time.sleep(args.sample_s if t_start is not None else 0.1)
            out, _ = proc.communicate(timeout=args.duration_s + 300)
        finally:
            if proc.poll() is None:
                proc.kill()
        run_dir = next(d for d in results.iterdir() if d.is_dir())
        summary = json.loads((run_dir / "summary.json").read_text())
    lo = args.warmup_s
    first_peak, first = window(samples, lo, lo + window_s)
    last_peak, last = window(samples, args.duration_s - window_s, args.duration_s + 1)
    growth = (last_peak - first_peak) / first_peak
    fd_delta, socket_delta = last[2] - first[2], last[3] - first[3]
    other_delta = fd_delta - socket_delta
    peak_sockets = max(s[3] for s in samples)
    counts = summary["counts"]
    print(
        f"soak: {args.duration_s:.0f} s at {args.rate_rps:g} rps streaming ({args.transport}), "
        f"{len(samples)} samples every {args.sample_s:g} s, warm-up {args.warmup_s:g} s, "
        f"windows {window_s:.0f} s; harness exit {proc.returncode}"
    )
    print(
        f"requests: planned {counts['planned']}, ok {counts['ok']}, error {counts['error']}, "
        f"timeout {counts['timeout']}, dropped {counts['dropped']}, cancelled {counts['cancelled']}"
    )
    print(f"{'t (s)':>7} {'RSS (MiB)':>10} {'fds':>5} {'sockets':>8}")
    step = max(1, len(samples) // 20)
    for t, rss, fds, socks in samples[::step]:
        print(f"{t:>7.0f} {rss / 1024:>10.1f} {fds:>5} {socks:>8}")
    print(
        f"RSS peak after warm-up {first_peak / 1024:.1f} MiB, in the last window {last_peak / 1024:.1f} MiB: "
        f"growth {growth * 100:+.2f}% (target < 5%)"
    )
    print(
        f"open fds after warm-up {first[2]}, at the end {last[2]}: delta {fd_delta:+d} (target 0); "
        f"sockets {socket_delta:+d} (peak {peak_sockets}, bounded by client.connections = 256: "
        f"keep-alive connections opened at peak concurrency), other fds {other_delta:+d}"
    )
    ok = growth < 0.05 and other_delta <= 0 and peak_sockets <= 256 + 8
    print(f"leak check: {'PASS' if ok else 'FAIL'} (the run's own verdict: exit {proc.returncode})")
    if proc.returncode != 0:
        print(out[-2000:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
