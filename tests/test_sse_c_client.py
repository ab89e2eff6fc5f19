"""bench/sse_client.c, the C stream reader of bench/mocks.py part c1: compiled with the system's
cc, run against a real Azure mock fleet on port 0 (it must count every content chunk the mock
sent, and time them closely), and against a server that splits markers across reads and HTTP
chunks (each still counted once)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.mocks import CHAT_PATH, HIST_BIN_MS, HIST_BINS, _hist_pct, _request_bytes, build_c_client
from harness.mocks.fleet import start_fleet
from harness.profile.models import Fleet, FleetEndpoint, Latency

BODY = b'{"messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 1000000}'


@pytest.fixture(scope="module")
def sse_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = build_c_client(tmp_path_factory.mktemp("cc"), "sse_client")
    if exe is None:
        pytest.skip("no C compiler (cc or gcc) to build bench/sse_client.c")
    return exe


async def run_client(
    exe: Path, port: int, request: Path, streams: int, itl_ms: float, spread_s: float, window: tuple
) -> dict[str, Any]:
    """Start the client, do the ready/go handshake as bench/mocks.py does, return its JSON."""
    proc = await asyncio.create_subprocess_exec(
        str(exe), str(port), str(request), str(streams), str(itl_ms), str(spread_s),
        str(HIST_BIN_MS), str(HIST_BINS),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 5) == b"ready\n"
    start_at, lo, hi = window
    proc.stdin.write(f"{start_at} {lo} {hi}\n".encode())
    await proc.stdin.drain()
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    return json.loads(out)


async def test_it_counts_every_chunk_of_a_real_azure_mock(sse_client: Path, tmp_path: Path) -> None:
    streams, itl_ms, n_out = 20, 10, 100  # 1 s per stream
    endpoint = FleetEndpoint(
        name="m",
        cloud="azure",
        region="eastus",
        deployments=["gpt-4o"],
        latency=Latency(
            ttft_base_ms=0, prefill_us_per_token=0, itl_ms=itl_ms, jitter_frac=0, output_tokens=n_out
        ),
    )
    running = await start_fleet(Fleet(name="f", seed=1, endpoints=[endpoint]))
    try:
        port = int(running.endpoints[0]["base_url"].rsplit(":", 1)[1])
        request = tmp_path / "request.http"
        request.write_bytes(_request_bytes("127.0.0.1", port, BODY, CHAT_PATH))
        async with aiohttp.ClientSession() as session:
            await session.post(running.admin_url + "/emission/reset")
            now = time.monotonic()
            window = (now + 0.05, now + 0.45, now + 1.15)
            result = await run_client(sse_client, port, request, streams, itl_ms, 0.2, window)
            async with session.get(running.admin_url + "/emission") as resp:
                snap = await resp.json()
        for _ in range(100):  # the ledger row is written when the handler returns
            if len(running.ledgers[0]) == streams:
                break
            await asyncio.sleep(0.01)
        rows = running.ledger_table().to_pylist()
    finally:
        await running.stop()
    assert result["started"] == streams
    assert result["events"] == streams * n_out == sum(r["tokens_out"] for r in rows)
    assert snap["chunks"] == result["events"]  # the wheel writes every token, the first included
    assert len(result["hist"]) == HIST_BINS + 1
    assert sum(result["hist"]) > 0 and 0 < result["window_events"] < result["events"]
    assert result["reads"] >= result["events"] // 2
    # ms; ~0.1 on a quiet machine, ~1 when the shared machine is busy (then the server's too)
    client_p50 = _hist_pct(result["hist"], 0.5)
    assert client_p50 <= 3.0
    assert abs(client_p50 - snap["percentiles_ms"]["itl_error"]["p50"]) <= 1.5
    assert result["cpu_s"] > 0 and result["ramp_end"] >= window[0]
    # the kernel's receive timestamps (SO_TIMESTAMPNS) bin the same gaps, and agree with the mock's
    # own write times at least as well as the read times do (they leave the client's delays out)
    assert sum(result["khist"]) == sum(result["hist"])
    kernel_p50 = _hist_pct(result["khist"], 0.5)
    assert abs(kernel_p50 - snap["percentiles_ms"]["itl_error"]["p50"]) <= 1.5


async def test_a_marker_cut_across_reads_and_http_chunks_counts_once(
    sse_client: Path, tmp_path: Path
) -> None:
    role = b'data: {"choices":[{"delta":{"content":"","role":"assistant"}}]}\n\n'
    # the middle one: empty text but no comma after it, which the Python client counts too
    tokens = [b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % t for t in (b"a", b"", b" bc")]
    payload = role + b"".join(tokens) + b"data: [DONE]\n\n"
    framed = b""
    for i in range(0, len(payload), 13):  # HTTP chunks that cut through every marker
        piece = payload[i : i + 13]
        framed += b"%x\r\n%s\r\n" % (len(piece), piece)
    framed += b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire = head + framed
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(len(BODY)))
        for i in range(0, len(wire), 29):  # separate reads: cuts inside markers and size lines
            writer.write(wire[i : i + 29])
            await writer.drain()
            await asyncio.sleep(0.004)
        await reader.read()  # the client closes on [DONE]
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = tmp_path / "request.http"
    request.write_bytes(_request_bytes("127.0.0.1", port, BODY, CHAT_PATH))
    try:
        now = time.monotonic()
        result = await run_client(sse_client, port, request, 1, 20, 0.0, (now, now, now + 5))
    finally:
        server.close()
    assert got == [request.read_bytes()]
    assert (result["events"], result["started"], result["window_events"]) == (3, 1, 3)
    assert result["reads"] > 10
    assert sum(result["hist"]) == 2  # one |ITL error| per content read after the first
