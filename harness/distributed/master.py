"""The Locust master's side of a harness run (gevent): shard assignment, the epoch, lost workers.

On Locust's ``test_start`` the master starts the coordinator process (run directory, mock
fleet), assigns shard k of n to each connected worker, waits until every worker's engine is
ready and sends them one epoch. It then collects each worker's RESULT; a worker whose
heartbeat goes missing, that leaves, or that reports an ERROR is a missing shard. When every
shard is accounted for, the coordinator merges and judges, and the master ends Locust with the
verdict's exit code (headless) or stops the test and logs the verdict (web UI).
"""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import orjson
from locust.runners import STATE_MISSING, LocalRunner

from harness.childproc import child_env
from harness.distributed import protocol

log = logging.getLogger("harness.distributed.master")


class MasterSide:
    """One harness run per Locust test; see the module docstring."""

    def __init__(self, environment: Any) -> None:
        self.env = environment
        self.runner = environment.runner
        self.options = environment.parsed_options
        self.state = "idle"
        self.assigned: dict[int, str] = {}  # shard -> Locust client id
        self.ready: set[int] = set()
        self.results: dict[int, dict[str, Any]] = {}
        self.missing: dict[int, str] = {}
        self.interrupted = False
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.run_dir: Path | None = None
        self.verdict: dict[str, Any] | None = None
        self.done = gevent.event.Event()
        self.runner.register_message(protocol.READY, self._on_ready)
        self.runner.register_message(protocol.RESULT, self._on_result)
        self.runner.register_message(protocol.ERROR, self._on_error)
        environment.events.test_start.add_listener(self._on_test_start)
        environment.events.test_stop.add_listener(self._on_test_stop)
        environment.events.quitting.add_listener(self._on_quitting)
        self._prepared: Any = None
        if self.options.headless and self.options.harness_profile:
            # headless: prepare (run directory, fleet) while the workers connect, not after
            self._prepared = gevent.spawn(self._start_coordinator)

    # ------------------------------------------------------------------ Locust events

    def _on_test_start(self, **_: Any) -> None:
        if self.state == "idle":
            self.state = "starting"
            gevent.spawn(self._run).link_exception(self._crashed)
        elif self.state == "done":
            log.warning("this master already ran its harness run; start a new master for another")

    def _on_test_stop(self, **_: Any) -> None:
        if self.state in ("starting", "running"):
            self._stop_workers("Locust test stopped")

    def _on_quitting(self, **_: Any) -> None:
        """Ctrl-C or SIGTERM on the master: stop the workers, keep their partial results, judge."""
        if self.state in ("starting", "running"):
            self._stop_workers("Locust master quitting")
            self.done.wait(timeout=60)

    def _stop_workers(self, why: str) -> None:
        log.warning("%s: stopping the harness run early (partial results)", why)
        self.interrupted = True
        for k, client in self.assigned.items():
            if k not in self.results and k not in self.missing:
                self.runner.send_message(protocol.STOP, {}, client_id=client)

    def _on_ready(self, environment: Any, msg: Any, **_: Any) -> None:
        self.ready.add(int(msg.data["shard"]))

    def _on_result(self, environment: Any, msg: Any, **_: Any) -> None:
        data = dict(msg.data)
        k = int(data["shard"])
        part = data.pop("part_bytes", None)
        if part is not None and self.run_dir is not None:  # shipped over the Locust connection
            path = self.run_dir / "parts" / f"part-{k}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(part if isinstance(part, bytes) else base64.b64decode(part))
            data["part"] = str(path)
        self.results[k] = data
        log.info("shard %d reported: %s", k, data.get("counters"))

    def _on_error(self, environment: Any, msg: Any, **_: Any) -> None:
        k = int(msg.data["shard"])
        if k not in self.results:
            self.missing.setdefault(
                k, f"shard {k} of {len(self.assigned)} missing: worker {msg.node_id} {msg.data['error']}"
            )

    def _crashed(self, greenlet: Any) -> None:
        log.error("the harness run failed: %r", greenlet.exception)
        self.env.process_exit_code = 4
        self.done.set()
        self.runner.quit()

    # ------------------------------------------------------------------ the run

    def _start_coordinator(self) -> dict[str, Any]:
        o = self.options
        cmd = [
            sys.executable,
            "-m",
            "harness.distributed.coordinator",
            "--profile",
            o.harness_profile,
            "--results",
            o.harness_results,
        ]
        if o.harness_run_dir:
            cmd += ["--run-dir", o.harness_run_dir]
        if o.harness_duration_s:
            cmd += ["--duration-s", str(o.harness_duration_s)]
        for t in o.harness_threshold or ():
            cmd += ["--threshold", t]
        if o.harness_no_report:
            cmd.append("--no-report")
        env = child_env()
        self.coordinator = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.coordinator.stdout is not None
        line = self.coordinator.stdout.readline()
        msg: dict[str, Any] = (
            orjson.loads(line) if line else {"error": "the coordinator exited", "exit_code": 4}
        )
        if "prepared" not in msg:
            raise RuntimeError(f"harness coordinator: {msg.get('error')}")
        return dict(msg["prepared"])

    def _clients(self) -> list[str]:
        if isinstance(self.runner, LocalRunner):
            return ["local"]
        alive = [c for c in self.runner.clients.values() if c.state != STATE_MISSING]
        return sorted(c.id for c in alive)

    def _run(self) -> None:
        if not self.options.harness_profile:
            log.error("no harness profile: pass --harness-profile PATH or set HARNESS_PROFILE")
            self.env.process_exit_code = 2
            self.runner.quit()
            return
        prepared = self._prepared.get() if self._prepared is not None else self._start_coordinator()
        self.run_dir = Path(prepared["run_dir"])
        clients = self._clients()
        n = len(clients)
        if self.interrupted:
            self._abandon(130, "INTERRUPTED", "interrupted before the run started; nothing was sent")
            return
        if n == 0:
            self._abandon(4, "ERROR", "no Locust worker is connected: start workers before starting the test")
            return
        template = prepared["template"]
        log.info("harness run %s: %d shard(s) on workers %s", self.run_dir.name, n, clients)
        for k, client in enumerate(clients):
            spec = dict(template, shard=k, shards=n, part=str(self.run_dir / "parts" / f"part-{k}.parquet"))
            self.assigned[k] = client
            self.runner.send_message(protocol.ASSIGN, {"spec": spec}, client_id=client)
        deadline = time.monotonic() + protocol.READY_TIMEOUT_S
        while len(self.ready) + len(self.missing) < n and time.monotonic() < deadline:
            self._check_lost()
            gevent.sleep(0.1)
        for k in range(n):
            if k not in self.ready and k not in self.missing:
                self.missing[k] = f"shard {k} of {n} missing: worker {self.assigned[k]} never became ready"
        epoch_wall_ns = time.time_ns() + protocol.EPOCH_LEAD_NS
        started_at = datetime.fromtimestamp(epoch_wall_ns / 1e9, UTC).isoformat()
        self.state = "running"
        for k in sorted(self.ready):  # stopped while starting: each closes an empty part and reports
            go = (
                (protocol.STOP, {})
                if self.interrupted
                else (protocol.START, {"epoch_wall_ns": epoch_wall_ns})
            )
            self.runner.send_message(*go, client_id=self.assigned[k])
        budget = (
            protocol.EPOCH_LEAD_NS / 1e9
            + prepared["duration_s"]
            + prepared["request_timeout_s"]
            + 5
            + protocol.RESULT_SLACK_S
        )
        deadline = time.monotonic() + budget
        while len(self.results) + len(self.missing) < n and time.monotonic() < deadline:
            self._check_lost()
            gevent.sleep(0.2)
        for k in range(n):
            if k not in self.results and k not in self.missing:
                self.missing[k] = (
                    f"shard {k} of {n} missing: worker {self.assigned[k]} did not report in {budget:.0f} s"
                )
        self.state = "finishing"
        self._finish(n, template["id_prefix"], started_at)

    def _abandon(self, code: int, result: str, reason: str) -> None:
        """End without a run: the coordinator stops the fleet (end of its stdin), no verdict is judged."""
        log.error("%s", reason)
        if self.coordinator is not None and self.coordinator.stdin is not None:
            self.coordinator.stdin.close()
            self.coordinator.wait()
        self._conclude({"result": result, "exit_code": code, "reasons": [reason]})

    def _conclude(self, verdict: dict[str, Any]) -> None:
        self.verdict = verdict
        outcome = getattr(self.options, "harness_outcome", "")
        if outcome:
            Path(outcome).write_bytes(orjson.dumps(verdict))
        self.env.process_exit_code = int(verdict["exit_code"])
        self.state = "done"
        self.done.set()
        if self.options.headless:
            self.runner.quit()
        else:
            self.runner.stop()

    def _check_lost(self) -> None:
        """A worker whose heartbeat is missing, or that left, before its RESULT is a missing shard."""
        if isinstance(self.runner, LocalRunner):
            return
        n = len(self.assigned)
        for k, client in self.assigned.items():
            if k in self.results or k in self.missing:
                continue
            node = self.runner.clients.get(client)
            if node is None or node.state == STATE_MISSING:
                how = "left" if node is None else "stopped sending heartbeats"
                self.missing[k] = f"shard {k} of {n} missing: Locust worker {client} {how} before reporting"
                log.error("%s", self.missing[k])

    def _finish(self, n: int, id_prefix: str, started_at: str) -> None:
        assert self.coordinator is not None and self.coordinator.stdin is not None
        finish = {
            "shards": n,
            "id_prefix": id_prefix,
            "results": [self.results[k] for k in sorted(self.results)],
            "missing": [self.missing[k] for k in sorted(self.missing)],
            "interrupted": self.interrupted,
            "started_at": started_at,
        }
        self.coordinator.stdin.write(orjson.dumps({"finish": finish}) + b"\n")
        self.coordinator.stdin.flush()
        assert self.coordinator.stdout is not None
        line = self.coordinator.stdout.readline()
        msg: dict[str, Any] = (
            orjson.loads(line) if line else {"error": "the coordinator exited", "exit_code": 4}
        )
        self.coordinator.wait()
        if "verdict" in msg:
            v = msg["verdict"]
            reasons = "; ".join(v["reasons"]) or "all checks held"
            log.info(
                "harness verdict %s (exit %d): %s; results: %s",
                v["result"],
                v["exit_code"],
                reasons,
                v["run_dir"],
            )
        else:
            log.error("harness coordinator: %s", msg.get("error"))
            v = {
                "result": "ERROR",
                "exit_code": int(msg.get("exit_code", 4)),
                "reasons": [str(msg.get("error"))],
            }
        self._conclude(v)
