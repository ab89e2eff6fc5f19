"""Every benchmark in bench/ still runs, end to end, as a user runs it.

Benchmarks are not timed tests (their numbers are read by people, in docs/benchmarks.md), but a
benchmark that no longer starts is worse than none: bench/parser.py once broke silently when an
internal constructor changed. Each runs here with the smallest arguments that still take every
part of it (every client kind, part and row), and must print its table or verdict line and
exit without a traceback. A benchmark that misses its target exits 0 or 1 by its own rules;
either is fine here, a crash is not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (bench, arguments, a line it must print). Durations are the minimum each accepts sensibly.
CASES = [
    ("auth", ["--n", "200", "--repeat", "1"], "sigv4 provider (engine path)"),
    ("parser", ["--chunks", "200", "--duration-s", "0.5", "--repeat", "1"], "aiohttp line iteration"),
    (
        "transport",
        ["--duration-s", "0.5", "--warmup-s", "0.2", "--repeat", "1", "--streams", "10", "--tokens", "5"],
        "chunks per CPU-second, lean / aiohttp",
    ),
    (
        "closed_loop",
        ["--users", "4", "--duration-s", "0.5", "--warmup-s", "0.2", "--repeat", "1"],
        "Locust FastHttpUser",
    ),
    (
        "fidelity",
        ["--rates", "20", "--duration-s", "1", "--tokens", "5", "--ttft-ms", "5", "--itl-ms", "5"],
        "|ITL err| p50",
    ),
    ("open_loop", ["--rates", "200", "--duration-s", "1", "--ceiling-s", "1"], "## 2. harness run"),
    (
        "router",
        ["--duration-s", "1", "--repeat", "1", "--warmup-s", "0.2", "--tokens", "4"],
        "router adds ≤ 1 ms to TTFT p99",
    ),
    (
        "soak",
        ["--duration-s", "2", "--sample-s", "0.5", "--warmup-s", "0.5", "--rate-rps", "50"],
        "leak check:",
    ),
    ("replay_fidelity", ["--seconds", "2"], "targets (count 1%, token means 2%)"),
    (
        "scale",
        [
            *("--streams", "50", "--itl-ms", "100", "--tokens", "3", "--ramp-s", "0.5"),
            *("--requests", "2000", "--rate", "1000", "--closed-s", "1"),
        ],
        "## 2. closed loop",
    ),
    (
        "mocks",
        [
            *("--duration-s", "3", "--rounds", "1", "--streams", "20", "--paced-rps", "200"),
            *("--rate", "200", "--open-rps", "400", "--users", "4"),
        ],
        "target (c):",
    ),
]


REFUSES_ON_A_BUSY_MACHINE = {"router"}
"""Benches that exit 2 with an ``INVALID:`` line when the machine is too loaded to judge."""


@pytest.mark.parametrize(("bench", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bench_runs(bench: str, args: list[str], expected: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    assert "Traceback" not in done.stderr, f"bench/{bench}.py crashed:\n{tail}"
    printed = done.stdout[-2000:]
    if done.returncode == 2 and bench in REFUSES_ON_A_BUSY_MACHINE:
        # It judged the machine too busy to measure (the suite's other worker shares the cores):
        # a refusal with its reason is the bench working, not a crash.
        assert "INVALID:" in done.stdout, f"bench/{bench}.py exited 2 without saying why:\n{printed}\n{tail}"
        return
    assert done.returncode in (0, 1), f"bench/{bench}.py exited {done.returncode}:\n{tail}"
    assert expected in done.stdout, f"bench/{bench}.py did not print {expected!r}:\n{printed}\n{tail}"


def test_every_bench_is_covered() -> None:
    """A new benchmark gets a smoke case (servers and helpers that benches start are exempt)."""
    helpers = {"minimal_target", "raw_target"}
    benches = {p.stem for p in (ROOT / "bench").glob("*.py")} - helpers
    assert benches == {c[0] for c in CASES}
