"""A minimal chat-completions target for benchmarks: a bare aiohttp + uvloop handler that returns
one fixed Azure-shaped JSON body with Azure fingerprint headers, as fast as aiohttp can.

    python bench/minimal_target.py --port 0 [--cpu 0]   # prints the port on stdout once ready
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import uvloop
from aiohttp import web

from harness.protocols.azure_openai import chat_completion_body

BODY = chat_completion_body("chatcmpl-bench", 1, "gpt-4o", "hello", 8, 1)
HEADERS = {"apim-request-id": "00000000-0000-4000-8000-000000000000", "x-ms-region": "East US"}


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json", headers=HEADERS)


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/openai/deployments/{d}/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


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
