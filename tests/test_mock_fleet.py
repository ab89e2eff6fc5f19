"""Mock fleets: in-process admin API, the ``python -m harness.mocks`` child process and FleetProcess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.errors import InfrastructureError, InputError, ProfileError
from harness.mocks import ENDPOINT_KEYS, FleetProcess, endpoint_seed, start_fleet
from harness.mocks.fleet import merge_counts
from harness.mocks.runtime import Rejection
from harness.profile import load_fleet
from harness.profile.models import Faults, Fleet, FleetEndpoint, Latency
from harness.results.schema import LEDGER_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FLEET = ROOT / "profiles" / "fleets" / "default.toml"
FAST = Latency(ttft_base_ms=1, prefill_us_per_token=0, itl_ms=1, jitter_frac=0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _chat(
    session: aiohttp.ClientSession, base_url: str, deployment: str, request_id: str, stream: bool
) -> int:
    body = {"model": deployment, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
    if stream:
        body["stream"] = True
    async with session.post(
        f"{base_url}/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21",
        data=orjson.dumps(body),
        headers={"api-key": "k", "x-ms-client-request-id": request_id, "Content-Type": "application/json"},
    ) as resp:
        await resp.read()
        return resp.status


def test_endpoint_seeds_are_distinct_and_stable() -> None:
    """Each endpoint of a fleet gets its own seed, the same on every run."""
    seeds = [endpoint_seed(7, i) for i in range(100)]
    assert len(set(seeds)) == 100
    assert seeds == [endpoint_seed(7, i) for i in range(100)]
    assert endpoint_seed(8, 0) != seeds[0]


async def test_admin_api_in_process() -> None:
    """The admin app reports health and endpoints, serves the ledger as Parquet and JSON, and resets it."""
    fleet = Fleet(
        name="two",
        endpoints=[
            FleetEndpoint(name="a", cloud="azure", region="eastus", deployments=["d"], latency=FAST),
            FleetEndpoint(name="b", cloud="aws", region="us-east-1", deployments=["d"], latency=FAST),
        ],
    )
    running = await start_fleet(fleet)
    try:
        assert [e["name"] for e in running.endpoints] == ["a", "b"]
        assert all(tuple(e) == ENDPOINT_KEYS for e in running.endpoints)
        admin = running.admin_url
        async with aiohttp.ClientSession() as session:
            for i, ep in enumerate(running.endpoints):
                assert await _chat(session, ep["base_url"], "d", f"r{i}", stream=i == 1) == 200
            async with session.get(admin + "/health") as resp:
                assert await resp.json() == {"ok": True}
            async with session.get(admin + "/endpoints") as resp:
                assert await resp.json() == running.endpoints
            async with session.get(admin + "/ledger") as resp:
                assert resp.headers["Content-Type"] == "application/vnd.apache.parquet"
                table = pq.read_table(pa.BufferReader(await resp.read()))
            assert table.schema.equals(LEDGER_SCHEMA, check_metadata=False)
            assert table.column("request_id").to_pylist() == ["r0", "r1"]
            assert table.column("endpoint").to_pylist() == ["a", "b"]
            assert table.column("cloud").to_pylist() == ["azure", "aws"]
            async with session.get(admin + "/ledger", params={"format": "json"}) as resp:
                rows = orjson.loads(await resp.read())
            assert [(r["request_id"], r["stream"]) for r in rows] == [("r0", False), ("r1", True)]
            async with session.post(admin + "/ledger/reset") as resp:
                assert resp.status == 200
            async with session.get(admin + "/ledger", params={"format": "json"}) as resp:
                assert orjson.loads(await resp.read()) == []
    finally:
        await running.stop()


async def test_port_in_use_is_an_infrastructure_error() -> None:
    """An endpoint whose fixed port is taken fails to start with InfrastructureError naming it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        fleet = Fleet(
            name="clash",
            endpoints=[
                FleetEndpoint(name="free", cloud="azure", region="eastus", deployments=["d"]),
                FleetEndpoint(name="taken", cloud="azure", region="eastus", deployments=["d"], port=port),
            ],
        )
        with pytest.raises(InfrastructureError, match="'taken'"):
            await start_fleet(fleet)


@pytest.mark.slow
async def test_fleet_process_serves_and_ledgers_every_request() -> None:
    """FleetProcess reports every endpoint, they answer, the ledger matches what was sent, stop reaps it."""
    expected = load_fleet(DEFAULT_FLEET)
    fp = FleetProcess(DEFAULT_FLEET)
    async with fp:
        pid = fp.pid
        assert pid is not None
        assert _pid_alive(pid)
        assert [e["name"] for e in fp.endpoints] == [e.name for e in expected.endpoints]
        for info, ep in zip(fp.endpoints, expected.endpoints, strict=True):
            assert set(info) == set(ENDPOINT_KEYS)
            assert (info["cloud"], info["region"], info["deployments"]) == (
                ep.cloud,
                ep.region,
                ep.deployments,
            )
            assert info["base_url"].startswith("http://127.0.0.1:")
            assert info["admin_url"] == fp.admin_url
        sent: list[str] = []
        async with aiohttp.ClientSession() as session:
            calls = []
            for i, info in enumerate(fp.endpoints):
                for j in range(3):
                    rid = f"{info['name']}-{j}"
                    sent.append(rid)
                    calls.append(_chat(session, info["base_url"], "gpt-4o", rid, stream=(i + j) % 2 == 0))
            statuses = await asyncio.gather(*calls)
        assert statuses == [200] * len(sent)
        table = await fp.fetch_ledger()
        assert table.num_rows == len(sent)
        assert sorted(table.column("request_id").to_pylist()) == sorted(sent)
        assert set(table.column("pid").to_pylist()) == {pid}
        await fp.reset_ledger()
        assert (await fp.fetch_ledger()).num_rows == 0
    assert fp.returncode == 0
    assert not _pid_alive(pid)


async def test_fleet_process_exits_when_its_stdin_closes() -> None:
    """A fleet child stops by itself when the pipe to its parent closes, so it cannot be orphaned."""
    fp = FleetProcess(DEFAULT_FLEET)
    await fp.start()
    try:
        proc = fp._proc
        assert proc is not None
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), timeout=10)
        assert proc.returncode == 0
    finally:
        await fp.stop()


async def test_fleet_process_rejects_an_invalid_fleet_before_spawning(tmp_path: Path) -> None:
    """FleetProcess.start raises ProfileError for an invalid fleet file and starts nothing."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "x"\nbogus = 1\n[[endpoints]]\nname="e"\ncloud="azure"\nregion="r"\ndeployments=["d"]\n'
    )
    fp = FleetProcess(bad)
    with pytest.raises(ProfileError, match="bogus"):
        await fp.start()
    assert fp.pid is None


async def test_cli_exits_2_with_one_line_naming_file_and_key(tmp_path: Path) -> None:
    """`python -m harness.mocks --fleet BAD` exits 2 with one stderr line naming the file and the bad key."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "x"\n[[endpoints]]\nname = "e"\ncloud = "azure"\nregion = "r"\n'
        'deployments = ["d"]\nttft_ms = 5\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harness.mocks", "--fleet", str(bad),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert out == b""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0]
    assert "endpoints[0].ttft_ms" in lines[0]


# --------------------------------------------------------------------------- admin: faults, outage, state


async def test_admin_faults_outage_and_state_in_process() -> None:
    """The admin API reads and replaces an endpoint's faults, switches its outage, and reports counts."""
    fleet = Fleet(
        name="one",
        endpoints=[FleetEndpoint(name="a", cloud="azure", region="eastus", deployments=["d"], latency=FAST)],
    )
    running = await start_fleet(fleet)
    base = running.admin_url + "/endpoints/a"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/faults") as resp:
                assert await resp.json() == Faults().model_dump()
            async with session.put(base + "/faults", json={"error_rate": 0.25, "error_status": 503}) as resp:
                assert resp.status == 200
                assert (await resp.json())["error_rate"] == 0.25
            runtime = running.runtime("a")
            assert runtime is not None
            assert runtime.faults == Faults(error_rate=0.25, error_status=503)
            async with session.post(base + "/outage", json={"outage": True}) as resp:
                assert (await resp.json())["outage"] is True
            assert runtime.faults == Faults(error_rate=0.25, error_status=503, outage=True)
            assert (await runtime.admit("d", 1)).rejection == Rejection(503, "outage")
            async with session.post(base + "/outage", json={"outage": False}) as resp:
                assert (await resp.json())["outage"] is False
            async with session.get(base + "/state") as resp:
                state = await resp.json()
            assert state["name"] == "a"
            assert state["procs"] == 1
            assert state["pids"] == [os.getpid()]
            assert state["rejected"]["outage"] == 1
            assert state["faults"]["error_rate"] == 0.25
            async with session.get(running.admin_url + "/workers") as resp:
                assert await resp.json() == [{"pid": os.getpid(), "admin_url": running.admin_url}]
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("PUT", "/endpoints/a/faults", b'{"error_rate": 1.5}', 400, "faults.error_rate: "),
        ("PUT", "/endpoints/a/faults", b'{"eror_rate": 0.5}', 400, "faults.eror_rate: unknown key"),
        ("PUT", "/endpoints/a/faults", b'{"error_status": 200}', 400, "faults.error_status: "),
        ("PUT", "/endpoints/a/faults", b"[1]", 400, "faults: expected a JSON object"),
        ("PUT", "/endpoints/a/faults", b"{nope", 400, "not valid JSON"),
        ("POST", "/endpoints/a/outage", b'{"outage": "yes"}', 400, 'outage: expected {"outage": true}'),
        ("GET", "/endpoints/zz/faults", b"", 404, "no endpoint named 'zz'"),
        ("GET", "/endpoints/zz/state", b"", 404, "no endpoint named 'zz'"),
    ],
)
async def test_admin_rejects_bad_input_with_one_line_naming_the_field(
    method: str, path: str, body: bytes, status: int, message: str
) -> None:
    """Bad admin input answers 400 (unknown endpoint 404) with a one-line message naming the field."""
    fleet = Fleet(
        name="one", endpoints=[FleetEndpoint(name="a", cloud="azure", region="r", deployments=["d"])]
    )
    running = await start_fleet(fleet)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, running.admin_url + path, data=body) as resp,
        ):
            assert resp.status == status
            error = (await resp.json())["error"]
        assert message in error
        assert "\n" not in error
        runtime = running.runtime("a")
        assert runtime is not None
        assert runtime.faults == Faults()
    finally:
        await running.stop()


def test_merge_counts_sums_counts_and_keeps_shared_faults() -> None:
    """Per-process state merges by adding counts and rejections, joining pids, keeping the faults once."""
    a = {
        "pids": [1],
        "admitted": 3,
        "rejected": {"fault": 1},
        "in_flight": 1,
        "faults": {"error_status": 500},
    }
    b = {
        "pids": [2],
        "admitted": 4,
        "rejected": {"fault": 2},
        "in_flight": 0,
        "faults": {"error_status": 500},
    }
    assert merge_counts([a, b]) == {
        "pids": [1, 2],
        "admitted": 7,
        "rejected": {"fault": 3},
        "in_flight": 1,
        "faults": {"error_status": 500},
    }


# --------------------------------------------------------------------------- multi-process


async def _worker_faults(
    session: aiohttp.ClientSession, admin_url: str, name: str
) -> list[dict[str, object]]:
    async with session.get(admin_url + "/workers") as resp:
        workers = await resp.json()
    out = []
    for worker in workers:
        async with session.get(f"{worker['admin_url']}/endpoints/{name}/faults") as resp:
            out.append(await resp.json())
    return out


@pytest.mark.slow
async def test_two_processes_share_the_port_and_keep_one_complete_ledger() -> None:
    """With procs=2 both workers serve the same port; the ledger holds every request, from 2 pids,
    and fault and outage switches reach every worker."""
    fp = FleetProcess(DEFAULT_FLEET, procs=2)
    async with fp:
        info = fp.endpoints[0]
        assert info["admin_url"] == fp.admin_url
        sent = [f"mp-{i}" for i in range(40)]
        # A fresh connection per request, so the kernel's SO_REUSEPORT hash spreads them.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            statuses = await asyncio.gather(
                *(
                    _chat(session, info["base_url"], "gpt-4o", rid, stream=i % 2 == 0)
                    for i, rid in enumerate(sent)
                )
            )
        assert statuses == [200] * len(sent)
        table = await fp.fetch_ledger()
        assert table.num_rows == len(sent)
        assert sorted(table.column("request_id").to_pylist()) == sorted(sent)
        pids = set(table.column("pid").to_pylist())
        assert len(pids) == 2
        assert fp.pid not in pids

        name = info["name"]
        await fp.set_faults(name, error_rate=0.5)
        await fp.set_outage(name, True)
        async with aiohttp.ClientSession() as session:
            per_worker = await _worker_faults(session, fp.admin_url, name)
        assert [(f["error_rate"], f["outage"]) for f in per_worker] == [(0.5, True), (0.5, True)]
        state = await fp.state(name)
        assert state["procs"] == 2
        assert set(state["pids"]) == pids
        assert state["ledger_rows"] == len(sent)
        with pytest.raises(InputError, match=r"faults\.error_rate"):
            await fp.set_faults(name, error_rate=2)
        await fp.reset_ledger()
        assert (await fp.fetch_ledger()).num_rows == 0
        async with aiohttp.ClientSession() as session:  # emission timing: summed over the workers
            async with session.get(fp.admin_url + "/emission") as resp:
                emission = await resp.json()
            assert (emission["procs"], set(emission["pids"]), emission["early"]) == (2, pids, 0)
            assert emission["chunks"] == sum(n for _, n in emission["emission_error"])
            async with session.put(fp.admin_url + "/emission", json={"record": False}) as resp:
                assert resp.status == 200
            async with session.get(fp.admin_url + "/emission") as resp:
                assert (await resp.json())["recording"] is False
    assert fp.returncode == 0
    assert not any(_pid_alive(pid) for pid in pids)


@pytest.mark.slow
def test_harness_mock_procs_prints_each_endpoint_once_and_a_dead_worker_stops_the_fleet() -> None:
    """`harness mock --procs 2` prints one line per endpoint (not per worker); if a worker dies the
    parent stops the other one and exits 4 rather than serve half a fleet."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "mock", "--fleet", str(DEFAULT_FLEET), "--procs", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines = [orjson.loads(proc.stdout.readline()) for _ in range(3)]
        assert [line["name"] for line in lines] == [e.name for e in load_fleet(DEFAULT_FLEET).endpoints]
        with urllib.request.urlopen(lines[0]["admin_url"] + "/workers", timeout=10) as resp:
            pids = [w["pid"] for w in orjson.loads(resp.read())]
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        assert proc.wait(timeout=30) == 4
        assert proc.stdout.read() == ""
        assert f"mock worker 0 (pid {pids[0]}) exited" in proc.stderr.read()
        assert not any(_pid_alive(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
