"""Mock cloud endpoints (aiohttp apps), their shared runtime (latency, rate limits, queueing,
faults, batched due-time sleeping), their ledgers, and fleets of them.

In-process: ``await start_fleet(fleet)`` → ``RunningFleet``. As a child process, so the mock
does not share the load generator's event loop: ``async with FleetProcess(path, procs=N) as fp``.
See docs/mocks.md.
"""

from harness.mocks.azure_openai import make_azure_app
from harness.mocks.fleet import (
    ENDPOINT_KEYS,
    RunningFleet,
    endpoint_seed,
    serve_fleet_forever,
    start_fleet,
)
from harness.mocks.latency import LatencyModel
from harness.mocks.ledger import Ledger
from harness.mocks.process import FleetProcess
from harness.mocks.runtime import (
    NO_FAULTS,
    Admission,
    DueScheduler,
    EndpointRuntime,
    FaultPlan,
    Rejection,
    StateStore,
)

__all__ = [
    "ENDPOINT_KEYS",
    "NO_FAULTS",
    "Admission",
    "DueScheduler",
    "EndpointRuntime",
    "FaultPlan",
    "FleetProcess",
    "LatencyModel",
    "Ledger",
    "Rejection",
    "RunningFleet",
    "StateStore",
    "endpoint_seed",
    "make_azure_app",
    "serve_fleet_forever",
    "start_fleet",
]
