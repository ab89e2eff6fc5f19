"""Self-test switches: break the policy on purpose, seeded, and log exactly what was done.

Each switch fires for a request with its own probability. The draw is a pure function of
(seed, switch, client request id), so the same request ids get the same injections in every run,
whatever the arrival order. Only requests the switch can act on are drawn for:

    misroute           non-chained calls: sent to one backend the policy does NOT allow for them
                       (and only there: no failover)
    spoof_fingerprint  non-chained calls: served by a non-allowed backend, and the reply's vendor
                       headers (and x-mock-cloud/-region) rewritten to Azure's, so only the mock
                       ledger tells where it ran (an attestation mismatch)
    duplicate          non-chained calls: sent to two allowed backends at once; the client gets
                       the first one's answer, the second's is read and dropped (served twice)
    break_affinity     chained stateful calls (previous_response_id, conversation, GET|DELETE by
                       id): sent to a backend other than the one holding the state

If a drawn switch cannot act (no non-allowed backend serves the model; a single allowed backend;
nobody but the holder serves it; another switch already acted on this request), a ``skipped``
line with a reason is logged instead, so drawn = applied + skipped, exactly. Priority when two
draws hit one request: spoof_fingerprint, misroute, duplicate.

Log: one JSON object per line (UTF-8, ``\\n``-terminated), flushed per line; the file is
emptied when the router starts, so it holds exactly one router run:

    ts_ns            int    wall clock (time.time_ns) when the decision was made
    event            str    "applied" | "skipped" | "failover"
    switch           str    misroute | spoof_fingerprint | duplicate | break_affinity
                            (null for failover)
    request_id       str    the client request id (x-ms-client-request-id, else
                            X-Client-Request-Id); null when the client sent none
    api              str    chat.completions, completions, embeddings, responses, conversations
    class            str    stateless | stateful
    model            str    the model / deployment (null when the call names none)
    rule             str    the policy rule that decided (or "(default)"); null for affinity calls
    allowed          [str]  the backends the policy allows for this request (by name)
    backend          str    where the request was actually sent (applied, failover)
    backend_cloud    str    that backend's hosting cloud
    backend_region   str    its region
    backend_allowed  bool   whether the policy allows that backend for this request
    backends         [str]  duplicate only: both backends, the answering one first
    holder           str    break_affinity only: the backend that holds the state
    claimed_cloud    str    spoof_fingerprint only: the cloud the rewritten headers claim ("azure")
    claimed_region   str    spoof_fingerprint only: the region they claim
    from_backend     str    failover only: the backend that failed
    from_status      int    failover only: its status (0: connection error)
    reason           str    skipped only: why the switch could not act

Counting ``event == "applied"`` lines per ``switch`` gives exactly the requests each switch
affected; ``harness.compliance`` should report them as: misroute → ``cloud`` violations,
spoof_fingerprint → ``attestation_mismatch``, duplicate → ``served_twice``, break_affinity →
affinity violations (state-not-found errors and a backend change within a session).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson

from harness.errors import InputError

SWITCHES: Final = ("misroute", "spoof_fingerprint", "duplicate", "break_affinity")
"""Every switch, in priority order."""
_TWO_64: Final = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Rates:
    """The probability of each switch per eligible request (0 = off)."""

    misroute: float = 0.0
    spoof_fingerprint: float = 0.0
    duplicate: float = 0.0
    break_affinity: float = 0.0

    def __post_init__(self) -> None:
        for switch in SWITCHES:
            value = getattr(self, switch)
            if not 0.0 <= value <= 1.0:
                flag = "--" + switch.replace("_", "-") + "-rate"
                raise InputError(f"{flag} must be between 0 and 1, not {value}", "pass a probability")

    @property
    def any(self) -> bool:
        return any(getattr(self, s) > 0 for s in SWITCHES)


class Injector:
    """Draws the switches for each request and writes the JSONL log."""

    __slots__ = ("_counter", "_file", "_seed", "counts", "log_path", "rates")

    def __init__(self, rates: Rates, seed: int, log_path: str | Path | None) -> None:
        self.rates = rates
        self._seed = seed
        self._counter = itertools.count()
        self.log_path = os.path.abspath(log_path) if log_path is not None else None
        self._file: IO[bytes] | None = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115
        self.counts: dict[str, int] = {}
        """``"<event>:<switch>"`` -> lines written (for ``/router/state``)."""

    def draw(self, switch: str, request_id: str | None) -> bool:
        """Whether ``switch`` fires for this request: a pure function of (seed, switch, id)."""
        rate: float = getattr(self.rates, switch)
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        key = request_id if request_id is not None else f"#{next(self._counter)}"
        digest = hashlib.blake2b(f"{self._seed}/{switch}/{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / _TWO_64 < rate

    def log(self, event: str, switch: str | None, **fields: Any) -> None:
        key = f"{event}:{switch}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if self._file is None:
            return
        line = {"ts_ns": time.time_ns(), "event": event, "switch": switch, **fields}
        self._file.write(orjson.dumps(line) + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
