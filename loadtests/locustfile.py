"""Run a harness profile on Locust's master/worker mode (thin: the logic is in harness.distributed).

    locust -f loadtests/locustfile.py --master --headless -u 1 --expect-workers 2 \
        --harness-profile profiles/smoke.toml
    locust -f loadtests/locustfile.py --worker --master-host MASTER_HOST     # on each worker

One global open-loop plan is split across the workers; the master writes the standard run
directory (results/<run>/) and exits with the harness verdict's exit code. See docs/distributed.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import harness  # noqa: F401
except ImportError:  # run from a checkout without installing: the package is one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.distributed.plugin import IdleUser, install

__all__ = ["IdleUser"]

install()
