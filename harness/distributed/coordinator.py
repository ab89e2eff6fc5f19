"""The harness side of a Locust master, in its own plain-asyncio process.

The Locust master runs on gevent; the embedded mock fleet, the ledger fetch and the judging are
asyncio and pandas code that must not block (or be patched under) gevent's hub. So the master
starts ``python -m harness.distributed.coordinator`` and talks JSON lines with it::

    stdout: {"prepared": {"run_dir", "template", "duration_s", "request_timeout_s"}}
            run directory made, fleet listening; ``template`` is shard 0 of 1 of the workers' spec
    stdin : {"finish": {"shards", "results": [...], "missing": [...], "interrupted", "id_prefix"}}
    stdout: {"verdict": {"run_dir", "result", "exit_code", "reasons"}}   then exit with that code
    stdout: {"error": "...", "exit_code": N}                             bad input or no fleet

The end of stdin before ``finish`` (the master died) stops the fleet and exits INTERRUPTED with
no verdict. The verdict is written by ``harness.runner._judge_and_summarize`` from the merged
``EngineResult``: the same path, files and exit codes as ``harness run``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from harness.engine.dispatch import request_id_prefix
from harness.engine.targets import prepare_routes
from harness.engine.workers import EngineResult, endpoints_to_wire, make_spec, part_name
from harness.errors import ExitCode, HarnessError
from harness.mocks.process import FleetProcess
from harness.profile.models import ROUTER_ENDPOINT
from harness.results import rundir
from harness.runner import (
    _declared_clouds,
    _judge_and_summarize,
    _resolve_endpoints,
    _setup_log,
    _start_router,
    log,
    prepare,
)


def _emit(msg: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(msg) + b"\n")
    sys.stdout.buffer.flush()


def merge_results(finish: dict[str, Any]) -> EngineResult:
    """The ``EngineResult`` of the workers' RESULT messages and the master's missing shards."""
    engine = EngineResult(finish["id_prefix"], workers_expected=int(finish["shards"]))
    for result in finish["results"]:
        engine.add_shard(result)
    engine.missing = [str(m) for m in finish["missing"]]
    return engine


def _make_run_dir(args: argparse.Namespace, profile_name: str) -> Path:
    """``--run-dir`` (made if needed; ``harness run --engine locust`` made it), else a new one."""
    if args.run_dir:
        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    return rundir.new_run_dir(Path(args.results), profile_name)


async def coordinate(args: argparse.Namespace) -> int:
    try:
        loaded = prepare(args.profile, duration_s=args.duration_s, thresholds=args.threshold or ())
    except HarnessError as exc:
        _emit({"error": exc.one_line(), "exit_code": int(exc.exit_code)})
        return int(exc.exit_code)
    profile = loaded.profile
    run_dir = _make_run_dir(args, profile.name)
    handler = _setup_log(run_dir)
    rundir.write_json(run_dir / rundir.PROFILE, profile.model_dump(mode="json", by_alias=True))
    log.info("run %s: profile %s, seed %d (Locust master)", run_dir.name, loaded.path, profile.seed)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet = FleetProcess(loaded.fleet_path) if loaded.fleet_path is not None else None
    started_wall = datetime.now(UTC)
    router = None
    try:
        try:
            endpoints_info = await fleet.start() if fleet is not None else []
            endpoints = _resolve_endpoints(loaded, endpoints_info)
            if profile.target.router is not None and fleet is not None:
                router, endpoints[ROUTER_ENDPOINT] = await _start_router(loaded, fleet, run_dir)
            prepare_routes(profile, endpoints)
        except HarnessError as exc:
            _emit({"error": exc.one_line(), "exit_code": int(exc.exit_code)})
            return int(exc.exit_code)
        template = make_spec(
            profile,
            str(loaded.path),
            endpoints_to_wire(endpoints, profile, loaded.fleet),
            shard_k=0,
            shards=1,
            id_prefix=request_id_prefix(),
            part=run_dir / rundir.PARTS / part_name(0),
            policy=loaded.policy.model_dump(mode="json", by_alias=True),
            live_samples=True,
        )
        _emit(
            {
                "prepared": {
                    "run_dir": str(run_dir.resolve()),
                    "template": template,
                    "duration_s": profile.duration_s,
                    "request_timeout_s": profile.client.request_timeout_s,
                }
            }
        )
        line = await reader.readline()
        if not line:
            log.error("the Locust master went away before the run finished")
            return int(ExitCode.INTERRUPTED)
        finish = orjson.loads(line)["finish"]
        started_wall = datetime.fromisoformat(finish.get("started_at") or started_wall.isoformat())
        engine = merge_results(finish)
        for reason in engine.missing:
            log.error("%s", reason)
        finished_wall = datetime.now(UTC)
        if fleet is not None:
            pq.write_table(await fleet.fetch_ledger(), run_dir / rundir.LEDGER)
    finally:
        if router is not None:
            await router.stop()
        if fleet is not None:
            await fleet.stop()
    try:
        outcome = _judge_and_summarize(
            loaded,
            run_dir,
            engine,
            started_wall,
            finished_wall,
            bool(finish.get("interrupted")),
            declared=_declared_clouds(loaded),
        )
        if not args.no_report:
            from harness.report import write_report

            write_report(run_dir)
    except HarnessError as exc:
        _emit({"error": exc.one_line(), "exit_code": int(exc.exit_code)})
        return int(exc.exit_code)
    finally:
        import logging

        logging.getLogger("harness").removeHandler(handler)
        handler.close()
    _emit(
        {
            "verdict": {
                "run_dir": str(outcome.run_dir),
                "result": outcome.verdict,
                "exit_code": int(outcome.exit_code),
                "reasons": outcome.reasons,
            }
        }
    )
    return int(outcome.exit_code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.distributed.coordinator")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--results", default="results")
    parser.add_argument("--run-dir", default="")
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--threshold", action="append")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    from harness.runner import run_with_uvloop

    sys.exit(run_with_uvloop(coordinate(args)))


if __name__ == "__main__":
    main()
