"""Per-request cost of credentials on the hot path: SigV4 signing against a static header.

What the dispatcher pays per request to put credentials on it, for one Bedrock converse request
(~600-byte body), each measured as the median of ``--repeat`` timed loops of ``--n`` calls on one
core:

    static api-key        the template's header-dict copy, plus a dict update with the key header
    bearer (cached)       a refreshed Entra/ADC token: the provider returns its cached dict
    sigv4 botocore        botocore's own SigV4Auth.add_auth on a fresh AWSRequest, per request
    sigv4 signer          harness.auth's signer: a full new signature per call (a new second)
    sigv4 provider        what the engine calls: signatures reused within the same UTC second

    .venv/bin/python bench/auth.py [--n 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from harness.auth import RefreshingBearer, SigV4Provider, api_key_provider
from harness.auth.mock import mock_aws_credentials
from harness.auth.sigv4 import Frozen, SigV4Signer, botocore_sign
from harness.protocols.bedrock import BedrockRequestTemplate

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def per_call_us(fn: Callable[[int], object], n: int, repeat: int) -> float:
    """Median over ``repeat`` loops of the mean µs per call."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


async def measure(n: int, repeat: int) -> list[tuple[str, float]]:
    template = BedrockRequestTemplate(
        "https://bedrock-runtime.us-east-1.amazonaws.com", MODEL, "converse", prompt="x " * 280, max_tokens=64
    )
    url, body = template.url, template.body
    creds = Frozen("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None)
    static = api_key_provider("azure_openai", "k" * 32)
    bearer = RefreshingBearer("entra", _fixed_token)
    await bearer.start()
    provider = SigV4Provider("us-east-1", credentials=mock_aws_credentials())
    await provider.start()
    signer = SigV4Signer(creds, "us-east-1", "bedrock")
    dates = [f"20261122T{h:02d}{m:02d}{s:02d}Z" for h in range(24) for m in range(60) for s in range(60)]

    def with_headers(extra: Callable[[], object]) -> Callable[[int], object]:
        def call(i: int) -> object:
            headers = template.headers_for("id")
            headers.update(extra())  # type: ignore[call-overload]
            return headers

        return call

    rows = [
        (
            "template headers only (no credential)",
            per_call_us(lambda i: template.headers_for("id"), n, repeat),
        ),
        ("static api-key", per_call_us(with_headers(lambda: static.headers("POST", url, body)), n, repeat)),
        (
            "bearer (cached token)",
            per_call_us(with_headers(lambda: bearer.headers("POST", url, body)), n, repeat),
        ),
        (
            "sigv4 botocore SigV4Auth",
            per_call_us(
                with_headers(lambda: botocore_sign(creds, "us-east-1", "bedrock", "POST", url, body)),
                max(1, n // 10),
                repeat,
            ),
        ),
        (
            "sigv4 signer, new second each call",
            per_call_us(lambda i: signer.sign("POST", url, body, dates[i % len(dates)]), n, repeat),
        ),
        (
            "sigv4 provider (engine path)",
            per_call_us(with_headers(lambda: provider.headers("POST", url, body)), n, repeat),
        ),
    ]
    await bearer.close()
    await provider.close()
    return rows


async def _fixed_token() -> tuple[str, float]:
    return "eyJ0eXAiOiJKV1QifQ.eyJleHAiOjB9.sig", time.time() + 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.n, args.repeat))
    base = rows[0][1]
    print(f"{'per request':40} {'µs':>8} {'over no credential':>20}")
    for name, us in rows:
        print(f"{name:40} {us:8.2f} {us - base:+19.2f}")


if __name__ == "__main__":
    main()
