"""The reference router in front of a real mock fleet, both real processes on loopback: policy
routing, balancing, affinity, failover, stream pass-through, and the self-test switches, each
checked against the fleet's ledger (ground truth)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pandas as pd
import pytest
import pytest_asyncio

from harness.errors import InputError
from harness.mocks.process import FleetProcess
from harness.protocols.fingerprint import attribute
from harness.router.affinity import CreatedSniffer
from harness.router.app import RouterConfig
from harness.router.backends import Backend
from harness.router.decide import BadRequest, Balancer, classify, parse_path
from harness.router.inject import Injector, Rates
from harness.router.process import RouterProcess
from tests.conftest import PROFILES, run_cli

POLICY = PROFILES / "policies/azure-stateless-exclusive.toml"
ITL_MS = 20
FLEET = f"""
name = "router-test"
seed = 5

[[endpoints]]
name = "azure-eastus"
cloud = "azure"
dialect = "azure_openai"
region = "eastus"
deployments = ["gpt-4o", "text-embedding-3-small"]
latency = {{ ttft_base_ms = 5, prefill_us_per_token = 0, itl_ms = {ITL_MS}, jitter_frac = 0 }}

[[endpoints]]
name = "azure-swedencentral"
cloud = "azure"
dialect = "azure_openai"
region = "swedencentral"
deployments = ["gpt-4o", "text-embedding-3-small"]
latency = {{ ttft_base_ms = 5, prefill_us_per_token = 0, itl_ms = {ITL_MS}, jitter_frac = 0 }}

[[endpoints]]
name = "openai-direct"
cloud = "openai"
dialect = "openai"
region = "us"
deployments = ["gpt-4o", "text-embedding-3-small", "gpt-4.1"]
latency = {{ ttft_base_ms = 5, prefill_us_per_token = 0, itl_ms = {ITL_MS}, jitter_frac = 0 }}

[[endpoints]]
name = "bedrock-useast1"
cloud = "aws"
dialect = "bedrock"
region = "us-east-1"
deployments = ["anthropic.claude-3-5-sonnet-20240620-v1:0"]
"""
AZURE = {"azure-eastus", "azure-swedencentral"}
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FleetProcess]:
    """One fleet for the module; tests tell their rows apart by request id prefix."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.toml"
    path.write_text(FLEET)
    async with FleetProcess(path) as running:
        yield running


def _router(fleet: FleetProcess, log: Path, rates: Rates | None = None) -> RouterProcess:
    return RouterProcess(POLICY, attach_admin=fleet.admin_url, log=log, rates=rates, seed=7)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def router(
    fleet: FleetProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RouterProcess]:
    """A router without self-test switches."""
    async with _router(fleet, tmp_path_factory.mktemp("clean") / "router.jsonl") as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def switched(
    fleet: FleetProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, RouterProcess]]:
    """Routers with self-test switches at p = 0.5, started together. misroute (stateless calls
    only) and break_affinity (chained calls only) never compete for a request, so they share one."""
    logs = tmp_path_factory.mktemp("switched")
    both = _router(fleet, logs / "misroute+break_affinity.jsonl", Rates(misroute=0.5, break_affinity=0.5))
    routers = {
        "misroute": both,
        "break_affinity": both,
        "spoof_fingerprint": _router(fleet, logs / "spoof.jsonl", Rates(spoof_fingerprint=0.5)),
        "duplicate": _router(fleet, logs / "duplicate.jsonl", Rates(duplicate=0.5)),
    }
    unique = list({id(r): r for r in routers.values()}.values())
    try:
        await asyncio.gather(*(r.start() for r in unique))
        yield routers
    finally:
        await asyncio.gather(*(r.stop() for r in unique))


def _log(router: RouterProcess) -> list[dict[str, Any]]:
    text = router.log_path.read_text() if router.log_path.exists() else ""
    return [orjson.loads(line) for line in text.splitlines()]


async def _ledger(fleet: FleetProcess, prefix: str) -> pd.DataFrame:
    ledger = (await fleet.fetch_ledger()).to_pandas()
    return ledger[ledger["request_id"].str.startswith(prefix, na=False)]


async def _chat(
    session: aiohttp.ClientSession, base: str, crid: str, *, stream: bool = False, max_tokens: int = 1
) -> tuple[int, dict[str, str], bytes]:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "stream": stream}
    headers = {"api-key": "k", "x-ms-client-request-id": crid}
    async with session.post(base + CHAT, json=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def _many(n: int, make: Any) -> list[Any]:
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> Any:
        async with sem:
            return await make(i)

    async with asyncio.timeout(60):
        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_stateless_chat_is_served_only_on_azure_and_spread_across_regions(
    fleet: FleetProcess, router: RouterProcess
) -> None:
    """Stateless chat through the router (Azure and OpenAI SDK forms, stream and not) lands only on
    Azure backends, over both Azure regions, though an OpenAI-cloud backend serves the model."""
    from openai import AsyncAzureOpenAI, AsyncOpenAI

    azure = AsyncAzureOpenAI(
        azure_endpoint=router.base_url, api_key="k", api_version="2024-10-21", max_retries=0
    )
    plain = AsyncOpenAI(base_url=router.openai_base_url, api_key="k", max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    ids = []
    for i in range(16):
        client = azure if i % 2 else plain
        ids.append(crid := f"sl-{i}")
        extra = {"x-ms-client-request-id": crid}
        if i % 4 < 2:
            reply = await client.chat.completions.create(
                model="gpt-4o", messages=messages, max_tokens=2, extra_headers=extra
            )
            assert reply.choices[0].message.content
        else:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=messages, max_tokens=2, stream=True, extra_headers=extra
            )
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await azure.close()
    await plain.close()
    rows = await _ledger(fleet, "sl-")
    assert sorted(rows["request_id"]) == sorted(ids)  # every request once
    assert set(rows["cloud"]) == {"azure"}
    assert set(rows["endpoint"]) == AZURE
    assert (rows["status"] == 200).all()


async def test_request_id_is_forwarded_under_both_header_names(
    fleet: FleetProcess, router: RouterProcess
) -> None:
    """The ledger records the client request id whether it came as x-ms-client-request-id or
    X-Client-Request-Id, on the backend the reply names in x-router-backend."""
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await _chat(session, router.base_url, "rid-ms")
        assert status == 200
        body = {"model": "text-embedding-3-small", "input": "x"}
        async with session.post(
            router.openai_base_url + "/embeddings",
            json=body,
            headers={"Authorization": "Bearer k", "X-Client-Request-Id": "rid-oa"},
        ) as resp:
            assert resp.status == 200
            embed_backend = resp.headers["x-router-backend"]
    by_id = (await _ledger(fleet, "rid-")).set_index("request_id")
    assert by_id.loc["rid-ms", "endpoint"] == headers["x-router-backend"]
    assert by_id.loc["rid-oa", "endpoint"] == embed_backend
    assert by_id.loc["rid-oa", "api"] == "embeddings"


async def test_nothing_allowed_answers_403_naming_the_rule(
    fleet: FleetProcess, router: RouterProcess
) -> None:
    """A stateless call for a model only a non-Azure backend serves is refused with a 403 in the
    inbound dialect's shape naming the rule, and reaches no backend."""
    async with aiohttp.ClientSession() as session:
        body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        headers = {"Authorization": "Bearer k", "X-Client-Request-Id": "deny-1"}
        async with session.post(
            router.openai_base_url + "/chat/completions", json=body, headers=headers
        ) as r:
            status, error = r.status, (await r.json())["error"]
    assert status == 403
    assert "stateless-openai-on-azure" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (await _ledger(fleet, "deny-")).empty


async def test_stateful_responses_chain_stays_on_its_holder(
    fleet: FleetProcess, router: RouterProcess
) -> None:
    """A stored Responses chain (previous_response_id, stream and not, Azure and OpenAI URL forms)
    and a retrieve by id are all served by the backend that created the first response."""
    from openai import AsyncAzureOpenAI, AsyncOpenAI

    plain = AsyncOpenAI(base_url=router.openai_base_url, api_key="k", max_retries=0)
    azure = AsyncAzureOpenAI(azure_endpoint=router.base_url, api_key="k", api_version="2025-04-01-preview")
    first = await plain.responses.create(
        model="gpt-4o",
        input="hi",
        store=True,
        max_output_tokens=2,
        extra_headers={"X-Client-Request-Id": "st-0"},
    )
    previous = first.id
    for turn in range(1, 7):
        client = azure if turn % 3 else plain  # Azure's classic /openai/responses form, and /v1
        extra = {"X-Client-Request-Id": f"st-{turn}"}
        if turn % 2:
            stream = await client.responses.create(
                model="gpt-4o",
                input="more",
                previous_response_id=previous,
                max_output_tokens=2,
                stream=True,
                extra_headers=extra,
            )
            events = [event async for event in stream]
            previous = next(e.response.id for e in events if e.type == "response.completed")
        else:
            reply = await client.responses.create(
                model="gpt-4o",
                input="more",
                previous_response_id=previous,
                max_output_tokens=2,
                extra_headers=extra,
            )
            previous = reply.id
    again = await azure.responses.retrieve(previous, extra_headers={"X-Client-Request-Id": "st-get"})
    assert again.id == previous
    await plain.close()
    await azure.close()
    rows = await _ledger(fleet, "st-")
    assert len(rows) == 8
    assert rows["endpoint"].nunique() == 1 and (rows["status"] == 200).all()


async def test_conversation_turns_go_where_the_conversation_lives(
    fleet: FleetProcess, router: RouterProcess
) -> None:
    """Responses in a conversation, and the conversation's items, are served by the backend that
    created the conversation; deleting it makes the router forget it."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=router.openai_base_url, api_key="k", max_retries=0)
    conv = await client.conversations.create(extra_headers={"X-Client-Request-Id": "cv-0"})
    for turn in (1, 2):
        await client.responses.create(
            model="gpt-4o",
            input="hi",
            conversation=conv.id,
            max_output_tokens=1,
            extra_headers={"X-Client-Request-Id": f"cv-{turn}"},
        )
    items = await client.conversations.items.list(conv.id, extra_headers={"X-Client-Request-Id": "cv-3"})
    assert len(items.data) == 4  # two inputs, two outputs
    await client.conversations.delete(conv.id, extra_headers={"X-Client-Request-Id": "cv-4"})
    async with aiohttp.ClientSession() as session:
        url = f"{router.openai_base_url}/conversations/{conv.id}"
        async with session.get(
            url, headers={"Authorization": "Bearer k", "X-Client-Request-Id": "cv-5"}
        ) as r:
            assert r.status == 404 and "x-router-backend" not in r.headers  # answered by the router
    await client.close()
    rows = await _ledger(fleet, "cv-")
    assert len(rows) == 5 and rows["endpoint"].nunique() == 1 and (rows["status"] == 200).all()


async def test_outage_fails_over_to_the_other_azure_region_only(
    fleet: FleetProcess, router: RouterProcess
) -> None:
    """With one Azure region in outage, every stateless call still succeeds from the other Azure
    region, never from the OpenAI cloud, and each failover is logged."""
    await fleet.set_outage("azure-eastus", True)
    try:
        async with aiohttp.ClientSession() as session:
            results = await _many(
                30, lambda i: _chat(session, router.base_url, f"out-{i}", stream=bool(i % 2))
            )
    finally:
        await fleet.set_outage("azure-eastus", False)
    assert all(status == 200 for status, _, _ in results)
    assert {h["x-router-backend"] for _, h, _ in results} == {"azure-swedencentral"}
    attempts = Counter(h["x-router-attempts"] for _, h, _ in results)
    rows = await _ledger(fleet, "out-")
    assert set(rows["cloud"]) == {"azure"}
    served = rows[rows["status"] == 200]
    assert set(served["endpoint"]) == {"azure-swedencentral"} and len(served) == 30
    refused = rows[rows["endpoint"] == "azure-eastus"]
    assert len(refused) > 0 and (refused["status"] == 503).all()
    failovers = [e for e in _log(router) if e["event"] == "failover" and e["request_id"].startswith("out-")]
    assert sorted(e["request_id"] for e in failovers) == sorted(refused["request_id"])
    assert {(e["from_backend"], e["backend"], e["from_status"]) for e in failovers} == {
        ("azure-eastus", "azure-swedencentral", 503)
    }
    assert attempts["2"] == len(failovers) and attempts["1"] == 30 - len(failovers)


async def test_stream_chunks_pass_through_as_they_are_produced(router: RouterProcess) -> None:
    """A streamed reply's first token reaches the client long before the backend produces its last
    one: the router forwards every chunk as it arrives instead of buffering the stream."""
    async with aiohttp.ClientSession() as session:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True}
        t0 = time.monotonic()
        arrivals: list[tuple[float, bytes]] = []
        async with session.post(router.base_url + CHAT, json=body, headers={"api-key": "k"}) as resp:
            arrivals.extend([(time.monotonic() - t0, chunk) async for chunk in resp.content.iter_any()])
    token_times = [t for t, chunk in arrivals if b'"content":" ' in chunk]
    assert len(token_times) >= 10  # not one buffered blob
    # 20 tokens 20 ms apart: the backend writes the last ~380 ms after the first
    assert token_times[-1] - token_times[0] >= 0.6 * 19 * ITL_MS / 1000
    assert arrivals[-1][1].endswith(b"data: [DONE]\n\n")


async def test_a_stream_the_backend_cuts_is_cut_for_the_client_too(
    fleet: FleetProcess, router: RouterProcess
) -> None:
    """When the backend drops a stream midway, the router drops the client's stream too instead of
    ending it cleanly, so the harness sees the same broken stream it would see direct."""
    for name in AZURE:
        await fleet.set_faults(name, midstream_disconnect_rate=1.0)
    try:
        async with aiohttp.ClientSession() as session:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
            async with session.post(router.base_url + CHAT, json=body, headers={"api-key": "k"}) as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
    finally:
        for name in AZURE:
            await fleet.set_faults(name)


async def _stateless_run(
    router: RouterProcess, n: int, prefix: str
) -> list[tuple[int, dict[str, str], bytes]]:
    async with aiohttp.ClientSession() as session:
        return await _many(n, lambda i: _chat(session, router.base_url, f"{prefix}-{i}", stream=i % 3 == 0))


def _applied(router: RouterProcess, switch: str, prefix: str) -> list[dict[str, Any]]:
    log = [e for e in _log(router) if (e["request_id"] or "").startswith(prefix)]
    assert {e["switch"] for e in log} <= {switch}  # nothing else acted on these requests
    assert not [e for e in log if e["event"] == "skipped"]  # every drawn request could be acted on
    return [e for e in log if e["event"] == "applied"]


async def test_misroute_switch_logs_exactly_the_requests_served_on_a_denied_cloud(
    fleet: FleetProcess, switched: dict[str, RouterProcess]
) -> None:
    """At p=0.5 over 100 stateless calls, the misroute log lists exactly the calls the ledger shows
    served on the OpenAI cloud; every other call stayed on Azure."""
    results = await _stateless_run(switched["misroute"], 100, "mr")
    log = _applied(switched["misroute"], "misroute", "mr-")
    applied = {e["request_id"] for e in log}
    assert 25 <= len(applied) <= 75 and len(applied) == len(log)
    assert all(status == 200 for status, _, _ in results)
    rows = await _ledger(fleet, "mr-")
    assert len(rows) == 100
    assert set(rows.loc[rows["cloud"] != "azure", "request_id"]) == applied
    assert {e["backend"] for e in log} == {"openai-direct"} and not any(e["backend_allowed"] for e in log)


async def test_spoof_switch_hides_the_cloud_behind_azure_headers_only_the_ledger_reveals(
    fleet: FleetProcess, switched: dict[str, RouterProcess]
) -> None:
    """At p=0.5 over 100 calls, every reply's fingerprint claims Azure, and the spoof log lists
    exactly the calls the ledger shows served on the OpenAI cloud (attestation mismatches)."""
    results = await _stateless_run(switched["spoof_fingerprint"], 100, "sp")
    applied = {e["request_id"] for e in _applied(switched["spoof_fingerprint"], "spoof_fingerprint", "sp-")}
    assert 25 <= len(applied) <= 75
    for _, headers, _ in results:
        fp = attribute({k.lower(): v for k, v in headers.items()})
        assert fp.cloud == "azure" and fp.mock_cloud == "azure"
    rows = (await _ledger(fleet, "sp-")).set_index("request_id")
    assert len(rows) == 100
    assert set(rows.index[rows["cloud"] == "openai"]) == applied


async def test_duplicate_switch_serves_exactly_the_logged_requests_twice(
    fleet: FleetProcess, switched: dict[str, RouterProcess]
) -> None:
    """At p=0.5 over 100 calls, the ledger holds two rows (on the two logged Azure backends) for
    exactly the calls the duplicate log lists, and one row for every other call."""
    results = await _stateless_run(switched["duplicate"], 100, "dup")
    log = _applied(switched["duplicate"], "duplicate", "dup-")
    applied = {e["request_id"] for e in log}
    assert 25 <= len(applied) <= 75
    assert all(status == 200 for status, _, _ in results)
    rows = await _ledger(fleet, "dup-")
    counts = Counter(rows["request_id"])
    assert {rid for rid, n in counts.items() if n == 2} == applied
    assert set(counts.values()) <= {1, 2} and len(counts) == 100
    assert set(rows["cloud"]) == {"azure"}
    for entry in log:
        assert set(rows.loc[rows["request_id"] == entry["request_id"], "endpoint"]) == set(entry["backends"])


async def test_break_affinity_switch_sends_exactly_the_logged_chained_calls_off_their_holder(
    fleet: FleetProcess, switched: dict[str, RouterProcess]
) -> None:
    """At p=0.5 over 100 chained Responses calls, exactly the logged ones are served by a backend
    other than the holder (which answers state-not-found); the rest reach the holder."""
    router = switched["break_affinity"]
    url = router.openai_base_url + "/responses"
    auth = {"Authorization": "Bearer k"}
    async with aiohttp.ClientSession() as session:
        body = {"model": "gpt-4o", "input": "hi", "store": True, "max_output_tokens": 1}
        async with session.post(url, json=body, headers={**auth, "X-Client-Request-Id": "ba-root"}) as r:
            root = (await r.json())["id"]
            holder = r.headers["x-router-backend"]

        async def chained(i: int) -> int:
            follow = {
                "model": "gpt-4o",
                "input": "more",
                "previous_response_id": root,
                "max_output_tokens": 1,
            }
            async with session.post(
                url, json=follow, headers={**auth, "X-Client-Request-Id": f"ba-{i}"}
            ) as resp:
                await resp.read()
                return resp.status

        statuses = await _many(100, chained)
    log = _applied(router, "break_affinity", "ba-")
    applied = {e["request_id"] for e in log}
    assert 25 <= len(applied) <= 75
    assert {e["holder"] for e in log} == {holder} and holder not in {e["backend"] for e in log}
    rows = (await _ledger(fleet, "ba-")).set_index("request_id").drop(index="ba-root")
    assert len(rows) == 100
    off = rows["endpoint"] != holder
    assert set(rows.index[off]) == applied
    assert (rows.loc[off, "status"] == 400).all() and (rows.loc[~off, "status"] == 200).all()
    assert Counter(statuses) == {200: 100 - len(applied), 400: len(applied)}


async def test_router_process_starts_its_own_fleet(tmp_path: Path) -> None:
    """With a fleet file the router starts that fleet itself, keeps only its OpenAI-family
    endpoints as backends, and prints the admin URL through which the ledger shows its call."""
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(FLEET)
    async with RouterProcess(POLICY, fleet=fleet_file, log=tmp_path / "r.jsonl") as router:
        names = {b["name"] for b in router.info["backends"]}
        async with aiohttp.ClientSession() as session:
            status, headers, _ = await _chat(session, router.base_url, "own-1")
        ledger = (await router.fetch_ledger()).to_pandas()
    assert names == {"azure-eastus", "azure-swedencentral", "openai-direct"}  # not the Bedrock one
    assert status == 200
    assert ledger.loc[ledger["request_id"] == "own-1", "endpoint"].tolist() == [headers["x-router-backend"]]


async def test_bad_router_input_is_one_line_not_a_traceback() -> None:
    """`harness router` with a rate outside 0..1 exits 2 with one line; so does a config with no fleet."""
    result = await asyncio.to_thread(
        run_cli,
        "router",
        "--policy",
        str(POLICY),
        "--attach-admin",
        "http://127.0.0.1:1/admin",
        "--misroute-rate",
        "1.5",
        timeout=60,
    )
    assert result.returncode == 2 and "--misroute-rate must be between 0 and 1" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(InputError, match="exactly one of --fleet and --attach-admin"):
        RouterConfig(policy=str(POLICY)).check()


async def test_classify_derives_class_and_state_from_path_and_body() -> None:
    """The router's classifier reads the API from each inbound URL form and the class from the
    body's flags, and names the stored state a chained call must reach."""
    chat = classify(parse_path("/openai/deployments/gpt-4o/chat/completions"), "POST", {"messages": []})
    assert (chat.api, chat.request_class, chat.model, chat.state_key) == (
        "chat.completions",
        "stateless",
        "gpt-4o",
        None,
    )
    stored = classify(parse_path("/v1/responses"), "POST", {"model": "gpt-4o", "input": "x"})
    assert (stored.request_class, stored.keeps_state, stored.state_key) == ("stateful", True, None)
    unstored = classify(parse_path("/openai/v1/responses"), "POST", {"model": "gpt-4o", "store": False})
    assert (unstored.request_class, unstored.keeps_state) == ("stateless", False)
    chained = classify(
        parse_path("/openai/responses"), "POST", {"model": "m", "conversation": {"id": "conv_1"}}
    )
    assert chained.state_key == ("conversation", "conv_1")
    deleted = classify(parse_path("/v1/responses/resp_9"), "DELETE", None)
    assert (deleted.state_key, deleted.deletes_state, deleted.model) == (("response", "resp_9"), True, None)
    assert parse_path("/healthz") is None
    with pytest.raises(BadRequest, match="model"):
        classify(parse_path("/v1/chat/completions"), "POST", {"messages": []})


async def test_balancer_rotates_and_prefers_the_least_busy_backend() -> None:
    """Round robin starts one backend later on each call; least-in-flight puts the idlest first
    and breaks ties by the rotation; a backend ejected after a failure goes last until its time."""
    backends = [
        Backend(i, f"b{i}", "azure", f"r{i}", "azure_openai", "http://x", frozenset({"m"})) for i in range(3)
    ]
    rr = Balancer(3)
    assert [rr.order(backends)[0].name for _ in range(4)] == ["b0", "b1", "b2", "b0"]
    lif = Balancer(3, "least-in-flight")
    lif.in_flight[:] = [5, 0, 2]
    assert [b.name for b in lif.order(backends)] == ["b1", "b2", "b0"]
    lif.eject(backends[1], until=10.0)
    assert [b.name for b in lif.order(backends, now=9.0)] == ["b2", "b0", "b1"]
    assert [b.name for b in lif.order(backends, now=10.0)] == ["b1", "b2", "b0"]


async def test_created_sniffer_finds_the_response_id_across_chunk_boundaries() -> None:
    """The first Responses stream event is found even when it arrives split over reads."""
    event = b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_42"}}\n\n'
    sniffer = CreatedSniffer()
    assert sniffer.feed(event[:30]) is None and not sniffer.done
    assert sniffer.feed(event[30:] + b"event: response.in_progress\n") == "resp_42" and sniffer.done


async def test_switch_draws_are_a_pure_function_of_seed_and_request_id(tmp_path: Path) -> None:
    """Two injectors with one seed fire for the same request ids, about p of them, in any order."""
    a = Injector(Rates(misroute=0.3), seed=4, log_path=None)
    b = Injector(Rates(misroute=0.3), seed=4, log_path=None)
    ids = [f"r{i}" for i in range(2000)]
    fired = [i for i in ids if a.draw("misroute", i)]
    assert fired == [i for i in reversed(ids) if b.draw("misroute", i)][::-1]
    assert 500 <= len(fired) <= 700
    assert not a.draw("duplicate", "r1")
