"""The in-memory request record: one per planned request, filled in by the engine.

A plain slotted class (no dataclass machinery, no validation) because the engine makes one
per planned request on the hot path. Its attributes are exactly the fields of
``harness.results.schema.RECORD_SCHEMA``, in the same order; see that module for the
glossary and units (times are int64 ns offsets from the run epoch, ``None`` when the moment
never happened).
"""

from __future__ import annotations

from typing import Any


class Record:
    """One request's raw facts; ``as_row()`` gives them in ``RECORD_FIELDS`` order."""

    # RECORD_FIELDS order, not sorted (a test checks they match)
    __slots__ = (  # noqa: RUF023
        "request_id",
        "index",
        "scenario",
        "worker",
        "session_id",
        "turn",
        "api",
        "stream",
        "model",
        "endpoint",
        "deployment",
        "tenant",
        "sold_through",
        "store",
        "previous_response_id",
        "intended_ns",
        "sent_ns",
        "first_byte_ns",
        "first_token_ns",
        "done_ns",
        "token_ns",
        "outcome",
        "error_kind",
        "error_detail",
        "status",
        "attempts",
        "tokens_in",
        "tokens_out",
        "usage_from_server",
        "chunks",
        "bytes_out",
        "bytes_in",
        "fp_cloud",
        "fp_region",
        "fp_request_id",
        "mock_cloud",
        "mock_region",
        "response_id",
        "attempt_sent_ns",
        "retry_wait_ns",
        "pool_wait_ns",
        "connect_ns",
    )

    request_id: str
    index: int
    scenario: str
    worker: int
    session_id: str | None
    turn: int | None
    api: str
    stream: bool
    model: str
    endpoint: str
    deployment: str
    tenant: str
    sold_through: str
    store: bool | None
    previous_response_id: str | None
    intended_ns: int
    sent_ns: int | None
    first_byte_ns: int | None
    first_token_ns: int | None
    done_ns: int | None
    token_ns: list[int] | None
    outcome: str
    error_kind: str | None
    error_detail: str | None
    status: int
    attempts: int
    tokens_in: int | None
    tokens_out: int | None
    usage_from_server: bool
    chunks: int
    bytes_out: int
    bytes_in: int
    fp_cloud: str | None
    fp_region: str | None
    fp_request_id: str | None
    mock_cloud: str | None
    mock_region: str | None
    response_id: str | None
    attempt_sent_ns: int | None
    retry_wait_ns: int
    pool_wait_ns: int
    connect_ns: int

    def __init__(
        self,
        *,
        request_id: str,
        index: int,
        scenario: str,
        intended_ns: int,
        worker: int = 0,
        session_id: str | None = None,
        turn: int | None = None,
        api: str = "chat.completions",
        stream: bool = True,
        model: str = "",
        endpoint: str = "",
        deployment: str = "",
        tenant: str = "default",
        sold_through: str = "direct",
        store: bool | None = None,
        previous_response_id: str | None = None,
        sent_ns: int | None = None,
        first_byte_ns: int | None = None,
        first_token_ns: int | None = None,
        done_ns: int | None = None,
        token_ns: list[int] | None = None,
        outcome: str = "ok",
        error_kind: str | None = None,
        error_detail: str | None = None,
        status: int = 0,
        attempts: int = 0,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        usage_from_server: bool = False,
        chunks: int = 0,
        bytes_out: int = 0,
        bytes_in: int = 0,
        fp_cloud: str | None = None,
        fp_region: str | None = None,
        fp_request_id: str | None = None,
        mock_cloud: str | None = None,
        mock_region: str | None = None,
        response_id: str | None = None,
        attempt_sent_ns: int | None = None,
        retry_wait_ns: int = 0,
        pool_wait_ns: int = 0,
        connect_ns: int = 0,
    ) -> None:
        self.request_id = request_id
        self.index = index
        self.scenario = scenario
        self.worker = worker
        self.session_id = session_id
        self.turn = turn
        self.api = api
        self.stream = stream
        self.model = model
        self.endpoint = endpoint
        self.deployment = deployment
        self.tenant = tenant
        self.sold_through = sold_through
        self.store = store
        self.previous_response_id = previous_response_id
        self.intended_ns = intended_ns
        self.sent_ns = sent_ns
        self.first_byte_ns = first_byte_ns
        self.first_token_ns = first_token_ns
        self.done_ns = done_ns
        self.token_ns = token_ns
        self.outcome = outcome
        self.error_kind = error_kind
        self.error_detail = error_detail
        self.status = status
        self.attempts = attempts
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.usage_from_server = usage_from_server
        self.chunks = chunks
        self.bytes_out = bytes_out
        self.bytes_in = bytes_in
        self.fp_cloud = fp_cloud
        self.fp_region = fp_region
        self.fp_request_id = fp_request_id
        self.mock_cloud = mock_cloud
        self.mock_region = mock_region
        self.response_id = response_id
        self.attempt_sent_ns = attempt_sent_ns
        self.retry_wait_ns = retry_wait_ns
        self.pool_wait_ns = pool_wait_ns
        self.connect_ns = connect_ns

    def as_row(self) -> tuple[Any, ...]:
        """The field values in ``RECORD_FIELDS`` order (the ``token_ns`` list is shared, not copied)."""
        return (
            self.request_id,
            self.index,
            self.scenario,
            self.worker,
            self.session_id,
            self.turn,
            self.api,
            self.stream,
            self.model,
            self.endpoint,
            self.deployment,
            self.tenant,
            self.sold_through,
            self.store,
            self.previous_response_id,
            self.intended_ns,
            self.sent_ns,
            self.first_byte_ns,
            self.first_token_ns,
            self.done_ns,
            self.token_ns,
            self.outcome,
            self.error_kind,
            self.error_detail,
            self.status,
            self.attempts,
            self.tokens_in,
            self.tokens_out,
            self.usage_from_server,
            self.chunks,
            self.bytes_out,
            self.bytes_in,
            self.fp_cloud,
            self.fp_region,
            self.fp_request_id,
            self.mock_cloud,
            self.mock_region,
            self.response_id,
            self.attempt_sent_ns,
            self.retry_wait_ns,
            self.pool_wait_ns,
            self.connect_ns,
        )

    def __repr__(self) -> str:
        return (
            f"Record(request_id={self.request_id!r}, index={self.index}, scenario={self.scenario!r}, "
            f"outcome={self.outcome!r}, status={self.status})"
        )
