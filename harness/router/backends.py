"""The backend table: which fleet endpoints the router can forward to, and which serve a model.

Only the OpenAI-family dialects are proxied (``azure_openai`` and ``openai``); Bedrock and Vertex
endpoints of a fleet are left out. The table comes from a fleet's endpoint lines (what
``FleetProcess.start()`` returns, or ``GET /admin/endpoints`` of a running fleet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from harness.errors import InfrastructureError, InputError

PROXIED_DIALECTS: Final = frozenset({"azure_openai", "openai"})
ADMIN_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Backend:
    """One endpoint the router forwards to: where it is, which cloud hosts it, what it serves."""

    index: int  # position in the table: a stable key for counters
    name: str
    cloud: str
    region: str
    dialect: str  # azure_openai | openai
    base_url: str  # http://host:port, no trailing slash
    models: frozenset[str]  # Azure deployment names / OpenAI model ids

    @property
    def azure(self) -> bool:
        """True when the backend speaks Azure's URL forms (deployment paths, /openai/v1)."""
        return self.dialect == "azure_openai"


class BackendTable:
    """Every proxied backend, in fleet order, with a per-model index built once."""

    __slots__ = ("_by_model", "_by_name", "backends")

    def __init__(self, backends: Iterable[Backend]) -> None:
        self.backends: tuple[Backend, ...] = tuple(backends)
        self._by_name = {b.name: b for b in self.backends}
        by_model: dict[str, list[Backend]] = {}
        for backend in self.backends:
            for model in sorted(backend.models):
                by_model.setdefault(model, []).append(backend)
        self._by_model = {m: tuple(bs) for m, bs in by_model.items()}

    @classmethod
    def from_endpoints(cls, endpoints: Iterable[Mapping[str, Any]]) -> BackendTable:
        """The table of a fleet's endpoint lines (keys ``harness.mocks.fleet.ENDPOINT_KEYS``).

        Raises InputError when no endpoint speaks a proxied dialect.
        """
        backends: list[Backend] = []
        for info in endpoints:
            if info.get("dialect") not in PROXIED_DIALECTS:
                continue
            backends.append(
                Backend(
                    index=len(backends),
                    name=str(info["name"]),
                    cloud=str(info["cloud"]),
                    region=str(info["region"]),
                    dialect=str(info["dialect"]),
                    base_url=str(info["base_url"]).rstrip("/"),
                    models=frozenset(str(d) for d in info.get("deployments") or ()),
                )
            )
        if not backends:
            raise InputError(
                "the fleet has no endpoint of dialect azure_openai or openai for the router to forward to",
                "add one to the fleet file",
            )
        return cls(backends)

    def __len__(self) -> int:
        return len(self.backends)

    def get(self, name: str) -> Backend | None:
        return self._by_name.get(name)

    def serving(self, model: str | None) -> tuple[Backend, ...]:
        """The backends that serve ``model``; every backend when the model is not known (None)."""
        if model is None:
            return self.backends
        return self._by_model.get(model, ())

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-able dict per backend (for the ready line and ``/router/state``)."""
        return [
            {
                "name": b.name,
                "cloud": b.cloud,
                "region": b.region,
                "dialect": b.dialect,
                "base_url": b.base_url,
                "models": sorted(b.models),
            }
            for b in self.backends
        ]


async def fetch_endpoints(admin_url: str) -> list[dict[str, Any]]:
    """``GET {admin_url}/endpoints`` of a running fleet (``admin_url`` ends in ``/admin``)."""
    url = admin_url.rstrip("/") + "/endpoints"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADMIN_TIMEOUT_S)) as session,
            session.get(url) as resp,
        ):
            payload = await resp.read()
            if resp.status != 200:
                raise InfrastructureError(
                    f"fleet admin API GET {url} answered {resp.status}",
                    "pass the admin_url a fleet printed (http://127.0.0.1:PORT/admin)",
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise InfrastructureError(
            f"fleet admin API GET {url} failed: {type(exc).__name__}: {exc}",
            "check that the fleet is running",
        ) from None
    data = orjson.loads(payload)
    if not isinstance(data, list):
        raise InfrastructureError(f"fleet admin API GET {url} did not return a list", "is it a mock fleet?")
    return data
