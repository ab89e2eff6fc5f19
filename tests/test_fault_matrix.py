"""The fault matrix: short bounded runs against faulty targets, through the real runner.

Each case runs a profile through ``harness.runner.prepare`` + ``run_loaded`` against the embedded
mock fleet (faults from the fleet file or switched through the admin API) or a real loopback
server, and checks what every faulty run must keep: one record per planned arrival
(``planned = ok + error + timeout + dropped + cancelled``), a ledger that reconciles with the
records (every request sent appears once, none appears that was not sent), the error kinds the
fault should produce, and no exception out of the run.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from harness.compliance import CompiledPolicy, judge
from harness.engine.transport import LeanPool, RequestHead, host_header
from harness.mocks.fleet import RunningFleet, start_fleet
from harness.mocks.process import FleetProcess
from harness.profile import load_fleet
from harness.protocols import eventstream as es
from harness.protocols.bedrock import BedrockStreamParser
from harness.protocols.events import error_kind
from harness.results.schema import ERROR_KINDS, OUTCOMES
from harness.runner import RunOutcome, prepare, run_loaded
from tests.conftest import PROFILES, ROOT

POLICY = PROFILES / "policies/azure-stateless-exclusive.toml"
TRANSPORTS = ("aiohttp", "lean")
KEY_ENV = "HARNESS_FAULT_MATRIX_KEY"  # mocks accept any key, but refuse a request without one
FAST = (
    "latency = { ttft_base_ms = 5, prefill_us_per_token = 0, itl_ms = 2, jitter_frac = 0, output_tokens = 8 }"
)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "fault-matrix-key")


def fleet_file(
    tmp_path: Path,
    *,
    faults: str = "",
    dialect: str = "azure_openai",
    port: int = 0,
    name: str = "fleet.toml",
) -> Path:
    """A one-endpoint Azure fleet ("az", cloud azure) with the given ``[endpoints.faults]`` lines."""
    path = tmp_path / name
    path.write_text(f"""
name = "faults"
seed = 5
[[endpoints]]
name = "az"
cloud = "azure"
dialect = "{dialect}"
region = "eastus"
port = {port}
deployments = ["gpt-4o"]
{FAST}
[endpoints.faults]
{faults}
""")
    return path


def profile_file(
    tmp_path: Path,
    *,
    fleet: Path | None = None,
    external: str | None = None,
    client: str = "",
    stream: bool = True,
    rate_rps: float = 20,
    duration_s: float = 0.5,
    allow_remote: bool = False,
    prompt_tokens: int = 16,
    dialect: str = "azure_openai",
) -> Path:
    """A one-scenario profile routed to the fleet's "az" or to an external endpoint at ``external``."""
    target = f'fleet = "{fleet}"\n' if fleet is not None else ""
    endpoints = ""
    if external is not None:
        endpoints = (
            f'[target.endpoints.ext]\nbase_url = "{external}"\ncloud = "azure"\napi_key_env = "{KEY_ENV}"\n'
            f'dialect = "{dialect}"\n'
        )
    defaults = {"connect_timeout_s": "2", "sock_read_timeout_s": "2", "request_timeout_s": "4"}
    given = {line.split("=")[0].strip() for line in client.splitlines() if "=" in line}
    client_lines = "\n".join(f"{k} = {v}" for k, v in defaults.items() if k not in given)
    if client.lstrip().startswith("[client."):
        client_lines, client = client_lines + "\n" + client, ""
    path = tmp_path / "profile.toml"
    path.write_text(f"""
name = "faults"
seed = 1
duration_s = {duration_s}
[target]
{target}policy = "{POLICY}"
allow_remote = {str(allow_remote).lower()}
{endpoints}
[client]
{client}
{client_lines}
[validity]  # about faults, not timing: a loaded test machine must not make these harness-bound
max_schedule_lag_p99_ms = 5000
max_event_loop_lag_p99_ms = 5000
[[scenarios]]
name = "chat"
api = "{"bedrock.converse" if dialect == "bedrock" else "chat.completions"}"
stream = {str(stream).lower()}
prompt_tokens = {prompt_tokens}
max_tokens = 8
arrival = {{ process = "constant", rate_rps = {rate_rps} }}
routes = [{{ endpoint = "{"ext" if external is not None else "az"}", deployment = "gpt-4o" }}]
""")
    return path


@dataclass
class Checked:
    outcome: RunOutcome
    records: pd.DataFrame
    compliance: dict[str, Any]
    ledger: pd.DataFrame | None = None

    def kinds(self) -> set[str]:
        return set(self.records["error_kind"].dropna())

    def outcomes(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.records["outcome"].value_counts().items()}


async def run_checked(profile: Path, tmp_path: Path, *, ledger: bool = True) -> Checked:
    """Run the profile in this event loop and check the invariants every faulty run keeps."""
    loaded = prepare(profile)
    outcome = await run_loaded(loaded, tmp_path / "results", progress=False, report=False)
    run_dir = outcome.run_dir
    assert not list(run_dir.glob("*.partial"))
    records = pd.read_parquet(run_dir / "requests.parquet")
    compliance = json.loads((run_dir / "compliance.json").read_text())
    counts = outcome.summary["counts"]
    assert counts["planned"] == len(records) > 0
    assert counts["planned"] == sum(counts[k] for k in OUTCOMES)
    assert set(records["outcome"]) <= set(OUTCOMES)
    assert set(records["error_kind"].dropna()) <= set(ERROR_KINDS)
    assert records["request_id"].is_unique
    assert (records["outcome"] == "ok").sum() == counts["ok"]
    recon = compliance["reconciliation"]
    assert recon["ledger_available"] is ledger
    if ledger:
        assert recon["sent"] == int(records["sent_ns"].notna().sum())
        assert recon["sent_not_in_ledger"] == 0, recon
        assert recon["in_ledger_not_sent"] == 0, recon
        assert recon["served_more_than_once"] == 0, recon
        assert recon["consistent"], recon
    log = (run_dir / "run.log").read_text()
    assert "Traceback" not in log
    return Checked(outcome, records, compliance)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(handler: Any, *, client_max_size: int = 1024**2) -> tuple[web.AppRunner, str]:
    """A real aiohttp server on 127.0.0.1:0 answering every POST with ``handler``."""
    app = web.Application(client_max_size=client_max_size)
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# One fleet for most cases: a mock fleet starts in seconds on a loaded machine, a case runs in one.
# Each endpoint carries one fault; a case resets the ledgers, runs, and judges its records against
# the ledger with the same ``judge`` that writes compliance.json.
SHARED_FAULTS = {
    "ok": "",
    "e5xx": "error_rate = 1.0\nerror_status = 500",
    "e429": "error_rate = 0.6\nerror_status = 429",
    "reset": "reset_rate = 1.0",
    "midstream": "midstream_disconnect_rate = 1.0",
    "slow": "slow_first_byte_rate = 1.0\nslow_first_byte_ms = 1500",
    "malformed": "malformed_rate = 1.0",
    "bedrock": "malformed_rate = 1.0",  # a Bedrock endpoint: every stream carries a frame with a bad CRC
}


@dataclass
class SharedFleet:
    proc: subprocess.Popen[bytes]
    urls: dict[str, str]
    admin_url: str

    async def admin(self, method: str, path: str, body: Any = None) -> bytes:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            data = orjson.dumps(body) if body is not None else None
            async with session.request(method, self.admin_url + path, data=data) as resp:
                payload = await resp.read()
                assert resp.status == 200, payload
                return payload

    async def ledger(self) -> pd.DataFrame:
        return pq.read_table(io.BytesIO(await self.admin("GET", "/ledger"))).to_pandas()


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedFleet]:
    """A mock fleet child process with one endpoint per fault, for the whole module."""
    path = tmp_path_factory.mktemp("fleet") / "shared.toml"
    parts = ['name = "shared"\nseed = 5\n']
    for name, faults in SHARED_FAULTS.items():
        dialect = "bedrock" if name == "bedrock" else "azure_openai"
        parts.append(
            f'[[endpoints]]\nname = "{name}"\ncloud = "azure"\ndialect = "{dialect}"\nregion = "eastus"\n'
            f'deployments = ["gpt-4o"]\n{FAST}\n[endpoints.faults]\n{faults}\n'
        )
    path.write_text("\n".join(parts))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.mocks", "--fleet", str(path), "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        infos = [orjson.loads(proc.stdout.readline()) for _ in SHARED_FAULTS]
        yield SharedFleet(proc, {i["name"]: i["base_url"] for i in infos}, infos[0]["admin_url"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def run_shared(fleet: SharedFleet, tmp_path: Path, endpoint: str, **kwargs: Any) -> Checked:
    """Run against one endpoint of the shared fleet; reconcile with its ledger through ``judge``."""
    await fleet.admin("POST", "/ledger/reset")
    run = await run_checked(
        profile_file(tmp_path, external=fleet.urls[endpoint], **kwargs), tmp_path, ledger=False
    )
    ledger = await fleet.ledger()
    loaded = prepare(tmp_path / "profile.toml")
    recon = judge(run.records, ledger, CompiledPolicy(loaded.policy), declared_clouds={"ext": "azure"})[
        "reconciliation"
    ]
    assert recon["sent_not_in_ledger"] == 0, recon
    assert recon["in_ledger_not_sent"] == 0, recon
    assert recon["served_more_than_once"] == 0, recon
    run.ledger = ledger
    return run


# --------------------------------------------------------------------------- the embedded fleet


@pytest.mark.slow
async def test_mixed_fault_storm_on_the_embedded_fleet_reconciles(tmp_path: Path) -> None:
    """Errors, resets, cut, slow and malformed streams at once: every request is one record and
    compliance.json reconciles the records with the embedded fleet's ledger (timed-out ones included)."""
    faults = (
        "error_rate = 0.2\nreset_rate = 0.15\nmidstream_disconnect_rate = 0.2\nmalformed_rate = 0.2\n"
        "slow_first_byte_rate = 0.2\nslow_first_byte_ms = 3000"
    )
    fleet = fleet_file(tmp_path, faults=faults)
    client = "sock_read_timeout_s = 0.5\nrequest_timeout_s = 1"
    profile = profile_file(tmp_path, fleet=fleet, rate_rps=40, duration_s=1.0, client=client)
    run = await run_checked(profile, tmp_path)
    expected = {"http_5xx", "reset", "protocol", "timeout_read", "timeout_total"}
    assert {"http_5xx", "reset", "protocol"} <= run.kinds() <= expected
    assert run.outcomes().get("timeout", 0) > 0
    assert run.compliance["reconciliation"]["sent"] == len(run.records)
    assert run.compliance["violations_total"] == 0


# --------------------------------------------------------------------------- HTTP error storms


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_5xx_storm_is_recorded_as_errors(
    shared_fleet: SharedFleet, tmp_path: Path, transport: str
) -> None:
    """Every request answered 500 is one error record of kind http_5xx; the run fails but does not crash."""
    run = await run_shared(shared_fleet, tmp_path, "e5xx", client=f'transport = "{transport}"')
    assert run.outcomes() == {"error": len(run.records)}
    assert run.kinds() == {"http_5xx"}
    assert set(run.records["status"]) == {500}
    assert run.outcome.verdict != "PASS"


async def test_429_storm_without_retries_records_each_answer_once(
    shared_fleet: SharedFleet, tmp_path: Path
) -> None:
    """With retry policy none a 429 storm is recorded as it came: http_429 errors, one attempt each."""
    run = await run_shared(shared_fleet, tmp_path, "e429", stream=False)
    assert (run.records["error_kind"] == "http_429").sum() >= 2
    assert run.kinds() == {"http_429"}
    assert set(run.records["attempts"]) == {1}
    assert run.ledger is not None and len(run.ledger) == len(run.records)


async def test_429_storm_with_honour_retry_after_records_attempts(
    shared_fleet: SharedFleet, tmp_path: Path
) -> None:
    """honour-retry-after waits the server's retry-after-ms and retries; the record counts the attempts."""
    await shared_fleet.admin("POST", "/ledger/reset")
    client = '[client.retry]\npolicy = "honour-retry-after"\nmax_attempts = 3\nmax_wait_s = 2'
    profile = profile_file(tmp_path, external=shared_fleet.urls["e429"], stream=False, client=client)
    run = await run_checked(profile, tmp_path, ledger=False)
    records = run.records
    assert run.kinds() <= {"http_429"}
    assert records["attempts"].max() > 1
    retried = records[records["attempts"] > 1]
    waits = 900_000_000 * (retried["attempts"].astype("int64") - 1)  # retry-after-ms = 1000
    assert (retried["retry_wait_ns"] >= waits).all()
    assert (retried["outcome"] == "ok").any()  # a retry can succeed
    ledger = await shared_fleet.ledger()
    assert len(ledger) == int(records["attempts"].sum())  # every attempt reached the mock once
    assert set(ledger["request_id"]) == set(records["request_id"])


async def test_429_storm_with_honour_retry_after_reconciles(
    shared_fleet: SharedFleet, tmp_path: Path
) -> None:
    """Retried requests reconcile with the ledger (one request, several attempts) and are no violations."""
    client = '[client.retry]\npolicy = "honour-retry-after"\nmax_attempts = 3\nmax_wait_s = 2'
    run = await run_shared(shared_fleet, tmp_path, "e429", stream=False, client=client)
    assert run.records["attempts"].max() > 1


# --------------------------------------------------------------------------- connections


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connection_refused_is_a_connect_error(tmp_path: Path, transport: str) -> None:
    """A closed loopback port gives one connect error per request and no ledger to reconcile."""
    url = f"http://127.0.0.1:{free_port()}"
    profile = profile_file(tmp_path, external=url, client=f'transport = "{transport}"')
    run = await run_checked(profile, tmp_path, ledger=False)
    assert run.outcomes() == {"error": len(run.records)}
    assert run.kinds() == {"connect"}
    assert set(run.records["status"]) == {0}
    assert run.compliance["unserved"] == len(run.records)
    assert run.compliance["violations_total"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dns_failure_of_a_hostname_target_is_a_connect_error(tmp_path: Path, transport: str) -> None:
    """A hostname that cannot resolve (.invalid) gives connect (or connect-timeout) errors, never a crash."""
    profile = profile_file(
        tmp_path,
        external="http://harness-fault-matrix.invalid:8080",
        allow_remote=True,
        client=f'transport = "{transport}"\nconnect_timeout_s = 0.5',
        rate_rps=5,
    )
    run = await run_checked(profile, tmp_path, ledger=False)
    assert run.kinds() and run.kinds() <= {"connect", "timeout_connect"}
    assert set(run.records["outcome"]) <= {"error", "timeout"}
    assert run.outcome.verdict != "PASS"


@pytest.mark.slow
async def test_endpoint_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    """Killing the target mid-run gives reset/connect errors; after a restart on its port requests succeed."""
    port = free_port()
    fleet = fleet_file(tmp_path, port=port, name="fixed.toml")
    profile = profile_file(tmp_path, external=f"http://127.0.0.1:{port}", duration_s=3.0, rate_rps=10)
    first = FleetProcess(fleet)
    await first.start()
    second: RunningFleet | None = None
    try:
        t_call = time.monotonic()
        run_task = asyncio.create_task(run_checked(profile, tmp_path, ledger=False))
        await asyncio.sleep(1.0)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)  # abrupt: in-flight streams are cut, its ledger is lost
        await first.stop()
        await asyncio.sleep(0.3)  # down: connections are refused
        second = await start_fleet(load_fleet(fleet))  # a new instance on the same fixed port, in-process
        restarted_s = time.monotonic() - t_call
        run = await run_task
        ledger = second.ledger_table().to_pandas()
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    records = run.records
    # the epoch lies at least START_LEAD_NS after the call, so these bounds are conservative
    early = records[records["intended_ns"] < 0.5e9]
    late = records[records["intended_ns"] > (restarted_s + 0.3) * 1e9]
    assert (early["outcome"] == "ok").all() and len(early) >= 3
    assert (late["outcome"] == "ok").all() and len(late) >= 3
    assert run.kinds() and run.kinds() <= {"connect", "reset"}
    sent = set(records.loc[records["sent_ns"].notna(), "request_id"])
    assert set(ledger["request_id"]) <= sent  # the new instance saw nothing the harness did not send
    assert ledger["request_id"].is_unique
    assert set(late["request_id"]) <= set(ledger["request_id"])


async def test_outage_switched_at_run_time_through_the_admin_api(
    shared_fleet: SharedFleet, tmp_path: Path
) -> None:
    """An outage switched on and off mid-run through the admin API: 503 errors while on, successes around."""
    await shared_fleet.admin("POST", "/ledger/reset")
    profile = profile_file(tmp_path, external=shared_fleet.urls["ok"], duration_s=2.0, stream=False)
    run_task = asyncio.create_task(run_checked(profile, tmp_path, ledger=False))
    try:
        await asyncio.sleep(0.2 + 0.7)
        await shared_fleet.admin("POST", "/endpoints/ok/outage", {"outage": True})
        await asyncio.sleep(0.6)
    finally:
        await shared_fleet.admin("POST", "/endpoints/ok/outage", {"outage": False})
    run = await run_task
    records = run.records
    assert run.kinds() == {"http_5xx"}
    assert set(records.loc[records["outcome"] == "error", "status"]) == {503}
    ordered = records.sort_values("intended_ns")["outcome"].tolist()
    assert ordered[0] == "ok" and ordered[-1] == "ok" and ordered.count("error") >= 5
    ledger = await shared_fleet.ledger()
    assert sorted(ledger["request_id"]) == sorted(records["request_id"])  # each sent request served once


# --------------------------------------------------------------------------- broken responses


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_midstream_disconnect_is_a_reset_with_partial_data(
    shared_fleet: SharedFleet, tmp_path: Path, transport: str
) -> None:
    """A stream cut after some chunks is a reset error that keeps the bytes received."""
    run = await run_shared(shared_fleet, tmp_path, "midstream", client=f'transport = "{transport}"')
    assert run.outcomes() == {"error": len(run.records)}
    assert run.kinds() == {"reset"}
    assert (run.records["bytes_in"] > 0).all()
    assert (run.records["chunks"] >= 0).all()


@pytest.mark.parametrize(
    "transport",
    [
        "aiohttp",
        "lean",
    ],
)
async def test_midstream_disconnect_keeps_the_status_and_first_byte(
    shared_fleet: SharedFleet, tmp_path: Path, transport: str
) -> None:
    """A stream cut after its headers keeps status 200 and its first-byte time: it was served."""
    run = await run_shared(shared_fleet, tmp_path, "midstream", client=f'transport = "{transport}"')
    assert (run.records["status"] == 200).all()
    assert run.records["first_byte_ns"].notna().all()
    assert run.compliance["judged"] == len(run.records)


async def test_reset_before_response_is_a_reset(shared_fleet: SharedFleet, tmp_path: Path) -> None:
    """A connection closed before any response byte is a reset error; the mock's ledger has it as 499."""
    run = await run_shared(shared_fleet, tmp_path, "reset", stream=False)
    assert run.kinds() == {"reset"}
    assert set(run.records["status"]) == {0}
    assert run.ledger is not None and set(run.ledger["status"]) == {499}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_first_byte_beyond_the_read_timeout_is_a_timeout(
    shared_fleet: SharedFleet, tmp_path: Path, transport: str
) -> None:
    """A first byte later than sock_read_timeout_s is a timeout record with no first byte."""
    client = f'transport = "{transport}"\nsock_read_timeout_s = 0.3\nrequest_timeout_s = 0.6'
    run = await run_shared(shared_fleet, tmp_path, "slow", client=client, rate_rps=10)
    assert run.outcomes() == {"timeout": len(run.records)}
    assert run.kinds() and run.kinds() <= {"timeout_read", "timeout_total"}
    assert run.records["first_byte_ns"].isna().all()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_malformed_sse_is_a_protocol_error(
    shared_fleet: SharedFleet, tmp_path: Path, transport: str
) -> None:
    """A stream chunk that is not valid SSE JSON makes the request a protocol error, not a crash."""
    run = await run_shared(shared_fleet, tmp_path, "malformed", client=f'transport = "{transport}"')
    assert run.outcomes() == {"error": len(run.records)}
    assert run.kinds() == {"protocol"}
    assert run.records["error_detail"].str.startswith("malformed").all()


# --------------------------------------------------------------------------- oversize


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_oversize_request_body_is_a_4xx_error(tmp_path: Path, transport: str) -> None:
    """A request body beyond the server's size limit comes back 413: an http_4xx record, not a crash."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()  # raises 413 beyond client_max_size
        return web.json_response({})

    runner, url = await serve(handler, client_max_size=4096)
    try:
        profile = profile_file(
            tmp_path, external=url, client=f'transport = "{transport}"', prompt_tokens=4000, stream=False
        )
        run = await run_checked(profile, tmp_path, ledger=False)
    finally:
        await runner.cleanup()
    assert run.kinds() == {"http_4xx"}
    assert set(run.records["status"]) == {413}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_oversize_response_body_is_read_and_recorded(tmp_path: Path, transport: str) -> None:
    """A 4 MiB answer (one giant SSE line, then a cut) is recorded with its bytes, without a crash."""
    blob = b"data: " + b"x" * (4 * 1024 * 1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(blob)
        await resp.write_eof()
        return resp

    runner, url = await serve(handler)
    try:
        profile = profile_file(tmp_path, external=url, client=f'transport = "{transport}"', rate_rps=5)
        run = await run_checked(profile, tmp_path, ledger=False)
    finally:
        await runner.cleanup()
    assert run.outcomes() == {"error": len(run.records)}
    assert run.kinds() == {"reset"}  # cut short: the stream ended without [DONE]
    assert run.records["error_detail"].str.startswith("stream ended").all()
    assert (run.records["bytes_in"] == len(blob)).all()


# --------------------------------------------------------------------------- Bedrock eventstream


def bedrock_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return es.event_message(event_type, payload)


async def test_bad_eventstream_crc_is_a_protocol_error_at_transport_level(tmp_path: Path) -> None:
    """A real server sending a Bedrock frame with a bad CRC: the lean transport delivers it and the parser
    reports a protocol error (the engine cannot drive Bedrock from a profile yet)."""
    good = bedrock_frame("messageStart", {"role": "assistant"})
    delta = bedrock_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}})
    body = good + es.corrupt_crc(delta) + delta

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        for piece in (body[:20], body[20:]):
            await resp.write(piece)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    runner, url = await serve(handler)
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    pool = LeanPool(host, port, limit=1, connect_timeout_s=2, read_timeout_s=2, total_timeout_s=4)

    class Sink:
        def __init__(self) -> None:
            self.parser = BedrockStreamParser()
            self.status = 0

        def on_headers(self, status: int, headers: Any, t_ns: int) -> None:
            self.status = status

        def on_body(self, data: bytes, t_ns: int) -> None:
            self.parser.feed(data)

    try:
        sink = Sink()
        head = RequestHead(
            "POST",
            "/model/m/converse-stream",
            host_header(host, port, False),
            {"Content-Type": "application/json"},
            body_len=2,
        )
        resp = await pool.request(head.with_id("crc-1"), b"{}", sink)
        sink.parser.close()
    finally:
        pool.close()
        await runner.cleanup()
    assert resp.status == 200
    assert sink.parser.error is not None and "CRC" in sink.parser.error
    assert error_kind(sink.parser.error) == "protocol"


async def test_bad_eventstream_crc_from_a_bedrock_profile_is_a_protocol_error(
    shared_fleet: SharedFleet, tmp_path: Path
) -> None:
    """A Bedrock endpoint whose stream frames carry a bad CRC makes each request a protocol error."""
    run = await run_shared(shared_fleet, tmp_path, "bedrock", dialect="bedrock")
    assert run.kinds() == {"protocol"}
