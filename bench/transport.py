"""The lean transport (harness.engine.transport) against a stock aiohttp client and Locust.

Two measurements, every client in its own process pinned to one core, the target pinned to the
other core, all in one run so the ratios are comparable (absolute numbers drift ±15–30% here):

1. Closed loop, non-streaming: C concurrent workers send chat completions back to back to
   bench/minimal_target.py; each response gets the engine's full per-request work (a Record,
   parse_chat_response on the body, the cloud fingerprint of the headers). Clients: the lean
   transport, a stock aiohttp ClientSession, Locust FastHttpUser (Python API, same work in the
   task, Locust's own stats on). Reported: requests/s and client CPU per request, from a
   window after a warm-up. Runs are interleaved and repeated; the table shows medians.

2. Realistic token streams: S concurrent streams, each of T content chunks sent ITL ms apart,
   every chunk its own write on the server (a raw uvloop protocol with one timer per chunk),
   so each chunk arrives in its own socket read. Clients: the lean transport with a sink
   feeding ChatStreamParser, and aiohttp ``iter_any()`` feeding ChatStreamParser (the engine's
   current loop). Reported: client CPU per content chunk and chunks per CPU-second, socket reads
   per chunk, and the ITL timing error: for consecutive content chunks, the client-side gap
   minus the gap between the server's actual writes (both CLOCK_MONOTONIC on this machine).

    .venv/bin/python bench/transport.py [--duration-s 10] [--repeat 3] [--connections 64]
                                        [--streams 400] [--tokens 50] [--itl-ms 20] [--only closed|stream]
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
UA = "llm-loadharness/0.1"


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def template(base_url: str, stream: bool):  # type: ignore[no-untyped-def]
    from harness.protocols.azure_openai import ChatRequestTemplate

    return ChatRequestTemplate(
        base_url,
        "gpt-4o",
        "2024-10-21",
        "k",
        model="gpt-4o",
        prompt="Say hello. " * 8,
        max_tokens=16,
        stream=stream,
        include_usage=False,
    )


class Window:
    """Counts inside [warm-up end, warm-up end + duration]: items, socket reads and this
    process's CPU time."""

    def __init__(self) -> None:
        self.n = 0
        self.reads = 0
        self.start: tuple[float, float, int, int] | None = None
        self.end: tuple[float, float, int, int] | None = None
        self.running = True

    async def run(self, warmup_s: float, duration_s: float) -> None:
        await asyncio.sleep(warmup_s)
        self.start = (time.perf_counter(), cpu_s(), self.n, self.reads)
        await asyncio.sleep(duration_s)
        self.end = (time.perf_counter(), cpu_s(), self.n, self.reads)
        self.running = False

    def result(self, **extra: object) -> dict[str, object]:
        assert self.start is not None and self.end is not None
        start, end = self.start, self.end
        return {
            "n": end[2] - start[2],
            "reads": end[3] - start[3],
            "wall_s": end[0] - start[0],
            "cpu_s": end[1] - start[1],
            **extra,
        }


# ------------------------------------------------------------------------- closed-loop clients


def fill_record(rec, status, headers, body, t_done):  # type: ignore[no-untyped-def]
    """The engine's per-response work for a non-stream chat completion."""
    from harness.protocols.azure_openai import parse_chat_response
    from harness.protocols.fingerprint import attribute

    rec.status = status
    fp = attribute(headers)
    rec.fp_cloud = fp.cloud
    rec.fp_region = fp.region
    rec.fp_request_id = fp.request_id
    rec.mock_cloud = fp.mock_cloud
    rec.mock_region = fp.mock_region
    rec.done_ns = t_done
    rec.bytes_in = len(body)
    result = parse_chat_response(body)
    rec.response_id = result.response_id
    rec.tokens_out = result.usage_out if result.usage_out is not None else result.tokens_out_approx
    rec.tokens_in = result.usage_in
    rec.usage_from_server = result.usage_out is not None
    if result.error:
        rec.outcome = "error"
    else:
        rec.first_token_ns = t_done


def new_record(rid: str, i: int, t: int):  # type: ignore[no-untyped-def]
    from harness.results.record import Record

    return Record(
        request_id=rid,
        index=i,
        scenario="chat",
        intended_ns=t,
        stream=False,
        model="gpt-4o",
        endpoint="target",
        deployment="gpt-4o",
        sent_ns=t,
        bytes_out=100,
    )


async def closed_lean(base_url: str, conc: int, warmup_s: float, duration_s: float) -> dict[str, object]:
    from harness.engine.transport import LeanPool, RequestHead, TransportError, host_header, split_url

    tpl = template(base_url, stream=False)
    host, port, target, tls = split_url(tpl.url)
    pool = LeanPool(host, port, limit=conc, read_timeout_s=30, total_timeout_s=60)
    headers = {"User-Agent": UA, **tpl.headers_for("x")}
    del headers["x-ms-client-request-id"]
    head = RequestHead("POST", target, host_header(host, port, tls), headers, body_len=len(tpl.body))
    body = tpl.body
    window = Window()
    records: list[object] = []
    errors = 0
    mono = time.monotonic_ns
    epoch = mono()

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        request = pool.request
        with_id = head.with_id
        append = records.append
        while window.running:
            rid = f"00000000-0000-4000-8000{i:012x}"
            i += conc
            rec = new_record(rid, i, mono() - epoch)
            try:
                resp = await request(with_id(rid), body)
            except TransportError as exc:
                errors += 1
                rec.outcome = "error"
                rec.error_kind = exc.kind
                append(rec)
                continue
            rec.first_byte_ns = resp.first_byte_ns - epoch
            fill_record(rec, resp.status, resp.headers.indexed, resp.body, mono() - epoch)
            append(rec)
            window.n += 1

    tasks = [asyncio.create_task(worker(w)) for w in range(conc)]
    await window.run(warmup_s, duration_s)
    await asyncio.gather(*tasks)
    pool.close()
    return window.result(errors=errors)


async def closed_aiohttp(base_url: str, conc: int, warmup_s: float, duration_s: float) -> dict[str, object]:
    import aiohttp

    tpl = template(base_url, stream=False)
    window = Window()
    records: list[object] = []
    errors = 0
    mono = time.monotonic_ns
    epoch = mono()
    connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc)
    timeout = aiohttp.ClientTimeout(total=60, sock_read=30, connect=10)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, headers={"User-Agent": UA}
    ) as session:

        async def worker(w: int) -> None:
            nonlocal errors
            i = w
            url = tpl.url
            body = tpl.body
            while window.running:
                rid = f"00000000-0000-4000-8000{i:012x}"
                i += conc
                rec = new_record(rid, i, mono() - epoch)
                try:
                    async with session.post(url, data=body, headers=tpl.headers_for(rid)) as resp:
                        rec.first_byte_ns = mono() - epoch
                        data = await resp.read()
                        fill_record(rec, resp.status, resp.headers, data, mono() - epoch)
                except aiohttp.ClientError:
                    errors += 1
                    rec.outcome = "error"
                    records.append(rec)
                    continue
                records.append(rec)
                window.n += 1

        tasks = [asyncio.create_task(worker(w)) for w in range(conc)]
        await window.run(warmup_s, duration_s)
        await asyncio.gather(*tasks)
    return window.result(errors=errors)


LOCUST_SCRIPT = """
import json, os, resource, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
sys.path.insert(0, {root!r})
from locust import FastHttpUser, task, constant
from locust.env import Environment
from bench.transport import fill_record, new_record, template, cpu_s

BASE, CONC, WARM, DUR = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
TPL = template(BASE, stream=False)
PATH = TPL.url[len(BASE):]
RECORDS = []
EPOCH = time.monotonic_ns()

class Chat(FastHttpUser):
    host = BASE
    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = 30.0
    i = 0

    @task
    def chat(self):
        mono = time.monotonic_ns
        Chat.i += 1
        rid = "00000000-0000-4000-8000%012x" % Chat.i
        rec = new_record(rid, Chat.i, mono() - EPOCH)
        resp = self.client.post(PATH, data=TPL.body, headers=TPL.headers_for(rid))
        rec.first_byte_ns = mono() - EPOCH
        fill_record(rec, resp.status_code, resp.headers, resp.content or b"", mono() - EPOCH)
        RECORDS.append(rec)

env = Environment(user_classes=[Chat])
runner = env.create_local_runner()
runner.start(CONC, spawn_rate=CONC)
gevent.sleep(WARM)
s0 = (time.perf_counter(), cpu_s(), env.stats.total.num_requests, env.stats.total.num_failures)
gevent.sleep(DUR)
s1 = (time.perf_counter(), cpu_s(), env.stats.total.num_requests, env.stats.total.num_failures)
runner.quit()
print(json.dumps({{"n": s1[2] - s0[2], "wall_s": s1[0] - s0[0], "cpu_s": s1[1] - s0[1],
                  "errors": s1[3] - s0[3]}}))
"""


# ------------------------------------------------------------------------- stream server


class StreamServer(asyncio.Protocol):
    """A chat-completions SSE target that writes every chunk separately, on an absolute
    schedule (content chunk k due at start + k·ITL), and logs each content write's time."""

    log: dict[str, list[int]] = {}  # noqa: RUF012 — one per server process
    itl_s = 0.02
    tokens = 50

    def __init__(self) -> None:
        from harness.protocols.azure_openai import SSE_DONE, content_chunk, finish_chunk, role_chunk

        def framed(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"apim-request-id: 00000000-0000-4000-8000-000000000000\r\nx-ms-region: Sweden Central\r\n"
            b"x-mock-cloud: azure\r\nx-mock-region: swedencentral\r\n\r\n"
        ) + framed(role_chunk("chatcmpl-bench", 1, "gpt-4o"))
        self.chunk = framed(content_chunk("chatcmpl-bench", 1, "gpt-4o", " hello"))
        self.tail = framed(finish_chunk("chatcmpl-bench", 1, "gpt-4o", "stop") + SSE_DONE) + b"0\r\n\r\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            length = 0
            rid = ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-ms-client-request-id":
                    rid = value.strip().decode()
            if len(buf) < end + 4 + length:
                return
            del buf[: end + 4 + length]
            self.start_stream(rid)

    def start_stream(self, rid: str) -> None:
        assert self.transport is not None
        self.transport.write(self.head)
        times: list[int] = []
        self.log[rid] = times
        start = time.monotonic_ns()
        self.loop.call_later(self.itl_s, self.send, times, start, 1)

    def send(self, times: list[int], start: int, k: int) -> None:
        transport = self.transport
        if transport is None:
            return
        if k > self.tokens:
            transport.write(self.tail)
            return
        transport.write(self.chunk)
        now = time.monotonic_ns()
        times.append(now)
        due = start + int((k + 1) * self.itl_s * 1e9)
        self.loop.call_later(max(due - now, 0) / 1e9, self.send, times, start, k + 1)


async def serve_streams(itl_ms: float, tokens: int, log_path: str) -> None:
    StreamServer.itl_s = itl_ms / 1000
    StreamServer.tokens = tokens
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StreamServer, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    Path(log_path).write_bytes(json.dumps(StreamServer.log).encode())  # noqa: ASYNC240 — after the run


# ------------------------------------------------------------------------- stream clients


class StreamWindow(Window):
    """Also keeps each measured stream's content-chunk times, by request id."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[str, list[int]] = {}
        self.errors = 0


async def stream_clients(
    kind: str, base_url: str, streams: int, warmup_s: float, duration_s: float, out_path: str, spread_s: float
) -> dict[str, object]:
    """Streams back to back on ``streams`` connections; first starts spread evenly over
    ``spread_s`` (one stream's length), so arrivals are not synchronised bursts."""
    from harness.engine.transport import LeanPool, RequestHead, TransportError, host_header, split_url
    from harness.protocols.azure_openai import ChatStreamParser
    from harness.protocols.fingerprint import attribute
    from harness.results.record import Record

    tpl = template(base_url, stream=True)
    window = StreamWindow()
    mono = time.monotonic_ns
    epoch = mono()

    def record(rid: str, i: int) -> Record:
        return Record(request_id=rid, index=i, scenario="chat", intended_ns=mono() - epoch, stream=True)

    def finish(rec: Record, parser: ChatStreamParser, token_ns: list[int], started: float) -> None:
        parser.close()
        rec.chunks = parser.content_chunks
        rec.tokens_out = parser.tokens_out_approx
        rec.done_ns = mono() - epoch
        if token_ns:
            rec.first_token_ns = token_ns[0] - epoch
            rec.token_ns = token_ns
        if parser.error:
            window.errors += 1
        if window.start is not None and window.running and started >= window.start[0]:
            window.streams[rec.request_id] = token_ns

    if kind == "floor":
        # The environment's floor: a bare protocol that only timestamps reads and counts the
        # content chunks in them (no HTTP or SSE parsing, no records).
        host, port, target, tls = split_url(tpl.url)
        headers = {"User-Agent": UA, **tpl.headers_for("x")}
        del headers["x-ms-client-request-id"]
        head = RequestHead("POST", target, host_header(host, port, tls), headers, body_len=len(tpl.body))
        mark = b'"content":" hello"'
        loop = asyncio.get_running_loop()

        class Floor(asyncio.Protocol):
            def __init__(self, w: int) -> None:
                self.i = w
                self.rid = ""
                self.times: list[int] = []
                self.started = 0.0
                self.transport: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport  # type: ignore[assignment]
                loop.call_later(self.i * spread_s / streams, self.next)

            def next(self) -> None:
                assert self.transport is not None
                if not window.running:
                    self.transport.close()
                    return
                self.rid = f"00000000-0000-4000-8000{self.i:012x}"
                self.i += streams
                self.times = []
                self.started = time.perf_counter()
                self.transport.write(head.with_id(self.rid) + tpl.body)

            def data_received(self, data: bytes) -> None:
                t = mono()
                window.reads += 1
                n = data.count(mark)
                if n:
                    window.n += n
                    self.times.extend([t] * n)
                if data.endswith(b"0\r\n\r\n"):
                    if window.start is not None and window.running and self.started >= window.start[0]:
                        window.streams[self.rid] = self.times
                    self.next()

        conns = [await loop.create_connection(lambda w=w: Floor(w), host, port) for w in range(streams)]
        await window.run(warmup_s, duration_s)
        for transport, _ in conns:
            transport.close()
    elif kind == "lean":
        host, port, target, tls = split_url(tpl.url)
        pool = LeanPool(host, port, limit=streams, read_timeout_s=30, total_timeout_s=120, kernel_stamps=True)
        headers = {"User-Agent": UA, **tpl.headers_for("x")}
        del headers["x-ms-client-request-id"]
        head = RequestHead("POST", target, host_header(host, port, tls), headers, body_len=len(tpl.body))

        class Sink:
            __slots__ = ("feed", "parser", "rec", "token_ns")

            def __init__(self, rec: Record) -> None:
                self.rec = rec
                self.parser = ChatStreamParser()
                self.feed = self.parser.feed
                self.token_ns: list[int] = []

            def on_headers(self, status: int, headers, t_ns: int) -> None:  # type: ignore[no-untyped-def]
                rec = self.rec
                rec.status = status
                rec.first_byte_ns = t_ns - epoch
                fp = attribute(headers.indexed)
                rec.fp_cloud = fp.cloud
                rec.fp_region = fp.region
                rec.fp_request_id = fp.request_id
                rec.mock_cloud = fp.mock_cloud
                rec.mock_region = fp.mock_region

            def on_body(self, data: bytes, t_ns: int) -> None:
                window.reads += 1
                n = self.feed(data)
                if n:
                    window.n += n
                    if n == 1:
                        self.token_ns.append(t_ns)
                    else:
                        self.token_ns.extend([t_ns] * n)

        async def worker(w: int) -> None:
            await asyncio.sleep(w * spread_s / streams)
            i = w
            while window.running:
                rid = f"00000000-0000-4000-8000{i:012x}"
                i += streams
                rec = record(rid, i)
                sink = Sink(rec)
                started = time.perf_counter()
                try:
                    await pool.request(head.with_id(rid), tpl.body, sink)
                except TransportError:
                    if window.running:  # not the pool.close() that ends the run
                        window.errors += 1
                    continue
                finish(rec, sink.parser, sink.token_ns, started)

        tasks = [asyncio.create_task(worker(w)) for w in range(streams)]
        await window.run(warmup_s, duration_s)
        pool.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    else:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=streams, limit_per_host=streams)
        timeout = aiohttp.ClientTimeout(total=120, sock_read=30, connect=10)
        session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, headers={"User-Agent": UA}
        )

        async def worker(w: int) -> None:
            await asyncio.sleep(w * spread_s / streams)
            i = w
            while window.running:
                rid = f"00000000-0000-4000-8000{i:012x}"
                i += streams
                rec = record(rid, i)
                parser = ChatStreamParser()
                feed = parser.feed
                token_ns: list[int] = []
                started = time.perf_counter()
                try:
                    async with session.post(tpl.url, data=tpl.body, headers=tpl.headers_for(rid)) as resp:
                        rec.first_byte_ns = mono() - epoch
                        rec.status = resp.status
                        fp = attribute(resp.headers)
                        rec.fp_cloud = fp.cloud
                        rec.fp_region = fp.region
                        rec.fp_request_id = fp.request_id
                        rec.mock_cloud = fp.mock_cloud
                        rec.mock_region = fp.mock_region
                        async for data in resp.content.iter_any():
                            t = mono()
                            window.reads += 1
                            n = feed(data)
                            if n:
                                window.n += n
                                token_ns.extend([t] * n)
                except aiohttp.ClientError:
                    window.errors += 1
                    continue
                finish(rec, parser, token_ns, started)

        tasks = [asyncio.create_task(worker(w)) for w in range(streams)]
        await window.run(warmup_s, duration_s)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    Path(out_path).write_bytes(json.dumps(window.streams).encode())  # noqa: ASYNC240 — after the run
    return window.result(errors=window.errors)


# ------------------------------------------------------------------------- orchestration


def pinned(cpu: int):  # type: ignore[no-untyped-def]
    return lambda: os.sched_setaffinity(0, {cpu})


def run_json(cmd: list[str], cpu: int, timeout: float) -> dict[str, float]:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=pinned(cpu), check=False, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_server(cmd: list[str], cpu: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pinned(cpu),  # noqa: PLW1509 — no threads in this process
        cwd=ROOT,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_closed(args: argparse.Namespace, target_cpu: int, client_cpu: int) -> None:
    server, port = start_server(
        [sys.executable, str(ROOT / "bench/minimal_target.py"), "--cpu", str(target_cpu)], target_cpu
    )
    base = f"http://127.0.0.1:{port}"
    me = [sys.executable, str(Path(__file__).resolve())]
    window = [str(args.warmup_s), str(args.duration_s)]
    clients = {
        "lean transport (uvloop)": [*me, "_closed", "lean", base, str(args.connections), *window],
        "aiohttp ClientSession (uvloop)": [*me, "_closed", "aiohttp", base, str(args.connections), *window],
        "Locust FastHttpUser": [
            sys.executable,
            "-c",
            LOCUST_SCRIPT.format(root=str(ROOT)),
            base,
            str(args.connections),
            *window,
        ],
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
    timeout = args.warmup_s + args.duration_s + 60
    try:
        for _ in range(args.repeat):
            for name, cmd in clients.items():
                results[name].append(run_json(cmd, client_cpu, timeout))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        f"\n## closed loop, non-streaming: target on cpu {target_cpu}, each client on cpu {client_cpu}, "
        f"{args.connections} concurrent, {args.duration_s:.0f} s after {args.warmup_s:.0f} s warm-up, "
        f"median of {args.repeat} interleaved runs"
    )
    print(
        f"{'client':<32} {'req/s':>8} {'CPU µs/req':>10} {'req/CPU-s':>10} {'vs Locust':>9} "
        f"{'req/CPU-s vs Locust':>19} {'errors':>6}  runs (req/s)"
    )
    rows = {}
    for name, runs in results.items():
        rps = statistics.median(r["n"] / r["wall_s"] for r in runs)
        per_cpu = statistics.median(r["n"] / r["cpu_s"] for r in runs)
        rows[name] = (rps, per_cpu, sum(r["errors"] for r in runs), [r["n"] / r["wall_s"] for r in runs])
    ref_rps, ref_cpu = rows["Locust FastHttpUser"][:2]
    for name, (rps, per_cpu, errors, each) in rows.items():
        print(
            f"{name:<32} {rps:>8.0f} {1e6 / per_cpu:>10.1f} {per_cpu:>10.0f} {rps / ref_rps:>8.2f}× "
            f"{per_cpu / ref_cpu:>18.2f}× {errors:>6}  {' '.join(f'{x:.0f}' for x in each)}"
        )


def bench_stream(args: argparse.Namespace, target_cpu: int, client_cpu: int) -> None:
    me = [sys.executable, str(Path(__file__).resolve())]
    print(
        f"\n## realistic streams: {args.streams} concurrent streams × {args.tokens} content chunks, "
        f"{args.itl_ms:g} ms apart, each chunk its own write, stream starts spread evenly (offered "
        f"{args.streams * 1000 / args.itl_ms:.0f} chunks/s); server on cpu {target_cpu}, client on cpu "
        f"{client_cpu}; {args.duration_s:.0f} s after {args.warmup_s:.0f} s warm-up, median of {args.repeat}"
    )
    print(
        f"{'client':<32} {'chunks/s':>8} {'CPU %':>5} {'CPU µs/chunk':>12} {'chunks/CPU-s':>12} "
        f"{'reads/chunk':>11} {'ITL err ms: p50':>15} {'p99':>6} {'p99.9':>6} {'>1ms':>6} "
        f"{'delay p99':>9} {'errors':>6}"
    )
    rows: dict[str, list[tuple[float, ...]]] = {"floor": [], "lean": [], "aiohttp": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for kind, runs in rows.items():
                log = f"{tmp}/server-{kind}-{rep}.json"
                out = f"{tmp}/client-{kind}-{rep}.json"
                server, port = start_server(
                    [*me, "_stream_server", str(args.itl_ms), str(args.tokens), log], target_cpu
                )
                try:
                    res = run_json(
                        [
                            *me,
                            "_stream_client",
                            kind,
                            f"http://127.0.0.1:{port}",
                            str(args.streams),
                            str(args.warmup_s),
                            str(args.duration_s),
                            out,
                            str(args.tokens * args.itl_ms / 1000),
                        ],
                        client_cpu,
                        args.warmup_s + args.duration_s + 120,
                    )
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=30)
                sent = json.loads(Path(log).read_text())
                got = json.loads(Path(out).read_text())
                errs: list[float] = []
                delays: list[float] = []
                for rid, recv in got.items():
                    srv = sent.get(rid)
                    if not srv or len(srv) != len(recv):
                        continue
                    for k in range(len(recv)):
                        delays.append((recv[k] - srv[k]) / 1e6)
                        if k:
                            errs.append(abs((recv[k] - recv[k - 1]) - (srv[k] - srv[k - 1])) / 1e6)
                n, wall, cpu = res["n"], res["wall_s"], res["cpu_s"]
                runs.append(
                    (
                        n / wall,
                        100 * cpu / wall,
                        1e6 * cpu / n,
                        n / cpu,
                        res["reads"] / n,
                        pct(errs, 0.5),
                        pct(errs, 0.99),
                        pct(errs, 0.999),
                        100 * sum(e > 1.0 for e in errs) / max(len(errs), 1),
                        pct(delays, 0.99),
                        res["errors"],
                    )
                )
    names = {
        "floor": "floor: bare protocol, no parsing",
        "lean": "lean transport + sink",
        "aiohttp": "aiohttp iter_any()",
    }
    medians = {
        kind: [statistics.median(col) for col in zip(*runs, strict=True)] for kind, runs in rows.items()
    }
    for kind, m in medians.items():
        print(
            f"{names[kind]:<32} {m[0]:>8.0f} {m[1]:>5.1f} {m[2]:>12.2f} {m[3]:>12.0f} {m[4]:>11.3f} "
            f"{m[5]:>15.3f} {m[6]:>6.2f} {m[7]:>6.2f} {m[8]:>5.2f}% {m[9]:>7.2f}ms {m[10]:>6.0f}"
        )
    print(f"chunks per CPU-second, lean / aiohttp: {medians['lean'][3] / medians['aiohttp'][3]:.2f}×")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        return subcommand(sys.argv[1], sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--only", choices=("closed", "stream"))
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    target_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    print("load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.only != "stream":
        bench_closed(args, target_cpu, client_cpu)
    if args.only != "closed":
        bench_stream(args, target_cpu, client_cpu)
    return 0


def subcommand(name: str, argv: list[str]) -> int:
    import uvloop

    sys.path.insert(0, str(ROOT))
    if name == "_closed":
        kind, base, conc, warm, dur = argv
        fn = closed_lean if kind == "lean" else closed_aiohttp
        result = uvloop.run(fn(base, int(conc), float(warm), float(dur)))
    elif name == "_stream_server":
        itl, tokens, log = argv
        uvloop.run(serve_streams(float(itl), int(tokens), log))
        return 0
    elif name == "_stream_client":
        kind, base, streams, warm, dur, out, spread = argv
        result = uvloop.run(
            stream_clients(kind, base, int(streams), float(warm), float(dur), out, float(spread))
        )
    else:
        raise SystemExit(f"unknown subcommand {name}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
