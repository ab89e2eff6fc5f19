"""The live progress line of a run (rich), refreshed a few times per second.

On a terminal it redraws one line; in CI (no TTY) it prints a plain line every few seconds so
job logs stay readable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.text import Text


@dataclass(slots=True)
class Snapshot:
    elapsed_s: float
    duration_s: float
    target_rps: float
    sent: int
    in_flight: int
    ok: int
    errors: int
    timeouts: int
    dropped: int
    violations: int


def render(s: Snapshot) -> Text:
    achieved = s.sent / s.elapsed_s if s.elapsed_s > 0 else 0.0
    line = Text()
    line.append(f"{s.elapsed_s:6.1f}/{s.duration_s:.0f}s  ", style="bold")
    line.append(f"rate {achieved:8.1f}/{s.target_rps:.0f} rps  ")
    line.append(f"in flight {s.in_flight:5d}  ")
    line.append(f"ok {s.ok:7d}  ")
    line.append(f"errors {s.errors + s.timeouts:5d}  ", style="red" if s.errors + s.timeouts else "")
    line.append(f"dropped {s.dropped:5d}  ", style="yellow" if s.dropped else "")
    line.append(f"violations {s.violations:5d}", style="bold red" if s.violations else "green")
    return line


async def show_progress(
    snapshot: Callable[[], Snapshot], console: Console, *, plain_every_s: float = 5.0
) -> None:
    """Redraw until cancelled. Cheap: one snapshot and one render per refresh."""
    if console.is_terminal:
        with Live(render(snapshot()), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(render(snapshot()))
    else:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            if time.monotonic() - last >= plain_every_s:
                last = time.monotonic()
                console.print(render(snapshot()), soft_wrap=True)
