"""``python -m harness.mocks --fleet FILE``: run a mock fleet until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys

from harness.mocks.fleet import serve_fleet_forever


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.mocks",
        description="Run a mock fleet; prints one JSON line per endpoint once all are listening.",
    )
    parser.add_argument("--fleet", required=True, help="fleet TOML file")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="also stop when stdin closes (used when a harness runs the fleet as its child)",
    )
    args = parser.parse_args(argv)
    return serve_fleet_forever(args.fleet, exit_on_stdin_eof=args.exit_on_stdin_eof)


if __name__ == "__main__":
    sys.exit(main())
