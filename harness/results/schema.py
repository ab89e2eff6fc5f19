"""The one Arrow schema of a request record, and of a mock ledger row. Versioned.

A record holds raw facts only: timestamps (ns offsets from the run epoch), byte and token
counts, status and an error kind. TTFT, ITL, TPOT and goodput are derived later, once, in
``harness.results.derive``.

Glossary (all times int64 ns from the run epoch; null when the moment never happened):
  intended_ns     when the plan said to send
  sent_ns         when the engine handed the request to the transport
  first_byte_ns   response headers received
  first_token_ns  first chunk carrying content (not the prompt-filter or role-only chunk)
  done_ns         last byte received, or the failure noticed
  token_ns        arrival time of each content-bearing chunk (ITL = diff of this list)
  attempt_sent_ns when the final attempt was sent (= sent_ns without retries)
  retry_wait_ns   total time spent waiting between attempts (Retry-After), ns
  pool_wait_ns    total time the request waited for a free connection in the client's pool, over
                  all attempts (aiohttp TraceConfig; always 0 on the lean transport, which never
                  queues); null in files before schema v3
  connect_ns      total time spent opening new connections (TCP + TLS) for the request, over all
                  attempts; 0 when every attempt reused a keep-alive connection; null before v3

Retries: ``attempts`` counts the attempts made (0 when never sent). Latency "with retries" is
measured from intended_ns (or sent_ns); "without retries" from attempt_sent_ns.

Outcomes: ``planned = ok + error + timeout + dropped + cancelled`` for every run.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

RECORD_SCHEMA_VERSION: Final = 3
LEDGER_SCHEMA_VERSION: Final = 1

OUTCOMES: Final = ("ok", "error", "timeout", "dropped", "cancelled")

# error_kind values (a small closed vocabulary so reports can group by it)
ERROR_KINDS: Final = (
    "http_429",  # rate limited
    "http_4xx",  # other client errors
    "http_5xx",  # server errors
    "connect",  # could not connect (refused, DNS, TLS)
    "reset",  # connection closed or reset mid-request or mid-stream
    "protocol",  # malformed response or stream bytes
    "stream_error",  # the server reported an error inside a stream
    "timeout_connect",
    "timeout_read",
    "timeout_total",
    "in_flight_cap",  # dropped: max_in_flight reached at the arrival time
    "lag_budget",  # dropped: could not start within lag_budget_ms
    "interrupted",  # cancelled by SIGINT/SIGTERM
)

_ts = pa.int64()

RECORD_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("scenario", pa.string(), nullable=False),
        pa.field("worker", pa.int16(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("turn", pa.int32()),
        pa.field("api", pa.string(), nullable=False),
        pa.field("stream", pa.bool_(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("deployment", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("sold_through", pa.string(), nullable=False),
        pa.field("store", pa.bool_()),
        pa.field("previous_response_id", pa.string()),
        pa.field("intended_ns", _ts, nullable=False),
        pa.field("sent_ns", _ts),
        pa.field("first_byte_ns", _ts),
        pa.field("first_token_ns", _ts),
        pa.field("done_ns", _ts),
        pa.field("token_ns", pa.list_(pa.int64())),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("error_kind", pa.string()),
        pa.field("error_detail", pa.string()),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("attempts", pa.int8(), nullable=False),
        pa.field("tokens_in", pa.int32()),
        pa.field("tokens_out", pa.int32()),
        pa.field("usage_from_server", pa.bool_(), nullable=False),
        pa.field("chunks", pa.int32(), nullable=False),
        pa.field("bytes_out", pa.int64(), nullable=False),
        pa.field("bytes_in", pa.int64(), nullable=False),
        # attribution read from the response (harness.protocols.fingerprint)
        pa.field("fp_cloud", pa.string()),  # cloud the vendor headers point to
        pa.field("fp_region", pa.string()),
        pa.field("fp_request_id", pa.string()),  # server-side request id (apim-request-id, x-request-id, ...)
        pa.field("mock_cloud", pa.string()),  # x-mock-cloud, present only on mock responses
        pa.field("mock_region", pa.string()),
        pa.field("response_id", pa.string()),  # chatcmpl-/resp_ id from the body
        pa.field("attempt_sent_ns", _ts),
        pa.field("retry_wait_ns", pa.int64(), nullable=False),
        # connection phases (schema v3); absent from v2 files
        pa.field("pool_wait_ns", pa.int64()),
        pa.field("connect_ns", pa.int64()),
    ],
    metadata={"harness.record_schema_version": str(RECORD_SCHEMA_VERSION)},
)

RECORD_FIELDS: Final = tuple(RECORD_SCHEMA.names)

# One row per request a mock endpoint received. Times are wall-clock ns (time.time_ns()),
# because the ledger is written by other processes than the harness.
LEDGER_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string()),  # the client's x-ms-client-request-id (null if absent)
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("cloud", pa.string(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("deployment", pa.string()),
        pa.field("api", pa.string(), nullable=False),
        pa.field("stateful", pa.bool_(), nullable=False),
        pa.field("response_id", pa.string()),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("stream", pa.bool_(), nullable=False),
        pa.field("bytes_in", pa.int64(), nullable=False),
        pa.field("bytes_out", pa.int64(), nullable=False),
        pa.field("tokens_in", pa.int32(), nullable=False),
        pa.field("tokens_out", pa.int32(), nullable=False),
        pa.field("received_wall_ns", pa.int64(), nullable=False),
        pa.field("done_wall_ns", pa.int64(), nullable=False),
        pa.field("pid", pa.int32(), nullable=False),
    ],
    metadata={"harness.ledger_schema_version": str(LEDGER_SCHEMA_VERSION)},
)

LEDGER_FIELDS: Final = tuple(LEDGER_SCHEMA.names)

# The ledger status of a request that got no response byte at all (a reset before any reply, or a
# server shutdown cancelling it); nginx's "client closed request". 200 once headers went out, even
# if the stream was cut short afterwards.
LEDGER_STATUS_NOT_SENT: Final = 499
