"""Run the reference router as a child process, so it never competes for the harness's loop.

The child is ``python -m harness.router ... --exit-on-stdin-eof``: it prints one JSON line
(harness.router.app.READY_KEYS) once listening, serves until SIGTERM, and also exits when its
stdin (a pipe held by this object) closes, so it cannot outlive a parent that was killed. With
``fleet=`` the router starts that fleet itself (as its own child); with ``attach_admin=`` it
forwards to a running fleet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
import pyarrow as pa

from harness.childproc import ChildProcess
from harness.errors import InfrastructureError, InputError
from harness.mocks.ledger import parquet_bytes_to_table
from harness.router.inject import SWITCHES, Rates

STOP_GRACE_S: Final = 8.0  # the router stops its own fleet first (up to 5 s)


class RouterProcess(ChildProcess):
    """The router in a child process: ``start()`` → ready line, ``info``, ``log_path``, ``stop()``."""

    def __init__(
        self,
        policy: str | os.PathLike[str],
        *,
        fleet: str | os.PathLike[str] | None = None,
        attach_admin: str | None = None,
        log: str | os.PathLike[str] = "router-log.jsonl",
        seed: int = 0,
        rates: Rates | None = None,
        balance: str = "round-robin",
        fleet_procs: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if (fleet is None) == (attach_admin is None):
            raise InputError("RouterProcess needs exactly one of fleet= and attach_admin=", "pass one")
        super().__init__()
        self.stop_grace_s = STOP_GRACE_S
        self.args = ["--policy", str(policy), "--log", str(log), "--seed", str(seed)]
        self.args += ["--fleet", str(fleet)] if fleet is not None else ["--attach-admin", str(attach_admin)]
        self.args += [
            "--balance",
            balance,
            "--fleet-procs",
            str(fleet_procs),
            "--host",
            host,
            "--port",
            str(port),
        ]
        for switch in SWITCHES:
            rate = getattr(rates, switch) if rates is not None else 0.0
            if rate:
                self.args += [f"--{switch.replace('_', '-')}-rate", repr(rate)]
        self.args += list(extra_args)
        self.info: dict[str, Any] = {}
        """The ready line, after ``start()``."""

    def _ready(self, key: str) -> str:
        if not self.info:
            raise InfrastructureError("the router is not running", "call `await start()` first")
        return str(self.info[key])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: Azure's ``azure_endpoint``."""
        return self._ready("base_url")

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the plain OpenAI client's ``base_url``."""
        return self._ready("openai_base_url")

    @property
    def admin_url(self) -> str:
        """The fleet's admin API."""
        return self._ready("admin_url")

    @property
    def log_path(self) -> Path:
        """The injection log (JSONL; schema in harness.router.inject)."""
        return Path(self._ready("log"))

    async def start(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Spawn the router and wait for its ready line; return it.

        Raises InfrastructureError, with the tail of the child's stderr, if the child exits or
        prints nothing within ``timeout_s``.
        """
        await self._spawn("harness.router", self.args)
        lines, problem = await self._ready_lines(1, timeout_s, "it was ready")
        if problem:
            await self.stop()
            raise InfrastructureError(
                f"router {problem}; stderr: {self.stderr_tail()}",
                "run `python -m harness.router ...` by hand to see the whole error",
            )
        self.info = lines[0]
        return self.info

    async def state(self, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """The router's ``/router/state`` (counts, in flight, injections)."""
        return orjson.loads(await self._get(self._ready("router_url") + "/state", timeout_s))

    async def fetch_ledger(self, *, timeout_s: float = 30.0) -> pa.Table:
        """The fleet's ledger (``LEDGER_SCHEMA``), over its admin API."""
        return parquet_bytes_to_table(await self._get(self.admin_url + "/ledger", timeout_s))

    async def _get(self, url: str, timeout_s: float) -> bytes:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.get(url) as resp,
            ):
                resp.raise_for_status()
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InfrastructureError(f"GET {url} failed: {exc!r}", "is the router still running?") from None
