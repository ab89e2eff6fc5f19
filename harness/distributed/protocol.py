"""The custom Locust messages between master and workers, and the timing constants of a run.

master → worker:  ASSIGN {spec}            the worker's shard spec (harness.engine.workers.make_spec)
                  START {epoch_wall_ns}    every worker is ready: go, from this wall-clock epoch
                  STOP {}                  stop early (Locust's stop button, Ctrl-C on the master)
worker → master:  READY {shard}            the worker's engine process has prepared its routes
                  RESULT {shard, ...}      counters and encoded histograms (and the part, if shipped)
                  ERROR {shard, error}     the engine could not start or exited without a result
"""

from __future__ import annotations

from typing import Final

ASSIGN: Final = "harness:assign"
START: Final = "harness:start"
STOP: Final = "harness:stop"
READY: Final = "harness:ready"
RESULT: Final = "harness:result"
ERROR: Final = "harness:error"

EPOCH_LEAD_NS: Final = 1_000_000_000
"""How far ahead of the START message the epoch lies: one network hop to every worker."""
READY_TIMEOUT_S: Final = 120.0
"""How long the master waits for every worker's engine to prepare (imports, secrets, routes)."""
RESULT_SLACK_S: Final = 30.0
"""Beyond the plan, its drain and the request timeout, how long a shard's result may take."""
REQUEST_TYPE: Final = "harness"
"""The request type under which workers report live samples to Locust's stats."""
