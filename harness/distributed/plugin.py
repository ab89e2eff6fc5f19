"""What ``loadtests/locustfile.py`` imports: the harness's Locust arguments, the idle user, and
the hook that puts a ``MasterSide`` or ``WorkerSide`` on each Locust process.

Locust's users and spawn rate play no part in the load: the harness engine in each worker
sends the profile's open-loop plan. Locust still wants a user class, so ``IdleUser`` exists
and does nothing (``-u 1`` is enough; more idle users change nothing).
"""

from __future__ import annotations

from typing import Any

from locust import User, constant, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from harness.distributed.master import MasterSide
from harness.distributed.worker import WorkerSide


class IdleUser(User):
    """Keeps Locust's runner happy; sends nothing (the harness engine sends the load)."""

    wait_time = constant(3600)

    @task
    def idle(self) -> None:
        """Nothing: see the module docstring."""


def add_arguments(parser: Any) -> None:
    """The ``--harness-*`` options (each also settable by its environment variable)."""
    group = parser.add_argument_group("harness", "run a harness profile open-loop on this cluster")
    group.add_argument(
        "--harness-profile",
        env_var="HARNESS_PROFILE",
        default="",
        help="profile TOML file (read on the master)",
    )
    group.add_argument(
        "--harness-results",
        env_var="HARNESS_RESULTS",
        default="results",
        help="directory for the run directory",
    )
    group.add_argument("--harness-run-dir", env_var="HARNESS_RUN_DIR", default="", help="exact run directory")
    group.add_argument(
        "--harness-duration-s", type=float, default=None, help="override the profile's duration_s"
    )
    group.add_argument("--harness-threshold", action="append", default=None, help="add an SLO threshold")
    group.add_argument("--harness-no-report", action="store_true", help="skip report.html/summary.md")
    group.add_argument("--harness-outcome", default="", help="write the verdict JSON to this file (master)")
    group.add_argument(
        "--harness-ship-parts",
        action="store_true",
        env_var="HARNESS_SHIP_PARTS",
        help="worker: send the records part to the master instead of writing it on a shared filesystem",
    )


sides: list[Any] = []


def attach(environment: Any) -> None:
    """Give this Locust process its harness side(s): master, worker, or both when running locally."""
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        sides.append(MasterSide(environment))
    elif isinstance(runner, WorkerRunner):
        sides.append(WorkerSide(environment))
    elif isinstance(runner, LocalRunner):  # one process: messages to self reach both sides
        sides.append(MasterSide(environment))
        sides.append(WorkerSide(environment))


def install() -> None:
    """Register the arguments and the init hook with Locust's global event hooks."""
    events.init_command_line_parser.add_listener(add_arguments)

    @events.init.add_listener
    def _(environment: Any, **_: Any) -> None:
        attach(environment)
