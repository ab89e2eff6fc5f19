"""The harness's exception tree and its stable exit codes.

Every error a user can cause or fix carries a one-line ``hint`` saying what to do, and maps
to a named exit code. Per-request failures (a 429, a reset, a broken stream) are *not*
exceptions: they become records with an error kind. Only configuration and infrastructure
problems abort a run.

    HarnessError                      exit INVALID_INPUT unless stated
    ├── InputError                    bad user input: profile, fleet, policy, trace, CLI flag
    │   ├── ProfileError              one or more problems in a TOML file, each with its key path
    │   ├── TraceError                a trace file row that cannot be read (file and line)
    │   ├── GateSyntaxError           a threshold expression that does not parse (harness.gate.grammar)
    │   └── GateInputError            a run or baseline directory a gate cannot judge (harness.gate)
    ├── SecretMissingError            an environment variable named by the profile is unset
    ├── RemoteTargetError             a non-loopback target without ``allow_remote = true``
    └── InfrastructureError           exit INFRASTRUCTURE: the mock fleet or a worker failed to start

Exit codes are part of the CLI's API (k6 uses 99 and 104 the same way):
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of ``harness``; documented in the README and stable across versions."""

    PASS = 0
    """The run completed, every threshold held and no compliance rule was violated."""
    COMPLIANCE_FAILED = 1
    """A routing-compliance rule was violated (the product's first gate: misroutes cost the most)."""
    INVALID_INPUT = 2
    """A profile, fleet, policy, trace or flag was invalid; nothing was started."""
    HARNESS_BOUND = 3
    """The load generator itself could not keep the schedule; results are untrustworthy."""
    INFRASTRUCTURE = 4
    """The embedded fleet, a worker or the results directory could not be set up, or a worker
    was lost mid-run (verdict INCOMPLETE: a shard's records are missing)."""
    THRESHOLDS_FAILED = 5
    """An SLO threshold failed (including the built-in ones: dropped load, no success)."""
    INTERNAL = 70
    """A bug in the harness (an unexpected exception; the traceback is printed). Never 1, so a
    crash can never read as a compliance verdict (EX_SOFTWARE from sysexits.h)."""
    INTERRUPTED = 130
    """The run was interrupted (SIGINT/SIGTERM); partial results were written."""


class HarnessError(Exception):
    """Base of every error the CLI turns into a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.INVALID_INPUT

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        """The message and the fix, on one line, as the CLI prints it."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


class InputError(HarnessError):
    """Bad user input; nothing was started."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a configuration file: where (dotted key path) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProfileError(InputError):
    """All the problems found in one TOML file (profile, fleet or policy), reported together."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        listed = "; ".join(str(p) for p in problems)
        super().__init__(
            f"{file}: {len(problems)} problem(s): {listed}",
            "fix the keys named above (`harness profiles schema` prints every allowed key)",
        )


class TraceError(InputError):
    """A trace row that cannot be read."""


class SecretMissingError(InputError):
    """An environment variable the profile names for a secret is not set."""


class RemoteTargetError(InputError):
    """The profile targets a host outside loopback without opting in."""


class InfrastructureError(HarnessError):
    """Something the run depends on could not be started or reached."""

    exit_code = ExitCode.INFRASTRUCTURE
