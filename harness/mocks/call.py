"""What one request to a mock has accumulated, written to its endpoint's ledger once, when it ends.

Every dialect's handlers fill the same fields, so the ledger has one shape whatever the cloud.
Status: the HTTP status sent; 200 once headers went out (also if the stream was then cut);
``LEDGER_STATUS_NOT_SENT`` (499) while nothing has been sent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from harness.results.schema import LEDGER_STATUS_NOT_SENT

if TYPE_CHECKING:
    from harness.mocks.runtime import EndpointRuntime


class Call:
    """One request's ledger row in the making (slotted: one per request on the mock's hot path)."""

    __slots__ = (
        "api",
        "bytes_in",
        "bytes_out",
        "crid",
        "deployment",
        "received_wall_ns",
        "response_id",
        "stateful",
        "status",
        "stream",
        "tokens_in",
        "tokens_out",
    )

    def __init__(
        self,
        crid: str | None,
        api: str,
        received_wall_ns: int,
        *,
        deployment: str | None = None,
        stateful: bool = False,
        status: int = LEDGER_STATUS_NOT_SENT,
    ) -> None:
        self.crid = crid  # the client's request id, the join key with the harness's records
        self.api = api
        self.received_wall_ns = received_wall_ns
        self.deployment = deployment
        self.stateful = stateful
        self.status = status
        self.response_id: str | None = None
        self.stream = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.tokens_in = 0
        self.tokens_out = 0

    def record(self, runtime: EndpointRuntime) -> None:
        """Append this request to the endpoint's ledger (call exactly once, when it ends)."""
        runtime.ledger.append(  # positional, in LEDGER_FIELDS order (keywords cost ~2 µs here)
            self.crid,
            runtime.name,
            runtime.cloud,
            runtime.region,
            self.deployment,
            self.api,
            self.stateful,
            self.response_id,
            self.status,
            self.stream,
            self.bytes_in,
            self.bytes_out,
            self.tokens_in,
            self.tokens_out,
            self.received_wall_ns,
            time.time_ns(),
            runtime.pid,
        )
