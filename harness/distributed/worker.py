"""The Locust worker's side of a harness run (gevent): the engine in its own process.

gevent and asyncio cannot share a loop, and the engine's timing needs a loop of its own that no
greenlet can stall, so each Locust worker starts the same engine child as ``harness run
--workers`` (``python -m harness.engine.workers``, one uvloop loop) and relays between it and
the master: ASSIGN → the child's spec, the child's ready → READY, START → the epoch, and the
child's result → RESULT. The child's per-second samples are fired into Locust's
``events.request``, so Locust's console and web UI show live rates and response times.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import orjson

from harness.childproc import child_env
from harness.distributed import protocol

log = logging.getLogger("harness.distributed.worker")


class WorkerSide:
    """Runs each assigned shard in an engine child; see the module docstring."""

    def __init__(self, environment: Any) -> None:
        self.env = environment
        self.runner = environment.runner
        self.options = environment.parsed_options
        self.proc: subprocess.Popen[bytes] | None = None
        self.shard: int | None = None
        self.finished = gevent.event.Event()
        self.runner.register_message(protocol.ASSIGN, self._on_assign)
        self.runner.register_message(protocol.START, self._on_start)
        self.runner.register_message(protocol.STOP, self._on_stop)
        environment.events.quitting.add_listener(self._on_quitting)
        self._warm: subprocess.Popen[bytes] | None = self._spawn()  # imports done before ASSIGN

    @staticmethod
    def _spawn() -> subprocess.Popen[bytes]:
        env = child_env()
        return subprocess.Popen(
            [sys.executable, "-m", "harness.engine.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def _send(self, msg: dict[str, Any]) -> None:
        proc = self.proc
        if proc is not None and proc.stdin is not None and proc.poll() is None:
            try:
                proc.stdin.write(orjson.dumps(msg) + b"\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def _on_assign(self, environment: Any, msg: Any, **_: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            log.error("already running shard %s; ignoring a second assignment", self.shard)
            return
        gevent.spawn(self._engine, dict(msg.data["spec"]))

    def _on_start(self, environment: Any, msg: Any, **_: Any) -> None:
        self._send({"start": int(msg.data["epoch_wall_ns"])})

    def _on_stop(self, environment: Any, msg: Any, **_: Any) -> None:
        self._send({"stop": 1})

    def _on_quitting(self, **_: Any) -> None:
        """The worker is shutting down: stop the engine so its part is closed, and report if we can."""
        if self._warm is not None and self._warm.poll() is None:
            self._warm.kill()
            self._warm.wait()
        if self.proc is not None and self.proc.poll() is None:
            self._send({"stop": 1})
            self.finished.wait(timeout=15)

    def _engine(self, spec: dict[str, Any]) -> None:
        k = self.shard = int(spec["shard"])
        self.finished.clear()
        ship = bool(getattr(self.options, "harness_ship_parts", False))
        local_dir = None
        if ship:  # no shared filesystem: write locally, send the part's bytes with the result
            local_dir = tempfile.mkdtemp(prefix="harness-part-")
            spec["part"] = str(Path(local_dir) / Path(spec["part"]).name)
        warm, self._warm = self._warm, None
        self.proc = proc = warm if warm is not None and warm.poll() is None else self._spawn()
        self._send({"spec": spec})
        reported = False
        error = None
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if "progress" in msg:
                self._fire(msg["progress"])
            elif "ready" in msg:
                self.runner.send_message(protocol.READY, {"shard": k})
            elif "result" in msg:
                result = msg["result"]
                if ship:
                    result["part_bytes"] = Path(result["part"]).read_bytes()
                self.runner.send_message(protocol.RESULT, result)
                reported = True
            elif "error" in msg:
                error = str(msg["error"])
        code = proc.wait()
        if not reported:
            why = error or f"engine process exited with code {code} before reporting"
            self.runner.send_message(protocol.ERROR, {"shard": k, "error": why})
        if local_dir is not None:
            for f in Path(local_dir).iterdir():
                f.unlink()
            os.rmdir(local_dir)
        self.finished.set()

    def _fire(self, progress: dict[str, Any]) -> None:
        """Completed requests of the last interval into Locust's stats: one event per request."""
        fire = self.env.events.request.fire
        for name, samples in (progress.get("samples") or {}).items():
            for ms in samples:
                fire(
                    request_type=protocol.REQUEST_TYPE,
                    name=name,
                    response_time=ms,
                    response_length=0,
                    exception=None,
                    context={},
                )
        for name, kinds in (progress.get("errors") or {}).items():
            for kind, count in kinds.items():
                failure = RuntimeError(kind)
                for _ in range(int(count)):
                    fire(
                        request_type=protocol.REQUEST_TYPE,
                        name=name,
                        response_time=0,
                        response_length=0,
                        exception=failure,
                        context={},
                    )
