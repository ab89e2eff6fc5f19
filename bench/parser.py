"""Streaming parser throughput when SSE chunks arrive coalesced (many per socket read).

A raw uvloop server (core 0) answers every request with one chat-completions SSE stream of
``--chunks`` Azure content chunks, written in 64 KiB pieces, so each socket read carries
~150 chunks. Each client (its own process, core 1) requests streams back to back on one
keep-alive connection for the window and parses every chunk with per-chunk timestamps and
token accounting:

- ``lean + ChatStreamParser``: the engine's path — the lean transport hands each read to the
  engine's stream sink (``harness.engine.dispatch._StreamSink``: SSE split, orjson, tokens, one
  timestamp per content chunk);
- ``aiohttp iter_any + ChatStreamParser``: the same parser behind aiohttp's reads;
- ``aiohttp line iteration``: ``async for line in resp.content`` + orjson per ``data:`` line and
  the same token approximation, the common way to read SSE with aiohttp.

Reported: content chunks per CPU-second of the client (user + system), and per wall second.

    .venv/bin/python bench/parser.py [--chunks 20000] [--duration-s 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def body(chunks: int) -> bytes:
    from harness.protocols.azure_openai import SSE_DONE, content_chunk, finish_chunk, role_chunk

    parts = [role_chunk("chatcmpl-bench", 1, "gpt-4o")]
    parts += [content_chunk("chatcmpl-bench", 1, "gpt-4o", f" tok{i % 97}") for i in range(chunks)]
    parts += [finish_chunk("chatcmpl-bench", 1, "gpt-4o", "stop"), SSE_DONE]
    sse = b"".join(parts)
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(sse[i : i + 65536]), sse[i : i + 65536]) for i in range(0, len(sse), 65536)
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + framed + b"0\r\n\r\n"


async def serve(chunks: int) -> None:
    from httptools import HttpRequestParser

    payload = body(chunks)

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = HttpRequestParser(self)
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            assert self.transport is not None
            self.transport.write(payload)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def client(kind: str, port: int, duration_s: float) -> dict:
    import aiohttp
    import orjson

    from harness.engine.dispatch import _StreamSink
    from harness.engine.transport import LeanPool, RequestHead
    from harness.protocols.azure_openai import ChatStreamParser
    from harness.protocols.tokens import approx_tokens

    path = "/openai/deployments/gpt-4o/chat/completions"
    n = 0
    epoch = time.monotonic_ns()
    end = time.perf_counter() + duration_s
    c0, t0 = cpu_s(), time.perf_counter()
    if kind == "lean":
        pool = LeanPool("127.0.0.1", port, limit=1, kernel_stamps=True)  # as the engine reads streams
        head = RequestHead(
            "POST", path, f"127.0.0.1:{port}", {"Content-Type": "application/json"}, body_len=2
        )
        while time.perf_counter() < end:
            sink = _StreamSink(epoch, ChatStreamParser())
            await pool.request(head.with_id("x"), b"{}", sink)
            sink.parser.close()
            n += len(sink.token_ns)
        pool.close()
    else:
        url = f"http://127.0.0.1:{port}{path}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), auto_decompress=False) as s:
            while time.perf_counter() < end:
                async with s.post(url, data=b"{}") as resp:
                    token_ns: list[int] = []
                    if kind == "iter_any":
                        parser = ChatStreamParser()
                        async for data in resp.content.iter_any():
                            t = time.monotonic_ns() - epoch
                            k = parser.feed(data)
                            if k:
                                token_ns.extend([t] * k)
                        parser.close()
                    else:  # line iteration
                        tokens = 0
                        async for line in resp.content:
                            if not line.startswith(b"data:"):
                                continue
                            data = line[5:].strip()
                            if data == b"[DONE]":
                                break
                            obj = orjson.loads(data)
                            for choice in obj.get("choices") or ():
                                text = (choice.get("delta") or {}).get("content")
                                if text:
                                    tokens += max(1, approx_tokens(text))
                                    token_ns.append(time.monotonic_ns() - epoch)
                    n += len(token_ns)
    return {"n": n, "cpu_s": cpu_s() - c0, "wall_s": time.perf_counter() - t0}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_server":
        import uvloop

        uvloop.run(serve(int(sys.argv[2])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        import uvloop

        print(json.dumps(uvloop.run(client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    print("load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "_server", str(args.chunks)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {server_cpu}),  # noqa: PLW1509
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    names = {
        "lean": "lean + ChatStreamParser (engine)",
        "iter_any": "aiohttp iter_any + ChatStreamParser",
        "lines": "aiohttp line iteration + orjson",
    }
    runs: dict[str, list[dict]] = {k: [] for k in names}
    try:
        for _ in range(args.repeat):
            for kind in names:
                out = subprocess.run(
                    [*me, "_client", kind, str(port), str(args.duration_s)],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=args.duration_s + 60,
                    preexec_fn=lambda: os.sched_setaffinity(0, {client_cpu}),
                )
                runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        f"\n## SSE parser, coalesced chunks: {args.chunks} content chunks per stream in 64 KiB writes, "
        f"server on cpu {server_cpu}, client on cpu {client_cpu}, {args.duration_s:.0f} s, "
        f"median of {args.repeat}"
    )
    print(f"{'client':<38} {'chunks/CPU-s':>12} {'chunks/s':>10} {'vs lines':>8}")
    per_cpu = {k: statistics.median(r["n"] / r["cpu_s"] for r in v) for k, v in runs.items()}
    per_wall = {k: statistics.median(r["n"] / r["wall_s"] for r in v) for k, v in runs.items()}
    for kind, name in names.items():
        print(
            f"{name:<38} {per_cpu[kind]:>12.0f} {per_wall[kind]:>10.0f} "
            f"{per_cpu[kind] / per_cpu['lines']:>7.2f}×"
        )
    print("load average after the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
