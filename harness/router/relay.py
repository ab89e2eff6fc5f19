"""One backend answer on its way to the client: the upstream request's body sink.

``Relay`` is called synchronously from the upstream connection's ``data_received``
(``harness.engine.transport.BodySink``), so nothing here awaits and nothing waits for a
coroutine to be scheduled:

- a 429 or 5xx from a backend the proxy may still fail over from is read and dropped
  (``discard``): the client sees nothing of it;
- a stream (``text/event-stream``) has its head written to the client when the backend's head
  arrives, then every body piece as it is read (re-framed as one HTTP chunk each); the first
  event of a stateful Responses stream is copied to a ``CreatedSniffer`` on the way;
- any other body is collected, for the proxy to answer with a length once it is complete
  (and to learn affinity from).

Headers returned: every backend header but hop-by-hop ones, plus ``x-router-backend`` and
``x-router-attempts``; with ``spoof`` (a region) the vendor fingerprint is replaced by Azure's.
"""

from __future__ import annotations

from typing import Final

from harness.engine.transport import Headers
from harness.protocols.fingerprint import mock_headers, vendor_headers
from harness.router.affinity import AffinityTable, CreatedSniffer
from harness.router.server import Connection, header_lines

ROUTER_BACKEND_HEADER: Final = "x-router-backend"
ROUTER_ATTEMPTS_HEADER: Final = "x-router-attempts"
_HOP_BY_HOP: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"proxy-connection", b"upgrade"}
)
_ROUTER_SET: Final = frozenset({ROUTER_BACKEND_HEADER.encode(), ROUTER_ATTEMPTS_HEADER.encode()})
# Every vendor fingerprint header the mocks send (harness.protocols.fingerprint), removed before a
# spoofed reply gets Azure's.
_VENDOR: Final = frozenset(
    {
        b"apim-request-id",
        b"x-ms-client-request-id",
        b"x-request-id",
        b"x-ms-region",
        b"azureml-model-session",
        b"x-accel-buffering",
        b"x-content-type-options",
        b"strict-transport-security",
        b"cache-control",
        b"access-control-allow-origin",
        b"openai-organization",
        b"openai-project",
        b"openai-processing-ms",
        b"openai-version",
        b"server",
        b"cf-ray",
        b"x-client-request-id",
        b"x-amzn-requestid",
        b"x-mock-aws-region",
        b"server-timing",
        b"vary",
        b"x-frame-options",
        b"x-xss-protection",
        b"x-mock-cloud",
        b"x-mock-region",
    }
)
_DROP: Final = _HOP_BY_HOP | _ROUTER_SET
_DROP_SPOOFED: Final = _DROP | _VENDOR


def retryable(status: int) -> bool:
    """A status the proxy fails over from (when another backend may be tried)."""
    return status == 429 or status >= 500


class Relay:
    """The sink of one attempt: see the module docstring. ``status`` is 0 until the head came."""

    __slots__ = (
        "_affinity",
        "_client",
        "_crid",
        "_fail_over",
        "_router_lines",
        "_sniff",
        "_sniffer",
        "_spoof",
        "backend",
        "chunks",
        "discard",
        "head",
        "status",
        "streaming",
    )

    def __init__(
        self,
        client: Connection,
        backend: str,
        attempts: int,
        *,
        fail_over: bool,
        spoof: str | None,
        crid: str | None,
        affinity: AffinityTable | None,
    ) -> None:
        self._client = client
        self.backend = backend
        self._fail_over = fail_over
        self._spoof = spoof
        self._crid = crid
        self._affinity = affinity  # learn from the stream's first event (a stateful Responses call)
        self._router_lines = b"%s: %s\r\n%s: %d\r\n" % (
            ROUTER_BACKEND_HEADER.encode(),
            backend.encode("latin-1"),
            ROUTER_ATTEMPTS_HEADER.encode(),
            attempts,
        )
        self._sniffer: CreatedSniffer | None = None
        self._sniff = False
        self.status = 0
        self.discard = False  # a retryable answer the proxy fails over from
        self.streaming = False  # the head went to the client; the body follows chunk by chunk
        self.head = b""
        self.chunks: list[bytes] = []

    def on_headers(self, status: int, headers: Headers, t_ns: int) -> None:
        self.status = status
        if self._fail_over and retryable(status):
            self.discard = True
            return
        self.head = self._head(headers)
        ctype = headers.get("content-type") or ""
        if ctype.startswith("text/event-stream"):
            self.streaming = True
            if status == 200 and self._affinity is not None:
                self._sniffer = CreatedSniffer()
                self._sniff = True
            self._client.start_stream(status, self.head)

    def on_body(self, data: bytes, t_ns: int) -> None:
        if self.streaming:
            if self._sniff:
                self._learn(data)
            self._client.send_chunk(data)
        elif not self.discard:
            self.chunks.append(data)

    def _learn(self, data: bytes) -> None:
        sniffer = self._sniffer
        assert sniffer is not None and self._affinity is not None
        rid = sniffer.feed(data)
        if rid is not None:
            self._affinity.learn(rid, self.backend)
        self._sniff = not sniffer.done

    def _head(self, headers: Headers) -> bytes:
        spoof = self._spoof
        drop = _DROP if spoof is None else _DROP_SPOOFED
        lines = [b"%s: %s\r\n" % (name, value) for name, value in headers.raw if name.lower() not in drop]
        if spoof is not None:
            lines.append(
                header_lines([*vendor_headers("azure", spoof, self._crid), *mock_headers("azure", spoof)])
            )
        lines.append(self._router_lines)
        return b"".join(lines)
