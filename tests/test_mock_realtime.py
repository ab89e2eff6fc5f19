"""Realtime over WebSocket on the mock Azure/OpenAI endpoints, driven by the official openai SDK and
by the sans-IO Realtime protocol module against real port-0 servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI

import harness.mocks.azure_openai as azure_mock
from harness.mocks import RunningFleet, start_fleet
from harness.profile.models import Faults, Fleet, FleetEndpoint, Latency
from harness.protocols import realtime as rt
from harness.protocols.tokens import output_token

pytest.importorskip("websockets")  # openai[realtime]

API_VERSION = "2025-04-01-preview"
N_OUT = 5
FAST = Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=1, jitter_frac=0, output_tokens=N_OUT)
REPLY = "".join(output_token(i) for i in range(N_OUT))
MAX_EVENTS = 100  # every receive loop stops after this many events
TIMEOUT_S = 10.0
HAS_OPENAI_MOCK = hasattr(azure_mock, "make_openai_app")


def endpoint(name: str, dialect: str = "azure_openai", cloud: str = "azure", **kw: Any) -> FleetEndpoint:
    kw.setdefault("latency", FAST)
    return FleetEndpoint(
        name=name,
        cloud=cloud,
        dialect=dialect,
        region="swedencentral",
        deployments=["gpt-4o"],
        **kw,
    )


@pytest.fixture
async def fleet() -> AsyncIterator[RunningFleet]:
    running = await start_fleet(Fleet(name="t", seed=4, endpoints=[endpoint("az")]))
    try:
        yield running
    finally:
        await running.stop()


def url(running: RunningFleet) -> str:
    return str(running.endpoints[0]["base_url"])


def rows(running: RunningFleet) -> list[dict]:
    return sorted(running.ledger_table().to_pylist(), key=lambda r: r["received_wall_ns"])


async def sdk_turn(conn: Any, text: str) -> list[Any]:
    """Send one user message and response.create; the server events up to response.done."""
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()
    events = []
    for _ in range(MAX_EVENTS):
        event = await asyncio.wait_for(conn.recv(), TIMEOUT_S)
        events.append(event)
        if event.type in ("response.done", "error"):
            break
    return events


async def wait_rows(running: RunningFleet, n: int) -> list[dict]:
    for _ in range(500):  # the turn's row is written just after response.done is sent
        if len(running.ledger_table()) >= n:
            break
        await asyncio.sleep(0.01)
    return rows(running)


TURN_TYPES = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * N_OUT,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


async def test_openai_client_text_turn_on_the_azure_v1_path(fleet: RunningFleet) -> None:
    """AsyncOpenAI(base_url=.../openai/v1).realtime.connect runs a GA text turn: session, item, response."""
    async with (
        AsyncOpenAI(base_url=url(fleet) + "/openai/v1", api_key="k", max_retries=0) as client,
        client.realtime.connect(model="gpt-4o") as conn,
    ):
        created = await asyncio.wait_for(conn.recv(), TIMEOUT_S)
        assert created.type == "session.created" and created.session.model == "gpt-4o"
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "instructions": "hi"}
        )
        updated = await asyncio.wait_for(conn.recv(), TIMEOUT_S)
        assert updated.type == "session.updated" and updated.session.instructions == "hi"
        events = await sdk_turn(conn, "say hi to the world")
    acks, turn = events[:2], events[2:]
    assert [e.type for e in acks] == ["conversation.item.added", "conversation.item.done"]
    assert [e.type for e in turn] == TURN_TYPES
    assert "".join(e.delta for e in turn if e.type == "response.output_text.delta") == REPLY
    done = turn[-1].response
    assert (done.status, done.usage.input_tokens, done.usage.output_tokens) == ("completed", 5 + 1, N_OUT)
    row = (await wait_rows(fleet, 1))[0]
    assert (row["api"], row["stateful"], row["stream"], row["status"]) == ("realtime", True, True, 200)
    assert (row["response_id"], row["tokens_in"], row["tokens_out"]) == (done.id, 6, N_OUT)


async def test_azure_client_turns_grow_context_and_ledger_per_turn(fleet: RunningFleet) -> None:
    """AsyncAzureOpenAI on /openai/realtime: each turn is a ledger row <request id>/<turn>; context grows."""
    async with (
        AsyncAzureOpenAI(
            azure_endpoint=url(fleet),
            api_key="k",
            api_version=API_VERSION,
            websocket_base_url=url(fleet).replace("http", "ws") + "/openai",
            max_retries=0,
        ) as client,
        client.realtime.connect(model="gpt-4o", extra_headers={"x-ms-client-request-id": "sess-1"}) as conn,
    ):
        assert (await asyncio.wait_for(conn.recv(), TIMEOUT_S)).type == "session.created"
        first = (await sdk_turn(conn, "one two three"))[-1].response
        second = (await sdk_turn(conn, "four"))[-1].response
    assert first.usage.input_tokens == 3
    assert second.usage.input_tokens == 3 + N_OUT + 1
    got = [(r["request_id"], r["response_id"], r["tokens_in"]) for r in await wait_rows(fleet, 2)]
    assert got == [("sess-1/1", first.id, 3), ("sess-1/2", second.id, 3 + N_OUT + 1)]


@pytest.mark.skipif(not HAS_OPENAI_MOCK, reason="the openai dialect mock is not there yet")
async def test_openai_flavor_realtime_on_v1() -> None:
    """AsyncOpenAI(base_url=.../v1) opens /v1/realtime on an openai endpoint and completes a turn."""
    running = await start_fleet(Fleet(name="t", seed=1, endpoints=[endpoint("oa", "openai", "openai")]))
    try:
        async with (
            AsyncOpenAI(base_url=url(running) + "/v1", api_key="k", max_retries=0) as client,
            client.realtime.connect(model="gpt-4o") as conn,
        ):
            assert (await asyncio.wait_for(conn.recv(), TIMEOUT_S)).type == "session.created"
            events = await sdk_turn(conn, "hello")
        assert events[-1].type == "response.done" and events[-1].response.usage.output_tokens == N_OUT
        assert [r["cloud"] for r in await wait_rows(running, 1)] == ["openai"]
    finally:
        await running.stop()


async def test_beta_protocol_through_the_sans_io_module(fleet: RunningFleet) -> None:
    """With OpenAI-Beta: realtime=v1 the server uses beta names, which the turn parser reads too."""
    ws_url = rt.realtime_url(url(fleet), url_form="azure", model="gpt-4o", api_version=API_VERSION)
    headers = rt.handshake_headers("k", url_form="azure", beta=True, request_id="b-1")
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, headers=headers) as ws:
        hello = orjson.loads(await ws.receive_str(timeout=TIMEOUT_S))
        assert hello["type"] == "session.created" and "modalities" in hello["session"]
        await ws.send_str(rt.session_update(instructions="be brief", beta=True))
        await ws.send_str(rt.user_message("say hi"))
        await ws.send_str(rt.response_create(max_output_tokens=3))
        seen: list[str] = []
        parser = rt.RealtimeTurnParser()
        events: list[tuple] = []
        for _ in range(MAX_EVENTS):
            message = await ws.receive_str(timeout=TIMEOUT_S)
            seen.append(orjson.loads(message)["type"])
            parser.feed(message, events)
            if parser.ended:
                break
    assert seen[:2] == ["session.updated", "conversation.item.created"]
    assert "response.text.delta" in seen and "response.output_text.delta" not in seen
    assert events == [
        ("id", parser.response_id),
        *[("token", 1)] * 3,
        ("finish", "length"),
        ("usage", 2 + 2, 3),
        ("done",),
    ]
    row = (await wait_rows(fleet, 1))[0]
    assert (row["request_id"], row["tokens_out"]) == ("b-1/1", 3)


async def test_response_cancel_ends_the_turn_cancelled() -> None:
    """response.cancel mid-turn ends it with a response.done of status cancelled and keeps the socket open."""
    slow = Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=50, jitter_frac=0, output_tokens=200)
    running = await start_fleet(Fleet(name="t", seed=1, endpoints=[endpoint("slow", latency=slow)]))
    ws_url = rt.realtime_url(url(running), url_form="azure_v1", model="gpt-4o")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url, headers={"api-key": "k"}) as ws,
        ):
            await ws.receive_str(timeout=TIMEOUT_S)
            await ws.send_str(rt.user_message("go"))
            await ws.send_str(rt.response_create())
            parser = rt.RealtimeTurnParser()
            for _ in range(MAX_EVENTS):
                if parser.feed(await ws.receive_str(timeout=TIMEOUT_S)):
                    await ws.send_str(rt.response_cancel())
                    break
            for _ in range(MAX_EVENTS):
                parser.feed(await ws.receive_str(timeout=TIMEOUT_S))
                if parser.ended:
                    break
            assert (parser.status, parser.finish_reason) == ("cancelled", "cancelled")
            await ws.send_str(rt.user_message("still open"))
            ack = orjson.loads(await ws.receive_str(timeout=TIMEOUT_S))
            assert ack["type"] == "conversation.item.added"
        row = (await wait_rows(running, 1))[0]
        assert row["status"] == 200 and 1 <= row["tokens_out"] < 200
    finally:
        await running.stop()


async def test_second_response_create_while_active_is_an_error_event(fleet: RunningFleet) -> None:
    """A response.create during an active response gets an error event; the first turn still completes."""
    ws_url = rt.realtime_url(url(fleet), url_form="azure_v1", model="gpt-4o")
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, headers={"api-key": "k"}) as ws:
        await ws.receive_str(timeout=TIMEOUT_S)
        await ws.send_str(rt.response_create())
        await ws.send_str(rt.response_create(event_id="evt_2"))
        types, error = [], None
        for _ in range(MAX_EVENTS):
            event = orjson.loads(await ws.receive_str(timeout=TIMEOUT_S))
            types.append(event["type"])
            if event["type"] == "error":
                error = event["error"]
            if event["type"] == "response.done":
                break
    assert error is not None and error["code"] == "conversation_already_has_active_response"
    assert error["event_id"] == "evt_2"
    assert types[-1] == "response.done"


async def test_refused_handshakes_are_http_errors_and_ledgered(fleet: RunningFleet) -> None:
    """No key → 401, classic path without api-version → 400, unknown deployment → 404, each one ledger row."""
    base = url(fleet).replace("http", "ws")
    cases = [
        (f"{base}/openai/v1/realtime?model=gpt-4o", {}, 401),
        (f"{base}/openai/realtime?deployment=gpt-4o", {"api-key": "k"}, 400),
        (f"{base}/openai/v1/realtime?model=nope", {"api-key": "k"}, 404),
    ]
    async with aiohttp.ClientSession() as session:
        for ws_url, headers, status in cases:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(ws_url, headers=headers)
            assert info.value.status == status
    assert [(r["api"], r["status"]) for r in rows(fleet)] == [("realtime", s) for _, _, s in cases]


async def test_midstream_disconnect_fault_truncates_the_turn() -> None:
    """A disconnect fault closes the socket mid-turn: the parser sees a truncated turn; one ledger row."""
    faulty = endpoint("f", faults=Faults(midstream_disconnect_rate=1.0))
    running = await start_fleet(Fleet(name="t", seed=3, endpoints=[faulty]))
    ws_url = rt.realtime_url(url(running), url_form="azure_v1", model="gpt-4o")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url, headers={"api-key": "k"}) as ws,
        ):
            await ws.receive_str(timeout=TIMEOUT_S)
            await ws.send_str(rt.response_create())
            messages = []
            for _ in range(MAX_EVENTS):
                msg = await ws.receive(timeout=TIMEOUT_S)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                messages.append(msg.data)
        events = rt.turn_events(messages)
        assert events[-1] == ("error", rt.TRUNCATED) and rt.error_kind(rt.TRUNCATED) == "reset"
        assert [r["status"] for r in await wait_rows(running, 1)] == [200]
    finally:
        await running.stop()


def test_urls_headers_and_client_events() -> None:
    """The three URL forms, the handshake headers and the client events are what the SDK sends."""
    assert rt.realtime_url("http://h", url_form="openai", model="m") == "ws://h/v1/realtime?model=m"
    assert (
        rt.realtime_url("https://h/", url_form="azure_v1", model="d") == "wss://h/openai/v1/realtime?model=d"
    )
    assert (
        rt.realtime_url("http://h", url_form="azure", model="d", api_version="v")
        == "ws://h/openai/realtime?api-version=v&deployment=d"
    )
    assert rt.handshake_headers("k", url_form="azure") == {"api-key": "k"}
    assert rt.handshake_headers("k", url_form="openai", beta=True) == {
        "Authorization": "Bearer k",
        "OpenAI-Beta": "realtime=v1",
    }
    assert orjson.loads(rt.session_update(instructions="x")) == {
        "type": "session.update",
        "session": {"type": "realtime", "output_modalities": ["text"], "instructions": "x"},
    }
    item = orjson.loads(rt.user_message("hi", event_id="e1"))
    assert item["event_id"] == "e1" and item["item"]["content"] == [{"type": "input_text", "text": "hi"}]
    assert orjson.loads(rt.response_create()) == {"type": "response.create"}


def test_turn_parser_errors() -> None:
    """An error event, a failed response and malformed JSON each end the turn with an error."""
    error = orjson.dumps({"type": "error", "error": {"type": "x", "code": "c", "message": "nope"}})
    assert rt.turn_events([error]) == [("error", "nope")]
    failed = orjson.dumps(
        {
            "type": "response.done",
            "response": {"id": "r", "status": "failed", "status_details": {"error": {"message": "bad"}}},
        }
    )
    assert rt.turn_events([failed]) == [("id", "r"), ("error", "bad")]
    events = rt.turn_events([b'{"type":"response.output_text.del'])
    assert len(events) == 1 and rt.error_kind(events[0][1]) == "protocol"
