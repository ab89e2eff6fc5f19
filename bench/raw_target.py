"""A minimal chat-completions target that is not the bottleneck: a raw uvloop ``asyncio.Protocol``
with httptools parsing requests and one prebuilt keep-alive response (Azure-shaped JSON body and
fingerprint headers), several times cheaper per request than an aiohttp handler.

Why: on this machine class a bare aiohttp handler (bench/minimal_target.py) serves ~6–12k req/s
on one core, so an open-loop run at 10k rps against it measures the target, not the generator.

    python bench/raw_target.py [--port 0] [--cpu 0]   # prints the port on stdout once ready
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import uvloop
from httptools import HttpRequestParser

from harness.protocols.azure_openai import chat_completion_body

BODY = chat_completion_body("chatcmpl-bench", 1, "gpt-4o", "hello", 8, 1)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"apim-request-id: 00000000-0000-4000-8000-000000000000\r\nx-ms-region: East US\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class Conn(asyncio.Protocol):
    """One keep-alive connection: every complete request gets the fixed response."""

    __slots__ = ("parser", "transport")

    def __init__(self) -> None:
        self.parser = HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
