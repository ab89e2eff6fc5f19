"""Run a mock fleet as a child process, so the mock never competes for the harness's event loop.

The child is ``python -m harness.mocks --fleet PATH --exit-on-stdin-eof [--procs N]``: it prints
one JSON line per endpoint once all listen (in all N worker processes), serves until SIGTERM,
and also exits when its stdin (a pipe held by this object) closes, so it cannot outlive a parent
that was killed.
"""

from __future__ import annotations

import os
from typing import Any, Final

import aiohttp
import orjson
import pyarrow as pa

from harness.childproc import ChildProcess
from harness.errors import InfrastructureError, InputError
from harness.mocks.ledger import parquet_bytes_to_table
from harness.profile import load_fleet

STOP_GRACE_S: Final = 5.0


class FleetProcess(ChildProcess):
    """A mock fleet in a child process: ``start()``, ``endpoints``, ``fetch_ledger()``, ``stop()``."""

    def __init__(self, fleet_path: str | os.PathLike[str], *, procs: int = 1) -> None:
        if procs < 1:
            raise InputError(f"procs must be at least 1, not {procs}", "use 1 for a single process")
        super().__init__()
        self.stop_grace_s = STOP_GRACE_S
        self.fleet_path = str(fleet_path)
        self.procs = procs
        self.endpoints: list[dict[str, Any]] = []
        """One dict per endpoint (keys ``harness.mocks.fleet.ENDPOINT_KEYS``), after ``start()``."""

    @property
    def admin_url(self) -> str:
        """``http://127.0.0.1:PORT/admin`` of the running fleet."""
        if not self.endpoints:
            raise InfrastructureError("the mock fleet is not running", "call `await start()` first")
        return str(self.endpoints[0]["admin_url"])

    async def start(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Spawn the fleet and wait until every endpoint listens; return the endpoint infos.

        Raises ProfileError for an invalid fleet file (checked here, before spawning) and
        InfrastructureError, with the tail of the child's stderr, if the child exits or does
        not report every endpoint within ``timeout_s`` (default 20 s + 10 s per extra process).
        """
        if timeout_s is None:
            timeout_s = 20.0 + 10.0 * (self.procs - 1)
        expected = len(load_fleet(self.fleet_path).endpoints)
        args = ["--fleet", self.fleet_path, "--procs", str(self.procs)]
        await self._spawn("harness.mocks", args)
        endpoints, problem = await self._ready_lines(expected, timeout_s, "all endpoints were ready")
        if problem:
            await self.stop()
            raise InfrastructureError(
                f"mock fleet {self.fleet_path} {problem}; stderr: {self.stderr_tail()}",
                "run `python -m harness.mocks --fleet FILE` by hand to see the whole error",
            )
        self.endpoints = endpoints
        return endpoints

    async def fetch_ledger(self, *, timeout_s: float = 30.0) -> pa.Table:
        """Every endpoint's ledger (``LEDGER_SCHEMA``), over the admin API."""
        data = await self._admin("GET", "/ledger", timeout_s)
        return parquet_bytes_to_table(data)

    async def reset_ledger(self, *, timeout_s: float = 30.0) -> None:
        """Forget every ledger row (e.g. after a warm-up)."""
        await self._admin("POST", "/ledger/reset", timeout_s)

    async def get_faults(self, name: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """The endpoint's current faults (``Faults`` fields)."""
        return orjson.loads(await self._admin("GET", f"/endpoints/{name}/faults", timeout_s))

    async def set_faults(self, name: str, *, timeout_s: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Replace the endpoint's faults (in every process) by ``Faults(**fields)``: a field left
        out is off, so ``set_faults(name)`` clears them all. Returns the faults now in force.

        Raises InputError with the admin API's one-line message for an invalid field.
        """
        body = orjson.dumps(fields)
        return orjson.loads(await self._admin("PUT", f"/endpoints/{name}/faults", timeout_s, body))

    async def set_outage(self, name: str, on: bool, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """Switch the endpoint's region outage on or off (every request answers 503 while on)."""
        body = orjson.dumps({"outage": on})
        return orjson.loads(await self._admin("POST", f"/endpoints/{name}/outage", timeout_s, body))

    async def state(self, name: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """The endpoint's counts, summed over its processes (see harness.mocks.fleet)."""
        return orjson.loads(await self._admin("GET", f"/endpoints/{name}/state", timeout_s))

    async def _admin(self, method: str, path: str, timeout_s: float, body: bytes | None = None) -> bytes:
        url = self.admin_url + path
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.request(method, url, data=body) as resp,
            ):
                payload = await resp.read()
                if resp.status in (400, 404):
                    message = orjson.loads(payload).get("error", payload.decode(errors="replace"))
                    raise InputError(f"mock fleet admin API: {message}", "fix the request")
                resp.raise_for_status()
                return payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InfrastructureError(
                f"mock fleet admin API {method} {url} failed: {exc!r}",
                "check that the fleet process is still running",
            ) from None
