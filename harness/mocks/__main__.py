"""``python -m harness.mocks --fleet FILE [--procs N]``: run a mock fleet until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys

from harness.mocks.fleet import serve_fleet_forever, serve_worker_forever


def _worker_spec(value: str) -> tuple[int, int]:
    index, _, procs = value.partition("/")
    try:
        k, n = int(index), int(procs)
    except ValueError:
        raise argparse.ArgumentTypeError("expected K/N") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError("expected 0 <= K < N")
    return k, n


def _ports(value: str) -> list[int]:
    try:
        return [int(p) for p in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated port numbers") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.mocks",
        description="Run a mock fleet; prints one JSON line per endpoint once all are listening.",
    )
    parser.add_argument("--fleet", required=True, help="fleet TOML file")
    parser.add_argument(
        "--procs",
        type=int,
        default=1,
        help="serve every endpoint from N processes sharing its port (SO_REUSEPORT); default 1",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="also stop when stdin closes (used when a harness runs the fleet as its child)",
    )
    # Internal: how the parent of a multi-process fleet starts its workers.
    parser.add_argument("--worker", type=_worker_spec, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=_ports, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        if args.ports is None:
            parser.error("--worker needs --ports")
        index, procs = args.worker
        return serve_worker_forever(args.fleet, index=index, procs=procs, ports=args.ports)
    return serve_fleet_forever(args.fleet, procs=args.procs, exit_on_stdin_eof=args.exit_on_stdin_eof)


if __name__ == "__main__":
    sys.exit(main())
