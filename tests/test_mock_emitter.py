"""The mocks' token emitter wheel: chunks framed exactly as aiohttp frames them, on their due
times, one loop timer per due millisecond, and a clean hand-back when a client goes away or
stops reading. Real loopback sockets throughout."""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from harness.mocks.emitter import (
    BACKLOG,
    BINS,
    CLOSED,
    COARSE_SLOTS,
    DONE,
    HIGH_WATER_BYTES,
    TokenEmitter,
    emitter_for,
    hist_percentile,
    merge_snapshots,
    with_percentiles,
)
from harness.mocks.fleet import start_fleet
from harness.profile.models import Fleet, FleetEndpoint, Latency
from harness.protocols import azure_openai as wire
from harness.protocols.tokens import output_token

PIECES = (b"aa", b"bbb", b"c")


class Sink(asyncio.Protocol):
    """The reading end: every read with its monotonic time."""

    def __init__(self) -> None:
        self.reads: list[tuple[float, bytes]] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reads.append((time.monotonic(), data))

    def data(self) -> bytes:
        return b"".join(d for _, d in self.reads)


@asynccontextmanager
async def pairs(n: int) -> AsyncIterator[list[tuple[Any, Sink]]]:
    """``n`` loopback TCP connections: (writing transport, the sink that reads it)."""
    loop = asyncio.get_running_loop()
    sinks: list[Sink] = []

    def accept() -> Sink:
        sink = Sink()
        sinks.append(sink)
        return sink

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    writers = []
    try:
        for _ in range(n):
            transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            writers.append(transport)
        for _ in range(200):
            if len(sinks) == n:
                break
            await asyncio.sleep(0.005)
        yield list(zip(writers, sinks, strict=True))
    finally:
        for transport in writers:
            transport.close()
        server.close()
        await server.wait_closed()


def framed(chunk: bytes) -> bytes:
    return f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"


async def test_chunks_are_chunk_framed_in_order_and_never_early() -> None:
    """Chunks first..end-1 arrive framed as HTTP/1.1 chunks, in order, none before its due time."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    async with pairs(1) as [(transport, sink)]:
        due0 = loop.time() + 0.02
        t0 = time.monotonic() + (due0 - loop.time())
        emission = emitter.start(transport, b"<", PIECES, b">", 2, 8, due0, 0.01)
        assert await asyncio.wait_for(emission.done, 5) == DONE
        await asyncio.sleep(0.05)
    expected = [b"<" + PIECES[i % 3] + b">" for i in range(2, 8)]
    assert sink.data() == b"".join(framed(c) for c in expected)
    assert (emission.tokens, emission.bytes, emission.index) == (6, sum(map(len, expected)), 8)
    # the k-th chunk is due at t0 + k × 10 ms; a slot fires at most half a millisecond early
    seen = 0
    for t, data in sink.reads:
        seen += data.count(b">")
        assert t >= t0 + (seen - 1) * 0.01 - 0.0015


async def test_streams_due_in_the_same_millisecond_share_one_timer() -> None:
    """Fifty streams due together cost one loop timer per due slot, not one per stream."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    async with pairs(50) as conns:
        due = loop.time() + 0.02
        emissions = [emitter.start(t, b"", PIECES, b"", 0, 3, due, 0.005) for t, _ in conns]
        assert emitter.pending() == 50
        outcomes = await asyncio.wait_for(asyncio.gather(*(e.done for e in emissions)), 5)
        await asyncio.sleep(0.05)
        assert outcomes == [DONE] * 50
        assert emitter.timers <= 3 + 2  # 3 due slots (a late loop may split one)
        assert all(sink.data() == framed(b"aa") + framed(b"bbb") + framed(b"c") for _, sink in conns)


async def test_a_drawn_itl_function_sets_each_gap() -> None:
    """With a function for the gap, each chunk's due time adds one draw to the previous one."""
    loop = asyncio.get_running_loop()
    gaps = iter([0.004, 0.012, 0.002])
    emitter = TokenEmitter(loop)
    async with pairs(1) as [(transport, _)]:
        due = loop.time() + 0.01
        emission = emitter.start(transport, b"", PIECES, b"", 0, 4, due, lambda: next(gaps))
        assert await asyncio.wait_for(emission.done, 5) == DONE
    assert abs(emission.due - (due + 0.018)) < 1e-9


async def test_a_closed_transport_ends_the_emission_as_closed() -> None:
    """A transport that closes under a stream ends it as CLOSED with the count of what went out."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    async with pairs(1) as [(transport, _)]:
        emission = emitter.start(transport, b"", PIECES, b"", 0, 100, loop.time() + 0.005, 0.005)
        await asyncio.sleep(0.03)
        transport.close()
        assert await asyncio.wait_for(emission.done, 5) == CLOSED
    assert 1 <= emission.tokens < 100


async def test_a_client_that_stops_reading_hands_the_stream_back() -> None:
    """Past the high-water mark the wheel stops and reports BACKLOG with where the stream is."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    big = b"x" * 200_000
    async with pairs(1) as [(transport, sink)]:
        sink.transport.pause_reading()
        due = loop.time() + 0.005
        emission = emitter.start(transport, big, PIECES, b"", 0, 1000, due, 0.002)
        assert await asyncio.wait_for(emission.done, 5) == BACKLOG
        assert transport.get_write_buffer_size() > HIGH_WATER_BYTES
        assert 1 <= emission.index < 1000
        assert emission.due >= due + 0.002 * emission.index - 1e-9


async def test_a_cancelled_stream_is_dropped_at_its_next_slot() -> None:
    """Cancelling the awaiting side stops the writes; the slot fires and skips it."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    async with pairs(1) as [(transport, sink)]:
        emission = emitter.start(transport, b"", PIECES, b"", 0, 10, loop.time() + 0.01, 0.01)
        emission.done.cancel()
        await asyncio.sleep(0.05)
        assert sink.data() == b"" and emitter.pending() == 0


async def test_emitter_for_is_one_per_loop() -> None:
    """Every stream in a loop shares the loop's one emitter."""
    loop = asyncio.get_running_loop()
    assert emitter_for(loop) is emitter_for(loop)


async def test_the_azure_mock_streams_through_the_wheel_byte_for_byte() -> None:
    """An Azure chat stream sent by the wheel carries exactly the encoder's chunks and ledgers them."""
    endpoint = FleetEndpoint(
        name="m",
        cloud="azure",
        region="eastus",
        deployments=["gpt-4o"],
        latency=Latency(ttft_base_ms=0, prefill_us_per_token=0, itl_ms=3, jitter_frac=0, output_tokens=12),
    )
    running = await start_fleet(Fleet(name="f", seed=1, endpoints=[endpoint]))
    try:
        url = running.endpoints[0]["base_url"] + "/openai/deployments/gpt-4o/chat/completions?api-version=v"
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers={"api-key": "k"}) as resp,
        ):
            raw = await asyncio.wait_for(resp.read(), 10)
        events = [e for e in raw.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]"
        first = orjson.loads(events[2][len(b"data: ") :])
        encoder = wire.ChunkEncoder(first["id"], first["created"], "gpt-4o")
        expected = [
            *encoder.prelude(),
            *encoder.start(),
            *(encoder.content(output_token(i)) for i in range(12)),
            encoder.finish("stop"),
            wire.SSE_DONE,
        ]
        assert raw == b"".join(expected)
        for _ in range(100):
            if len(running.ledgers[0]):
                break
            await asyncio.sleep(0.01)
        (row,) = running.ledger_table().to_pylist()
        assert (row["status"], row["stream"], row["tokens_out"], row["bytes_out"]) == (
            200,
            True,
            12,
            len(raw),
        )
    finally:
        await running.stop()


# --------------------------------------------------------------------------- emission timing


async def test_every_wheel_chunk_is_timed_and_none_is_early() -> None:
    """The emission histogram counts every chunk the wheel wrote, the ITL histogram every one
    after a stream's first; no chunk is written before its due time (fixed and drawn gaps)."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    gaps = iter([0.0013, 0.0041, 0.0007, 0.0029, 0.0052] * 10)
    async with pairs(6) as conns:
        due = loop.time() + 0.0037
        emissions = [
            emitter.start(t, b"<", PIECES, b">", 0, 9, due + k * 0.0011, 0.003 if k else lambda: next(gaps))
            for k, (t, _) in enumerate(conns)
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*(e.done for e in emissions)), 5)
        assert outcomes == [DONE] * 6
    stats = emitter.stats
    assert stats is not None
    written = sum(e.tokens for e in emissions)
    assert written == 6 * 9
    assert sum(stats.emit) == written
    assert sum(stats.itl) == written - 6
    assert stats.early == 0
    snap = with_percentiles(stats.snapshot())
    assert snap["chunks"] == written and snap["early"] == 0
    assert all(0 <= i <= BINS and n > 0 for i, n in snap["emission_error"])
    assert snap["percentiles_ms"]["emission_error"]["p50"] is not None


async def test_recording_switches_off_and_back_on_afresh() -> None:
    """With recording off the wheel keeps no counts; switched on again it starts from zero."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop, record=False)
    assert emitter.stats is None and not emitter.recording
    async with pairs(1) as [(transport, sink)]:
        emission = emitter.start(transport, b"", PIECES, b"", 0, 4, loop.time() + 0.002, 0.002)
        assert await asyncio.wait_for(emission.done, 5) == DONE
        emitter.record(True)
        assert emitter.stats is not None and sum(emitter.stats.emit) == 0
        emission = emitter.start(transport, b"", PIECES, b"", 0, 3, loop.time() + 0.002, 0.002)
        assert await asyncio.wait_for(emission.done, 5) == DONE
        await asyncio.sleep(0.02)
    assert sum(emitter.stats.emit) == 3
    assert sink.data() == b"".join(framed(PIECES[i % 3]) for i in [0, 1, 2, 3, 0, 1, 2])


async def test_a_paused_reader_gets_every_chunk_in_order_across_direct_and_buffered_writes() -> None:
    """Direct sends fill the socket, the rest waits in the transport's buffer, and the stream
    goes back to direct sends once it drains: the reader still sees exactly the framed chunks
    in order (up to where a backlog handed the stream back)."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    head = b"h" * 30_000
    async with pairs(1) as [(transport, sink)]:
        # small socket buffers: the sends fall short at once
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
        sink.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        buffered: list[int] = []
        write = transport.write

        def spy(data: bytes) -> None:
            buffered.append(len(data))
            write(data)

        transport.write = spy
        sink.transport.pause_reading()
        emission = emitter.start(transport, head, PIECES, b"t", 0, 40, loop.time() + 0.001, 0.002)
        await asyncio.sleep(0.03)
        sink.transport.resume_reading()
        outcome = await asyncio.wait_for(emission.done, 10)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if transport.get_write_buffer_size() == 0 and len(sink.data()) >= emission.bytes:
                break
        await asyncio.sleep(0.05)
    expected = b"".join(framed(head + PIECES[i % 3] + b"t") for i in range(emission.index))
    assert outcome in (DONE, BACKLOG)
    assert buffered  # some bytes went through the transport's buffer
    assert sink.data() == expected


async def test_the_wheel_never_closes_the_transports_socket() -> None:
    """The socket the wheel sends on is borrowed: after the emission (and a collection) the
    transport still writes to the same connection."""
    import gc

    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    async with pairs(1) as [(transport, sink)]:
        emission = emitter.start(transport, b"", PIECES, b"", 0, 2, loop.time() + 0.001, 0.001)
        assert await asyncio.wait_for(emission.done, 5) == DONE
        del emission
        gc.collect()
        transport.write(b"after")
        await asyncio.sleep(0.05)
        assert not transport.is_closing()
    assert sink.data() == framed(b"aa") + framed(b"bbb") + b"after"


def test_snapshots_merge_by_summing_bins_and_percentiles_are_bin_upper_edges() -> None:
    """Multi-process fleets add their workers' sparse bins; a percentile is its bin's upper edge."""
    a = {"chunks": 3, "early": 0, "seconds": 1.0, "emission_error": [[0, 1], [5, 2]], "itl_error": [[1, 1]]}
    b = {"chunks": 2, "early": 1, "seconds": 2.0, "emission_error": [[5, 1], [BINS, 1]], "itl_error": []}
    merged = merge_snapshots([a, b])
    assert merged["emission_error"] == [[0, 1], [5, 3], [BINS, 1]]
    assert (merged["chunks"], merged["early"], merged["seconds"]) == (5, 1, 2.0)
    assert hist_percentile(merged["emission_error"], 0.5) == 0.06  # bin 5: 50-60 µs
    assert hist_percentile(merged["emission_error"], 1.0) == float("inf")
    assert hist_percentile([], 0.5) is None


async def test_the_admin_api_serves_the_emission_timing_of_real_streams() -> None:
    """A real mock on 127.0.0.1:0, real clients reading whole streams: the admin API's counts are
    the chunks the wheel wrote (every token, the first one included), none early; reset zeroes
    them, and recording switches off and on through PUT."""
    n_out, streams = 15, 8
    endpoint = FleetEndpoint(
        name="m",
        cloud="azure",
        region="eastus",
        deployments=["gpt-4o"],
        latency=Latency(ttft_base_ms=0, prefill_us_per_token=0, itl_ms=4, jitter_frac=0, output_tokens=n_out),
    )
    running = await start_fleet(Fleet(name="f", seed=1, endpoints=[endpoint]))
    admin = running.admin_url
    url = running.endpoints[0]["base_url"] + "/openai/deployments/gpt-4o/chat/completions?api-version=v"
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        async with aiohttp.ClientSession() as session:

            async def one() -> bytes:
                async with session.post(url, json=body, headers={"api-key": "k"}) as resp:
                    return await asyncio.wait_for(resp.read(), 10)

            async def emission() -> dict[str, Any]:
                async with session.get(admin + "/emission") as resp:
                    assert resp.status == 200
                    return await resp.json()

            await session.post(admin + "/emission/reset")
            raws = await asyncio.gather(*(one() for _ in range(streams)))
            assert all(r.endswith(b"data: [DONE]\n\n") for r in raws)
            snap = await emission()
            assert snap["recording"] is True and snap["procs"] == 1
            assert snap["chunks"] == streams * n_out
            assert sum(n for _, n in snap["emission_error"]) == snap["chunks"]
            assert sum(n for _, n in snap["itl_error"]) == streams * (n_out - 1)
            assert snap["early"] == 0
            assert snap["bin_s"] == 1e-5
            pct = snap["percentiles_ms"]
            assert pct["itl_error"]["p50"] is not None and pct["emission_error"]["p99"] >= 0.01

            await session.post(admin + "/emission/reset")
            assert (await emission())["chunks"] == 0
            async with session.put(admin + "/emission", json={"record": False}) as resp:
                assert resp.status == 200
            await one()
            snap = await emission()
            assert snap["recording"] is False and snap["chunks"] == 0
            async with session.put(admin + "/emission", json={"record": True}) as resp:
                assert resp.status == 200
            await one()
            assert (await emission())["chunks"] == n_out
            async with session.put(admin + "/emission", json={"record": "yes"}) as resp:
                assert resp.status == 400
                assert "record" in (await resp.json())["error"]
    finally:
        await running.stop()


async def test_latency_counts_from_the_requests_arrival_and_is_never_short() -> None:
    """TTFT and token gaps as the client sees them: never shorter than injected (the clock starts
    when the request's bytes arrived, which is after the client sent them; a queued request's
    wait is added), and within a couple of milliseconds of it at the median (0.1 ms slots,
    timerfd wake-ups), on a loop shared with the client."""
    endpoint = FleetEndpoint(
        name="m",
        cloud="azure",
        region="eastus",
        deployments=["gpt-4o"],
        latency=Latency(ttft_base_ms=30, prefill_us_per_token=0, itl_ms=7, jitter_frac=0, output_tokens=6),
    )
    running = await start_fleet(Fleet(name="f", seed=1, endpoints=[endpoint]))
    ttfts: list[float] = []
    gaps: list[float] = []
    try:
        url = running.endpoints[0]["base_url"] + "/openai/deployments/gpt-4o/chat/completions?api-version=v"
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with aiohttp.ClientSession() as session:
            for _ in range(12):
                sent = time.monotonic()
                async with session.post(url, json=body, headers={"api-key": "k"}) as resp:
                    times = []
                    async for data in resp.content.iter_any():
                        times.extend([time.monotonic()] * data.count(b'"content":" '))
                assert len(times) == 6
                ttfts.append(times[0] - sent)
                gaps += [b - a for a, b in itertools.pairwise(times)]
    finally:
        await running.stop()
    assert min(ttfts) >= 0.030
    assert statistics.median(ttfts) < 0.032
    assert statistics.median(abs(g - 0.007) for g in gaps) < 0.001


async def test_above_the_fine_limit_only_a_streams_first_chunk_keeps_a_fine_slot() -> None:
    """With more streams than ``FINE_MAX_STREAMS`` a stream's first chunk (its TTFT) still gets a
    0.1 ms slot, not one rounded up to the next 0.5 ms; its later chunks share coarse slots."""
    loop = asyncio.get_running_loop()
    emitter = TokenEmitter(loop)
    emitter._fine_max = 0  # every stream above the limit: coarse slots
    res = emitter._res
    async with pairs(1) as [(transport, _)]:
        base = (int(time.monotonic() / (res * COARSE_SLOTS)) + 200) * COARSE_SLOTS  # ~0.1 s ahead
        due = (base + 2) * res  # 0.2 ms past a coarse boundary
        emission = emitter.start(transport, b"", PIECES, b"", 0, 3, due, 0.01)
        assert list(emitter._slots) == [base + 2]
        for _ in range(1000):
            if emission.index >= 1:
                break
            await asyncio.sleep(0.001)
        assert emission.index >= 1
        assert emitter._slots and all(key % COARSE_SLOTS == 0 for key in emitter._slots)
        assert await asyncio.wait_for(emission.done, 5) == DONE
