"""Deterministic sharding of the global plan across worker processes and Locust workers.

Every worker builds the same seeded plan and keeps only its shard, so no plan is shipped over a
pipe or the network and the cluster's total arrival process is exactly the profile's. Shard
``k`` of ``n`` keeps the arrivals whose key satisfies ``key % n == k``; the key is the global
plan index, or the session id when a ``Planned`` carries one (stateful work), so every turn of
a session is sent by the one worker that holds its state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from harness.errors import InputError


def shard_key(planned: Any) -> int:
    """The session id of a stateful arrival, else its global plan index."""
    session = getattr(planned, "session", None)
    return planned.index if session is None else int(session)


def check_shard(k: int, n: int) -> None:
    """Raise ``InputError`` unless ``0 <= k < n``."""
    if n < 1 or not 0 <= k < n:
        raise InputError(f"shard {k} of {n} does not exist", "use a shard number k with 0 <= k < n, n >= 1")


def shard(plan: Iterable[Any], k: int, n: int) -> Iterator[Any]:
    """The arrivals of shard ``k`` of ``n``, in plan order (lazy: the plan is never materialised)."""
    check_shard(k, n)
    if n == 1:
        yield from plan
        return
    for p in plan:
        session = getattr(p, "session", None)
        key = p.index if session is None else session
        if key % n == k:
            yield p


def shard_counts(plan: Iterable[Any], n: int) -> list[int]:
    """How many arrivals each of ``n`` shards holds (one pass over the plan)."""
    counts = [0] * n
    for p in plan:
        counts[shard_key(p) % n] += 1
    return counts
