"""Mock fleets: in-process admin API, the ``python -m harness.mocks`` child process and FleetProcess."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.errors import InfrastructureError, ProfileError
from harness.mocks import ENDPOINT_KEYS, FleetProcess, endpoint_seed, start_fleet
from harness.profile import load_fleet
from harness.profile.models import Fleet, FleetEndpoint, Latency
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
