"""A harness service (mock fleet, reference router) in a child process, so it never competes for
the harness's event loop.

The child is ``python -m MODULE ... --exit-on-stdin-eof``: it prints JSON ready lines on stdout
once listening, serves until SIGTERM, and also exits when its stdin (a pipe held here) closes, so
it cannot outlive a parent that was killed. Its stderr is drained continuously (a full pipe would
block it) and the last lines are kept for error messages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import orjson

from harness.errors import InfrastructureError

STDERR_TAIL_LINES: Final = 20
_PROJECT_ROOT: Final = str(Path(__file__).resolve().parents[1])


def child_env() -> dict[str, str]:
    """The environment of a child service: this checkout importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def terminate(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """Close the child's stdin, SIGTERM it, wait up to ``grace_s``, then kill it."""
    if proc.returncode is not None:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(grace_s):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class ChildProcess:
    """Spawn, read ready lines, stop; subclasses say what the child is and what ready means."""

    stop_grace_s: float = 5.0

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr_tail) or "(no stderr)"

    async def _spawn(self, module: str, args: list[str]) -> asyncio.subprocess.Process:
        if self._proc is not None:
            raise InfrastructureError(f"this {type(self).__name__} was already started", "create a new one")
        env = child_env()
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            "--exit-on-stdin-eof",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        self._stderr_task = asyncio.create_task(self._drain_stderr(proc.stderr))
        return proc

    async def _ready_lines(
        self, expected: int, timeout_s: float, what: str
    ) -> tuple[list[dict[str, Any]], str]:
        """Up to ``expected`` JSON lines from stdout; the second item names the problem, if any."""
        assert self._proc is not None and self._proc.stdout is not None
        lines: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout_s):
                while len(lines) < expected:
                    line = await self._proc.stdout.readline()
                    if not line:
                        await self._proc.wait()
                        return lines, f"exited with code {self._proc.returncode} before {what}"
                    lines.append(orjson.loads(line))
        except TimeoutError:
            return lines, f"reported {len(lines)} of {expected} ready line(s) within {timeout_s:g} s"
        except orjson.JSONDecodeError as exc:
            return lines, f"printed a line that is not JSON ({exc})"
        return lines, ""

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        """Keep the child's stderr pipe from filling up, remembering its last lines."""
        while line := await stream.readline():
            self._stderr_tail.append(line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        """Close stdin, SIGTERM, wait up to ``stop_grace_s``, then kill. Safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        await terminate(proc, self.stop_grace_s)
        if self._stderr_task is not None:
            try:
                async with asyncio.timeout(1.0):
                    await self._stderr_task
            except TimeoutError:
                self._stderr_task.cancel()
            self._stderr_task = None

    async def start(self) -> Any:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def stop_event(exit_on_stdin_eof: bool, name: str) -> asyncio.Event:
    """The child's side of the contract: an event set on SIGINT/SIGTERM, and (with
    ``exit_on_stdin_eof``) when stdin reaches EOF, i.e. when the parent holding the pipe died."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    if exit_on_stdin_eof:
        fd = sys.stdin.fileno()

        def read_until_eof() -> None:
            # os.read on the raw fd: a daemon thread blocked inside sys.stdin's buffered reader
            # holds its lock at interpreter shutdown, which aborts the process.
            try:
                while os.read(fd, 4096):
                    pass
            except OSError:
                pass
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop is already closed

        threading.Thread(target=read_until_eof, name=f"{name}-stdin-watch", daemon=True).start()
    return stop
