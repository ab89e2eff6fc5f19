"""``python -m harness.router --policy P.toml (--fleet F.toml | --attach-admin URL) [...]``.

The same flags as ``harness router``; this entry point is what ``RouterProcess`` spawns (it adds
``--exit-on-stdin-eof`` so the router cannot outlive its parent).
"""

from __future__ import annotations

import argparse
import sys

from harness.errors import ExitCode, InputError
from harness.router.app import RouterConfig, rates_from_flags, serve_router_forever
from harness.router.decide import STRATEGIES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.router",
        description="A policy-driven OpenAI/Azure gateway in front of a mock fleet; prints one JSON "
        "line with its URLs once listening.",
    )
    parser.add_argument("--policy", required=True, help="routing policy TOML file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fleet", help="fleet TOML file: the router starts this fleet itself")
    where.add_argument("--attach-admin", help="admin URL of a running fleet (http://127.0.0.1:PORT/admin)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="seed of the self-test switches")
    parser.add_argument("--log", default="router-log.jsonl", help="injection log (JSONL), overwritten")
    parser.add_argument("--balance", choices=STRATEGIES, default="round-robin")
    parser.add_argument("--fleet-procs", type=int, default=1, help="processes of a fleet started by --fleet")
    parser.add_argument(
        "--connections", type=int, default=1024, help="upstream keep-alive connections per backend"
    )
    for switch, what in (
        ("misroute", "send a stateless call to a backend the policy denies"),
        ("break-affinity", "send a chained stateful call away from its state holder"),
        ("spoof-fingerprint", "serve from a denied backend and rewrite its headers to Azure's"),
        ("duplicate", "send a call to two allowed backends, return one answer"),
    ):
        parser.add_argument(f"--{switch}-rate", type=float, default=0.0, metavar="P", help=f"{what} (0..1)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="also stop when stdin closes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rates = rates_from_flags(
            misroute_rate=args.misroute_rate,
            break_affinity_rate=args.break_affinity_rate,
            spoof_fingerprint_rate=args.spoof_fingerprint_rate,
            duplicate_rate=args.duplicate_rate,
        )
    except InputError as exc:
        print(exc.one_line(), file=sys.stderr)
        return int(ExitCode.INVALID_INPUT)
    config = RouterConfig(
        policy=args.policy,
        fleet=args.fleet,
        attach_admin=args.attach_admin,
        host=args.host,
        port=args.port,
        seed=args.seed,
        log=args.log,
        rates=rates,
        strategy=args.balance,
        fleet_procs=args.fleet_procs,
        connections=args.connections,
    )
    return serve_router_forever(config, exit_on_stdin_eof=args.exit_on_stdin_eof)


if __name__ == "__main__":
    sys.exit(main())
